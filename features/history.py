"""Loading delivery history: files or twin folders in, one validated `History` out, or one clear error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HistoryError
from features.labels import carrier_delay, late_handover
from features.mapping import ColumnMapping, apply_mapping, load_mapping
from features.schema import EVENTS, SHIPMENTS, Contract, ValidationReport, validate_frame
from features.storage import write_atomically

MAX_ROWS_SHOWN = 20
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class History:
    """Validated shipment history plus the optional node-day and disruption-notice tables."""

    shipments: pd.DataFrame
    node_days: pd.DataFrame | None = None
    notices: pd.DataFrame | None = None
    source: str = ""


@dataclass
class LoadReport:
    """How many rows were read and kept, and why the others were dropped."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    kept_notes: dict[str, int] = field(default_factory=dict)
    quarantine_path: Path | None = None


def read_table(*, path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; unreadable files raise a HistoryError naming the file."""
    if not path.exists():
        raise HistoryError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype="str", keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HistoryError(f"{path}: cannot be read: {exc}") from None
    raise HistoryError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def _find(*, folder: Path, stem: str) -> Path | None:
    """The CSV or Parquet file named stem in a folder, if any."""
    for suffix in TABLE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def load_history(
    *,
    path: Path,
    mapping_path: Path | None = None,
    lenient: bool = False,
    quarantine_path: Path | None = None,
) -> tuple[History, LoadReport]:
    """Load and validate history from a shipments file or a folder holding shipments.{csv,parquet}."""
    if path.is_dir():
        shipments_file = _find(folder=path, stem="shipments")
        if shipments_file is None:
            raise HistoryError(f"{path}: no shipments.parquet or shipments.csv in this folder")
    else:
        shipments_file = path
    mapping = load_mapping(path=mapping_path) if mapping_path else ColumnMapping()
    shipments, report = load_table(
        path=shipments_file, contract=SHIPMENTS, mapping=mapping, lenient=lenient, quarantine_path=quarantine_path
    )
    folder = path if path.is_dir() else None
    node_days = _optional_table(folder=folder, stem="node_days")
    notices = _optional_table(folder=folder, stem="notices")
    return History(shipments=shipments, node_days=node_days, notices=notices, source=str(path)), report


def load_events(
    *, path: Path, lenient: bool = False, quarantine_path: Path | None = None
) -> tuple[pd.DataFrame, LoadReport]:
    """Load and validate an outcome-event file (CSV or Parquet)."""
    return load_table(
        path=path, contract=EVENTS, mapping=ColumnMapping(), lenient=lenient, quarantine_path=quarantine_path
    )


def load_table(
    *, path: Path, contract: Contract, mapping: ColumnMapping, lenient: bool, quarantine_path: Path | None
) -> tuple[pd.DataFrame, LoadReport]:
    """Read, map and validate one file; raise one clear error, or quarantine bad rows when lenient."""
    raw = read_table(path=path)
    mapped = apply_mapping(frame=raw, mapping=mapping, source=str(path))
    coerced, report = validate_frame(
        frame=mapped, contract=contract, formats=mapping.effective_formats(), timezone=mapping.timezone
    )
    load_report = LoadReport(source=str(path), rows_read=len(raw))
    if report.missing_columns or (report.problems and not lenient):
        raise HistoryError(render_report(source=path, report=report, frame=coerced, contract=contract))
    if report.problems:
        load_report.dropped_by_reason = report.counts_by_reason()
        load_report.quarantine_path = quarantine_path or path.with_name(path.stem + ".quarantine.csv")
        write_quarantine(frame=raw, report=report, path=load_report.quarantine_path)
        coerced = coerced.drop(index=report.bad_rows()).reset_index(drop=True)
    load_report.rows_kept = len(coerced)
    return coerced, load_report


SIDE_TABLES = {
    "node_days": (("date",), ("node_id", "capacity", "backlog_start")),
    "notices": (("announced_at", "start", "end"), ("region", "severity")),
}


def _optional_table(*, folder: Path | None, stem: str) -> pd.DataFrame | None:
    """A side table of a history folder (node_days, notices), checked and with its dates parsed."""
    if folder is None:
        return None
    found = _find(folder=folder, stem=stem)
    if found is None:
        return None
    frame = read_table(path=found)
    date_columns, other_columns = SIDE_TABLES[stem]
    missing = [c for c in (*date_columns, *other_columns) if c not in frame.columns]
    if missing:
        raise HistoryError(f"{found}: missing column(s) {', '.join(missing)}")
    for column in date_columns:
        parsed = pd.to_datetime(frame[column], errors="coerce", utc=True).dt.tz_localize(None)
        if parsed.isna().any():
            rows = np.flatnonzero(parsed.isna().to_numpy())[:MAX_ROWS_SHOWN] + 1
            raise HistoryError(f"{found}: column {column!r} has values that are not dates in rows {list(rows)}")
        frame[column] = parsed.astype("datetime64[s]")
    for column in ("capacity", "backlog_start", "severity"):
        if column in frame.columns:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.isna().any() and column != "backlog_start":
                rows = np.flatnonzero(numbers.isna().to_numpy())[:MAX_ROWS_SHOWN] + 1
                raise HistoryError(f"{found}: column {column!r} has values that are not numbers in rows {list(rows)}")
            frame[column] = numbers
    if stem == "notices" and "carrier" not in frame.columns:
        frame["carrier"] = None  # a notice without a carrier applies to every carrier
    return frame


def write_quarantine(*, frame: pd.DataFrame, report: ValidationReport, path: Path) -> None:
    """Write the bad rows, with their reasons, to a side file (atomically)."""
    reasons: dict[int, list[str]] = {}
    for problem in report.problems:
        reasons.setdefault(problem.row, []).append(f"{problem.column}: {problem.reason}")
    rows = sorted(reasons)
    side = frame.iloc[rows].copy()
    side.insert(0, "quarantine_reason", ["; ".join(reasons[r]) for r in rows])
    side.insert(0, "source_row", [r + 1 for r in rows])
    write_atomically(path=path, writer=lambda target: side.to_csv(target, index=False))


def render_report(
    *, source: Path, report: ValidationReport, frame: pd.DataFrame, contract: Contract = SHIPMENTS
) -> str:
    """One readable error: the file, the missing columns, up to 20 bad rows and the counts by reason."""
    lines = [f"{source}: does not match the {contract.name} schema"]
    if report.missing_columns:
        lines.append(f"  missing required column(s): {', '.join(report.missing_columns)}")
    if report.problems:
        bad = report.bad_rows()
        row_word = "line" if source.suffix == ".csv" else "row"
        # CSV line numbers count the header line, so data row i is on line i + 2.
        offset = 2 if source.suffix == ".csv" else 1
        lines.append(f"  {len(bad)} bad row(s); the first {min(len(bad), MAX_ROWS_SHOWN)}:")
        by_row: dict[int, list[str]] = {}
        for problem in report.problems:
            by_row.setdefault(problem.row, []).append(f"{problem.column}: {problem.reason}")
        id_column = contract.id_column
        ids = frame[id_column] if id_column in frame.columns else None
        for row in bad[:MAX_ROWS_SHOWN]:
            label = f" ({id_column} {ids.iat[row]})" if ids is not None and pd.notna(ids.iat[row]) else ""
            lines.append(f"    {row_word} {row + offset}{label}: {'; '.join(by_row[int(row)])}")
        counts = ", ".join(f"{kind}: {n}" for kind, n in report.counts_by_reason().items())
        lines.append(f"  bad rows by reason: {counts}")
    lines.append("  nothing was loaded; fix the file or pass --lenient to quarantine the bad rows")
    return "\n".join(lines)


def weekly_summary(*, shipments: pd.DataFrame) -> pd.DataFrame:
    """Shipments and the two outcome rates per ISO week of allocation."""
    return _rates(shipments=shipments, by=shipments["allocated_at"].dt.to_period("W-SUN").dt.start_time.dt.date)


def carrier_summary(*, shipments: pd.DataFrame) -> pd.DataFrame:
    """Shipments and the two outcome rates per carrier."""
    return _rates(shipments=shipments, by=shipments["carrier"])


def _rates(*, shipments: pd.DataFrame, by: pd.Series) -> pd.DataFrame:
    """Counts and mean labels grouped by a key (labels unknown are left out of the rate)."""
    frame = pd.DataFrame(
        {
            "key": by.to_numpy(),
            "carrier_delay": carrier_delay(shipments=shipments),
            "late_handover": late_handover(shipments=shipments),
        }
    )
    grouped = frame.groupby("key", sort=True)
    return pd.DataFrame(
        {
            "shipments": grouped.size(),
            "carrier_delay_rate": grouped["carrier_delay"].mean(),
            "late_handover_rate": grouped["late_handover"].mean(),
        }
    )


def stylized_facts(*, shipments: pd.DataFrame, min_week_shipments: int = 200) -> dict[str, float]:
    """The shape of a delivery history: burstiness, load, propagation and tail (for twin-vs-real checks)."""
    from features.calendar import thanksgiving

    delay = carrier_delay(shipments=shipments)
    handover = late_handover(shipments=shipments)
    allocated = shipments["allocated_at"]
    week = allocated.dt.to_period("W-SUN").dt.start_time
    weekly = pd.DataFrame({"week": week, "late": delay}).dropna().groupby("week")["late"].agg(["size", "mean"])
    weekly = weekly[weekly["size"] >= min_week_shipments]
    black_friday_weeks = {
        pd.Timestamp(thanksgiving(year=int(y))) + pd.Timedelta(days=1) for y in allocated.dt.year.unique()
    }
    peak_weeks = [w for w in weekly.index if any(w <= d < w + pd.Timedelta(days=7) for d in black_friday_weeks)]
    median_week = float(weekly["mean"].median()) if len(weekly) else np.nan
    known = ~np.isnan(delay) & ~np.isnan(handover)
    late_after_late_handover = (
        float(delay[known & (handover == 1)].mean()) if (known & (handover == 1)).any() else np.nan
    )
    late_after_on_time = float(delay[known & (handover == 0)].mean()) if (known & (handover == 0)).any() else np.nan
    delivered = shipments["delivered_at"].to_numpy(dtype="datetime64[s]").astype("datetime64[D]")
    promised = shipments["promised_delivery"].to_numpy(dtype="datetime64[s]").astype("datetime64[D]")
    days_late = (delivered - promised).astype("timedelta64[D]").astype(float)
    days_late = days_late[(delay == 1) & ~np.isnat(delivered)]
    weekday = pd.Series(delay).groupby(allocated.dt.day_of_week.to_numpy()).mean()
    return {
        "shipments": int(len(shipments)),
        "carrier_delay_rate": float(np.nanmean(delay)),
        "late_handover_rate": float(np.nanmean(handover)) if (~np.isnan(handover)).any() else np.nan,
        "weekly_late_p10": float(weekly["mean"].quantile(0.1)) if len(weekly) else np.nan,
        "weekly_late_median": median_week,
        "weekly_late_p90": float(weekly["mean"].quantile(0.9)) if len(weekly) else np.nan,
        "weekly_late_max": float(weekly["mean"].max()) if len(weekly) else np.nan,
        "peak_week_late": float(weekly.loc[peak_weeks, "mean"].max()) if peak_weeks else np.nan,
        "volume_late_corr": float(weekly["size"].corr(weekly["mean"])) if len(weekly) > 2 else np.nan,
        "weekday_late_min": float(weekday.min()),
        "weekday_late_max": float(weekday.max()),
        "late_given_late_handover": late_after_late_handover,
        "late_given_on_time_handover": late_after_on_time,
        "days_late_median": float(np.median(days_late)) if days_late.size else np.nan,
        "days_late_p75": float(np.quantile(days_late, 0.75)) if days_late.size else np.nan,
        "days_late_p90": float(np.quantile(days_late, 0.9)) if days_late.size else np.nan,
    }
