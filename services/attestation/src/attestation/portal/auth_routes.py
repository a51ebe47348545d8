"""Sign-in (client credentials, a pasted token in development, or the OIDC provider),
sign-out (at the provider too, for its sessions), the home redirect and the stylesheet."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from attestation.deps import SettingsDep, get_issuer
from attestation.portal.oidc import (
    FLOW_COOKIE,
    FLOW_COOKIE_PATH,
    FLOW_TTL_SECONDS,
    LOGOUT_HINT_COOKIE,
    LOGOUT_HINT_COOKIE_PATH,
    OidcError,
    ProviderRefused,
    SignInFlow,
    SignInFlowInvalid,
    map_identity,
    oidc_provider,
    open_logout_hint,
    seal_logout_hint,
)
from attestation.portal.rendering import PortalRoute, error_page, render
from attestation.portal.security import (
    COOKIE_PATH,
    CSRF_FIELD,
    LOGIN_NONCE_COOKIE,
    PORTAL_ROLES,
    PortalSession,
    SessionCookieDep,
    SignInRequired,
    check_login_nonce,
    clear_session_cookie,
    current_session,
    login_nonce,
    secure_cookies,
    session_signer,
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
log = logging.getLogger("attestation.portal")


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
        oidc_provider=settings.portal_oidc_display_name if settings.portal_oidc_enabled else None,
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
    _clear_logout_hint(response, request)  # an earlier provider session's, if any
    return response


@router.get("/login/oidc")
async def login_oidc(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    """Start the authorization-code flow: state, nonce and PKCE verifier in a signed cookie,
    then off to the provider."""
    provider = oidc_provider(request)
    signer = session_signer(request)
    assert signer is not None  # configured, or oidc_provider would have answered 404
    flow = SignInFlow.new(safe_next(next_url))
    try:
        url = await provider.authorization_url(flow)
    except OidcError as e:
        log.warning("portal OIDC sign-in could not start: %s", e.detail)
        return error_page(e.status, e.detail)
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation, and a Strict
    # cookie would not come with it. Only the two OIDC routes ever see it.
    response.set_cookie(
        FLOW_COOKIE,
        flow.seal(signer),
        max_age=FLOW_TTL_SECONDS,
        path=FLOW_COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(request),
        samesite="lax",
    )
    return response


@router.get("/login/oidc/callback")
async def login_oidc_callback(
    request: Request,
    settings: SettingsDep,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """The provider's answer: check state, exchange the code, validate the ID token, map its
    claims to roles and open a portal session like the other ways in."""
    provider = oidc_provider(request)
    signer = session_signer(request)
    assert signer is not None
    try:
        flow = SignInFlow.from_callback(signer, request.cookies.get(FLOW_COOKIE), state)
        if error:
            raise ProviderRefused(
                f"{provider.name} answered {error}"
                + (f": {error_description}" if error_description else "")
            )
        if not code:
            raise SignInFlowInvalid("the provider's answer carries no authorization code")
        tokens = await provider.exchange_code(code, flow.verifier)
        claims = await provider.validate_id_token(
            tokens.id_token, nonce=flow.nonce, access_token=tokens.access_token
        )
        identity = map_identity(claims, settings)
    except OidcError as e:
        log.warning(
            "portal OIDC sign-in refused (%s): %s",
            e.status,
            e.detail,
            extra={"issuer": provider.issuer, "status": e.status},
        )
        response: Response = error_page(e.status, e.detail)
        response.delete_cookie(FLOW_COOKIE, path=FLOW_COOKIE_PATH)
        return response
    token, max_age = signer.sessions.issue(
        identity.subject, identity.roles, tenant=identity.tenant, client_id=provider.client_id
    )
    log.info(
        "portal OIDC sign-in: %s",
        identity.subject,
        extra={
            "issuer": provider.issuer,
            "id_token_issuer": claims.get("iss"),  # differs for a multi-tenant provider
            "subject": identity.subject,
            "roles": sorted(identity.roles),
            "tenant": identity.tenant,
            "directory": identity.directory,
        },
    )
    if identity.withheld:
        # A supplier's directory claiming more than it may grant: a mistake or an attempt.
        log.warning(
            "portal OIDC: roles %s not granted to %s: directory %s is supplier %s's",
            ", ".join(sorted(identity.withheld)),
            identity.subject,
            identity.directory,
            identity.tenant,
            extra={
                "issuer": provider.issuer,
                "subject": identity.subject,
                "directory": identity.directory,
                "withheld_roles": sorted(identity.withheld),
            },
        )
    # A page that moves on by itself, not a 303: the browser arrived here from the provider
    # (cross-site), and the SameSite=Strict session cookie would not come with a redirect
    # that is still part of that navigation; the refresh is a same-site one.
    response = render("signed_in.html", next_url=flow.next_url, subject=identity.subject)
    set_session_cookie(response, request, token, max_age)
    hint = seal_logout_hint(signer, tokens.id_token, session_token=token, ttl_seconds=max_age)
    if hint is None:
        log.warning(
            "portal OIDC: the ID token is too large to keep for sign-out; signing out at %s "
            "will go without id_token_hint",
            provider.name,
            extra={"issuer": provider.issuer, "subject": identity.subject},
        )
        _clear_logout_hint(response, request)
    else:
        response.set_cookie(
            LOGOUT_HINT_COOKIE,
            hint,
            max_age=max_age,
            path=LOGOUT_HINT_COOKIE_PATH,
            httponly=True,
            secure=secure_cookies(request),
            samesite="strict",
        )
    response.delete_cookie(FLOW_COOKIE, path=FLOW_COOKIE_PATH)
    response.delete_cookie(LOGIN_NONCE_COOKIE, path=COOKIE_PATH)
    return response


def _clear_logout_hint(response: Response, request: Request) -> None:
    response.delete_cookie(
        LOGOUT_HINT_COOKIE,
        path=LOGOUT_HINT_COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(request),
        samesite="strict",
    )


async def _end_session_url(request: Request, session: PortalSession) -> str | None:
    """The provider's end-session URL for a session made through it, or None: not an OIDC
    session, no end-session endpoint, or the provider unreachable (the portal session ends
    anyway)."""
    signer = session_signer(request)
    if signer is None or session.principal.claims.get("iss") != signer.issuer:
        return None  # client credentials or a pasted token: nothing to end elsewhere
    provider = oidc_provider(request)
    id_token = open_logout_hint(
        signer, request.cookies.get(LOGOUT_HINT_COOKIE), session_token=session.token
    )
    try:
        url = await provider.end_session_url(id_token)
    except OidcError as e:
        log.warning(
            "portal OIDC sign-out stays local: %s",
            e.detail,
            extra={"issuer": provider.issuer, "subject": session.principal.subject},
        )
        return None
    if url is not None:
        log.info(
            "portal OIDC sign-out: %s",
            session.principal.subject,
            extra={
                "issuer": provider.issuer,
                "subject": session.principal.subject,
                "with_id_token_hint": id_token is not None,
            },
        )
    return url


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4)
    try:
        session = await current_session(request)
    except SignInRequired:
        session = None  # nothing to protect: the cookies are cleared either way
    end_session_url = None
    if session is not None:
        session.check_csrf(form.get(CSRF_FIELD))
        end_session_url = await _end_session_url(request, session)
    response: Response
    if end_session_url is None:
        response = RedirectResponse("/portal/login", status_code=303)
    else:
        response = render(
            "signed_out.html",
            end_session_url=end_session_url,
            provider=oidc_provider(request).name,
        )
    clear_session_cookie(response, request)
    _clear_logout_hint(response, request)
    return response


@functools.cache
def _stylesheet() -> bytes:
    return (STATIC / "portal.css").read_bytes()


@router.get("/static/portal.css")
async def stylesheet() -> Response:
    return Response(
        _stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )
