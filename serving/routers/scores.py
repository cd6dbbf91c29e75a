"""POST /v1/risk-scores: the hot path, parsed from and answered in bytes (see `serving.bodies`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import bodies
from serving import runtime as service
from serving.deps import hot_path
from serving.schemas import RiskScoresCreate, RiskScoresRead

router = APIRouter(prefix="/v1", tags=["risk"])


@router.post(
    "/risk-scores",
    response_model=RiskScoresRead,
    openapi_extra=bodies.request_body(RiskScoresCreate),
    responses={413: {"description": "too many candidates in one request"}},
)
async def risk_scores(request: Request) -> Response:
    """Carrier-delay, node-congestion and combined late risk per candidate (a router's token)."""
    context = await hot_path(request)
    # Scoring is CPU-bound and short: it runs on the event loop rather than paying a thread hop.
    body = await bodies.parse(request, RiskScoresCreate)
    answer = service.score_candidates(runtime=context.runtime, body=body, request_id=context.request_id)
    context.metrics.answered(
        endpoint="/v1/risk-scores",
        degraded=answer.degraded,
        reasons=answer.degraded_reasons,
        candidates=len(answer.scores),
    )
    return bodies.json_response(answer)
