"""The ruleset: a versioned, immutable document of eligibility rules, money-unit scoring and split policy.

Every rule has a stable id (used in decision traces, diffs and the protected list), so an ops lead
can see exactly which rule excluded a candidate and a proposal can name exactly what it changes.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rules.errors import RulesetError

NodeType = Literal["dc", "store", "3pl", "dropship"]
Service = Literal["ground", "two_day", "next_day"]
Tier = Literal["standard", "plus", "premium"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Money = Annotated[float, Field(ge=0.0)]

# Rule ids that are always enforced (they are facts, not policy): they cannot be protected or changed.
BUILT_IN_RULES = ("inventory", "lane_not_served", "promise_not_met")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeTypeRestriction(_Document):
    """Forbid a node type for some services, tiers or all orders."""

    id: str
    node_type: NodeType
    services: tuple[Service, ...] | None = Field(default=None, description="None = every service")
    tiers: tuple[Tier, ...] | None = Field(default=None, description="None = every tier")


class RegionRestriction(_Document):
    """Forbid shipping from some nodes (by id or type) into some destination regions."""

    id: str
    dest_regions: tuple[str, ...]
    node_ids: tuple[str, ...] | None = None
    node_types: tuple[NodeType, ...] | None = None


class LaneBlock(_Document):
    """Forbid a carrier into some destination regions, for some tiers and services (None = all of them)."""

    id: str
    carrier: str
    dest_regions: tuple[str, ...] | None = Field(default=None, description="None = every region")
    tiers: tuple[Tier, ...] | None = Field(default=None, description="None = every tier")
    services: tuple[Service, ...] | None = Field(default=None, description="None = every service")


class HazmatRule(_Document):
    """Where and how hazardous items may ship."""

    id: str = "hazmat"
    allowed_node_types: tuple[NodeType, ...] = ("dc", "3pl")
    forbidden_services: tuple[Service, ...] = ("next_day",)


class CapacityRule(_Document):
    """Daily caps on shipments a node may be assigned: a share of its capacity, or an explicit cap."""

    id: str = "capacity"
    default_share: float = Field(default=1.0, gt=0, le=3.0, description="cap = share x the node's daily capacity")
    overrides: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, description="node_id -> cap")
    weekday_overrides: dict[str, dict[Weekday, Annotated[int, Field(ge=0)]]] = Field(
        default_factory=dict, description="node_id -> weekday of the decision -> cap (wins over `overrides`)"
    )
    target_risk: Probability = Field(
        default=0.2, description="the node congestion risk a cap should keep a node under (capacity proposals aim here)"
    )


class Eligibility(_Document):
    """What makes a candidate (node, carrier, service) allowed for a shipment."""

    node_types: tuple[NodeTypeRestriction, ...] = ()
    regions: tuple[RegionRestriction, ...] = ()
    lanes: tuple[LaneBlock, ...] = ()
    hazmat: HazmatRule = HazmatRule()
    capacity: CapacityRule = CapacityRule()
    max_risk_by_tier: dict[Tier, Probability] = Field(
        default_factory=lambda: {"standard": 0.6, "plus": 0.45, "premium": 0.3}
    )


class LaneAdjustment(_Document):
    """A money adjustment for a carrier on destination regions (a penalty > 0, a bonus < 0)."""

    id: str
    carrier: str
    dest_regions: tuple[str, ...] | None = None
    amount: float


class Scoring(_Document):
    """The cost of a shipment, in money: shipping + handling + late_penalty x P(late) + adjustments."""

    late_penalty_by_tier: dict[Tier, Money] = Field(
        default_factory=lambda: {"standard": 12.0, "plus": 25.0, "premium": 50.0}
    )
    split_penalty: Money = 4.0
    handling_per_extra_unit: float = Field(default=0.25, ge=0, description="share of handling cost per extra unit")
    lane_adjustments: tuple[LaneAdjustment, ...] = ()


class SplitPolicy(_Document):
    """Whether and how an order may ship from several nodes."""

    allow_split: bool = True
    max_shipments: int = Field(default=2, ge=1, le=4)
    keep_groups_together: bool = True


class Ruleset(_Document):
    """A complete, validated ruleset."""

    name: str
    description: str = ""
    eligibility: Eligibility = Eligibility()
    scoring: Scoring = Scoring()
    split: SplitPolicy = SplitPolicy()
    protected: tuple[str, ...] = Field(default=(), description="rule ids (or paths) no proposal may change")

    @model_validator(mode="after")
    def _ids(self) -> Ruleset:
        ids = self.rule_ids()
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(duplicates)}")
        known = set(ids) | set(_PATHS)
        unknown = [p for p in self.protected if p not in known]
        if unknown:
            raise ValueError(
                f"protected names unknown rule(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return self

    def rule_ids(self) -> list[str]:
        """Every rule id in the document."""
        e = self.eligibility
        return [
            *(r.id for r in e.node_types),
            *(r.id for r in e.regions),
            *(r.id for r in e.lanes),
            e.hazmat.id,
            e.capacity.id,
            *(a.id for a in self.scoring.lane_adjustments),
        ]

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON encoding: equal documents, equal hashes."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        # Every decision is stamped with the hash: computed once per ruleset (a frozen model; equality ignores it).
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Sections that can be named as a whole in the protected list.
_PATHS = ("eligibility.max_risk_by_tier", "scoring.late_penalty_by_tier", "scoring.split_penalty", "split")


def parse_ruleset(*, document: object, origin: str) -> Ruleset:
    """Validate a ruleset document; errors name the field."""
    if not isinstance(document, dict):
        raise RulesetError(f"{origin}: expected a mapping at the top level")
    try:
        return Ruleset.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}" for err in exc.errors()
        )
        raise RulesetError(f"{origin}: {problems}") from None


def load_ruleset(*, path: Path) -> Ruleset:
    """Read and validate a ruleset YAML (or JSON) file."""
    if not path.exists():
        raise RulesetError(f"{path}: no such ruleset file")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RulesetError(f"{path}: not valid YAML: {exc}") from None
    return parse_ruleset(document=document, origin=str(path))


def seed_ruleset_path() -> Path:
    """The seed ruleset shipped with the project."""
    return Path(__file__).with_name("seed.yaml")
