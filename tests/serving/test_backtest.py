"""Backtests as a data scientist or ops lead runs them: priced by the registered models, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from features.offline import features_for_rows, prepare
from rules.backtest import load_replay
from rules.schema import load_ruleset, seed_ruleset_path
from serving.scorer import replay_risk
from tests.conftest import served_models


@pytest.fixture(scope="module")
def champions(champions_store):
    return served_models(store=champions_store)


def test_replay_risk_is_each_options_model_risk_at_its_waves_start(twin, twin_dir, champions):
    replay = load_replay(folder=twin_dir, max_orders=2_000)
    risk = replay_risk(replay=replay, history=twin, models=champions)
    n = len(replay.batch.opt_cand)
    assert risk.carrier_delay.shape == (n,) and 0 < risk.carrier_delay.mean() < 0.5
    assert "carrier_delay v1" in risk.source
    # Priced once per distinct row, spread back: the same as pricing a sample of options one by one.
    rows = replay.option_rows()
    order = replay.batch.cand_order[replay.batch.opt_cand]
    wave_start = pd.Series(replay.decided_at).groupby(replay.order_wave).transform("min").to_numpy()
    rows["allocated_at"] = wave_start[order].astype("datetime64[s]")
    pick = np.random.default_rng(3).choice(n, 40, replace=False)
    sample = {k: v[pick] for k, v in rows.items()}
    direct = features_for_rows(
        rows=sample, streams=prepare(history=twin).streams, node_days=twin.node_days, notices=twin.notices
    )
    model = champions.carrier_delay.model
    np.testing.assert_allclose(risk.carrier_delay[pick], model.risk(model.encode(direct)), rtol=1e-9)
    assert (rows["allocated_at"] <= replay.decided_at[order]).all()


def _riskroute(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True, text=True, timeout=300)


def test_the_backtest_command_prints_the_comparison_and_writes_the_report(twin_dir, tmp_path):
    document = load_ruleset(path=seed_ruleset_path()).model_dump(mode="json")
    document["scoring"]["split_penalty"] = 6.0
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(document))
    out = tmp_path / "report.json"
    args = ["backtest", "--history", str(twin_dir), "--ruleset", str(candidate), "--against", "seed"]
    done = _riskroute(*args, "--risk", "priors", "--max-orders", "3000", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "3,000 orders replayed" in done.stdout and "decisions that change" in done.stdout
    report = json.loads(out.read_text())
    assert {"old", "new", "changed_share", "lanes", "nodes", "sample", "limitations"} <= set(report)
    assert report["new"]["split_rate"] <= report["old"]["split_rate"]
    bad = _riskroute(*args, "--risk", "priors", "--window", "2020-01-01")
    assert bad.returncode == 2 and "--window" in bad.stderr and "Traceback" not in bad.stderr
