"""The FastAPI application: lifespan loading, request ids, one place mapping domain errors to HTTP."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from approvals.errors import ApprovalsError
from features.errors import FeaturesError
from rules.errors import RulesError
from serving import bodies
from serving import runtime as runtime_module
from serving.console import pages as console
from serving.hot import FastLane
from serving.metrics import Metrics
from serving.routers import audit, events, health, proposals, routing, rulesets, scores, tokens
from serving.settings import Settings, get_settings
from training.errors import TrainingError

log = logging.getLogger("riskroute.serving")
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_BYTES = REQUEST_ID_HEADER.lower().encode()
DOMAIN_ERRORS = (
    ApprovalsError,
    FeaturesError,
    RulesError,
    TrainingError,
    runtime_module.BatchTooLarge,
    runtime_module.NoDatabase,
)


async def _follow_champion(app: FastAPI) -> None:
    """Poll the registry and swap in a moved @champion (in a thread: loading a model blocks)."""
    runtime = app.state.runtime
    while True:
        await asyncio.sleep(runtime.settings.model_poll_seconds)
        changes = await asyncio.to_thread(runtime_module.refresh_models, runtime=runtime)
        if changes:
            app.state.metrics.models(versions=runtime.models.versions(), names=runtime_module.MODEL_NAMES)


async def _follow_database(app: FastAPI) -> None:
    """Apply events other workers recorded and swap in a newly active ruleset, once per interval."""
    runtime = app.state.runtime
    while True:
        await asyncio.sleep(runtime.settings.events_poll_seconds)
        try:
            await asyncio.to_thread(runtime_module.sync_events, runtime=runtime)
            await asyncio.to_thread(runtime_module.sync_ruleset, runtime=runtime)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the poller; the next tick retries
            log.exception("following the database failed")


def _sole_proposer(*, folder: Path) -> IO | None:
    """An exclusive lock on the data folder's proposer lock file, or None when another worker holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / "proposer.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


