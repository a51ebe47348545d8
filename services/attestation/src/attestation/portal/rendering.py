"""Templates (jinja2, autoescaped), HTML error pages and the portal's route class.

Every portal response goes through :class:`PortalRoute`: it adds the security headers, turns
domain errors into an HTML page with the same 4xx status the API would answer, and sends a
browser without a valid session to the sign-in page.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from attestation.portal.security import SECURITY_HEADERS, SignInRequired, clear_session_cookie
from attestation.verification import aware_utc
from linegate.errors import LinegateError

log = logging.getLogger("attestation.portal")

TEMPLATES = Path(__file__).parent / "templates"


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return aware_utc(value).strftime("%Y-%m-%d %H:%M UTC")


@functools.cache
def environment() -> jinja2.Environment:
    # Autoescape every template: a value reaches the page escaped unless a template says
    # otherwise, and none does. Undefined names fail loudly instead of rendering as "".
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["pct"] = lambda v: f"{float(v) * 100:.0f}%"
    return env


def render(
    template: str, *, status: int = 200, session: Any = None, **context: Any
) -> HTMLResponse:
    html = environment().get_template(template).render(session=session, **context)
    return HTMLResponse(html, status_code=status)


def error_page(
    status: int, detail: str, *, session: Any = None, reasons: list[str] | None = None
) -> HTMLResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return render(
        "error.html",
        status=status,
        session=session,
        title=title,
        code=status,
        detail=detail,
        reasons=reasons or [],
    )


def _validation_reasons(errors: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('query', 'body'))}: "
        f"{e.get('msg', '')}"
        for e in errors
    ]


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/portal/login?next={quote(target, safe='')}", status_code=303)
    clear_session_cookie(response, request)
    return response


async def _handle(
    request: Request, call: Callable[[Request], Coroutine[Any, Any, Response]]
) -> Response:
    try:
        return await call(request)
    except SignInRequired:
        return sign_in_redirect(request)
    except LinegateError as e:
        reasons = [str(r) for r in e.extra.get("reasons", [])]
        return error_page(e.status, e.detail, reasons=reasons)
    except (RequestValidationError, pydantic.ValidationError) as e:
        return error_page(422, "The request is not valid.", reasons=_validation_reasons(e.errors()))
    except StarletteHTTPException as e:
        return error_page(e.status_code, str(e.detail))
    except Exception:
        # A bug: logged with a trace id like the API's problem handler, never shown.
        trace_id = uuid.uuid4().hex
        log.exception("portal error", extra={"trace_id": trace_id, "path": request.url.path})
        return error_page(500, f"Unexpected error; quote trace id {trace_id} when reporting it.")


class PortalRoute(APIRoute):
    """HTML errors, sign-in redirects and security headers for every portal route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            response = await _handle(request, original)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler
