"""The FastAPI application: lifespan loading, request ids, one place mapping domain errors to HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from features.errors import FeaturesError
from rules.errors import RulesError
from serving import runtime as runtime_module
from serving.routers import health, routing, scores
from serving.settings import Settings, get_settings
from training.errors import TrainingError

REQUEST_ID_HEADER = "X-Request-ID"
DOMAIN_ERRORS = (FeaturesError, RulesError, TrainingError, runtime_module.BatchTooLarge)


def create_app(*, settings: Settings | None = None, runtime: runtime_module.Runtime | None = None) -> FastAPI:
    """The service; `runtime` can be handed in (tests), otherwise it is loaded at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime or runtime_module.start(settings=settings or get_settings())
        yield

    app = FastAPI(
        title="riskroute",
        description="Risk-aware order routing: calibrated delay and congestion risk, deterministic rules.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        """Every response carries a request id (the caller's, or a new one)."""
        identifier = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        request.state.request_id = identifier
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = identifier
        return response

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        """Domain errors carry their status code and a message naming what is wrong."""
        identifier = getattr(request.state, "request_id", "")
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": str(exc), "request_id": identifier},
            headers={REQUEST_ID_HEADER: identifier},
        )

    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, domain_error)

    app.include_router(health.router)
    app.include_router(scores.router)
    app.include_router(routing.router)
    return app
