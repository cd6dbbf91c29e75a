"""POST /v1/routing/decisions and /v1/routing/reroute."""

from __future__ import annotations

from fastapi import APIRouter

from serving import runtime as service
from serving.deps import MetricsDep, RequestIdDep, RuntimeDep
from serving.schemas import DecisionCreate, DecisionRead, RerouteCreate

router = APIRouter(prefix="/v1/routing", tags=["routing"])


@router.post("/decisions")
def decisions(body: DecisionCreate, runtime: RuntimeDep, request_id: RequestIdDep, metrics: MetricsDep) -> DecisionRead:
    """The least-cost eligible allocation of an order, with its trace."""
    answer = service.decide(runtime=runtime, body=body, request_id=request_id)
    metrics.answered(
        endpoint="/v1/routing/decisions",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.trace),
    )
    return answer


@router.post("/reroute")
def reroute(body: RerouteCreate, runtime: RuntimeDep, request_id: RequestIdDep, metrics: MetricsDep) -> DecisionRead:
    """The decision again after an exception, never choosing what failed."""
    answer = service.decide(runtime=runtime, body=body, request_id=request_id, excluded=body.excluded)
    metrics.answered(
        endpoint="/v1/routing/reroute",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.trace),
    )
    return answer
