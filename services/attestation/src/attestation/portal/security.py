"""Portal sessions, CSRF tokens and security headers.

The session is the JWT access token the sign-in obtained (client-credentials grant, or a
pasted token in development), kept in an ``HttpOnly; SameSite=Strict; Path=/portal`` cookie
(``Secure`` over https). Every request validates it with the app's
:class:`linegate.auth.TokenValidator`, the one the API uses, so expiry, issuer, audience and
signature are checked exactly as for a bearer token.

CSRF: every form carries ``HMAC-SHA256(key=session token, msg=jti)``. Only someone holding
the HttpOnly cookie can compute it, it needs no server-side secret (so replicas agree without
sharing one) and it dies with the session. The sign-in form, before any session exists, uses
a double-submit nonce cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from linegate.auth import Principal, Role, TokenValidator
from linegate.errors import Forbidden, Unauthorized

SESSION_COOKIE = "linegate_portal"
LOGIN_NONCE_COOKIE = "linegate_portal_login"
COOKIE_PATH = "/portal"
CSRF_FIELD = "csrf"

#: Roles that may sign in to the portal; a device token has nothing to see here.
PORTAL_ROLES = (Role.SUPPLIER, Role.PROCUREMENT, Role.AUDITOR, Role.REGISTRY_APPROVE)
#: Roles that see every supplier (procurement's pages).
STAFF_ROLES = (Role.PROCUREMENT, Role.AUDITOR, Role.REGISTRY_APPROVE)

SECURITY_HEADERS = {
    # No script at all: the portal works without JavaScript, so none is allowed to run.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SignInRequired(Exception):
    """No session, or one the validator refused (expired, forged, garbage): sign in again."""


@dataclass(frozen=True)
class PortalSession:
    token: str
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_for(self.token, str(self.principal.claims.get("jti", "")))

    @property
    def is_supplier(self) -> bool:
        # Least privilege, as in the API: a token holding the supplier role is confined.
        return Role.SUPPLIER in self.principal.roles

    @property
    def is_staff(self) -> bool:
        return not self.is_supplier and self.principal.has_any(STAFF_ROLES)

    def require(self, *roles: Role) -> None:
        if not self.principal.has_any(roles):
            raise Forbidden("this page needs the " + " or ".join(r.value for r in roles) + " role")

    def check_csrf(self, submitted: object) -> None:
        if not isinstance(submitted, str) or not hmac.compare_digest(submitted, self.csrf):
            raise Forbidden("missing or wrong CSRF token: reload the page and submit again")


def csrf_for(token: str, jti: str) -> str:
    return hmac.new(
        token.encode(), b"linegate-portal-csrf:" + jti.encode(), hashlib.sha256
    ).hexdigest()


async def validate_session_token(request: Request, token: str) -> Principal:
    """The principal a session token carries, validated like any bearer token."""
    validator: TokenValidator = request.app.state.token_validator
    try:
        principal = await validator.validate(token)
    except Unauthorized as e:
        raise SignInRequired(str(e)) from e
    return principal


async def current_session(request: Request) -> PortalSession:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired("not signed in")
    principal = await validate_session_token(request, token)
    if not principal.has_any(PORTAL_ROLES):
        raise SignInRequired("this token holds no portal role")
    return PortalSession(token, principal)


SessionCookieDep = Annotated[PortalSession, Depends(current_session)]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, secure=_secure(request), samesite="strict"
    )


def login_nonce(request: Request) -> str:
    """The sign-in form's double-submit nonce: the cookie's if present, else a new one."""
    return request.cookies.get(LOGIN_NONCE_COOKIE) or secrets.token_urlsafe(32)


def set_login_nonce(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        LOGIN_NONCE_COOKIE,
        nonce,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )


def check_login_nonce(request: Request, submitted: object) -> None:
    cookie = request.cookies.get(LOGIN_NONCE_COOKIE)
    if (
        not cookie
        or not isinstance(submitted, str)
        or not hmac.compare_digest(cookie.encode(), submitted.encode())
    ):
        raise Forbidden("missing or wrong CSRF token: reload the sign-in page and try again")