async def _propose_on_schedule(app: FastAPI) -> None:
    """Run `riskroute propose` every `proposer.every_hours`, in one worker per data folder.

    Each pass is a child process with this service's settings: the pass is CPU-bound for about a
    minute, and in a thread it would hold the interpreter lock against the risk-score hot path (a
    crash of the pass would also take the worker down). A failed pass is logged and counted; the
    next one runs on time. Proposals only wait for an ops lead: nothing here changes routing.
    """
    runtime = app.state.runtime
    settings = runtime.settings
    hold = _sole_proposer(folder=settings.data_dir)
    if hold is None:
        log.info("another worker runs the scheduled proposer")
        return
    folder = settings.warm_start_history or settings.history_dir
    command = [sys.executable, "-m", "serving", "propose", "--history", str(folder), "--json"]
    # Exactly this service's settings, whatever RISKROUTE_* variables the process was started with.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("RISKROUTE_")}
    environment = {**inherited, **settings.as_environment()}
    try:
        while True:
            await asyncio.sleep(settings.proposer.every_hours * 3600)
            child = await asyncio.create_subprocess_exec(
                *command, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                out, err = await child.communicate()
            except asyncio.CancelledError:
                child.kill()  # the service is stopping: the pass stops with it, its filings are each whole
                raise
            try:
                if child.returncode != 0:
                    raise RuntimeError(f"exit {child.returncode}: {err.decode(errors='replace')[-2000:]}")
                report = json.loads(out.decode().splitlines()[-1])  # `propose --json` ends with what it filed
                filed = [item["target"] for item in report["filed"] if "proposal" in item]
            except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
                log.error("the scheduled proposer failed: %s", exc)
                app.state.metrics.proposer_runs.labels(outcome="failed").inc()
                continue
            log.info("the scheduled proposer filed %d proposal(s): %s", len(filed), ", ".join(filed) or "none")
            app.state.metrics.proposer_runs.labels(outcome="done").inc()
            app.state.metrics.proposals_filed.inc(len(filed))
    finally:
        hold.close()


class RequestContext:
    """Pure ASGI middleware: every response carries a request id (the caller's, or a new one); latency is recorded.

    Written against ASGI directly because the decorator form costs a task switch per request,
    which the risk-score hot path cannot afford.
    """

    def __init__(self, app, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identifier = next((v.decode() for k, v in scope["headers"] if k == REQUEST_ID_BYTES), None) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = identifier
        started = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_BYTES, identifier.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            self.metrics.latency.labels(
                endpoint=getattr(route, "path", "unmatched"), method=scope["method"], status=str(status)
            ).observe(time.perf_counter() - started)


def spare_from_full_collections() -> None:
    """Exempt everything loaded at startup from the garbage collector's full passes (until `gc.unfreeze()`).

    The warm online state and the models are some 400,000 tracked objects that live as long as the
    worker: a full pass over them stalls the event loop, and with it every request, for about a
    quarter of a second whenever enough new objects have survived. Garbage is collected once here,
    before the first request, then what remains is frozen.
    """
    gc.collect()
    gc.freeze()


def create_app(*, settings: Settings | None = None, runtime: runtime_module.Runtime | None = None) -> FastAPI:
    """The service; `runtime` can be handed in (tests), otherwise it is loaded at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime or runtime_module.start(settings=settings or get_settings())
        if runtime is None:
            spare_from_full_collections()
        app.state.metrics.models(versions=app.state.runtime.models.versions(), names=runtime_module.MODEL_NAMES)
        loaded = app.state.runtime
        watchers = []
        if runtime is None:
            watchers.append(asyncio.create_task(_follow_champion(app)))
        if loaded.database is not None:
            watchers.append(asyncio.create_task(_follow_database(app)))
            if loaded.settings.proposer.every_hours:
                watchers.append(asyncio.create_task(_propose_on_schedule(app)))
        yield
        for watcher in watchers:
            watcher.cancel()
        if runtime is None:
            gc.unfreeze()
            if loaded.database is not None:
                loaded.database.dispose()

    app = FastAPI(
        title="riskroute",
        description="Risk-aware order routing: calibrated delay and congestion risk, deterministic rules.",
        version="0.1.0",
        lifespan=lifespan,
    )

    app.state.metrics = Metrics()

    # The last added is the outermost: every request gets its id and timing, then the hot routes their lane.
    app.add_middleware(FastLane, routes=(scores.RISK_SCORES, routing.DECISIONS, routing.REROUTE))
    app.add_middleware(RequestContext, metrics=app.state.metrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    def for_console(request: Request) -> bool:
        return request.url.path.startswith("/console")

    async def domain_error(request: Request, exc: Exception) -> Response:
        """Domain errors carry their status code and a message naming what is wrong (a page in the console)."""
        if for_console(request):
            return console.error_page(request, status_code=exc.status_code, message=str(exc))
        identifier = getattr(request.state, "request_id", "")
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": str(exc), "request_id": identifier},
            headers={REQUEST_ID_HEADER: identifier},
        )

    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, domain_error)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """HTTP errors as JSON for the API, as a page in the console."""
        if for_console(request):
            return console.error_page(request, status_code=exc.status_code, message=str(exc.detail))
        return await http_exception_handler(request, exc)

    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """422 naming the field, as JSON for the API, as a page in the console."""
        if for_console(request):
            fields = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
            return console.error_page(request, status_code=422, message=f"the form is incomplete ({fields})")
        return await request_validation_exception_handler(request, exc)

    async def sign_in_required(request: Request, exc: console.SignInRequired) -> Response:
        return console.sign_in_redirect(exc)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(console.SignInRequired, sign_in_required)

    def openapi() -> dict:
        """The schema, with the bodies the hot-path routes parse themselves (see `serving.bodies`)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(bodies.component_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    app.include_router(health.router)
    app.include_router(scores.router)
    app.include_router(routing.router)
    app.include_router(events.router)
    app.include_router(proposals.router)
    app.include_router(rulesets.router)
    app.include_router(audit.router)
    app.include_router(tokens.router)
    app.include_router(console.router)
    return app
