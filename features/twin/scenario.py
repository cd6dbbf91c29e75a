"""Scenario documents for the network twin: what the simulated network looks like and what happens to it."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.errors import ScenarioError
from features.schema import NODE_TYPES, SERVICES, TIERS  # noqa: F401  (re-exported for the twin)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeTypeProfile(_Strict):
    """How many nodes of one type exist and how they behave."""

    count: int = Field(ge=0, le=200)
    headroom: tuple[float, float] = Field(description="capacity / expected baseline load, drawn per node")
    cutoff_hour: int = Field(ge=1, le=23)
    handling_days: int = Field(ge=0, le=3, description="days between allocation and the earliest ship-by")
    handling_cost: float = Field(ge=0)
    sku_coverage: Probability
    base_late_logit: float
    replenish_every_days: int = Field(ge=1, le=30)
    cover_days: float = Field(gt=0)


class CarrierSpec(_Strict):
    """A carrier, its services and how good it is."""

    name: str
    services: tuple[Literal["ground", "two_day", "next_day"], ...]
    cost_factor: float = Field(gt=0)
    reliability_logit: float = 0.0
    ground_extra_days: int = Field(default=0, ge=0, le=3)
    lane_spread: float = Field(default=0.35, ge=0)
    regions_served: Probability = 1.0
    lane_cost_spread: float = Field(default=0.15, ge=0, lt=1)


class DemandSpec(_Strict):
    """Order volume over time."""

    base_orders_per_day: float = Field(gt=0)
    weekday_factors: tuple[float, float, float, float, float, float, float]
    growth_per_day: float = 0.0
    peak_factor: float = Field(default=1.8, ge=1.0)
    post_peak_factor: float = Field(default=1.2, ge=1.0, description="demand in the two weeks after the peak")
    peak_staffing: float = Field(default=1.5, ge=1.0, description="announced capacity multiplier during the peak")
    post_peak_staffing: float = Field(default=1.2, ge=1.0)
    promotion_days: int = Field(default=4, ge=0)
    promotion_factor: float = Field(default=1.35, ge=1.0)
    lines_per_order: tuple[float, float, float, float] = (0.56, 0.25, 0.12, 0.07)
    tier_shares: tuple[float, float, float] = (0.70, 0.25, 0.05)


class DisruptionSpec(_Strict):
    """Random disruptions that make lateness bursty."""

    weather_per_region_per_100_days: float = Field(default=0.6, ge=0)
    weather_days: tuple[int, int] = (6, 24)
    weather_severity: tuple[float, float] = (1.0, 2.0)
    weather_announced_share: Probability = 0.5
    hub_outage_per_carrier_per_100_days: float = Field(default=0.5, ge=0)
    hub_outage_days: tuple[int, int] = (5, 21)
    hub_outage_severity: tuple[float, float] = (1.2, 2.2)
    detect_lag_days: int = Field(
        default=3, ge=0, description="an unannounced disruption becomes knowable from lane history after this many days"
    )
    node_shock_share: Probability = Field(default=0.03, description="node-days that lose capacity without notice")


class ExceptionSpec(_Strict):
    """Rates of the exceptions the twin raises."""

    shrink_units_per_node_day: float = Field(default=25.0, ge=0)
    node_rejection: Probability = 0.003
    node_rejection_overload: Probability = 0.02
    damaged: Probability = 0.003
    lost_given_late: Probability = 0.02
    address_problem_given_late: Probability = 0.08


class ScenarioEvent(_Strict):
    """A scheduled event, e.g. a carrier degrading on a region or a node losing capacity on Mondays."""

    kind: Literal["carrier_degradation", "region_disruption", "node_capacity"]
    start_day: int = Field(ge=0)
    end_day: int = Field(ge=0, description="exclusive")
    carrier: str | None = None
    region: str | None = None
    node: str | None = None
    severity: float = Field(default=1.5, description="logit added to the carrier delay")
    capacity_factor: float = Field(default=1.0, gt=0, le=2.0)
    weekdays: tuple[int, ...] | None = Field(default=None, description="0=Monday; None = every day")
    announced: bool = False

    @model_validator(mode="after")
    def _targets(self) -> ScenarioEvent:
        if self.end_day <= self.start_day:
            raise ValueError("end_day must be after start_day")
        if self.kind == "node_capacity" and not self.node:
            raise ValueError("a node_capacity event needs 'node'")
        if self.kind == "carrier_degradation" and not self.carrier:
            raise ValueError("a carrier_degradation event needs 'carrier'")
        if self.kind == "region_disruption" and not self.region:
            raise ValueError("a region_disruption event needs 'region'")
        return self


class Scenario(_Strict):
    """Everything the twin needs to simulate a network forward."""

    name: str
    start_date: date
    days: int = Field(ge=1, le=3660)
    seed: int = 7
    zones: int = Field(default=60, ge=1, le=1000)
    skus: int = Field(default=2000, ge=10, le=200_000)
    hazmat_share: Probability = 0.03
    node_types: dict[Literal["dc", "store", "3pl", "dropship"], NodeTypeProfile]
    carriers: tuple[CarrierSpec, ...]
    demand: DemandSpec
    disruptions: DisruptionSpec = DisruptionSpec()
    exceptions: ExceptionSpec = ExceptionSpec()
    events: tuple[ScenarioEvent, ...] = ()
    decision_waves_per_day: int = Field(default=6, ge=1, le=96)
    candidate_nodes: int = Field(default=6, ge=1, le=50)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names = [c.name for c in self.carriers]
        if len(set(names)) != len(names):
            raise ValueError("carrier names must be unique")
        for event in self.events:
            if event.carrier and event.carrier not in names:
                raise ValueError(f"event names unknown carrier {event.carrier!r}")
            if event.end_day > self.days:
                raise ValueError(f"event ends on day {event.end_day}, after the scenario's {self.days} days")
        if sum(p.count for p in self.node_types.values()) == 0:
            raise ValueError("the network needs at least one node")
        return self


def load_scenario(*, source: str | Path) -> Scenario:
    """Load a scenario by name ('default', 'trouble') or from a YAML file path."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ScenarioError(f"{path}: no such scenario file")
        text = path.read_text()
        origin = str(path)
    else:
        bundled = resources.files("features.twin") / "scenarios" / f"{source}.yaml"
        if not bundled.is_file():
            raise ScenarioError(f"unknown scenario {source!r}: give 'default', 'trouble' or a YAML file path")
        text = bundled.read_text()
        origin = f"scenario {source!r}"
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{origin}: expected a mapping at the top level")
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}" for err in exc.errors()
        )
        raise ScenarioError(f"{origin}: {problems}") from None
