"""History files: one clear error for bad input, nothing half-loaded; mappings; lenient quarantine."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.errors import HistoryError
from features.history import load_history
from features.labels import carrier_delay
from features.offline import build_features
from features.schema import REQUIRED_COLUMNS, validate_shipments


@pytest.fixture()
def good_csv(tmp_path: Path, small_history) -> Path:
    """Forty shipments of the twin as a CSV export."""
    path = tmp_path / "shipments.csv"
    small_history.shipments.head(40).to_csv(path, index=False)
    return path


def _rewrite(path: Path, change) -> Path:
    frame = pd.read_csv(path, dtype=str)
    change(frame)
    frame.to_csv(path, index=False)
    return path


def test_a_clean_export_loads(good_csv):
    history, report = load_history(path=good_csv)
    assert report.rows_read == report.rows_kept == 40
    assert history.shipments["order_time"].dtype == "datetime64[s]"


def test_missing_column_is_named(good_csv):
    _rewrite(good_csv, lambda f: f.pop("carrier"))
    with pytest.raises(HistoryError) as error:
        load_history(path=good_csv)
    message = str(error.value)
    assert str(good_csv) in message
    assert "missing required column(s): carrier" in message


def test_text_in_a_date_column_names_line_and_value(good_csv):
    def change(f):
        f.loc[3, "order_time"] = "next tuesday"

    _rewrite(good_csv, change)
    with pytest.raises(HistoryError) as error:
        load_history(path=good_csv)
    # Data row 3 sits on line 5 of the file (the header is line 1).
    assert "line 5" in str(error.value)
    assert "order_time: wrong type: 'next tuesday' is not a date/time" in str(error.value)


def test_delivered_before_handed_over_is_reported(good_csv):
    def change(f):
        f.loc[7, "delivered_at"] = "2020-01-01 00:00:00"

    _rewrite(good_csv, change)
    with pytest.raises(HistoryError, match="line 9 .*delivered before handed over"):
        load_history(path=good_csv)


def test_every_reason_is_listed_once_per_row(good_csv):
    def change(f):
        f.loc[1, "shipment_id"] = f.loc[0, "shipment_id"]
        f.loc[2, "service"] = "air"
        f.loc[4, "exception_codes"] = "lost|eaten"
        f.loc[5, "carrier"] = None
        f.loc[6, "cost"] = "cheap"

    _rewrite(good_csv, change)
    with pytest.raises(HistoryError) as error:
        load_history(path=good_csv)
    message = str(error.value)
    assert "duplicated shipment_id" in message
    assert "unknown code: 'air'" in message
    assert "unknown code: 'lost|eaten'" in message
    assert "carrier: missing required value" in message
    assert "'cheap' is not a number" in message
    assert "5 bad row(s)" in message
    assert "nothing was loaded" in message


def test_at_most_twenty_rows_are_shown(tmp_path, small_history):
    frame = small_history.shipments.head(100).copy()
    frame["service"] = "air"
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(HistoryError) as error:
        load_history(path=path)
    lines = [line for line in str(error.value).splitlines() if line.strip().startswith("row ")]
    assert len(lines) == 20
    assert "100 bad row(s)" in str(error.value)


def test_lenient_quarantines_bad_rows_with_reasons(good_csv, tmp_path):
    def change(f):
        f.loc[3, "order_time"] = "garbage"
        f.loc[8, "service"] = "air"

    _rewrite(good_csv, change)
    side = tmp_path / "side.csv"
    history, report = load_history(path=good_csv, lenient=True, quarantine_path=side)
    assert report.rows_kept == 38
    assert report.dropped_by_reason == {"wrong type": 1, "unknown code": 1}
    quarantined = pd.read_csv(side)
    assert list(quarantined["source_row"]) == [4, 9]
    assert quarantined["quarantine_reason"].str.contains("garbage").any()


def test_missing_columns_fail_even_when_lenient(good_csv, tmp_path):
    _rewrite(good_csv, lambda f: f.pop("promised_delivery"))
    with pytest.raises(HistoryError, match="promised_delivery"):
        load_history(path=good_csv, lenient=True, quarantine_path=tmp_path / "q.csv")
    assert not (tmp_path / "q.csv").exists()


def test_a_mapping_brings_a_foreign_export_in(tmp_path, small_history):
    frame = small_history.shipments.head(30).copy()
    theirs = pd.DataFrame(
        {
            "ShipmentNo": frame["shipment_id"],
            "OrderNo": frame["order_id"],
            "Created": frame["order_time"].dt.strftime("%d/%m/%Y %H:%M:%S"),
            "Site": frame["node_id"],
            "SiteKind": frame["node_type"].map({"dc": "DC", "store": "STR", "3pl": "TPL", "dropship": "VND"}),
            "Carrier": frame["carrier"],
            "Svc": frame["service"].map({"ground": "GRD", "two_day": "2DA", "next_day": "NDA"}),
            "PromiseDate": frame["promised_delivery"].dt.strftime("%d/%m/%Y"),
            "ShipBy": frame["ship_by"],
            "Pickup": frame["handed_over_at"],
            "POD": frame["delivered_at"],
        }
    )
    export = tmp_path / "export.csv"
    theirs.to_csv(export, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        """
