"""A small Python client for routing engines: risk scores and routing decisions over HTTP.

from serving.client import RiskrouteClient

client = RiskrouteClient("http://127.0.0.1:8000")
risk = client.risk_scores([{"node_id": "DC01", "node_type": "dc", "carrier": "parcelway", "service": "ground",
                            "ship_by": "2026-12-01T18:00:00", "promised_delivery": "2026-12-04"}])
"""

from __future__ import annotations

from typing import Any

import httpx

REQUEST_ID_HEADER = "X-Request-ID"


class RiskrouteAPIError(Exception):
    """The service refused a request; carries its status, message and request id."""

    def __init__(self, *, status: int, detail: Any, request_id: str | None):
        super().__init__(f"HTTP {status}: {detail} (request {request_id})")
        self.status = status
        self.detail = detail
        self.request_id = request_id


class RiskrouteClient:
    """Calls the riskroute service; one instance keeps one connection pool."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 2.0,
        token: str | None = None,
        http: httpx.Client | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RiskrouteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: dict, request_id: str | None) -> dict:
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        response = self._http.post(path, json=body, headers=headers)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise RiskrouteAPIError(
                status=response.status_code, detail=detail, request_id=response.headers.get(REQUEST_ID_HEADER)
            )
        return response.json()

    def risk_scores(self, candidates: list[dict], *, explain: bool = False, request_id: str | None = None) -> dict:
        """Carrier-delay, node-congestion and late risk per candidate."""
        return self._post("/v1/risk-scores", {"candidates": candidates, "explain": explain}, request_id)

    def decide(self, order: dict, candidates: list[dict], *, request_id: str | None = None) -> dict:
        """The routing decision for an order, with its trace."""
        return self._post("/v1/routing/decisions", {"order": order, "candidates": candidates}, request_id)

    def reroute(
        self, order: dict, candidates: list[dict], excluded: list[dict], *, request_id: str | None = None
    ) -> dict:
        """The decision again after an exception, excluding what failed."""
        body = {"order": order, "candidates": candidates, "excluded": excluded}
        return self._post("/v1/routing/reroute", body, request_id)

    def send_events(self, events: list[dict], *, request_id: str | None = None) -> dict:
        """Record outcome, exception and capacity events (resending an event id is harmless)."""
        return self._post("/v1/events", {"events": events}, request_id)

    def ready(self) -> dict:
        """The readiness report (models, ruleset, features, problems)."""
        return self._http.get("/readyz").json()
