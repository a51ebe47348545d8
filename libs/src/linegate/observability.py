"""Structured JSON logs and Prometheus metrics shared by every service.

Each app gets its own :class:`prometheus_client.CollectorRegistry`, so several apps can live in
one test process without clashing metric names.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linegate.settings import LinegateSettings, LogFormat

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(settings: LinegateSettings) -> None:
    """Route the root logger to stderr in the configured format (idempotent)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(settings.service_name))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.set_name("linegate")
    for existing in list(root.handlers):
        if existing.get_name() == "linegate":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn installs its own plain-text handlers; send its records through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Metrics:
    """The HTTP metrics every service exposes at ``/metrics``."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "linegate_http_requests",
            "HTTP requests by route and status",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "linegate_http_request_seconds",
            "HTTP request latency by route",
            ["service", "method", "route"],
            registry=self.registry,
        )
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def install(self, app: FastAPI) -> None:
        """Count and time every HTTP request of ``app`` (a pure ASGI middleware)."""
        app.add_middleware(MetricsMiddleware, metrics=self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered request under its route template."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds a key each call: look each series up once.
            children = self._children[key] = (
                self.requests.labels(self.service, method, route, str(status)),
                self.latency.labels(self.service, method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


class StatusRecorder:
    """An ASGI ``send`` that passes every message on and keeps the status of the response it
    started: 500 until then (an app that raised before answering is counted as a 500)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class MetricsMiddleware:
    """Pure ASGI middleware feeding :class:`Metrics`.

    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the app in a task of
    its own and relays the response through a memory stream, which cost about a third of an
    empty request; this one only watches the ``http.response.start`` message go by. The
    latency runs until the app returns, i.e. until the body is sent.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        send_observed = StatusRecorder(send)
        try:
            await self.app(scope, receive, send_observed)
        finally:  # an app that raised before answering is counted as a 500
            # Label by route template, not raw path, so ids do not explode cardinality. The
            # router records the matched route in this same scope dict.
            route = scope.get("route")
            self.metrics.observe(
                scope["method"],
                getattr(route, "path", "unmatched"),
                send_observed.status,
                time.perf_counter() - start,
            )
