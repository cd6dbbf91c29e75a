"""The delivery-history contract: one row per shipment, validated with pandera.

Validation never stops at the first problem: it collects every bad row with a reason, so that a
user sees one report naming the file, the missing columns and the bad rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

SERVICES = ("ground", "two_day", "next_day")
NODE_TYPES = ("dc", "store", "3pl", "dropship")
TIERS = ("standard", "plus", "premium")
EXCEPTION_CODES = ("node_rejected", "stock_discrepancy", "lost", "address_problem", "damaged")
EXCEPTION_SEPARATOR = "|"
PICK_FAILURE_CODES = ("node_rejected", "stock_discrepancy")

REQUIRED_COLUMNS = (
    "shipment_id",
    "order_id",
    "order_time",
    "allocated_at",
    "node_id",
    "node_type",
    "carrier",
    "service",
    "promised_delivery",
)
OPTIONAL_COLUMNS = (
    "origin_region",
    "dest_region",
    "distance_km",
    "ship_by",
    "handed_over_at",
    "delivered_at",
    "exception_codes",
    "exception_at",
    "cost",
)
DATETIME_COLUMNS = (
    "order_time",
    "allocated_at",
    "promised_delivery",
    "ship_by",
    "handed_over_at",
    "delivered_at",
    "exception_at",
)
NUMBER_COLUMNS = ("distance_km", "cost")
# What a shipment's plan says, all known when it is routed: the inputs of a decision row.
PLAN_COLUMNS = (
    "node_id",
    "node_type",
    "carrier",
    "service",
    "origin_region",
    "dest_region",
    "distance_km",
    "ship_by",
    "promised_delivery",
)
TEXT_COLUMNS = (
    "shipment_id",
    "order_id",
    *(c for c in PLAN_COLUMNS if c not in DATETIME_COLUMNS + NUMBER_COLUMNS),
    "exception_codes",
)
KNOWN_CODES = {"node_type": NODE_TYPES, "service": SERVICES, "exception_codes": EXCEPTION_CODES}
# Pairs (earlier, later) that must hold whenever both are known.
TIME_ORDER = (
    ("order_time", "allocated_at", "allocated before the order was placed"),
    ("allocated_at", "handed_over_at", "handed over before it was allocated"),
    ("handed_over_at", "delivered_at", "delivered before handed over"),
)


@dataclass(frozen=True)
class RowProblem:
    """One reason one row is bad."""

    row: int
    column: str
    reason: str


@dataclass(frozen=True)
class ValidationReport:
    """What validation found: missing columns and bad rows (by positional row index)."""

    missing_columns: tuple[str, ...]
    problems: tuple[RowProblem, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.missing_columns and not self.problems

    def bad_rows(self) -> np.ndarray:
        """Sorted positional indices of rows with at least one problem."""
        return np.unique(np.fromiter((p.row for p in self.problems), dtype=np.int64, count=len(self.problems)))

    def counts_by_reason(self) -> dict[str, int]:
        """Number of distinct bad rows per reason kind."""
        seen: dict[str, set[int]] = {}
        for problem in self.problems:
            seen.setdefault(_reason_kind(problem.reason), set()).add(problem.row)
        return {kind: len(rows) for kind, rows in sorted(seen.items(), key=lambda kv: -len(kv[1]))}


def _reason_kind(reason: str) -> str:
    """The stable part of a reason (without the offending value), for counting."""
    return reason.split(":", 1)[0]


def _exception_codes_known(codes: pd.Series) -> pd.Series:
    """True where every '|'-separated exception code is a known one."""
    present = codes.dropna()
    parts = present.str.split(EXCEPTION_SEPARATOR, regex=False).explode()
    known = parts.isin(EXCEPTION_CODES) | (parts == "")
    verdict = pd.Series(True, index=codes.index)
    verdict.loc[present.index] = known.groupby(level=0).all().reindex(present.index, fill_value=True)
    return verdict


def _first_of_its_value(column: str) -> pa.Check:
    """A check that flags every repeat of a value after its first row."""
    return pa.Check(lambda s: ~s.duplicated(keep="first"), name=f"duplicated {column}")


def _known(codes: tuple[str, ...]) -> pa.Check:
    """A check that every value is one of the known codes."""
    return pa.Check(lambda s: s.isin(codes), name="unknown code")


def shipment_schema() -> pa.DataFrameSchema:
    """The pandera schema of a coerced shipment-history frame."""
    text = dict(nullable=False)
    return pa.DataFrameSchema(
        {
            "shipment_id": pa.Column(checks=_first_of_its_value("shipment_id"), **text),
            "order_id": pa.Column(**text),
            "order_time": pa.Column(**text),
            "allocated_at": pa.Column(**text),
            "node_id": pa.Column(**text),
            "node_type": pa.Column(checks=_known(NODE_TYPES), **text),
            "carrier": pa.Column(**text),
            "service": pa.Column(checks=_known(SERVICES), **text),
            "promised_delivery": pa.Column(**text),
            "distance_km": pa.Column(checks=pa.Check.ge(0, name="negative value"), nullable=True, required=False),
            "cost": pa.Column(checks=pa.Check.ge(0, name="negative value"), nullable=True, required=False),
            "exception_codes": pa.Column(
                checks=pa.Check(_exception_codes_known, name="unknown code"), nullable=True, required=False
            ),
        },
        checks=[
            pa.Check(
                lambda df, early=early, late=late: (
                    ~(df[late] < df[early]) if {early, late} <= set(df.columns) else pd.Series(True, index=df.index)
                ),
                name=message,
            )
            for early, late, message in TIME_ORDER
        ],
        strict=False,
    )


OFFSET_PATTERN = r"(?:Z|[+-]\d{2}:?\d{2})$"


def _parse_wall_clock(*, text: pd.Series, fmt: str, zone: str) -> pd.Series:
    """Timestamps as naive wall-clock time in `zone`: those with an offset are converted, the rest taken as local."""
    with_offset = text.notna() & text.str.contains(OFFSET_PATTERN, regex=True, na=False)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if with_offset.any():
        aware = pd.to_datetime(text[with_offset], format=fmt, errors="coerce", utc=True)
        parsed[with_offset] = aware.dt.tz_convert(zone).dt.tz_localize(None)
    plain = text.notna() & ~with_offset
    if plain.any():
        parsed[plain] = pd.to_datetime(text[plain], format=fmt, errors="coerce")
    return parsed


@dataclass(frozen=True)
class Contract:
    """What one kind of frame must look like: its columns by type, and its pandera schema."""

    name: str
    id_column: str
    required: tuple[str, ...]
    datetimes: tuple[str, ...]
    numbers: tuple[str, ...]
    texts: tuple[str, ...]
    schema: Callable[[], pa.DataFrameSchema]
    optional: tuple[str, ...] = ()

    def fill_optional(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Add every optional column the frame lacks, empty and typed, so later code never meets a KeyError."""
        for column in self.optional:
            if column in frame.columns:
                continue
            if column in self.datetimes:
                frame[column] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[s]")
            elif column in self.numbers:
                frame[column] = np.nan
            else:
                frame[column] = pd.Series(None, index=frame.index, dtype="str")
        return frame


def coerce_types(
    *,
    frame: pd.DataFrame,
    contract: Contract,
    formats: dict[str, str] | None = None,
    timezone: str | None = None,
) -> tuple[pd.DataFrame, list[RowProblem]]:
    """Parse dates (to naive UTC) and numbers; every value that does not parse becomes a 'wrong type' problem."""
    formats = formats or {}
    out = frame.copy()
    problems: list[RowProblem] = []
    positions = np.arange(len(frame))
    zone = timezone or "UTC"
    for column in contract.datetimes:
        if column not in out.columns:
            continue
        raw = out[column]
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = raw.dt.tz_convert(zone).dt.tz_localize(None) if getattr(raw.dt, "tz", None) else raw
        else:
            text = raw.astype("str").str.strip().where(raw.notna(), None)
            text = text.where(text != "", None)
            parsed = _parse_wall_clock(text=text, fmt=formats.get(column, "mixed"), zone=zone)
            bad = text.notna() & parsed.isna()
            problems += [
                RowProblem(int(i), column, f"wrong type: {value!r} is not a date/time")
                for i, value in zip(positions[bad.to_numpy()], text[bad])
            ]
        out[column] = parsed.astype("datetime64[s]")
    for column in contract.numbers:
        if column not in out.columns:
            continue
        raw = out[column]
        parsed = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & (raw.astype("str").str.strip() != "") & parsed.isna()
        problems += [
            RowProblem(int(i), column, f"wrong type: {value!r} is not a number")
            for i, value in zip(positions[bad.to_numpy()], raw[bad])
        ]
        out[column] = parsed.astype("float64")
    for column in contract.texts:
        if column in out.columns:
            values = out[column].astype("str").str.strip().where(out[column].notna(), None)
            out[column] = values.where(values != "", None).astype("str")
    return out, problems


