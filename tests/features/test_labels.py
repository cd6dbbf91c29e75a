"""Labels and the moment each outcome becomes known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.labels import carrier_delay_outcome, late_handover_outcome


def _shipments(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    for column in frame.columns:
        if column.endswith(("_at", "_by", "delivery")):
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[s]")
    return frame


def test_delivery_is_judged_by_calendar_day_and_known_when_the_promise_lapses():
    frame = _shipments(
        handed_over_at=["2026-01-01 10:00"] * 4,
        delivered_at=["2026-01-03 23:59", "2026-01-04 00:00", None, None],
        promised_delivery=["2026-01-03"] * 4,
        exception_codes=[None, None, "lost", None],
    )
    label, known = carrier_delay_outcome(shipments=frame, as_of=np.datetime64("2026-01-10T00:00:00"))
    assert list(label) == [0.0, 1.0, 1.0, 1.0]
    assert known[0] == np.datetime64("2026-01-03T23:59:00")
    # Late is known at midnight after the promised day, not at the (later) delivery.
    assert all(k == np.datetime64("2026-01-04T00:00:00") for k in known[1:])


def test_an_open_delivery_at_the_end_of_history_is_unknown():
    frame = _shipments(
        handed_over_at=["2026-01-01 10:00"],
        delivered_at=[None],
        promised_delivery=["2026-01-05"],
    )
    label, known = carrier_delay_outcome(shipments=frame, as_of=np.datetime64("2026-01-04T12:00:00"))
    assert np.isnan(label[0]) and np.isnat(known[0])


def test_a_carrier_is_never_late_before_it_has_the_parcel():
    frame = _shipments(
        handed_over_at=["2026-01-06 08:00"],
        delivered_at=["2026-01-07 10:00"],
        promised_delivery=["2026-01-03"],
    )
    label, known = carrier_delay_outcome(shipments=frame)
    assert label[0] == 1.0 and known[0] == np.datetime64("2026-01-06T08:00:00")


def test_late_handover_is_known_once_ship_by_passes_and_cancellation_first_means_no_outcome():
    frame = _shipments(
        ship_by=["2026-01-01 16:00"] * 4,
        handed_over_at=["2026-01-01 15:00", "2026-01-01 18:00", None, None],
        exception_codes=[None, None, "stock_discrepancy", "node_rejected"],
        exception_at=[None, None, "2026-01-01 12:00", "2026-01-01 17:00"],
        promised_delivery=["2026-01-04"] * 4,
    )
    label, known = late_handover_outcome(shipments=frame, as_of=np.datetime64("2026-01-05T00:00:00"))
    assert label[0] == 0.0 and known[0] == np.datetime64("2026-01-01T15:00:00")
    assert label[1] == 1.0 and known[1] == np.datetime64("2026-01-01T16:00:01")
    assert np.isnan(label[2])  # cancelled before its ship-by: no handover outcome
    assert label[3] == 1.0  # still not handed over when ship-by passed, cancelled afterwards
