"""What the service holds while it runs (ruleset, models, online features) and the calls it answers.

Everything here is callable without HTTP: the routers only translate bodies and status codes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from approvals import journal, rulesets
from approvals.db import Database, open_database, transaction
from features.errors import FeaturesError
from features.online import OnlineFeatureState, warm_start
from rules.engine import Candidate, Decision, Order, OrderLine, RiskQueries, ShippingOption, decide_batch
from rules.schema import Ruleset, load_ruleset, seed_ruleset_path
from serving import schemas
from serving.scorer import ModelScorer, ModelSet
from serving.settings import Settings

SYNC_BATCH = 1_000  # journal entries applied per hold of the state lock
log = logging.getLogger("riskroute.serving")
MODEL_NAMES = ("carrier_delay", "node_congestion")
TOP_CONTRIBUTIONS = 5


class BatchTooLarge(Exception):
    """More candidates than one request may carry."""

    status_code = 413


class NoDatabase(Exception):
    """The service runs without a database, so it cannot record events."""

    status_code = 503


@dataclass
class Runtime:
    """The service's loaded state.

    `journal_seq` is the last journal entry applied to this worker's online state; journal
    events older than `history_end` are already in the history the state was warmed from.
    """

    settings: Settings
    ruleset: Ruleset
    models: ModelSet
    state: OnlineFeatureState
    load_problems: dict[str, str] = field(default_factory=dict)
    database: Database | None = None
    ruleset_version: int | None = None
    journal_seq: int = 0
    history_end: pd.Timestamp | None = None
    unapplied_events: int = 0
    # Events are applied by request threads and the poller while requests read features.
    state_lock: threading.RLock = field(default_factory=threading.RLock)
    # token digest -> (principal, monotonic expiry)
    auth_cache: dict = field(default_factory=dict)

    @cached_property
    def champions(self) -> MlflowChampions:
        """The model registry as the approval loop sees it (configured once, on first use)."""
        return MlflowChampions(tracking_uri=self.settings.mlflow_tracking_uri)

    def rules(self) -> tuple[Ruleset, int | None]:
        """The ruleset in force and its version number, read together (a swap never splits them)."""
        with self.state_lock:
            return self.ruleset, self.ruleset_version

    @property
    def scorer(self) -> ModelScorer:
        """The risk scorer over the models and features in service."""
        return ModelScorer(
            models=self.models,
            state=self.state,
            freshness_limit=timedelta(minutes=self.settings.freshness_limit_minutes),
            lock=self.state_lock,
        )


def load_models(*, tracking_uri: str | None) -> tuple[ModelSet, dict[str, str]]:
    """Each model's @champion, or None with the reason it could not load (the service still starts)."""
    from training.tracking import configure, load_registered

    configure(tracking_uri=tracking_uri)
    loaded, problems = {}, {}
    for name in MODEL_NAMES:
        try:
            loaded[name] = load_registered(model_name=name, alias="champion")
        except Exception as exc:  # noqa: BLE001 - any failure to load means serving without that model
            problems[name] = f"{type(exc).__name__}: {exc}"
            log.warning("model %s not loaded: %s", name, problems[name])
    return ModelSet(**loaded), problems


def refresh_models(*, runtime: Runtime) -> dict[str, str]:
    """Follow @champion: load a moved alias's version and swap it in whole; a failed load keeps the old model.

    Returns what changed or failed, by model name, for logs.
    """
    from training.tracking import alias_version, load_registered

    changes: dict[str, str] = {}
    current = runtime.models
    loaded = {name: getattr(current, name) for name in MODEL_NAMES}
    for name in MODEL_NAMES:
        try:
            wanted = alias_version(model_name=name, alias="champion")
        except Exception as exc:  # noqa: BLE001 - a registry outage must not stop serving
            changes[name] = f"registry unreachable: {exc}"
            continue
        serving = loaded[name].version if loaded[name] is not None else None
        if wanted is None or wanted == serving:
            continue
        try:
            loaded[name] = load_registered(model_name=name, version=wanted)
            runtime.load_problems.pop(name, None)
            changes[name] = f"now serving version {wanted} (was {serving})"
        except Exception as exc:  # noqa: BLE001 - keep the model in service and say why
            runtime.load_problems[name] = f"version {wanted} failed to load, still serving {serving}: {exc}"
            changes[name] = runtime.load_problems[name]
            log.warning("%s: %s", name, changes[name])
    # One assignment swaps both models: a request sees the old set or the new one, never a mix.
    runtime.models = ModelSet(**loaded)
    if changes:
        compile_in_background(runtime=runtime)
    return changes


