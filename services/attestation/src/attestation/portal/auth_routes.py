"""Sign-in, sign-out, the home redirect and the stylesheet."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from attestation.deps import SettingsDep, get_issuer
from attestation.portal.rendering import PortalRoute, render
from attestation.portal.security import (
    COOKIE_PATH,
    CSRF_FIELD,
    LOGIN_NONCE_COOKIE,
    PORTAL_ROLES,
    SessionCookieDep,
    SignInRequired,
    check_login_nonce,
    clear_session_cookie,
    current_session,
    login_nonce,
    set_login_nonce,
    set_session_cookie,
    validate_session_token,
)
from attestation.repository import ClientRepository
from linegate.auth import GrantRefused, Principal, grant_client_credentials
from linegate.service import SessionDep
from linegate.settings import Environment

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)

STATIC = Path(__file__).parent / "static"
HOME = "/portal/"


def safe_next(target: str | None) -> str:
    """Only a portal path: never an absolute or scheme-relative URL (open redirect)."""
    if not target or not target.startswith("/portal") or target.startswith("//") or "\\" in target:
        return HOME
    return target


@router.get("")
@router.get("/")
async def home(session: SessionCookieDep) -> Response:
    target = "/portal/attestations" if session.is_supplier else "/portal/suppliers"
    return RedirectResponse(target, status_code=303)


def _login_page(
    request: Request,
    settings: SettingsDep,
    *,
    next_url: str,
    error: str | None = None,
    status: int = 200,
    client_id: str = "",
) -> Response:
    nonce = login_nonce(request)
    response = render(
        "login.html",
        status=status,
        csrf=nonce,
        next_url=next_url,
        error=error,
        client_id=client_id,
        development=settings.environment is Environment.DEVELOPMENT,
        external_issuer=settings.external_issuer,
    )
    set_login_nonce(response, request, nonce)
    return response


@router.get("/login")
async def login_form(
    request: Request,
    settings: SettingsDep,
    next_url: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    return _login_page(request, settings, next_url=safe_next(next_url))


@router.post("/login")
async def login(request: Request, settings: SettingsDep, db: SessionDep) -> Response:
    form = await request.form(max_files=0, max_fields=8)
    check_login_nonce(request, form.get(CSRF_FIELD))
    next_url = safe_next(str(form.get("next") or ""))
    client_id = str(form.get("client_id") or "").strip()
    pasted = str(form.get("token") or "").strip()

    def refused(message: str, status: int) -> Response:
        return _login_page(
            request, settings, next_url=next_url, error=message, status=status, client_id=client_id
        )

    principal: Principal
    if pasted:
        if settings.environment is not Environment.DEVELOPMENT:
            return refused("Signing in with a pasted token is possible in development only.", 403)
        try:
            principal = await validate_session_token(request, pasted)
        except SignInRequired as e:
            return refused(f"The token was refused: {e}", 401)
        token = pasted
        max_age = max(int(principal.claims["exp"]) - int(time.time()), 0)
    else:
        try:
            # The token endpoint's own grant: one credential check for both ways in.
            grant = await grant_client_credentials(
                ClientRepository(db),
                get_issuer(request),
                client_id=client_id,
                client_secret=str(form.get("client_secret") or ""),
            )
        except GrantRefused as e:
            return refused(f"Sign-in refused: {e.description}.", e.status)
        token, max_age = grant.access_token, grant.expires_in
        principal = await validate_session_token(request, token)
    if not principal.has_any(PORTAL_ROLES):
        return refused("This client holds no role the portal serves.", 403)
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(response, request, token, max_age)
    response.delete_cookie(LOGIN_NONCE_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4)
    try:
        session = await current_session(request)
    except SignInRequired:
        session = None  # nothing to protect: the cookie is cleared either way
    if session is not None:
        session.check_csrf(form.get(CSRF_FIELD))
    response = RedirectResponse("/portal/login", status_code=303)
    clear_session_cookie(response, request)
    return response


@functools.cache
def _stylesheet() -> bytes:
    return (STATIC / "portal.css").read_bytes()


@router.get("/static/portal.css")
async def stylesheet() -> Response:
    return Response(
        _stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )
