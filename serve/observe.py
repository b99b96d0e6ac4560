"""Operations: Prometheus metrics and the one ASGI middleware that times every request, counts it,
writes the access log line (never a body, a query string or a header) and turns any unhandled
exception into the standard 500 error without logging its message (it may quote a lead)."""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadscore.scoring import TIERS
from serve.errors import error_body

if TYPE_CHECKING:
    from serve.deps import Loaded

log = logging.getLogger("serve")
access = logging.getLogger("serve.access")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def multiprocess_dir() -> str | None:
    """Set (by `leadscore serve --workers N`) when several worker processes share metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The app's metrics. Each app has its own registry (tests build many apps); with several
    workers, values go to `PROMETHEUS_MULTIPROC_DIR` and a scrape adds every worker up."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        shared = multiprocess_dir() is not None
        registry = None if shared else self.registry
        self.requests = Counter(
            "leadscore_http_requests", "HTTP requests by method, route and status.",
            ["method", "route", "status"], registry=registry,
        )
        self.latency = Histogram(
            "leadscore_http_request_duration_seconds",
            "Time from request to the end of the response, by method, route and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.leads = Counter(
            "leadscore_scored_leads", "Leads scored, by model and tier.", ["model", "tier"],
            registry=registry,
        )
        self.model = Gauge(
            "leadscore_model_info", "1 for the model version being served (0 once replaced).",
            ["name", "version"], registry=registry, multiprocess_mode="liveall",
        )
        self.model_loaded = Gauge(
            "leadscore_model_loaded_timestamp_seconds", "When each served model was loaded.",
            ["name"], registry=registry, multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "leadscore_model_reloads", "Model loads by model and result (loaded or refused).",
            ["model", "result"], registry=registry,
        )
        self._tiers: dict[str, dict[str, Any]] = {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # bounded: routes are templates, methods and statuses are few
            label = (method, route, str(status))
            children = (self.requests.labels(*label), self.latency.labels(*label))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def scored(self, model: str, tiers: Iterable[str]) -> None:
        counters = self._tiers.get(model)
        if counters is None:  # bounded: the served models are fixed at start-up
            counters = {tier: self.leads.labels(model, tier) for tier in TIERS}
            self._tiers[model] = counters
        for tier in tiers:
            counters[tier].inc()

    def model_swapped(self, previous: Loaded | None, current: Loaded) -> None:
        if previous is not None:
            self.model.labels(previous.bundle.name, previous.bundle.version).set(0)
        self.model.labels(current.bundle.name, current.bundle.version).set(1)
        self.model_loaded.labels(current.bundle.name).set(current.loaded_at)
        self.reloads.labels(current.bundle.name, "loaded").inc()

    def model_refused(self, model: str) -> None:
        self.reloads.labels(model, "refused").inc()

    def render(self) -> bytes:
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        return generate_latest(registry)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _client_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class ObserveMiddleware:
    """Pure ASGI (no per-request task or body buffering, unlike `BaseHTTPMiddleware`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            route = _route_of(scope)
            frames = "".join(traceback.format_tb(exc.__traceback__))
            # the type and the stack, never str(exc): a message may quote a submitted value
            log.error("unhandled %s on %s %s\n%s", type(exc).__name__, scope["method"], route,
                      frames.rstrip())
            if status == 0:
                status = 500
                body = error_body("internal_error", "internal error; see the server log")
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]})
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - start
            status = status or 499  # the client went away before a response started
            method = scope["method"]
            route = _route_of(scope)
            self.metrics.observe(method, route, status, elapsed)
            if access.isEnabledFor(logging.INFO):
                access.info("%s %s %s %d %.1fms", _client_of(scope), method, route, status,
                            elapsed * 1000.0)
