"""The Olist adapter on the real export (skipped when ../shared/data/olist is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from features.labels import carrier_delay, late_handover
from features.offline import build_features
from features.olist import UNKNOWN_SELLER, load_olist
from tests.conftest import SHARED_DATA

OLIST = SHARED_DATA / "olist"
pytestmark = pytest.mark.skipif(
    not (OLIST / "olist_orders_dataset.csv").exists(),
    reason=f"the real Olist export is not at {OLIST} (it lives beside the repository, never inside it)",
)


@pytest.fixture(scope="module")
def olist():
    return load_olist(folder=OLIST)


def test_every_order_is_used_or_dropped_with_a_reason(olist):
    history, report = olist
    assert report.rows_read == 66_638
    dropped = report.dropped_by_reason
    assert dropped["order canceled"] == 424
    assert dropped["order unavailable"] == 559
    assert 700 < sum(report.kept_notes.values()) <= 803  # shipped, never delivered: kept as late outcomes
    assert dropped["handed to carrier before approval"] > 100
    orders_kept = history.shipments["order_id"].nunique()
    assert orders_kept + sum(v for k, v in dropped.items() if not k.startswith("schema")) == report.rows_read


def test_sampled_orders_ship_from_their_sellers_with_a_ship_by(olist):
    history, _ = olist
    shipments = history.shipments
    known_seller = shipments["node_id"] != UNKNOWN_SELLER
    assert 5_000 < known_seller.sum() < 7_000
    assert shipments.loc[known_seller, "ship_by"].notna().all()
    assert shipments.loc[~known_seller, "ship_by"].isna().all()


def test_label_rates_match_the_data_card(olist):
    history, _ = olist
    delay = np.nanmean(carrier_delay(shipments=history.shipments))
    handover = np.nanmean(late_handover(shipments=history.shipments))
    assert 0.05 < delay < 0.10  # about 7% of delivered orders
    assert 0.06 < handover < 0.13  # about 9% of items


def test_point_in_time_features_build_on_real_history(olist):
    history, _ = olist
    tables = build_features(history=history)
    carrier = tables["carrier_delay"]
    assert len(carrier) == len(history.shipments)
    assert carrier["carrier_late_rate_28d"].notna().mean() > 0.9
