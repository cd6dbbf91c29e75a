"""POST /v1/risk-scores."""

from __future__ import annotations

from fastapi import APIRouter

from serving import runtime as service
from serving.deps import RequestIdDep, RuntimeDep
from serving.schemas import RiskScoresCreate, RiskScoresRead

router = APIRouter(prefix="/v1", tags=["risk"])


@router.post("/risk-scores", responses={413: {"description": "too many candidates in one request"}})
def risk_scores(body: RiskScoresCreate, runtime: RuntimeDep, request_id: RequestIdDep) -> RiskScoresRead:
    """Carrier-delay, node-congestion and combined late risk per candidate."""
    return service.score_candidates(runtime=runtime, body=body, request_id=request_id)