def compile_in_background(*, runtime: Runtime) -> threading.Thread | None:
    """Compile the models in service to native code on a background thread; each scores compiled once ready.

    Until then, and for good if compiling fails (logged with the reason), a model scores with
    Booster.predict: the answers are the same either way, only their speed differs.
    """
    if not runtime.settings.compile_models:
        return None
    models = (runtime.models.carrier_delay, runtime.models.node_congestion)
    pending = [m for m in models if m is not None and m.model.compiled_ is None]
    if not pending:
        return None
    thread = threading.Thread(
        target=_compile, kwargs={"models": pending, "folder": runtime.settings.compiled_dir}, daemon=True
    )
    thread.start()
    return thread


def _compile(*, models: list, folder: Path) -> None:
    """Compile each model and hand it its native forest (one attribute store: a request sees it or not)."""
    from training.compiled import CompileError, compile_model

    for registered in models:
        started = time.perf_counter()
        try:
            registered.model.compiled_ = compile_model(model=registered.model, cache_dir=folder)
        except CompileError as exc:
            log.warning("%s v%s scores with Booster.predict: %s", registered.name, registered.version, exc)
            continue
        log.info("%s v%s compiled in %.1f s", registered.name, registered.version, time.perf_counter() - started)


def load_state(*, history_path: Path | None) -> tuple[OnlineFeatureState, pd.Timestamp | None, str | None]:
    """The online features warm-started from a history folder when there is one, and where that history ends."""
    from features.history import load_history

    if history_path is None or not history_path.exists():
        return OnlineFeatureState(), None, "no history to warm the online features from"
    history, _ = load_history(path=history_path)
    as_of = history.shipments["allocated_at"].max() + pd.Timedelta(seconds=1)
    return warm_start(history=history, as_of=as_of), as_of, None


def start(*, settings: Settings) -> Runtime:
    """Load everything the service needs; an un-migrated database is fatal, a missing model or history is not."""
    database = open_database(url=settings.database)
    seed = load_ruleset(path=settings.ruleset_path or seed_ruleset_path())
    with transaction(sessions=database.sessions) as session:
        version = rulesets.ensure_seeded(session=session, ruleset=seed)
        ruleset = rulesets.to_ruleset(version=rulesets.active(session=session))
        number = rulesets.active_number(session=session)
    log.info("ruleset version %s (%s) is active", number, version.name)
    models, problems = load_models(tracking_uri=settings.mlflow_tracking_uri)
    state, history_end, state_problem = load_state(history_path=settings.warm_start_history or settings.history_dir)
    if state_problem:
        problems["features"] = state_problem
    runtime = Runtime(
        settings=settings,
        ruleset=ruleset,
        ruleset_version=number,
        models=models,
        state=state,
        load_problems=problems,
        database=database,
        history_end=history_end,
    )
    sync_events(runtime=runtime)
    compile_in_background(runtime=runtime)
    return runtime


def sync_ruleset(*, runtime: Runtime) -> int | None:
    """Swap in the active ruleset version if it moved; returns the new version number, or None if unchanged."""
    if runtime.database is None:
        return None
    with runtime.database.sessions() as session:
        number = rulesets.active_number(session=session)
        if number is None or number == runtime.ruleset_version:
            return None
        ruleset = rulesets.to_ruleset(version=rulesets.get(session=session, number=number))
    with runtime.state_lock:
        runtime.ruleset, runtime.ruleset_version = ruleset, number
    log.info("ruleset version %s is now active", number)
    return number


class MlflowChampions:
    """The model registry as approvals sees it: who is champion, which versions exist, moving the alias."""

    def __init__(self, *, tracking_uri: str | None) -> None:
        from training.tracking import configure

        configure(tracking_uri=tracking_uri)

    def champion(self, model_name: str) -> str | None:
        """The version @champion points at."""
        from training.tracking import CHAMPION, alias_version

        return alias_version(model_name=model_name, alias=CHAMPION)

    def exists(self, model_name: str, version: str) -> bool:
        """Whether the version is registered."""
        from training.tracking import version_exists

        return version_exists(model_name=model_name, version=version)

    def promote(self, model_name: str, version: str) -> None:
        """Move @champion (the service follows it within its polling interval)."""
        from training.tracking import CHAMPION, set_alias

        set_alias(model_name=model_name, alias=CHAMPION, version=version)


