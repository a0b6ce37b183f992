from twins.model.news2 import news2


def test_normal_vitals_score_zero():
    r = news2({"HR": 70, "O2Sat": 98, "Temp": 37.0, "SBP": 120, "Resp": 16})
    assert (r.score, r.risk, r.missing) == (0, "low", [])
    assert "NEWS2-like" in r.label


def test_bands():
    assert news2({"HR": 131, "O2Sat": 98, "Temp": 37, "SBP": 120, "Resp": 16}).parts["HR"] == 3
    assert news2({"HR": 70, "O2Sat": 93, "Temp": 37, "SBP": 120, "Resp": 16}).parts["O2Sat"] == 2
    assert news2({"HR": 70, "O2Sat": 98, "Temp": 38.5, "SBP": 120, "Resp": 16}).parts["Temp"] == 1
    assert news2({"HR": 70, "O2Sat": 98, "Temp": 39.1, "SBP": 120, "Resp": 16}).parts["Temp"] == 2
    assert news2({"HR": 70, "O2Sat": 98, "Temp": 37, "SBP": 95, "Resp": 16}).parts["SBP"] == 2
    assert news2({"HR": 70, "O2Sat": 98, "Temp": 37, "SBP": 120, "Resp": 24.6}).parts["Resp"] == 3  # charted as 25
    assert news2({"HR": 70, "O2Sat": 98, "Temp": 37, "SBP": 120, "Resp": 23.4}).parts["Resp"] == 2


def test_risk_levels_and_missing():
    single3 = news2({"HR": 70, "O2Sat": 98, "Temp": 37, "SBP": 85, "Resp": 16})
    assert (single3.score, single3.risk) == (3, "low-medium")
    med = news2({"HR": 115, "O2Sat": 94, "Temp": 38.5, "SBP": 120, "Resp": 22})
    assert med.score == 2 + 1 + 1 + 2 and med.risk == "medium"
    high = news2({"HR": 135, "O2Sat": 90, "Temp": 39.5, "SBP": 85, "Resp": 26})
    assert high.risk == "high"
    partial = news2({"HR": 70})
    assert partial.score == 0 and set(partial.missing) == {"O2Sat", "Temp", "SBP", "Resp"}
