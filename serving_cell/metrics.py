"""Prometheus metrics of one cell: requests and latency per endpoint, model load time,
batch sizes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from serving_cell.cell import Cell

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """One registry per app (no process globals), so tests can build many cells."""

    def __init__(self, cell: Cell) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cell_requests",
            "HTTP requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cell_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint", "method"],
            registry=self.registry,
        )
        load = Gauge(
            "cell_model_load_seconds", "Seconds the model took to load.", registry=self.registry
        )
        load.set_function(lambda: cell.load_seconds or 0.0)
        ready = Gauge(
            "cell_model_ready", "1 once the model is loaded, else 0.", registry=self.registry
        )
        ready.set_function(lambda: 1.0 if cell.health.ready else 0.0)
        # Batching deployments only (metadata "batching"): does it batch, and how much?
        batch_size = Histogram(
            "cell_batch_size",
            "Requests in each call of a batching model's predict.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        cell.batch_observers.append(batch_size.observe)
        waiting = Gauge(
            "cell_batch_waiting",
            "Requests waiting for their batch to go to the model.",
            registry=self.registry,
        )
        waiting.set_function(lambda: cell.batcher.waiting if cell.batcher else 0)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every request under its route's template, never its raw path.

    Raw paths would give one time series per model name or id a client makes up.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _endpoint(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app dies before answering
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint, method = self._endpoint(scope), scope["method"]
            self.metrics.latency.labels(endpoint, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
