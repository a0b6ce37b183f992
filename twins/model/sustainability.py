"""Sustainability metrics: energy (kWh), CO2 (kg), water (L) and waste (kg), per asset and per plant.

- energy: from the machine's cumulative ``Energy`` counter (kWh), summing only positive increments
  between consecutive readings (a counter reset is not negative energy);
- CO2 = energy × ``grid_kg_co2_per_kwh`` (configurable; the default 0.4 kg/kWh is a placeholder of the
  order of a European grid average — set your grid's factor);
- water and waste: per product of each AI4I quality type, configurable; the defaults (coolant make-up
  water and chips/swarf) are illustrative placeholders, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SustainabilityConfig:
    grid_kg_co2_per_kwh: float = 0.4
    water_l_per_product: dict[str, float] = field(default_factory=lambda: {"L": 0.8, "M": 1.2, "H": 2.0})
    waste_kg_per_product: dict[str, float] = field(default_factory=lambda: {"L": 0.05, "M": 0.08, "H": 0.12})

    @staticmethod
    def from_dict(d: dict | None) -> "SustainabilityConfig":
        if not d:
            return SustainabilityConfig()
        base = SustainabilityConfig()
        return SustainabilityConfig(
            grid_kg_co2_per_kwh=float(d.get("grid_kg_co2_per_kwh", base.grid_kg_co2_per_kwh)),
            water_l_per_product={**base.water_l_per_product, **{k: float(v) for k, v in (d.get("water_l_per_product") or {}).items()}},
            waste_kg_per_product={**base.waste_kg_per_product, **{k: float(v) for k, v in (d.get("waste_kg_per_product") or {}).items()}},
        )


def metrics(energy_kwh: float, products: dict[str, int], cfg: SustainabilityConfig) -> dict[str, float]:
    return {
        "energy_kwh": energy_kwh,
        "co2_kg": energy_kwh * cfg.grid_kg_co2_per_kwh,
        "water_l": sum(n * cfg.water_l_per_product.get(t, 0.0) for t, n in products.items()),
        "waste_kg": sum(n * cfg.waste_kg_per_product.get(t, 0.0) for t, n in products.items()),
        "products": float(sum(products.values())),
    }


def plant_totals(per_asset: list[dict[str, float]]) -> dict[str, float]:
    keys = ("energy_kwh", "co2_kg", "water_l", "waste_kg", "products")
    return {k: sum(m.get(k, 0.0) for m in per_asset) for k in keys}
