"""POST /v1/routing/decisions and /v1/routing/reroute (parsed from and answered in bytes, like risk scores)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import bodies
from serving import runtime as service
from serving.deps import hot_path
from serving.schemas import DecisionCreate, DecisionRead, RerouteCreate

router = APIRouter(prefix="/v1/routing", tags=["routing"])


@router.post("/decisions", response_model=DecisionRead, openapi_extra=bodies.request_body(DecisionCreate))
async def decisions(request: Request) -> Response:
    """The least-cost eligible allocation of an order, with its trace (a router's token)."""
    context = await hot_path(request)
    body = await bodies.parse(request, DecisionCreate)
    answer = service.decide(runtime=context.runtime, body=body, request_id=context.request_id)
    context.metrics.answered(
        endpoint="/v1/routing/decisions",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.trace),
    )
    return bodies.json_response(answer)


@router.post("/reroute", response_model=DecisionRead, openapi_extra=bodies.request_body(RerouteCreate))
async def reroute(request: Request) -> Response:
    """The decision again after an exception, never choosing what failed (a router's token)."""
    context = await hot_path(request)
    body = await bodies.parse(request, RerouteCreate)
    answer = service.decide(runtime=context.runtime, body=body, request_id=context.request_id, excluded=body.excluded)
    context.metrics.answered(
        endpoint="/v1/routing/reroute",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.trace),
    )
    return bodies.json_response(answer)
