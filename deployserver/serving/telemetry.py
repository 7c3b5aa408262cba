"""The server's own Prometheus metrics: proxied requests per model and status, proxy
latency, the asynchronous queue's depth, and cells by status."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.orm import Session, sessionmaker

from deployserver.domain import DeploymentStatus
from deployserver.store import queries

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "deployserver_serve_requests",
            "Requests through /serve by model and status",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deployserver_serve_latency_seconds",
            "Time to answer a /serve request",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "deployserver_async_queue_depth",
            "Asynchronous predictions queued or running",
            ["status"],
            registry=self.registry,
        )
        self.deployments = Gauge(
            "deployserver_deployments",
            "Deployments by status",
            ["status"],
            registry=self.registry,
        )

    def observe_proxy(self, model: str, status: int, seconds: float) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)

    def render(self, sessions: sessionmaker[Session], queue: Callable[[], dict[str, int]]) -> bytes:
        """The exposition text; database gauges are read now, at scrape time."""
        with sessions() as session:
            counts = queries.deployments_by_status(session)
        for status in DeploymentStatus:
            self.deployments.labels(status.value).set(counts.get(status, 0))
        for state, depth in queue().items():
            self.queue_depth.labels(state).set(depth)
        return generate_latest(self.registry)
