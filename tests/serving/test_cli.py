"""The command line as a new user meets it: clear errors, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd


def _riskroute(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_subcommand_with_a_line_each():
    result = _riskroute("--help")
    assert result.returncode == 0
    for command in ("simulate", "run", "history", "features"):
        assert command in result.stdout
    nested = _riskroute("history", "--help")
    assert "validate" in nested.stdout and "summary" in nested.stdout


def test_bad_history_exits_2_with_the_file_and_rows_and_writes_nothing(tmp_path, small_history):
    frame = small_history.shipments.head(25).copy()
    frame = frame.drop(columns=["promised_delivery"])
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "features"
    result = _riskroute("features", "build", "--history", str(path), "--out", str(out))
    assert result.returncode == 2
    assert str(path) in result.stderr and "promised_delivery" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


def test_text_in_a_date_and_delivery_before_handover_are_listed(tmp_path, small_history):
    frame = small_history.shipments.head(25).astype(object).copy()
    frame.loc[2, "handed_over_at"] = "yesterday"
    frame.loc[6, "delivered_at"] = pd.Timestamp("2020-01-01")
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    result = _riskroute("history", "validate", str(path))
    assert result.returncode == 2
    assert "line 4" in result.stderr and "'yesterday' is not a date/time" in result.stderr
    assert "line 8" in result.stderr and "delivered before handed over" in result.stderr
    assert "Traceback" not in result.stderr


def test_lenient_validation_prints_counts_and_keeps_the_good_rows(tmp_path, small_history):
    frame = small_history.shipments.head(25).astype(object).copy()
    frame.loc[2, "service"] = "teleport"
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    result = _riskroute("history", "validate", str(path), "--lenient")
    assert result.returncode == 0, result.stderr
    assert "25 rows read, 24 kept" in result.stdout
    assert "dropped 1: unknown code" in result.stdout
    assert (tmp_path / "export.quarantine.csv").exists()


def test_simulate_and_build_features_end_to_end(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    default = Path(__file__).resolve().parents[2] / "features" / "twin" / "scenarios" / "default.yaml"
    text = (
        default.read_text()
        .replace("days: 120", "days: 8")
        .replace("base_orders_per_day: 6500", "base_orders_per_day: 200")
    )
    scenario.write_text(text)
    history = tmp_path / "history"
    assert _riskroute("simulate", "--scenario", str(scenario), "--out", str(history), "--seed", "3").returncode == 0
    result = _riskroute("features", "build", "--history", str(history), "--out", str(tmp_path / "f"))
    assert result.returncode == 0, result.stderr
    assert "carrier_delay:" in result.stdout
    assert list((tmp_path / "f" / "node_congestion").glob("part-*.parquet"))


def test_events_export_round_trips_through_the_event_schema(tmp_path, small_history_dir):
    out = tmp_path / "events.parquet"
    exported = _riskroute("history", "events", str(small_history_dir), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    checked = _riskroute("history", "validate", str(out), "--kind", "events")
    assert checked.returncode == 0, checked.stderr
    assert "allocated" in checked.stdout and "node_capacity" in checked.stdout


def test_bad_events_are_listed_with_their_reasons(tmp_path, small_history_dir):
    out = tmp_path / "events.csv"
    assert _riskroute("history", "events", str(small_history_dir), "--out", str(out)).returncode == 0
    events = pd.read_csv(out, dtype=str)
    allocated = events.index[events["event_type"] == "allocated"]
    events.loc[allocated[0], "shipment_id"] = None
    events.loc[allocated[1], "event_type"] = "teleported"
    events.loc[allocated[2], "event_id"] = events.loc[allocated[3], "event_id"]
    events.to_csv(out, index=False)
    result = _riskroute("history", "validate", str(out), "--kind", "events")
    assert result.returncode == 2
    assert "does not match the event schema" in result.stderr
    assert "shipment_id is required for allocated" in result.stderr
    assert "unknown code: 'teleported'" in result.stderr
    assert "duplicated event_id" in result.stderr
    assert "Traceback" not in result.stderr
