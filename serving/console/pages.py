"""The ops console: server-rendered pages over the same approvals services as the /v1 API.

Sign-in exchanges a bearer token for an HttpOnly, SameSite=Strict cookie holding it; every form
carries a CSRF token derived from that cookie (a page on another site can neither read the cookie
nor compute the value), and posts without it are refused. Roles are those of the API: everyone
who may read proposals may browse; only ops leads see, and may use, approve / reject / rollback.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from approvals import audit, proposals, rulesets
from approvals.tokens import Principal
from serving.console import charts
from serving.deps import IdPath, RuntimeDep, principal_from, sweep_proposals, unit_of_work
from serving.runtime import MODEL_NAMES, Runtime, sync_ruleset

COOKIE = "riskroute_console"
READERS = ("ops_lead", "data_scientist", "admin")
DECIDERS = ("ops_lead",)
STATUSES = ("pending", "stale", "approved", "applied", "rejected", "expired", "withdrawn")
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
router = APIRouter(prefix="/console", include_in_schema=False)


class SignInRequired(Exception):
    """No valid console session: the browser is sent to the sign-in page."""

    def __init__(self, *, after: str, message: str = "") -> None:
        super().__init__(message)
        self.after = after
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a console page and the CSRF token their forms must carry."""

    principal: Principal
    csrf: str

    @property
    def can_decide(self) -> bool:
        """Whether this user may approve, reject and roll back."""
        return self.principal.role in DECIDERS


def csrf_token(*, token: str) -> str:
    """The CSRF value bound to a session token (knowable only by someone who holds the token)."""
    return hmac.new(token.encode(), b"riskroute-console-csrf", hashlib.sha256).hexdigest()


async def viewer(request: Request) -> Viewer:
    """The signed-in console user, or a trip to the sign-in page (wrong roles get a 403 page)."""
    runtime: Runtime = request.app.state.runtime
    after = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired(after=after)
    try:
        principal = principal_from(runtime=runtime, authorization=f"Bearer {token}")
    except HTTPException as exc:
        raise SignInRequired(after=after, message="Your session ended: the token is no longer valid.") from exc
    if principal.role not in READERS:
        raise HTTPException(
            status_code=403, detail=f"{principal.name} is {principal.role}; the console is for {', '.join(READERS)}"
        )
    return Viewer(principal=principal, csrf=csrf_token(token=token))


ViewerDep = Annotated[Viewer, Depends(viewer)]
CsrfForm = Annotated[str, Form(max_length=100)]
ReasonForm = Annotated[str, Form(min_length=1, max_length=2_000)]


def _decider(*, who: Viewer, csrf: str) -> Principal:
    """The principal of a state-changing form: a matching CSRF token, and a role that may decide."""
    _check_csrf(who=who, csrf=csrf)
    if not who.can_decide:
        raise HTTPException(
            status_code=403,
            detail=f"{who.principal.name} is {who.principal.role}; only an ops lead may approve, reject or roll back",
        )
    return who.principal


def _check_csrf(*, who: Viewer, csrf: str) -> None:
    """Refuse a form that did not come from a console page of this session."""
    if not hmac.compare_digest(csrf.encode(), who.csrf.encode()):
        raise HTTPException(
            status_code=403, detail="the form's CSRF token does not match this session; reload the page"
        )


def _page(request: Request, name: str, *, who: Viewer | None, status_code: int = 200, **context) -> HTMLResponse:
    """A rendered page with the signed-in user (if any) in its context."""
    return templates.TemplateResponse(request, name, {"who": who, **context}, status_code=status_code)


def _safe_after(after: str | None) -> str:
    """Where to go after signing in: only a console path (never another site)."""
    return after if after and after.startswith("/console") and not after.startswith("//") else "/console/proposals"


@router.get("")
def home() -> RedirectResponse:
    """The console opens on the queue."""
    return RedirectResponse("/console/proposals", status_code=303)


@router.get("/sign-in")
def sign_in_page(
    request: Request, after: str | None = Query(default=None, max_length=500), message: str = ""
) -> Response:
    """The sign-in form."""
    return _page(request, "sign_in.html", who=None, after=_safe_after(after), message=message[:200])


