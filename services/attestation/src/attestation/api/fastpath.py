"""``POST /v1/attestations`` served in front of FastAPI's whole middleware stack.

Uploads are the one hot request of this service. Through FastAPI each one walked the router
and its included routers (about 8% of the CPU of an upload under load), solved the dependency
graph (about 5%) and went through the exception and exit-stack layers and their send
wrappers; then the error, telemetry and body-limit layers FastAPI puts around every app (4-5%
more, measured in-process on one core). :class:`UploadFastPath` is a pure ASGI app, installed
by :func:`install` as the outermost layer of the app's middleware stack, that answers exactly
that method and path itself, with the same steps in the same order as the route:

1. the bearer token, validated and checked for the supplier role by the same functions the
   route's ``SupplierDep`` calls (:func:`linegate.auth.current_principal`,
   :func:`linegate.auth.require`);
2. :func:`attestation.api.attestations.record_upload`, the route's own body (Content-Type,
   tenant, the streamed size limit, ingest, the 201/200/4xx answers);
3. an exception is rendered by the handler the app registered for its class (problem+json,
   the same bodies and headers); one with no handler but ``Exception``'s goes on to a
   Starlette ``ServerErrorMiddleware`` set up as the app's own (a problem+json 500 with a
   trace id, then raised on to the server to be logged);
4. the request is counted in the app's metrics under the route template, as
   :class:`linegate.observability.MetricsMiddleware` does for every other request.

Every other request, and an upload under a ``root_path`` (a mounted app), goes to the app's
middleware stack unchanged. The route stays registered: it documents the endpoint in OpenAPI
and would serve it if this layer were removed. FastAPI's native telemetry, when configured,
does not see uploads' exceptions (they are logged by the server and counted as 500s).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from attestation.api.attestations import record_upload
from linegate.auth import Role, current_principal, require
from linegate.observability import StatusRecorder

UPLOAD_METHOD = "POST"
UPLOAD_PATH = "/v1/attestations"

_require_supplier = require(Role.SUPPLIER)


def install(app: FastAPI) -> None:
    """Put :class:`UploadFastPath` outside every layer of ``app``'s middleware stack (built
    on the first request, as Starlette builds it)."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return UploadFastPath(build())

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]


class UploadFastPath:
    """Answers ``POST /v1/attestations``; hands every other request to ``app``.

    Uploads run inside a ``ServerErrorMiddleware`` of their own, set up as the one at the top
    of ``app`` (its 500 handler, its debug flag): an error no other handler takes is answered
    and raised on exactly as for every other request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        errors = app if isinstance(app, ServerErrorMiddleware) else None
        self._upload = ServerErrorMiddleware(
            self._serve,
            handler=errors.handler if errors is not None else None,
            debug=errors.debug if errors is not None else False,
        )
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
        # An exception that escapes is answered 500 by the error layer: counted as such.
        send_observed = StatusRecorder(send)
        try:
            await self._upload(scope, receive, send_observed)
        finally:
            scope["app"].state.ctx.metrics.observe(
                UPLOAD_METHOD, UPLOAD_PATH, send_observed.status, time.perf_counter() - start
            )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        service: FastAPI = scope["app"]
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
        await response(scope, receive, send)


def _handler_for(service: FastAPI, exc: Exception) -> Any:
    """The handler Starlette's ExceptionMiddleware would pick for ``exc`` (by its class's
    MRO), or None where only ``Exception``'s is left: that one belongs to the
    ServerErrorMiddleware around the upload, which the exception is left to reach."""
    handlers = service.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
