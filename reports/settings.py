"""The prices and facts the label-budget report assumes; printed in it, in plain words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReportSettings:
    cost_per_label: float  # price of one label, in `currency`
    currency: str
    device_hour_price: float  # price of one device (a GPU, or a whole CPU machine) for one hour, in `currency`
    dataset: str  # where the images came from, as the stakeholder should read it (e.g. the data source)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], dataset: str) -> ReportSettings:
        """From the pipeline's `report` config section; keys the report does not price (full_label_baseline) are
        ignored, so the section can grow without breaking this."""
        return cls(
            cost_per_label=float(config["cost_per_label"]),
            currency=str(config["currency"]),
            device_hour_price=float(config["device_hour_price"]),
            dataset=dataset,
        )