def sync_events(*, runtime: Runtime) -> int:
    """Apply the journal's events this worker has not applied yet, in arrival order; returns how many.

    The journal is read without the state lock (a slow read must not hold up scoring); each batch
    is applied under it, skipping what a concurrent sync applied meanwhile.
    """
    if runtime.database is None:
        return 0
    applied, batch = 0, []
    for entry in journal.events_after(sessions=runtime.database.sessions, seq=runtime.journal_seq):
        batch.append(entry)
        if len(batch) == SYNC_BATCH:
            applied += _apply_events(runtime=runtime, entries=batch)
            batch = []
    return applied + _apply_events(runtime=runtime, entries=batch)


def _apply_events(*, runtime: Runtime, entries: list[tuple[int, dict]]) -> int:
    """Apply journal entries newer than the worker's own, under the state lock; returns how many were applied."""
    applied = 0
    with runtime.state_lock:
        for seq, event in entries:
            if seq <= runtime.journal_seq:
                continue  # a concurrent sync applied it
            runtime.journal_seq = seq
            if runtime.history_end is not None and pd.Timestamp(event["event_time"]) < runtime.history_end:
                continue
            try:
                runtime.state.ingest(event, allow_late=True)
                applied += 1
            except (FeaturesError, ValueError) as exc:
                # Recorded but unusable for features (kept for retraining); one bad event must not stall the rest.
                runtime.unapplied_events += 1
                log.warning("journal entry %s not applied to the online features: %s", seq, exc)
        runtime.state.settle()  # here, once per batch, rather than in the next request
    return applied


def record_events(*, runtime: Runtime, body: schemas.EventsCreate, request_id: str) -> schemas.EventsRead:
    """Record a batch of events once each, then bring this worker's online features up to the journal."""
    if runtime.database is None:
        raise NoDatabase("events: this service runs without a database, so events cannot be recorded")
    payloads = [event.model_dump(mode="json", exclude_none=True) for event in body.events]
    recorded = journal.record_events(sessions=runtime.database.sessions, events=payloads)
    sync_events(runtime=runtime)
    return schemas.EventsRead(
        request_id=request_id,
        accepted=len(recorded.accepted),
        duplicates=recorded.duplicates,
        features_as_of=runtime.state.last_event_at,
    )


def _now() -> datetime:
    """Now, as the naive wall-clock time the features are kept in."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def score_candidates(*, runtime: Runtime, body: schemas.RiskScoresCreate, request_id: str) -> schemas.RiskScoresRead:
    """Risk for a batch of candidates, with an explanation from LightGBM's own contributions if asked."""
    if len(body.candidates) > runtime.settings.max_batch:
        raise BatchTooLarge(
            f"candidates: {len(body.candidates)} in one request; the limit is {runtime.settings.max_batch}"
        )
    now = _now()
    queries = RiskQueries.from_rows(
        (
            c.decided_at or now,
            c.node_id,
            c.node_type,
            c.origin_region,
            c.dest_region,
            c.carrier,
            c.service,
            c.distance_km,
            c.ship_by,
            c.promised_delivery,
        )
        for c in body.candidates
    )
    scorer = runtime.scorer
    features, unknown = scorer.lookup(queries)
    scores = scorer.score_features(features=features, decided_at=queries.decided_at, unknown=unknown)
    late = 1.0 - (1.0 - scores.carrier_delay) * (1.0 - scores.node_congestion)
    n = len(queries)
    explanations = _explain(runtime=runtime, features=features) if body.explain else [None] * n
    freshness = scorer.feature_age(now=max(queries.decided_at))
    # Validated from plain values in one call: pydantic's core does it faster than building each answer.
    return schemas.RiskScoresRead.model_validate(
        {
            "request_id": request_id,
            "scores": [
                {"carrier_delay_risk": d, "node_congestion_risk": c, "late_risk": p, "unknown": u, "explanation": e}
                for d, c, p, u, e in zip(
                    scores.carrier_delay.tolist(), scores.node_congestion.tolist(), late.tolist(), unknown, explanations
                )
            ],
            "model_versions": scores.model_versions,
            "feature_freshness_seconds": freshness,
            "degraded": bool(scores.degraded.any()),
            "degraded_reasons": list(scores.notes),
        }
    )