@router.post("/sign-in")
def sign_in(
    request: Request,
    runtime: RuntimeDep,
    token: Annotated[str, Form(max_length=500)],
    after: Annotated[str, Form(max_length=500)] = "/console/proposals",
) -> Response:
    """Check the token and open a session cookie holding it (HttpOnly, SameSite=Strict)."""
    try:
        principal = principal_from(runtime=runtime, authorization=f"Bearer {token.strip()}")
    except HTTPException:
        return _page(
            request,
            "sign_in.html",
            who=None,
            after=_safe_after(after),
            message="That token is not valid (unknown or revoked).",
            status_code=401,
        )
    if principal.role not in READERS:
        return _page(
            request,
            "sign_in.html",
            who=None,
            after=_safe_after(after),
            message=f"{principal.name} is {principal.role}: the console is for {', '.join(READERS)}.",
            status_code=403,
        )
    response = RedirectResponse(_safe_after(after), status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
        max_age=12 * 3600,
    )
    return response


@router.post("/sign-out")
def sign_out(who: ViewerDep, csrf: CsrfForm) -> RedirectResponse:
    """End the session."""
    _check_csrf(who=who, csrf=csrf)
    response = RedirectResponse("/console/sign-in?message=" + quote("Signed out."), status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/proposals")
def queue(
    request: Request, runtime: RuntimeDep, who: ViewerDep, status: str = Query(default="pending", max_length=16)
) -> HTMLResponse:
    """The queue: proposals of one status (pending by default), newest first."""
    if status not in (*STATUSES, "all"):
        raise HTTPException(status_code=422, detail=f"status: must be one of {', '.join((*STATUSES, 'all'))}")
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        found = proposals.listing(session=session, status=None if status == "all" else status, limit=200)
        rows = [_row(proposal=p) for p in found]
        active = rulesets.active_number(session=session)
    return _page(request, "queue.html", who=who, rows=rows, status=status, statuses=STATUSES, active=active)


def _row(*, proposal) -> dict:
    """A proposal as a queue line."""
    backtest = proposal.backtest or {}
    old, new = backtest.get("old") or {}, backtest.get("new") or {}
    return {
        "id": proposal.id,
        "kind": proposal.kind,
        "target": proposal.target,
        "status": proposal.status,
        "proposer": proposal.proposer,
        "created_at": proposal.created_at,
        "expires_at": proposal.expires_at,
        "on_time_change": _delta(old, new, "expected_on_time"),
        "cost_change": _delta(old, new, "cost_per_order"),
        "changed_share": backtest.get("changed_share"),
    }


def _delta(old: dict, new: dict, key: str) -> float | None:
    """new - old of a backtest figure, when both are there."""
    if old.get(key) is None or new.get(key) is None:
        return None
    return new[key] - old[key]


@router.get("/proposals/{proposal_id}")
def proposal_page(
    proposal_id: IdPath, request: Request, runtime: RuntimeDep, who: ViewerDep, done: str = ""
) -> HTMLResponse:
    """One proposal: rationale, diff, evidence, backtest with charts, decisions, and the decision form."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        proposal = proposals.get(session=session, proposal_id=proposal_id)
        decided = proposals.decisions(session=session, proposal_id=proposal_id)
        active = rulesets.active_number(session=session)
        backtest = proposal.backtest or {}
        figures = _figures(backtest=backtest)
        context = {
            "p": proposal,
            "decisions": decided,
            "active": active,
            "backtest": backtest,
            "figures": figures,
            "chart_trade_off": charts.on_time_vs_cost(old=backtest["old"], new=backtest["new"]) if figures else "",
            "chart_lanes": charts.lane_effects(lanes=backtest.get("lanes") or []) if figures else "",
            "chart_sweep": charts.penalty_sweep(sweep=proposal.evidence["sweep"])
            if isinstance(proposal.evidence, dict) and proposal.evidence.get("sweep")
            else "",
            "approvals_so_far": sum(d.decision == "approve" for d in decided),
            "done": done[:40],
            "already_decided": any(d.actor == who.principal.name for d in decided),
        }
    return _page(request, "proposal.html", who=who, **context)


def _figures(*, backtest: dict) -> list[dict]:
    """The backtest's headline figures, base beside proposed."""
    old, new = backtest.get("old"), backtest.get("new")
    if not old or not new:
        return []
    rows = [
        ("expected on-time rate", "expected_on_time", "pct"),
        ("cost per order", "cost_per_order", "money"),
        ("cost + expected lateness per order", "objective_per_order", "money"),
        ("split rate", "split_rate", "pct"),
        ("orders routed", "routed", "count"),
    ]
    return [
        {"label": label, "old": old.get(key), "new": new.get(key), "delta": _delta(old, new, key), "kind": kind}
        for label, key, kind in rows
        if old.get(key) is not None
    ]


@router.post("/proposals/{proposal_id}/approve")
def approve(
    proposal_id: IdPath,
    request: Request,
    runtime: RuntimeDep,
    who: ViewerDep,
    csrf: CsrfForm,
    reason: ReasonForm,
    content_hash: Annotated[str, Form(max_length=64)],
) -> RedirectResponse:
    """Approve what the page showed (bound to its content hash); enough approvals apply it at once."""
    actor = _decider(who=who, csrf=csrf)
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        proposals.approve(
            session=session,
            proposal_id=proposal_id,
            actor=actor,
            reason=reason,
            policy=runtime.settings.approvals,
            content_hash_seen=content_hash,
            champions=runtime.champions,
        )
    sync_ruleset(runtime=runtime)
    return RedirectResponse(f"/console/proposals/{proposal_id}?done=approved", status_code=303)


@router.post("/proposals/{proposal_id}/reject")
def reject(
    proposal_id: IdPath,
    request: Request,
    runtime: RuntimeDep,
    who: ViewerDep,
    csrf: CsrfForm,
    reason: ReasonForm,
) -> RedirectResponse:
    """Reject, with a reason."""
    actor = _decider(who=who, csrf=csrf)
    with unit_of_work(runtime) as session:
        proposals.reject(session=session, proposal_id=proposal_id, actor=actor, reason=reason)
    return RedirectResponse(f"/console/proposals/{proposal_id}?done=rejected", status_code=303)


@router.get("/rulesets")
def ruleset_history(request: Request, runtime: RuntimeDep, who: ViewerDep, done: str = "") -> HTMLResponse:
    """Every ruleset version, newest first, each with its diff from the one before."""
    with unit_of_work(runtime) as session:
        active = rulesets.active_number(session=session)
        versions = rulesets.listing(session=session)
        documents = {v.number: rulesets.normalized(version=v) for v in versions}
        rows = [
            {
                "v": v,
                "diff": rulesets.diff(old=documents[v.number - 1], new=documents[v.number])
                if v.number - 1 in documents
                else [],
            }
            for v in versions
        ]
    return _page(request, "rulesets.html", who=who, rows=rows, active=active, done=done[:40])


@router.post("/rulesets/rollback")
def rollback(
    request: Request,
    runtime: RuntimeDep,
    who: ViewerDep,
    csrf: CsrfForm,
    to_version: Annotated[int, Form(ge=1, le=2**53)],
    reason: ReasonForm,
) -> RedirectResponse:
    """Make an earlier version active at once (recorded as an applied proposal)."""
    actor = _decider(who=who, csrf=csrf)
    with unit_of_work(runtime) as session:
        proposals.rollback(session=session, to_version=to_version, actor=actor, reason=reason)
    sync_ruleset(runtime=runtime)
    return RedirectResponse("/console/rulesets?done=rolled-back", status_code=303)


@router.get("/audit")
def audit_page(request: Request, runtime: RuntimeDep, who: ViewerDep) -> HTMLResponse:
    """Whether the audit chain verifies, and its latest entries."""
    with unit_of_work(runtime) as session:
        report = audit.verify(session=session)
        latest = audit.entries(session=session, after=max(report.entries - 50, 0), limit=50)
    return _page(request, "audit.html", who=who, report=report, entries=list(reversed(latest)))


@router.get("/models")
def models_page(request: Request, runtime: RuntimeDep, who: ViewerDep) -> HTMLResponse:
    """The model versions in service, what the registry's @champion says, and load problems."""
    serving = runtime.models.versions()
    rows = []
    for name in MODEL_NAMES:
        try:
            champion = runtime.champions.champion(name)
        except Exception as exc:  # noqa: BLE001 - the page reports a registry outage instead of failing
            champion = f"registry unreachable: {type(exc).__name__}"
        rows.append(
            {
                "name": name,
                "serving": serving.get(name),
                "champion": champion,
                "problem": runtime.load_problems.get(name),
            }
        )
    return _page(request, "models.html", who=who, rows=rows)


def error_page(request: Request, *, status_code: int, message: str) -> Response:
    """A domain or HTTP error met on a console page, as a page (a missing session goes to sign-in)."""
    return _page(request, "error.html", who=None, status_code=status_code, message=message)


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    """Where a request without a session is sent."""
    target = f"/console/sign-in?after={quote(exc.after)}"
    if exc.message:
        target += f"&message={quote(exc.message)}"
    return RedirectResponse(target, status_code=303)
