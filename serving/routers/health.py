"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from approvals.db import ping
from serving.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when both models are loaded, the database answers and the online features have seen events."""
    problems = dict(runtime.load_problems)
    database = "not configured" if runtime.database is None else ping(engine=runtime.database.engine)
    if database is not None:
        problems["database"] = database
    ready = not problems and runtime.state.last_event_at is not None
    return JSONResponse(
        status_code=200 if ready else 503,
        content={
            "ready": ready,
            "model_versions": runtime.models.versions(),
            "models_compiled": runtime.models.compiled(),
            "ruleset": {"name": runtime.ruleset.name, "hash": runtime.ruleset.content_hash()},
            "features_as_of": str(runtime.state.last_event_at) if runtime.state.last_event_at is not None else None,
            "problems": problems,
        },
    )
