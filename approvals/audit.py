"""The audit log: append-only and hash-chained, so an edited, deleted, inserted or reordered entry shows.

Each entry's hash covers its sequence number, time, actor, action, object, before/after, reason
and the previous entry's hash, in a canonical JSON encoding. A single head row records where the
chain ends: appending locks it (one chain, never a fork) and verification checks the tail
against it (so entries removed from the end show too). On PostgreSQL a trigger refuses UPDATE and
DELETE on the table outright.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from approvals.models import AuditEntry, AuditHead

GENESIS = "0" * 64


def now() -> datetime:
    """The current UTC time, naive, to the microsecond (as every table stores it)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: dict | None,
    after: dict | None,
    reason: str | None,
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical JSON of an entry's fields and the previous hash."""
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "before": before,
            "after": after,
            "reason": reason,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def append(
    *,
    session: Session,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int,
    before: dict | None = None,
    after: dict | None = None,
    reason: str | None = None,
) -> AuditEntry:
    """Add the next entry to the chain, inside the caller's transaction (it commits or rolls back with it)."""
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
    # JSON round trip: what is hashed is exactly what the database will hand back.
    before = json.loads(json.dumps(before, default=str)) if before is not None else None
    after = json.loads(json.dumps(after, default=str)) if after is not None else None
    fields = dict(
        seq=head.seq + 1,
        at=now(),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=before,
        after=after,
        reason=reason,
        prev_hash=head.hash,
    )
    entry = AuditEntry(**fields, hash=entry_hash(**fields))
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    session.flush()
    return entry


@dataclass(frozen=True)
class Verification:
    """What walking the chain found."""

    ok: bool
    entries: int
    broken_at: int | None = None
    problem: str | None = None


def _entries(*, session: Session, page: int = 5_000) -> Iterator[AuditEntry]:
    last = None
    while True:
        query = select(AuditEntry).order_by(AuditEntry.seq).limit(page)
        if last is not None:
            query = query.where(AuditEntry.seq > last)
        rows = session.execute(query).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify(*, session: Session) -> Verification:
    """Walk the chain from the first entry; name the first broken link, if any."""
    expected_seq, prev, count = 1, GENESIS, 0
    for entry in _entries(session=session):
        count += 1
        if entry.seq != expected_seq:
            return Verification(
                ok=False,
                entries=count,
                broken_at=expected_seq,
                problem=f"entry {expected_seq} is missing: the chain jumps to {entry.seq} (deleted or renumbered)",
            )
        if entry.prev_hash != prev:
            return Verification(
                ok=False,
                entries=count,
                broken_at=entry.seq,
                problem=f"entry {entry.seq} does not follow entry {entry.seq - 1}: its previous-hash link is broken "
                "(an entry was inserted, deleted or reordered here)",
            )
        recomputed = entry_hash(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            object_type=entry.object_type,
            object_id=entry.object_id,
            before=entry.before,
            after=entry.after,
            reason=entry.reason,
            prev_hash=entry.prev_hash,
        )
        if recomputed != entry.hash:
            return Verification(
                ok=False,
                entries=count,
                broken_at=entry.seq,
                problem=f"entry {entry.seq} was edited: its content no longer matches its hash",
            )
        prev, expected_seq = entry.hash, entry.seq + 1
    head = session.get(AuditHead, 1)
    last_seq = expected_seq - 1
    if (head is None and last_seq) or (head is not None and (head.seq, head.hash) != (last_seq, prev)):
        recorded = head.seq if head is not None else 0
        return Verification(
            ok=False,
            entries=count,
            broken_at=min(recorded, last_seq) + 1,
            problem=f"the chain ends at entry {last_seq} but its head records entry {recorded} "
            "(entries removed from, or forged onto, the end)",
        )
    return Verification(ok=True, entries=count)


def entries(*, session: Session, after: int = 0, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """Entries after a sequence number, oldest first."""
    query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list(session.execute(query).scalars())
