"""POST /v1/routing/decisions and /v1/routing/reroute (hot routes, like risk scores: see `serving.hot`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import bodies
from serving import runtime as service
from serving.hot import HotRoute
from serving.schemas import DecisionCreate, DecisionRead, RerouteCreate

router = APIRouter(prefix="/v1/routing", tags=["routing"])
DECISIONS = HotRoute(
    path="/v1/routing/decisions", body=DecisionCreate, answer=service.decide, candidates=lambda a: a.trace
)


def _reroute(*, runtime: service.Runtime, body: RerouteCreate, request_id: str) -> DecisionRead:
    """The decision again, excluding what failed."""
    return service.decide(runtime=runtime, body=body, request_id=request_id, excluded=body.excluded)


REROUTE = HotRoute(path="/v1/routing/reroute", body=RerouteCreate, answer=_reroute, candidates=lambda a: a.trace)


@router.post("/decisions", response_model=DecisionRead, openapi_extra=bodies.request_body(DecisionCreate))
async def decisions(request: Request) -> Response:
    """The least-cost eligible allocation of an order, with its trace (a router's token)."""
    return await DECISIONS.serve(request)


@router.post("/reroute", response_model=DecisionRead, openapi_extra=bodies.request_body(RerouteCreate))
async def reroute(request: Request) -> Response:
    """The decision again after an exception, never choosing what failed (a router's token)."""
    return await REROUTE.serve(request)