columns: {shipment_id: ShipmentNo, order_id: OrderNo, order_time: Created, node_id: Site, node_type: SiteKind,
          carrier: Carrier, service: Svc, promised_delivery: PromiseDate, ship_by: ShipBy,
          handed_over_at: Pickup, delivered_at: POD}
formats: {order_time: "%d/%m/%Y %H:%M:%S", promised_delivery: "%d/%m/%Y"}
codes:
  node_type: {DC: dc, STR: store, TPL: 3pl, VND: dropship}
  service: {GRD: ground, 2DA: two_day, NDA: next_day}
copy: {allocated_at: order_time}
"""
    )
    history, report = load_history(path=export, mapping_path=mapping)
    assert report.rows_kept == 30
    pd.testing.assert_series_equal(
        history.shipments["service"], frame["service"].reset_index(drop=True), check_dtype=False, check_names=False
    )


def test_a_mapping_naming_unknown_columns_is_refused(tmp_path, good_csv):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("columns: {shipment_number: ShipmentNo}\n")
    with pytest.raises(HistoryError, match="unknown history column"):
        load_history(path=good_csv, mapping_path=mapping)


def test_a_history_with_only_the_required_columns_loads_and_builds_features(tmp_path, small_history):
    path = tmp_path / "minimal.csv"
    small_history.shipments[list(REQUIRED_COLUMNS)].head(200).to_csv(path, index=False)
    history, report = load_history(path=path)
    assert report.rows_kept == 200
    tables = build_features(history=history)
    assert len(tables["carrier_delay"]) == 200 and tables["carrier_delay"]["label"].isna().all()


def test_a_mapping_time_zone_keeps_local_calendar_days(tmp_path):
    frame = pd.DataFrame(
        {
            "shipment_id": ["a", "b", "c"],
            "order_id": ["o"] * 3,
            "order_time": ["2024-03-05 08:00"] * 3,
            "allocated_at": ["2024-03-05 09:00"] * 3,
            "node_id": ["n"] * 3,
            "node_type": ["dc"] * 3,
            "carrier": ["c"] * 3,
            "service": ["ground"] * 3,
            "promised_delivery": ["2024-03-05"] * 3,
            "handed_over_at": ["2024-03-05T09:30:00Z"] * 3,
            # Noon and 23:30 Berlin time are on the promised day; 00:30 the next day is late.
            "delivered_at": ["2024-03-05 12:00", "2024-03-05T22:30:00Z", "2024-03-05T23:30:00Z"],
        }
    )
    frame.to_csv(tmp_path / "export.csv", index=False)
    (tmp_path / "mapping.yaml").write_text("timezone: Europe/Berlin\n")
    history, _ = load_history(path=tmp_path / "export.csv", mapping_path=tmp_path / "mapping.yaml")
    assert list(carrier_delay(shipments=history.shipments)) == [0.0, 0.0, 1.0]
    assert history.shipments["handed_over_at"].iloc[0] == pd.Timestamp("2024-03-05 10:30")


def test_an_unknown_time_zone_is_named(tmp_path, good_csv):
    (tmp_path / "mapping.yaml").write_text("timezone: Mars/Olympus\n")
    with pytest.raises(HistoryError, match="Mars/Olympus"):
        load_history(path=good_csv, mapping_path=tmp_path / "mapping.yaml")


def test_twin_history_has_no_time_travel(small_run):
    _, report = validate_shipments(frame=small_run.shipments)
    assert report.ok, report.problems[:5]
