"""The one settings class: read from RISKROUTE_* variables, and handed on to a child process unchanged."""

from __future__ import annotations

import os

from serving.settings import Settings


def test_settings_reach_a_child_process_unchanged(monkeypatch, tmp_path):
    given = Settings(
        data_dir=tmp_path,
        warm_start_history=tmp_path / "history",
        open_routing=True,
        freshness_limit_minutes=45.5,
        proposer={"every_hours": 2, "backtest_orders": 5_000, "late_cost": {"premium": 90.0}},
        approvals={"max_capacity_change": 0.2, "required_approvals": {"capacity_cut": 3}},
    )
    for name in [n for n in os.environ if n.startswith("RISKROUTE_")]:
        monkeypatch.delenv(name)
    for name, value in given.as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == given
    # Unset settings stay unset, so the child computes the same defaults (the database beside the data).
    assert "RISKROUTE_DATABASE_URL" not in given.as_environment() and Settings().database == given.database
