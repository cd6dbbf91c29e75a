"""Prometheus metrics of one app: latency per endpoint, models in service, degraded and fallback answers."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The app's own registry, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "riskroute_request_seconds",
            "Request latency by endpoint",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "riskroute_model_version",
            "Registered version of each model in service (0 = none)",
            ["model"],
            registry=self.registry,
        )
        self.degraded = Counter(
            "riskroute_degraded_responses_total",
            "Answers given in degraded mode",
            ["endpoint"],
            registry=self.registry,
        )
        self.fallback = Counter(
            "riskroute_fallback_scores_total",
            "Candidates priced by the historical-rate baseline",
            ["model"],
            registry=self.registry,
        )

        self.unknown = Counter(
            "riskroute_unknown_history_candidates_total",
            "Candidates priced without any history of their node, carrier or lane (fallback priors)",
            ["what"],
            registry=self.registry,
        )
        self.proposer_runs = Counter(
            "riskroute_proposer_runs_total",
            "Scheduled proposer passes, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.proposals_filed = Counter(
            "riskroute_proposals_filed_total",
            "Proposals the scheduled proposer filed",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)

    def models(self, *, versions: dict[str, str], names: tuple[str, ...]) -> None:
        """Record which model versions serve."""
        for name in names:
            self.model_version.labels(model=name).set(float(versions.get(name, 0) or 0))

    def answered(
        self,
        *,
        endpoint: str,
        degraded: bool,
        reasons: list[str],
        candidates: int,
        unknown: Iterable[Sequence[str]] = (),
    ) -> None:
        """Count the candidates priced without history, a degraded answer, and the candidates each model's
        fallback priced; `unknown` holds each candidate's unknown names."""
        for what, count in collections.Counter(name for names in unknown for name in names).items():
            self.unknown.labels(what=what).inc(count)
        if not degraded:
            return
        self.degraded.labels(endpoint=endpoint).inc()
        for reason in reasons:
            self.fallback.labels(model=reason.split(":", 1)[0]).inc(candidates)