def validate_frame(
    *, frame: pd.DataFrame, contract: Contract, formats: dict[str, str] | None = None, timezone: str | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Coerce and validate a frame against a contract; returns the coerced frame and the report."""
    frame = frame.reset_index(drop=True)
    missing = tuple(c for c in contract.required if c not in frame.columns)
    coerced, problems = coerce_types(frame=frame, contract=contract, formats=formats, timezone=timezone)
    coerced = contract.fill_optional(coerced)
    schema = contract.schema()
    if missing:
        schema = schema.remove_columns([c for c in missing if c in schema.columns])
    try:
        schema.validate(coerced, lazy=True)
    except pa.errors.SchemaErrors as errors:
        problems += _problems_from(failures=errors.failure_cases, frame=coerced)
    # A value that failed to parse is reported as the wrong type, not again as missing.
    unparsed = {(p.row, p.column) for p in problems if p.reason.startswith("wrong type")}
    problems = [p for p in problems if p.reason.startswith("wrong type") or (p.row, p.column) not in unparsed]
    unique = {(p.row, p.column, p.reason): p for p in problems}
    ordered = tuple(sorted(unique.values(), key=lambda p: (p.row, p.column)))
    return coerced, ValidationReport(missing_columns=missing, problems=ordered)


def _problems_from(*, failures: pd.DataFrame, frame: pd.DataFrame) -> list[RowProblem]:
    """Turn pandera's failure cases into row problems with readable reasons."""
    problems: list[RowProblem] = []
    for record in failures.itertuples(index=False):
        if record.index is None or pd.isna(record.index):
            continue
        row = int(record.index)
        check = str(record.check)
        column = str(record.column)
        value = record.failure_case
        if check == "not_nullable":
            reason = "missing required value"
        elif " is required for " in check:
            # Frame-level checks are reported for every other column; name the one they are about.
            column = check.split(" ", 1)[0]
            reason = f"missing required value: {check}"
        elif check == "unknown code":
            reason = f"unknown code: {value!r} (known: {', '.join(KNOWN_CODES.get(column, ()))})"
        elif check.startswith("duplicated "):
            reason = f"{check}: {value!r}"
        elif check == "negative value":
            reason = f"negative value: {value!r}"
        elif record.schema_context == "DataFrameSchema":
            # Frame-level checks are reported once per column; keep one line naming the pair.
            pair = next(((early, late) for early, late, m in TIME_ORDER if m == check), None)
            if pair is None or column != pair[1]:
                continue
            reason = f"{check}: {pair[0]}={frame.at[row, pair[0]]}, {pair[1]}={frame.at[row, pair[1]]}"
        else:
            reason = f"{check}: {value!r}"
        problems.append(RowProblem(row, column, reason))
    return problems


SHIPMENTS = Contract(
    name="shipment",
    id_column="shipment_id",
    required=REQUIRED_COLUMNS,
    datetimes=DATETIME_COLUMNS,
    numbers=NUMBER_COLUMNS,
    texts=TEXT_COLUMNS,
    schema=shipment_schema,
    optional=OPTIONAL_COLUMNS,
)


def validate_shipments(
    *, frame: pd.DataFrame, formats: dict[str, str] | None = None, timezone: str | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Coerce and validate a shipment-history frame; returns the coerced frame and the report."""
    return validate_frame(frame=frame, contract=SHIPMENTS, formats=formats, timezone=timezone)


EVENT_TYPES = ("node_capacity", "disruption_notice", "allocated", "handed_over", "delivered", "exception")
SHIPMENT_EVENT_TYPES = ("allocated", "handed_over", "delivered", "exception")
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "event_time",
    "shipment_id",
    *PLAN_COLUMNS,
    "exception_code",
    "capacity",
    "backlog_start",
    "region",
    "severity",
    "start",
    "end",
)
KNOWN_CODES["event_type"] = EVENT_TYPES
KNOWN_CODES["exception_code"] = EXCEPTION_CODES


def _needs(column: str, *, event_types: tuple[str, ...]) -> pa.Check:
    """A check that the column is present on events of the given types."""
    return pa.Check(
        lambda df: (
            ~df["event_type"].isin(event_types)
            | (df[column].notna() if column in df.columns else pd.Series(False, index=df.index))
        ),
        name=f"{column} is required for {'/'.join(event_types)} events",
    )


def event_schema() -> pa.DataFrameSchema:
    """The pandera schema of a coerced outcome-event frame."""
    return pa.DataFrameSchema(
        {
            "event_id": pa.Column(checks=_first_of_its_value("event_id"), nullable=False),
            "event_type": pa.Column(checks=_known(EVENT_TYPES), nullable=False),
            "event_time": pa.Column(nullable=False),
            "exception_code": pa.Column(checks=_known(EXCEPTION_CODES), nullable=True, required=False),
            "capacity": pa.Column(checks=pa.Check.ge(0, name="negative value"), nullable=True, required=False),
        },
        checks=[
            _needs("shipment_id", event_types=SHIPMENT_EVENT_TYPES),
            _needs("exception_code", event_types=("exception",)),
            _needs("node_id", event_types=("allocated", "node_capacity")),
            _needs("carrier", event_types=("allocated",)),
            _needs("promised_delivery", event_types=("allocated",)),
            _needs("capacity", event_types=("node_capacity",)),
            _needs("region", event_types=("disruption_notice",)),
            _needs("start", event_types=("disruption_notice",)),
            _needs("end", event_types=("disruption_notice",)),
        ],
        strict=False,
    )


EVENTS = Contract(
    name="event",
    id_column="event_id",
    required=("event_id", "event_type", "event_time"),
    datetimes=("event_time", "ship_by", "promised_delivery", "start", "end"),
    numbers=("distance_km", "capacity", "backlog_start", "severity"),
    texts=(
        "event_id",
        "event_type",
        "shipment_id",
        *(c for c in PLAN_COLUMNS if c in TEXT_COLUMNS),
        "exception_code",
        "region",
    ),
    schema=event_schema,
    optional=tuple(c for c in EVENT_COLUMNS if c not in ("event_id", "event_type", "event_time")),
)


def validate_events(*, frame: pd.DataFrame) -> tuple[pd.DataFrame, ValidationReport]:
    """Coerce and validate an outcome-event frame; returns the coerced frame and the report."""
    return validate_frame(frame=frame, contract=EVENTS)