def _explain(*, runtime: Runtime, features: dict[str, np.ndarray]) -> list[dict[str, list[schemas.Contribution]]]:
    """The features that pushed each candidate's risk most, per model (log-odds contributions)."""
    per_row: list[dict[str, list[schemas.Contribution]]] = [{} for _ in range(len(features["carrier"]))]
    for name in MODEL_NAMES:
        registered = getattr(runtime.models, name)
        if registered is None:
            continue
        model = registered.model
        contributions = model.contributions(model.encode(features))[:, :-1]
        for i, row in enumerate(contributions):
            top = np.argsort(-np.abs(row), kind="stable")[:TOP_CONTRIBUTIONS]
            per_row[i][name] = [
                schemas.Contribution(feature=model.features_[j], contribution=float(row[j])) for j in top
            ]
    return per_row


def _order(*, body: schemas.DecisionCreate, excluded: list[schemas.Exclusion]) -> tuple[Order, list[Candidate]]:
    """Engine inputs from a request body."""
    o = body.order
    order = Order(
        order_id=o.order_id,
        lines=tuple(
            OrderLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity, hazmat=x.hazmat, group=x.group)
            for x in o.lines
        ),
        dest_region=o.dest_region,
        tier=o.tier,
        promised_delivery=o.promised_delivery,
        decided_at=o.decided_at or _now(),
        excluded=tuple((e.node_id, e.carrier, e.service) for e in excluded),
    )
    candidates = [
        Candidate(
            node_id=c.node_id,
            node_type=c.node_type,
            region=c.region,
            handling_cost=c.handling_cost,
            available=dict(c.available),
            capacity=c.capacity,
            assigned_today=c.assigned_today,
            distance_km=c.distance_km,
            options=tuple(
                ShippingOption(
                    carrier=p.carrier,
                    service=p.service,
                    cost=p.cost,
                    transit_days=p.transit_days,
                    ship_by=p.ship_by,
                )
                for p in c.options
            ),
        )
        for c in body.candidates
    ]
    return order, candidates


def decide(
    *, runtime: Runtime, body: schemas.DecisionCreate, request_id: str, excluded: list[schemas.Exclusion] | None = None
) -> schemas.DecisionRead:
    """Route one order: the engine's decision and trace, stamped with the ruleset and models that made it."""
    order, candidates = _order(body=body, excluded=excluded or [])
    ruleset, version = runtime.rules()
    decision: Decision = decide_batch(orders=[order], candidates=[candidates], ruleset=ruleset, scorer=runtime.scorer)[
        0
    ]
    # Validated from plain values in one call: pydantic's core does it faster than building each trace row.
    return schemas.DecisionRead.model_validate(
        {
            "request_id": request_id,
            "order_id": decision.order_id,
            "status": "routed" if decision.chosen else "unroutable",
            "chosen": _allocation(decision.chosen),
            "runner_up": _allocation(decision.runner_up),
            "margin": decision.margin,
            "unroutable_reason": decision.unroutable_reason,
            "ruleset_name": decision.ruleset_name,
            "ruleset_hash": decision.ruleset_hash,
            "ruleset_version": version,
            "model_versions": runtime.models.versions(),
            "degraded": decision.degraded,
            "degraded_reasons": list(decision.notes),
            "trace": [
                {
                    "node_id": t.node_id,
                    "carrier": t.carrier,
                    "service": t.service,
                    "lines": list(t.lines),
                    "eligible": t.eligible,
                    "excluded_by": t.excluded_by,
                    "carrier_delay_risk": t.p_carrier_delay,
                    "node_congestion_risk": t.p_node_congestion,
                    "late_risk": t.p_late,
                    "shipping": t.shipping,
                    "handling": t.handling,
                    "late_penalty": t.late_penalty,
                    "lane_adjustment": t.lane_adjustment,
                    "total": t.total if math.isfinite(t.total) else None,
                    "unknown": t.unknown,
                }
                for t in decision.candidates
            ],
        }
    )


def _allocation(allocation) -> schemas.AllocationRead | None:
    if allocation is None:
        return None
    return schemas.AllocationRead(
        total=allocation.total,
        shipments=[
            schemas.ShipmentRead(
                node_id=s.node_id,
                carrier=s.carrier,
                service=s.service,
                lines=list(s.lines),
                ship_by=s.ship_by,
                arrival=s.arrival,
                late_risk=s.p_late,
                cost=s.cost,
            )
            for s in allocation.shipments
        ],
    )
