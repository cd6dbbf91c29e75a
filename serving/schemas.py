"""Request and response bodies of the HTTP API (pydantic); invalid input is a 422 naming the field."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from features.online import HISTORY_OF

Service = Literal["ground", "two_day", "next_day"]
NodeType = Literal["dc", "store", "3pl", "dropship"]
Tier = Literal["standard", "plus", "premium"]
ExceptionCode = Literal["node_rejected", "stock_discrepancy", "lost", "address_problem", "damaged"]


def _wall_clock(value: datetime) -> datetime:
    """A time as the naive wall clock the features keep (times with an offset are taken to UTC)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


EARLIEST, LATEST = date(2000, 1, 1), date(2100, 1, 1)


def _plausible_moment(value: datetime) -> datetime:
    """Times outside 2000-2099 are typos, not events (and beyond what timestamps can hold); then the wall clock."""
    if not EARLIEST <= value.date() < LATEST:
        raise ValueError(f"must fall between {EARLIEST} and {LATEST}")
    return _wall_clock(value)


Moment = Annotated[datetime, AfterValidator(_plausible_moment)]
# Checked by pydantic's core, not a Python call: a 50-candidate request carries 50 of them.
Day = Annotated[date, Field(ge=EARLIEST, lt=LATEST)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CandidateRiskCreate(_Body):
    """One (node, carrier, service) option to price."""

    node_id: str = Field(min_length=1)
    node_type: NodeType
    origin_region: str | None = None
    carrier: str = Field(min_length=1)
    service: Service
    dest_region: str | None = None
    distance_km: float | None = Field(default=None, ge=0)
    ship_by: Moment
    promised_delivery: Day
    decided_at: Moment | None = Field(default=None, description="decision time; default: now")


class RiskScoresCreate(_Body):
    """A batch of candidates to score."""

    candidates: list[CandidateRiskCreate] = Field(min_length=1)
    explain: bool = False


class Contribution(BaseModel):
    """One feature's share of a model's log-odds for a candidate."""

    feature: str
    contribution: float


Unknown = Annotated[
    list[Literal[tuple(HISTORY_OF)]],  # "node", "carrier", "lane"
    Field(
        default_factory=list,
        description="what the service has no history of for this candidate: its risk for them leans on "
        "network-wide rates (fallback priors)",
    ),
]


class CandidateRiskRead(BaseModel):
    """Risk of one candidate."""

    carrier_delay_risk: float
    node_congestion_risk: float
    late_risk: float
    unknown: Unknown
    explanation: dict[str, list[Contribution]] | None = None


class RiskScoresRead(BaseModel):
    """Risk of every candidate, with the models that priced them and how fresh their features were."""

    request_id: str
    scores: list[CandidateRiskRead]
    model_versions: dict[str, str]
    feature_freshness_seconds: float | None
    degraded: bool
    degraded_reasons: list[str]


class OrderLineCreate(_Body):
    """One line of an order."""

    line_id: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    quantity: int = Field(default=1, ge=1)
    hazmat: bool = False
    group: str | None = None


class OrderCreate(_Body):
    """The order to route."""

    order_id: str = Field(min_length=1)
    lines: list[OrderLineCreate] = Field(min_length=1, max_length=12)
    dest_region: str = Field(min_length=1)
    tier: Tier = "standard"
    promised_delivery: Day
    decided_at: Moment | None = None


class ShippingOptionCreate(_Body):
    """A carrier service a node can ship with."""

    carrier: str = Field(min_length=1)
    service: Service
    cost: float = Field(ge=0)
    transit_days: int = Field(ge=0, le=60)
    ship_by: Moment


class CandidateNodeCreate(_Body):
    """A node that could ship (part of) the order."""

    node_id: str = Field(min_length=1)
    node_type: NodeType
    region: str = Field(min_length=1)
    handling_cost: float = Field(default=0.0, ge=0)
    available: dict[str, int] = Field(description="line_id -> units on hand")
    options: list[ShippingOptionCreate] = Field(min_length=1)
    capacity: float | None = Field(default=None, ge=0)
    assigned_today: float = Field(default=0.0, ge=0)
    distance_km: float | None = Field(default=None, ge=0)


class Exclusion(_Body):
    """What failed and must not be chosen again (a node, or one of its carrier services)."""

    node_id: str
    carrier: str | None = None
    service: Service | None = None
    reason: Literal["node_rejected", "short_pick", "carrier_refused", "other"] = "other"


class DecisionCreate(_Body):
    """An order and its candidates."""

    order: OrderCreate
    candidates: list[CandidateNodeCreate] = Field(min_length=1)


class RerouteCreate(DecisionCreate):
    """A decision again after an exception, excluding what failed."""

    excluded: list[Exclusion] = Field(min_length=1)


class ShipmentRead(BaseModel):
    """One shipment of the chosen (or runner-up) allocation."""

    node_id: str
    carrier: str
    service: str
    lines: list[str]
    ship_by: datetime
    arrival: date
    late_risk: float
    cost: float


class AllocationRead(BaseModel):
    """An allocation and its total cost."""

    shipments: list[ShipmentRead]
    total: float


class OptionTraceRead(BaseModel):
    """How one candidate option fared."""

    node_id: str
    carrier: str
    service: str
    lines: list[str]
    eligible: bool
    excluded_by: str | None
    carrier_delay_risk: float
    node_congestion_risk: float
    late_risk: float
    shipping: float
    handling: float
    late_penalty: float
    lane_adjustment: float
    total: float | None
    unknown: Unknown


class DecisionRead(BaseModel):
    """The decision, its trace, and what made it (so it can be replayed)."""

    request_id: str
    order_id: str
    status: Literal["routed", "unroutable"]
    chosen: AllocationRead | None
    runner_up: AllocationRead | None
    margin: float | None
    unroutable_reason: str | None
    ruleset_name: str
    ruleset_hash: str
    ruleset_version: int | None = Field(description="the approved ruleset version that decided (None: a file ruleset)")
    model_versions: dict[str, str]
    degraded: bool
    degraded_reasons: list[str]
    trace: list[OptionTraceRead]


class _Event(_Body):
    event_id: str = Field(min_length=1, max_length=200, description="names one event forever; resending is harmless")
    event_time: Moment


class _ShipmentEvent(_Event):
    shipment_id: str = Field(min_length=1, max_length=200)


class AllocatedEvent(_ShipmentEvent):
    """A shipment was allocated to a node, carrier and service."""

    event_type: Literal["allocated"]
    node_id: str = Field(min_length=1)
    node_type: NodeType
    carrier: str = Field(min_length=1)
    service: Service
    origin_region: str | None = None
    dest_region: str | None = None
    distance_km: float | None = Field(default=None, ge=0)
    ship_by: Moment | None = None
    promised_delivery: Day


class HandedOverEvent(_ShipmentEvent):
    """The carrier took the parcel."""

    event_type: Literal["handed_over"]


class DeliveredEvent(_ShipmentEvent):
    """The parcel reached the customer."""

    event_type: Literal["delivered"]


class ExceptionEvent(_ShipmentEvent):
    """Something went wrong with a shipment."""

    event_type: Literal["exception"]
    exception_code: ExceptionCode


class NodeCapacityEvent(_Event):
    """A node's capacity and backlog at the start of a day (stamped at midnight)."""

    event_type: Literal["node_capacity"]
    node_id: str = Field(min_length=1)
    capacity: float = Field(ge=0)
    backlog_start: float | None = Field(default=None, ge=0)

    @field_validator("event_time")
    @classmethod
    def _at_midnight(cls, value: datetime) -> datetime:
        if value.time() != time(0):
            raise ValueError("a node_capacity event is stamped at midnight of the day it describes")
        return value


class DisruptionNoticeEvent(_Event):
    """An announced disruption of a region (for one carrier, or all)."""

    event_type: Literal["disruption_notice"]
    region: str = Field(min_length=1)
    carrier: str | None = None
    severity: float = Field(ge=0)
    start: Moment
    end: Moment


Event = Annotated[
    AllocatedEvent | HandedOverEvent | DeliveredEvent | ExceptionEvent | NodeCapacityEvent | DisruptionNoticeEvent,
    Field(discriminator="event_type"),
]


class EventsCreate(_Body):
    """A batch of events, recorded all or nothing."""

    events: list[Event] = Field(min_length=1, max_length=10_000)


class EventsRead(BaseModel):
    """What a batch of events did."""

    request_id: str
    accepted: int
    duplicates: list[str] = Field(description="event ids already recorded with the same content (ignored)")
    features_as_of: datetime | None = Field(description="the newest event time this worker's features know")


# ----- the approval loop -------------------------------------------------------------------------
class ProposalCreate(_Body):
    """A proposed rule change (JSON Patch against the active ruleset) or model promotion."""

    kind: Literal["rule_change", "model_promotion"]
    target: str = Field(min_length=1, max_length=200, description="what it changes, e.g. capacity:DC01 or model:NAME")
    diff: list[dict] | dict = Field(
        description='rule_change: RFC 6902 operations; model_promotion: {"model": NAME, "version": VERSION}'
    )
    rationale: str = Field(min_length=1, max_length=5_000)
    evidence: dict = Field(default_factory=dict, description="figures, models and versions, MLflow run id, data window")
    backtest: dict | None = None


class DecisionReason(_Body):
    """An ops lead's decision, with its reason and (for approvals) the content hash they reviewed."""

    reason: str = Field(min_length=1, max_length=5_000)
    content_hash: str | None = Field(default=None, min_length=64, max_length=64)


class WithdrawCreate(_Body):
    """Why a proposal is withdrawn."""

    reason: str = Field(min_length=1, max_length=5_000)


class RebaseCreate(_Body):
    """A stale proposal re-anchored on what is current (optionally with a new diff)."""

    diff: list[dict] | dict | None = None


class ProposalDecisionRead(BaseModel):
    """One approval or rejection."""

    model_config = ConfigDict(from_attributes=True)

    actor: str
    decision: str
    reason: str
    content_hash: str
    created_at: datetime


class ProposalRead(BaseModel):
    """A proposal and where it stands."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    target: str
    diff: list[dict] | dict
    rationale: str
    evidence: dict
    backtest: dict | None
    proposer: str
    content_hash: str
    base_version: int | None
    base_champion: str | None
    status: str
    required_approvals: int
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    applied_at: datetime | None
    applied_version: int | None
    decisions: list[ProposalDecisionRead] = Field(default_factory=list)


class RulesetVersionRead(BaseModel):
    """A ruleset version (its document only when asked for one version)."""

    model_config = ConfigDict(from_attributes=True)

    number: int
    name: str
    content_hash: str
    created_at: datetime
    created_by: str
    proposal_id: int | None
    note: str
    active: bool = False
    content: dict | None = None


class RulesetDiffRead(BaseModel):
    """What turns one version into another (RFC 6902)."""

    from_version: int
    to_version: int
    diff: list[dict]


class RollbackCreate(_Body):
    """Point the active ruleset back at an earlier version, now."""

    to_version: int = Field(ge=1, le=2**53)
    reason: str = Field(min_length=1, max_length=5_000)


class AuditEntryRead(BaseModel):
    """One link of the audit chain."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict | None
    after: dict | None
    reason: str | None
    prev_hash: str
    hash: str


class AuditVerifyRead(BaseModel):
    """The chain walked from the first entry."""

    ok: bool
    entries: int
    broken_at: int | None
    problem: str | None


Role = Literal["router", "ops_lead", "data_scientist", "admin"]


class TokenCreate(_Body):
    """A new API token."""

    name: str = Field(min_length=1, max_length=200)
    role: Role


class TokenRead(BaseModel):
    """A token's record (never the token itself)."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    """A token just made: shown this once."""

    token: str
