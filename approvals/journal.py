"""The event journal: every event received, once, in arrival order.

Workers share the online feature state through it: each worker applies the journal's events in
sequence, so an event posted to one worker reaches every other within its polling interval. The
journal is also history for retraining (`riskroute events export`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from approvals.db import transaction
from approvals.errors import EventConflict
from approvals.models import EventRecord


@dataclass(frozen=True)
class Recorded:
    """What one batch of events did to the journal."""

    accepted: list[str]
    duplicates: list[str]


def payload_hash(*, payload: dict) -> str:
    """A digest of an event's content, independent of key order."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_events(*, sessions: sessionmaker[Session], events: Sequence[dict]) -> Recorded:
    """Append new events; an id already recorded with the same content is a duplicate, with other content a 409.

    All or nothing: a conflict anywhere in the batch records none of it.
    """
    try:
        return _record(sessions=sessions, events=events)
    except IntegrityError:
        # A concurrent request recorded one of these ids between our read and our insert: read again.
        return _record(sessions=sessions, events=events)


def _record(*, sessions: sessionmaker[Session], events: Sequence[dict]) -> Recorded:
    hashes = {}
    for event in events:
        digest = payload_hash(payload=event)
        previous = hashes.setdefault(event["event_id"], digest)
        if previous != digest:
            raise EventConflict(f"event_id {event['event_id']!r} appears twice in the batch with different content")
    with transaction(sessions=sessions) as session:
        known = dict(
            session.execute(
                select(EventRecord.event_id, EventRecord.payload_hash).where(EventRecord.event_id.in_(list(hashes)))
            ).all()
        )
        clashing = sorted(i for i, digest in known.items() if digest != hashes[i])
        if clashing:
            raise EventConflict(
                f"event_id {', '.join(map(repr, clashing[:5]))} already recorded with different content; "
                "an event id names one event forever"
            )
        received = datetime.now(timezone.utc).replace(tzinfo=None)
        accepted, seen = [], set(known)
        for event in events:
            if event["event_id"] in seen:
                continue
            seen.add(event["event_id"])
            accepted.append(event["event_id"])
            session.add(
                EventRecord(
                    event_id=event["event_id"],
                    event_type=event["event_type"],
                    event_time=datetime.fromisoformat(str(event["event_time"])),
                    shipment_id=event.get("shipment_id"),
                    payload=event,
                    payload_hash=hashes[event["event_id"]],
                    received_at=received,
                )
            )
    duplicates = [e["event_id"] for e in events if e["event_id"] in known]
    return Recorded(accepted=accepted, duplicates=duplicates)


def events_after(*, sessions: sessionmaker[Session], seq: int, page: int = 10_000) -> Iterator[tuple[int, dict]]:
    """(seq, event) of every journal entry after `seq`, in arrival order, read a page at a time."""
    while True:
        with sessions() as session:
            rows = session.execute(
                select(EventRecord.seq, EventRecord.payload)
                .where(EventRecord.seq > seq)
                .order_by(EventRecord.seq)
                .limit(page)
            ).all()
        if not rows:
            return
        for row_seq, payload in rows:
            yield row_seq, payload
        seq = rows[-1][0]
