"""The three federated tasks on real public data: each task's data set, which org holds which site of it,
its features, and where the shared data folder is.

Data are read in place from the shared data folder (``$TL_DATA_ROOT``, else ``<repo>/../shared/data``);
nothing is copied into the repository. Each org loads only its own site (``federated.site_data``).

``maintenance`` -- AI4I 2020 predictive maintenance (10,000 rows, label ``Machine failure``, 3.39 %).
  Sites are partitions by product quality ``Type``: plant1 = L (6,000 rows, 235 failures), plant2 = M+H
  (4,000 rows, 104 failures). A site spec ``types:L``/``types:M+H`` or ``udi:1-5000`` (a UDI range)
  selects rows, so further plants can be given other partitions.
  Features (11): Type one-hot (L, M, H); air and process temperature [K], rotational speed [rpm],
  torque [Nm], tool wear [min]; and three physical quantities the failure modes are defined on
  (Matzka 2020): process-air temperature difference [K], mechanical power [W] = torque x rpm x 2pi/60,
  and overstrain = tool wear x torque [min Nm]. Excluded: ``UDI`` and ``Product ID`` (identifiers) and
  ``TWF HDF PWF OSF RNF`` (the failure modes that make up the label: they leak it).

``cardiac`` -- UCI Heart Disease, four hospital sites (Cleveland 303, Hungarian 294, Switzerland 123,
  VA Long Beach 200 rows), label ``num > 0``. Default org -> site map: hospital1 = cleveland,
  hospital2 = hungarian, hospital3 = switzerland, hospital4 = va (the default consortium has hospital1
  and hospital2; the other two sites serve orgs added later). Override with the node config key
  ``site`` or ``$TL_FL_SITES`` (JSON, e.g. ``{"hospital3": "va"}``).
  Missing values get an indicator and are imputed per site; ``ca`` and ``thal`` are dropped (mostly
  missing); how and why: ``federated.site_data``.
  Features (23): age, sex, chest-pain type one-hot (cp 1..4), trestbps, chol, fbs, restecg, thalach,
  exang, oldpeak, slope, and 8 missingness indicators.

``sepsis`` -- PhysioNet/CinC 2019 early prediction of sepsis, training set B subset (4,000 ICU patients,
  227 septic), one row per patient-hour; label: sepsis onset within the next 6 hours (the Challenge's
  hourly SepsisLabel; onset, horizon and features are defined in ``federated.sepsis``). Features (32):
  the 8 vital signs a bedside twin carries (HR, O2Sat, Temp, SBP, MAP, DBP, Resp, EtCO2), forward-filled
  within the patient, a not-yet-observed indicator each, and their changes over 3 and 6 hours. Sites are
  patient-number ranges (``ids:FROM-TO``): hospital1 = p100001-p102000, hospital2 = p102001-p104000, so
  no patient is at two hospitals. Splits are by PATIENT (stratified by whether the patient becomes septic,
  seeded): every hour of a patient is in one split (test 25 %, validation 20 % of the rest).

Each org's share of a task -- read, split and turned into these features -- is ``federated.site_data``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from federated import sepsis

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataError(ValueError):
    """A data set, site or task that cannot be loaded; the message says what to do."""


# -- tasks -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str  # folder under the data root
    org_kind: str  # hospital | plant
    sites: Mapping[str, str]  # org -> default site spec
    default_orgs: tuple[str, ...]  # the default consortium's orgs for this task
    feature_names: tuple[str, ...]
    test_fraction: float
    val_fraction: float = 0.2

    @property
    def purpose(self) -> str:
        """The purpose a data grant must name for this task."""
        return f"fl:{self.name}"

    def dataset_id(self, org: str) -> str:
        """The data-set id an org registers for this task (what grants refer to), e.g. ``plant1.ai4i2020``:
        a valid chaincode ID (letters, digits, '.', '_', '-'), as ``twinledger data register`` needs."""
        return f"{org}.{self.dataset}"


AI4I_FEATURES = (
    "type_L", "type_M", "type_H",
    "air_temp_K", "process_temp_K", "rot_speed_rpm", "torque_Nm", "tool_wear_min",
    "temp_diff_K", "power_W", "overstrain_minNm",
)  # fmt: skip

HEART_MAYBE_MISSING = ("trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope")
HEART_FEATURES = (
    "age", "sex", "cp_1", "cp_2", "cp_3", "cp_4",
    "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope",
    *(f"missing_{c}" for c in HEART_MAYBE_MISSING),
)  # fmt: skip

TASKS: dict[str, TaskSpec] = {
    "maintenance": TaskSpec(
        name="maintenance", dataset="ai4i2020", org_kind="plant",
        sites={"plant1": "types:L", "plant2": "types:M+H"},
        default_orgs=("plant1", "plant2"), feature_names=AI4I_FEATURES, test_fraction=0.2,
    ),
    "cardiac": TaskSpec(
        name="cardiac", dataset="heart_disease_uci", org_kind="hospital",
        sites={"hospital1": "cleveland", "hospital2": "hungarian", "hospital3": "switzerland", "hospital4": "va"},
        default_orgs=("hospital1", "hospital2"), feature_names=HEART_FEATURES, test_fraction=0.25,
    ),
    "sepsis": TaskSpec(
        name="sepsis", dataset=sepsis.DATASET, org_kind="hospital",
        sites={"hospital1": "ids:100001-102000", "hospital2": "ids:102001-104000"},
        default_orgs=("hospital1", "hospital2"), feature_names=sepsis.FEATURES, test_fraction=0.25,
    ),
}  # fmt: skip


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown federated task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def data_root(override: str | Path | None = None) -> Path:
    """The shared data folder: override, then $TL_DATA_ROOT, then <repo>/../shared/data."""
    root = Path(override or os.environ.get("TL_DATA_ROOT") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        raise DataError(f"data folder {root} not found; set TL_DATA_ROOT (or node config data-root) to it")
    return root


def resolve_site(task: str, org: str, override: str | None = None) -> str:
    """The site an org holds for a task: node-config override, then $TL_FL_SITES, then the default map."""
    spec = task_spec(task)
    if override:
        return override
    env = os.environ.get("TL_FL_SITES")
    if env:
        try:
            mapping = json.loads(env)
        except json.JSONDecodeError as exc:
            raise DataError(f"TL_FL_SITES is not JSON ({exc}); example: '{{\"hospital3\": \"va\"}}'") from None
        if org in mapping:
            return str(mapping[org])
    if org not in spec.sites:
        raise DataError(
            f"org {org!r} has no site for task {task!r} (known: {', '.join(sorted(spec.sites))}); "
            f"set node config site='...' or TL_FL_SITES"
        )
    return spec.sites[org]
