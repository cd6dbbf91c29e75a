"""The models price a twin run forward on the run's own history, point in time: nothing known after a wave moves it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.twin.simulate import simulate
from rules.schema import load_ruleset, seed_ruleset_path
from rules.twin import RulesetPolicy, prior_twin_risk
from serving.scorer import FALLBACK_BASE_RATES
from serving.twin_risk import TwinModelRisk
from tests.conftest import served_models, small_scenario

SEED = load_ruleset(path=seed_ruleset_path())


class Recorder:
    """Routes with a model-priced ruleset policy and keeps one late wave: its inputs, its prices, the days seen."""

    def __init__(self, *, risk: TwinModelRisk, day: int) -> None:
        self.risk, self.day = risk, day
        self.policy = RulesetPolicy(ruleset=SEED, risk=self._price)
        self.kept = None
        self.first = None

    def _price(self, batch, option_cand, option_cs):
        prices = self.risk(batch, option_cand, option_cs)
        if self.first is None:
            self.first = prices
        if batch.day == self.day and self.kept is None:
            self.kept = (batch, option_cand, option_cs, prices, list(self.risk.days))
        return prices

    def observe(self, shipments) -> None:
        self.risk.observe(shipments)

    def __call__(self, batch):
        return self.policy(batch)


def _later(shipments: pd.DataFrame, *, after: pd.Timestamp) -> pd.DataFrame:
    """The same shipments with every outcome that happens after `after` pushed three days later."""
    moved = shipments.copy()
    for column in ("handed_over_at", "delivered_at", "exception_at"):
        later = moved[column] > after
        moved.loc[later, column] = moved.loc[later, column] + pd.Timedelta(days=3)
    return moved


def test_a_wave_is_priced_by_the_models_on_what_the_run_knew_before_it(champions_store):
    models = served_models(store=champions_store)
    recorder = Recorder(risk=TwinModelRisk(models=models), day=6)
    simulate(scenario=small_scenario(days=8, orders_per_day=250), policy=recorder)
    batch, option_cand, option_cs, (delay, congestion), days = recorder.kept
    # Before the run has a day of history, the base rates price it; later, the models do.
    assert np.all(recorder.first[0] == FALLBACK_BASE_RATES["carrier_delay"])
    priors = prior_twin_risk()(batch, option_cand, option_cs)
    assert not np.allclose(delay, priors[0]) and len(np.unique(np.round(congestion, 6))) > 1
    # The same wave priced from the same days with every outcome after its start changed: the same prices.
    start = pd.Timestamp(int(batch.decision_time.min()), unit="s")
    changed = TwinModelRisk(models=models)
    for shipments in days:
        changed.observe(_later(shipments, after=start))
    again = changed(batch, option_cand, option_cs)
    np.testing.assert_allclose(again[0], delay, rtol=0, atol=1e-12)
    np.testing.assert_allclose(again[1], congestion, rtol=0, atol=1e-12)
    # Changing outcomes known before the wave does move them: the check can fail.
    earlier = TwinModelRisk(models=models)
    for shipments in days:
        earlier.observe(_later(shipments, after=start - pd.Timedelta(days=2)))
    moved = earlier(batch, option_cand, option_cs)
    assert not (np.allclose(moved[0], delay) and np.allclose(moved[1], congestion))


def test_a_wave_counts_disruption_notices_only_once_they_are_announced(champions_store, monkeypatch):
    import serving.twin_risk as twin_risk
    from features.twin.network import REGIONS

    models = served_models(store=champions_store)
    recorder = Recorder(risk=TwinModelRisk(models=models), day=6)
    simulate(scenario=small_scenario(days=8, orders_per_day=250), policy=recorder)
    batch, option_cand, option_cs, (delay, congestion), days = recorder.kept
    start = pd.Timestamp(int(batch.decision_time.min()), unit="s")
    # What the models read: the real feature definitions, kept for a look.
    read = []
    real = twin_risk.features_for_rows
    monkeypatch.setattr(twin_risk, "features_for_rows", lambda **kw: read.append(real(**kw)) or read[-1])

    def priced(*, announced: pd.Timestamp):
        notices = pd.DataFrame(
            {
                "kind": "weather",
                "carrier": None,
                "region": list(REGIONS),
                "start": start - pd.Timedelta(days=1),
                "end": start + pd.Timedelta(days=3),
                "severity": 2.0,
                "announced_at": announced,
            }
        )
        risk = TwinModelRisk(models=models, notices=notices)
        for shipments in days:
            risk.observe(shipments)
        return risk(batch, option_cand, option_cs)

    # Announced after the wave began: unknown to it, the prices are those without any notice.
    later = priced(announced=start + pd.Timedelta(minutes=1))
    assert (read[-1]["disruptions_known"] == 0).all()
    np.testing.assert_allclose(later[0], delay, rtol=0, atol=1e-12)
    np.testing.assert_allclose(later[1], congestion, rtol=0, atol=1e-12)
    # Announced the day before, every option of the wave reads the storm on its region.
    priced(announced=start - pd.Timedelta(days=1))
    assert (read[-1]["disruptions_known"] == 1).all() and (read[-1]["disruption_severity"] == 2.0).all()
