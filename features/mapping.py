"""Column mappings: how a user's own export becomes the history schema.

A mapping is a small YAML file::

    columns:   {shipment_id: ShipmentNo, order_time: Created}   # ours: theirs
    formats:   {order_time: "%d/%m/%Y %H:%M"}                   # date formats, per our column
    codes:     {service: {GRD: ground, 2DA: two_day}}            # value translations
    defaults:  {node_type: dc}                                   # constants for absent columns
    copy:      {allocated_at: order_time}                        # one of our columns from another
    timezone:  Europe/Berlin    # the business's zone: offsets converted to it, plain times taken as local
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import HistoryError
from features.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

KNOWN = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)


class ColumnMapping(BaseModel):
    """A validated column mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    columns: dict[str, str] = {}
    formats: dict[str, str] = {}
    codes: dict[str, dict[str, str]] = {}
    defaults: dict[str, str | float | int] = {}
    copies: dict[str, str] = Field(default={}, alias="copy")
    timezone: str | None = None

    def effective_formats(self) -> dict[str, str]:
        """Date formats per our column; a copied column is parsed with its source's format."""
        copied = {ours: self.formats[other] for ours, other in self.copies.items() if other in self.formats}
        return {**copied, **self.formats}


def load_mapping(*, path: Path) -> ColumnMapping:
    """Read and check a mapping file; unknown target columns are an error, not a silent no-op."""
    if not path.exists():
        raise HistoryError(f"{path}: no such mapping file")
    try:
        document = yaml.safe_load(path.read_text()) or {}
        mapping = ColumnMapping.model_validate(document)
    except yaml.YAMLError as exc:
        raise HistoryError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HistoryError(f"{path}: {problems}") from None
    named = (
        set(mapping.columns) | set(mapping.formats) | set(mapping.codes) | set(mapping.defaults) | set(mapping.copies)
    )
    named |= set(mapping.copies.values())
    if mapping.timezone:
        try:
            ZoneInfo(mapping.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise HistoryError(f"{path}: timezone {mapping.timezone!r} is not an IANA time zone name") from None
    unknown = sorted(named - KNOWN)
    if unknown:
        raise HistoryError(f"{path}: unknown history column(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    return mapping


def apply_mapping(*, frame: pd.DataFrame, mapping: ColumnMapping, source: str) -> pd.DataFrame:
    """Rename, translate codes, fill defaults and copies, so the frame speaks the history schema."""
    absent = sorted(theirs for theirs in mapping.columns.values() if theirs not in frame.columns)
    if absent:
        raise HistoryError(
            f"{source}: the mapping names column(s) not in the file: {', '.join(absent)}; "
            f"the file has: {', '.join(map(str, frame.columns))}"
        )
    out = frame.rename(columns={theirs: ours for ours, theirs in mapping.columns.items()})
    for column, translation in mapping.codes.items():
        if column in out.columns:
            out[column] = out[column].map(lambda v, t=translation: t.get(str(v), v) if pd.notna(v) else v)
    for column, value in mapping.defaults.items():
        if column not in out.columns:
            out[column] = value
    for ours, other in mapping.copies.items():
        if other in out.columns and ours not in out.columns:
            out[ours] = out[other]
    return out
