"""RFC 9457 problem details for every error a Linegate API returns.

Services raise a subclass of :class:`LinegateError` (one base per service, one subclass per
failure) and :func:`install_problem_handlers` renders it, FastAPI's own validation errors and
anything unexpected as ``application/problem+json``. Unexpected errors become a 500 with a
``trace_id`` that is also logged, so an operator can find the traceback without it ever
reaching the client.

Example::

    class SupplierNotFound(LinegateError):
        status = 404
        title = "Supplier not found"

    raise SupplierNotFound(f"no supplier {supplier_id!r}")
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://linegate.dev/problems/"

log = logging.getLogger("linegate.errors")


class LinegateError(Exception):
    """Base of every domain error; carries its HTTP status and problem type."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    #: Last path segment of the problem type URI; defaults to a slug of the class name.
    slug: ClassVar[str | None] = None

    def __init__(self, detail: str, *, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = dict(extra or {})

    @classmethod
    def problem_type(cls) -> str:
        slug = cls.slug or _slugify(cls.__name__)
        return PROBLEM_BASE + slug

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(LinegateError):
    status = 401
    title = "Unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Forbidden(LinegateError):
    status = 403
    title = "Forbidden"


class NotFound(LinegateError):
    status = 404
    title = "Not found"


class Conflict(LinegateError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(LinegateError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(LinegateError):
    status = 415
    title = "Unsupported media type"


class Unprocessable(LinegateError):
    status = 422
    title = "Unprocessable content"


class ServiceUnavailable(LinegateError):
    status = 503
    title = "Service unavailable"


def _slugify(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build an RFC 9457 response; ``extra`` members are added beside the standard ones."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {})
    )


def validation_problem(reasons: list[dict[str, Any]], *, instance: str | None) -> JSONResponse:
    """The 422 of a request that does not match the schema, each reason a ``location``,
    ``message`` and ``type`` (what FastAPI's validation and the text checks before it find)."""
    return problem_response(
        422,
        "Request validation failed",
        "The request does not match the schema; see reasons.",
        type_=PROBLEM_BASE + "validation",
        instance=instance,
        extra={"reasons": reasons},
    )


def _validation_reasons(errors: Sequence[Any]) -> list[dict[str, Any]]:
    reasons = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        reasons.append(
            {"location": loc, "message": err.get("msg", ""), "type": err.get("type", "")}
        )
    return reasons


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error raised in ``app`` as problem+json."""

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LinegateError)
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            type_=exc.problem_type(),
            instance=request.url.path,
            extra=exc.extra,
            headers=exc.headers(),
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            status, title, detail, instance=request.url.path, headers=getattr(exc, "headers", None)
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(_validation_reasons(exc.errors()), instance=request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        trace_id = uuid.uuid4().hex
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"trace_id": trace_id, "path": request.url.path, "method": request.method},
        )
        return problem_response(
            500,
            "Internal server error",
            "An unexpected error occurred; quote the trace_id when reporting it.",
            instance=request.url.path,
            extra={"trace_id": trace_id},
        )

    async def on_integrity_error(request: Request, exc: Exception) -> JSONResponse:
        # A unique constraint lost a race with a concurrent identical request.
        log.warning("integrity error", extra={"path": request.url.path, "error": str(exc)[:500]})
        return problem_response(
            409,
            "Conflict",
            "A concurrent request changed the same record; retry the request.",
            type_=PROBLEM_BASE + "conflict",
            instance=request.url.path,
        )

    async def on_client_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # The client went away while its body was being read: nobody reads this answer, and it
        # is no server error (no 500, no traceback); whatever the body was, nothing was stored.
        log.info("client disconnected mid-request", extra={"path": request.url.path})
        return problem_response(
            400,
            "Client disconnected",
            "The connection closed before the request body was complete; nothing was stored.",
            instance=request.url.path,
        )

    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(LinegateError, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
