"""Ruleset versions: immutable, numbered, content-hashed; exactly one active; the first seeded from YAML."""

from __future__ import annotations

import jsonpatch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from approvals import audit
from approvals.errors import Conflict, NotFound
from approvals.models import ActiveRuleset, RulesetVersion
from rules.errors import RulesetError
from rules.schema import Ruleset, parse_ruleset


def document(*, ruleset: Ruleset) -> dict:
    """A ruleset as the JSON document a version stores."""
    return ruleset.model_dump(mode="json")


def to_ruleset(*, version: RulesetVersion) -> Ruleset:
    """The validated ruleset a version holds."""
    return parse_ruleset(document=version.content, origin=f"ruleset version {version.number}")


def normalized(*, version: RulesetVersion) -> dict:
    """A version's document as the current schema writes it (settings added since it was stored appear, defaulted).

    Patches apply to, and diffs compare, this form: a version stored before a new setting existed
    can still be changed at that setting, and shows no difference for it.
    """
    return document(ruleset=to_ruleset(version=version))


def summary(*, version: RulesetVersion) -> dict:
    """What the audit log records about a version."""
    return {"number": version.number, "name": version.name, "content_hash": version.content_hash}


def ensure_seeded(*, session: Session, ruleset: Ruleset, actor: str = "system") -> RulesetVersion:
    """Version 1 from the seed ruleset, active, if the database holds none yet; otherwise the active version."""
    existing = session.execute(
        select(ActiveRuleset).where(ActiveRuleset.id == 1).with_for_update()
    ).scalar_one_or_none()
    if existing is not None:
        return session.get(RulesetVersion, existing.version)
    version = _add_version(session=session, ruleset=ruleset, actor=actor, note="seeded from the YAML ruleset")
    session.add(ActiveRuleset(id=1, version=version.number, changed_at=audit.now()))
    audit.append(
        session=session,
        actor=actor,
        action="ruleset.seeded",
        object_type="ruleset_version",
        object_id=version.number,
        after=summary(version=version),
    )
    return version


def _add_version(
    *, session: Session, ruleset: Ruleset, actor: str, note: str = "", proposal_id: int | None = None
) -> RulesetVersion:
    number = (session.execute(select(func.max(RulesetVersion.number))).scalar() or 0) + 1
    version = RulesetVersion(
        number=number,
        name=ruleset.name,
        content=document(ruleset=ruleset),
        content_hash=ruleset.content_hash(),
        created_at=audit.now(),
        created_by=actor,
        proposal_id=proposal_id,
        note=note,
    )
    session.add(version)
    session.flush()
    return version


def add_version(*, session: Session, ruleset: Ruleset, actor: str, proposal_id: int, note: str = "") -> RulesetVersion:
    """A new immutable version made by an applied proposal (activating it is a separate, audited step)."""
    version = _add_version(session=session, ruleset=ruleset, actor=actor, note=note, proposal_id=proposal_id)
    audit.append(
        session=session,
        actor=actor,
        action="ruleset.version_created",
        object_type="ruleset_version",
        object_id=version.number,
        after={**summary(version=version), "proposal_id": proposal_id},
    )
    return version


def activate(*, session: Session, number: int, actor: str, reason: str, proposal_id: int | None) -> None:
    """Point the active ruleset at a version (the caller's transaction makes it all-or-nothing)."""
    pointer = session.execute(select(ActiveRuleset).where(ActiveRuleset.id == 1).with_for_update()).scalar_one_or_none()
    if pointer is None:
        raise Conflict("no active ruleset yet: run `riskroute db upgrade` to seed one")
    target = get(session=session, number=number)
    before = pointer.version
    pointer.version, pointer.changed_at = number, audit.now()
    audit.append(
        session=session,
        actor=actor,
        action="ruleset.activated",
        object_type="active_ruleset",
        object_id=1,
        before={"version": before},
        after={"version": number, "content_hash": target.content_hash, "proposal_id": proposal_id},
        reason=reason,
    )


def active_number(*, session: Session) -> int | None:
    """The active version's number (cheap: what every worker polls)."""
    return session.execute(select(ActiveRuleset.version).where(ActiveRuleset.id == 1)).scalar_one_or_none()


def active(*, session: Session) -> RulesetVersion:
    """The active version."""
    number = active_number(session=session)
    if number is None:
        raise NotFound("no active ruleset yet: run `riskroute db upgrade` to seed one")
    return get(session=session, number=number)


def get(*, session: Session, number: int) -> RulesetVersion:
    """One version by number."""
    version = session.get(RulesetVersion, number)
    if version is None:
        raise NotFound(f"no ruleset version {number}")
    return version


def listing(*, session: Session) -> list[RulesetVersion]:
    """Every version, newest first."""
    return list(session.execute(select(RulesetVersion).order_by(RulesetVersion.number.desc())).scalars())


def diff(*, old: dict, new: dict) -> list[dict]:
    """The JSON Patch (RFC 6902) that turns one ruleset document into another."""
    return jsonpatch.make_patch(old, new).patch


def patched(*, base: RulesetVersion, patch: list[dict]) -> Ruleset:
    """The ruleset a JSON Patch makes of a base version, validated; a patch that does not apply is refused."""
    try:
        content = jsonpatch.apply_patch(normalized(version=base), patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError) as exc:
        raise RulesetError(f"diff does not apply to ruleset version {base.number}: {exc}") from None
    return parse_ruleset(document=content, origin=f"version {base.number} with the proposed diff")
