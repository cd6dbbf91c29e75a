"""POST /v1/risk-scores: the hot path, parsed from and answered in bytes (see `serving.hot`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import bodies
from serving import runtime as service
from serving.hot import HotRoute
from serving.schemas import RiskScoresCreate, RiskScoresRead

router = APIRouter(prefix="/v1", tags=["risk"])
# Scoring is CPU-bound and short: it runs on the event loop rather than paying a thread hop.
RISK_SCORES = HotRoute(
    path="/v1/risk-scores", body=RiskScoresCreate, answer=service.score_candidates, candidates=lambda a: a.scores
)


@router.post(
    "/risk-scores",
    response_model=RiskScoresRead,
    openapi_extra=bodies.request_body(RiskScoresCreate),
    responses={413: {"description": "too many candidates in one request"}},
)
async def risk_scores(request: Request) -> Response:
    """Carrier-delay, node-congestion and combined late risk per candidate (a router's token)."""
    return await RISK_SCORES.serve(request)
