"""``POST /v1/attestations`` served in front of FastAPI's router.

Uploads are the one hot request of this service. Through FastAPI each one walked the router
and its included routers (about 8% of the CPU of an upload under load), solved the dependency
graph (about 5%) and went through the exception and exit-stack layers and their send
wrappers. :class:`UploadFastPath` is a pure ASGI middleware that answers exactly that method
and path itself, with the same steps in the same order as the route:

1. the bearer token, validated and checked for the supplier role by the same functions the
   route's ``SupplierDep`` calls (:func:`linegate.auth.current_principal`,
   :func:`linegate.auth.require`);
2. :func:`attestation.api.attestations.record_upload`, the route's own body (Content-Type,
   tenant, the streamed size limit, ingest, the 201/200/4xx answers);
3. an exception is rendered by the handler the app registered for its class (problem+json,
   the same bodies and headers); one with no handler but ``Exception``'s goes on up to
   Starlette's ``ServerErrorMiddleware``, as it did from the route;
4. the request is counted in the app's metrics under the route template, as
   :class:`linegate.observability.MetricsMiddleware` does for every other request.

Every other request, and an upload under a ``root_path`` (a mounted app), goes to FastAPI
unchanged. The route stays registered: it documents the endpoint in OpenAPI and would serve it
if this middleware were removed.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from attestation.api.attestations import record_upload
from linegate.auth import Role, current_principal, require
from linegate.observability import StatusRecorder

UPLOAD_METHOD = "POST"
UPLOAD_PATH = "/v1/attestations"

_require_supplier = require(Role.SUPPLIER)


class UploadFastPath:
    """Answers ``POST /v1/attestations``; hands every other request to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        #: Uploads this middleware answered (tests check it is the one serving).
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != UPLOAD_PATH
            or scope["method"] != UPLOAD_METHOD
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        self.served += 1
        start = time.perf_counter()
        # An exception that escapes is answered 500 by ServerErrorMiddleware: counted as such.
        send_observed = StatusRecorder(send)
        service: FastAPI = scope["app"]

        try:
            request = Request(scope, receive)
            try:
                principal = await _require_supplier(await current_principal(request))
                response = await record_upload(
                    request, principal, service.state.ctx.settings, service.state.ingestor
                )
            except Exception as exc:
                handler = _handler_for(service, exc)
                if handler is None:
                    raise
                if is_async_callable(handler):
                    response = await handler(request, exc)
                else:
                    response = await run_in_threadpool(handler, request, exc)
            await response(scope, receive, send_observed)
        finally:
            service.state.ctx.metrics.observe(
                UPLOAD_METHOD, UPLOAD_PATH, send_observed.status, time.perf_counter() - start
            )


def _handler_for(service: FastAPI, exc: Exception) -> Any:
    """The handler Starlette's ExceptionMiddleware would pick for ``exc`` (by its class's
    MRO), or None where only ``Exception``'s is left: that one belongs to
    ServerErrorMiddleware, outside this middleware, which the exception is left to reach."""
    handlers = service.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
