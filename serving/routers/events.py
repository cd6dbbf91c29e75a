"""POST /v1/events."""

from __future__ import annotations

from fastapi import APIRouter

from serving import runtime as service
from serving.deps import RequestIdDep, RouterDep, RuntimeDep
from serving.schemas import EventsCreate, EventsRead

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    responses={
        409: {"description": "an event id already recorded with different content"},
        503: {"description": "no database to record events in"},
    },
)
def events(body: EventsCreate, runtime: RuntimeDep, request_id: RequestIdDep, _: RouterDep) -> EventsRead:
    """Record outcome, exception and capacity events (idempotent by event_id) and update the online features."""
    return service.record_events(runtime=runtime, body=body, request_id=request_id)
