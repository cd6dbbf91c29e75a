"""The event journal: each event once, conflicts refused whole, read back in arrival order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from approvals.errors import EventConflict
from approvals.journal import events_after, record_events
from approvals.models import EventRecord


def _event(event_id: str, *, shipment: str = "S1", when: str = "2026-10-02T10:00:00", **extra) -> dict:
    return {"event_id": event_id, "event_type": "handed_over", "event_time": when, "shipment_id": shipment, **extra}


def _count(database) -> int:
    with database.sessions() as session:
        return session.scalar(select(func.count()).select_from(EventRecord))


def test_a_resent_event_is_a_duplicate_not_a_second_record(database):
    first = record_events(sessions=database.sessions, events=[_event("e1"), _event("e2", shipment="S2")])
    again = record_events(sessions=database.sessions, events=[_event("e2", shipment="S2"), _event("e3")])
    assert first.accepted == ["e1", "e2"] and first.duplicates == []
    assert again.accepted == ["e3"] and again.duplicates == ["e2"]
    assert [e["event_id"] for _, e in events_after(sessions=database.sessions, seq=0)] == ["e1", "e2", "e3"]


def test_an_id_reused_for_other_content_is_refused_and_records_nothing_of_its_batch(database):
    record_events(sessions=database.sessions, events=[_event("e1")])
    with pytest.raises(EventConflict, match="'e1'"):
        record_events(sessions=database.sessions, events=[_event("e9"), _event("e1", shipment="other")])
    with pytest.raises(EventConflict, match="twice in the batch"):
        record_events(sessions=database.sessions, events=[_event("e8"), _event("e8", shipment="other")])
    assert _count(database) == 1


def test_reading_after_a_sequence_number_pages_through_in_arrival_order(database):
    record_events(sessions=database.sessions, events=[_event(f"e{i}", shipment=f"S{i}") for i in range(25)])
    read = list(events_after(sessions=database.sessions, seq=0, page=7))
    assert [e["event_id"] for _, e in read] == [f"e{i}" for i in range(25)]
    tail = list(events_after(sessions=database.sessions, seq=read[19][0], page=7))
    assert [e["event_id"] for _, e in tail] == [f"e{i}" for i in range(20, 25)]


def test_concurrent_senders_of_the_same_events_record_each_once(database):
    batch = [_event(f"e{i}", shipment=f"S{i}") for i in range(50)]

    def send(_: int):
        return record_events(sessions=database.sessions, events=batch)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(16)))
    assert sum(len(r.accepted) for r in results) == 50
    assert _count(database) == 50
