"""POST /v1/risk-scores."""

from __future__ import annotations

from fastapi import APIRouter

from serving import runtime as service
from serving.deps import MetricsDep, RequestIdDep, RuntimeDep
from serving.schemas import RiskScoresCreate, RiskScoresRead

router = APIRouter(prefix="/v1", tags=["risk"])


@router.post("/risk-scores", responses={413: {"description": "too many candidates in one request"}})
def risk_scores(
    body: RiskScoresCreate, runtime: RuntimeDep, request_id: RequestIdDep, metrics: MetricsDep
) -> RiskScoresRead:
    """Carrier-delay, node-congestion and combined late risk per candidate."""
    answer = service.score_candidates(runtime=runtime, body=body, request_id=request_id)
    metrics.answered(
        endpoint="/v1/risk-scores",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.scores),
    )
    return answer
