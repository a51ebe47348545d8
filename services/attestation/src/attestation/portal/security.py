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

A sign-in through the OIDC provider (:mod:`attestation.portal.oidc`) has no access token of
the API's issuer to keep (and with an external issuer the service mints none), so the portal
signs that session itself: a JWT of :class:`PortalSessionSigner`, with its own key, issuer
and audience (``linegate-portal``), which no API route accepts. It is validated on every
request like the others and carries the same claims, so a portal session is a portal session
whichever way it began.

What the browser must keep for the portal but not read (the ID token that RP-initiated logout
sends back to the provider as ``id_token_hint``) is encrypted as well as authenticated
(:meth:`PortalSessionSigner.encrypt`: JWE ``dir`` + ``A256GCM``, with a key derived from the
session key by HKDF, so replicas sharing the key file agree and no second secret is needed).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Depends, Request, Response
from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey

from attestation.settings import AttestationSettings
from linegate.auth import Principal, Role, StaticKeySource, TokenIssuer, TokenValidator
from linegate.errors import Forbidden, Unauthorized
from linegate.signing import load_or_create_private_key, private_key_pem

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


#: Audience of the sessions the portal signs itself; the API's validator never accepts it.
SESSION_AUDIENCE = "linegate-portal"
#: HKDF ``info`` of the encryption key derived from the session key (key separation: the
#: signing key itself never encrypts).
ENCRYPTION_KEY_INFO = b"linegate-portal-encryption-v1"


class PortalSessionSigner:
    """Signs and validates the portal's own sessions and its short-lived sign-in state.

    One ES256 key (``LINEGATE_PORTAL_SESSION_KEY_FILE``): sessions are access-token shaped
    JWTs for :data:`SESSION_AUDIENCE`; :meth:`seal` / :meth:`unseal` sign other short-lived
    values (the OIDC flow's state cookie) for an audience of their own, so neither can stand
    in for the other; :meth:`encrypt` / :meth:`decrypt` do the same for values the browser
    must not be able to read.
    """

    def __init__(self, key: ECKey, *, issuer: str, ttl_seconds: int, leeway: int) -> None:
        self._key = key
        scalar = key.private_key
        assert scalar is not None, "the portal session key must be a private key"
        secret = scalar.private_numbers().private_value.to_bytes(32, "big")
        derived = HKDF(hashes.SHA256(), 32, salt=None, info=ENCRYPTION_KEY_INFO).derive(secret)
        self._encryption_key = OctKey.import_key(derived)
        self.issuer = issuer
        self.sessions = TokenIssuer(
            key, issuer=issuer, audience=SESSION_AUDIENCE, ttl_seconds=ttl_seconds
        )
        self.validator = TokenValidator(
            StaticKeySource(self.sessions.jwks()),
            issuer=issuer,
            audience=SESSION_AUDIENCE,
            leeway=leeway,
        )

    @classmethod
    def from_settings(cls, settings: AttestationSettings) -> PortalSessionSigner:
        pem = private_key_pem(load_or_create_private_key(settings.portal_session_key_path))
        key = ECKey.import_key(pem)
        key = ECKey.import_key(pem, {"kid": key.thumbprint(), "use": "sig", "alg": "ES256"})
        return cls(
            key,
            issuer=settings.attestation_url.rstrip("/") + "/portal",
            ttl_seconds=settings.token_ttl_seconds,
            leeway=settings.auth_leeway_seconds,
        )

    def seal(self, audience: str, values: dict[str, str], *, ttl_seconds: int) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + ttl_seconds}
        header = {"alg": "ES256", "kid": self.sessions.kid}
        return jwt.encode(header, {**values, **claims}, self._key)

    def unseal(self, audience: str, token: str) -> dict[str, Any]:
        """The values :meth:`seal` signed for ``audience``; ValueError if forged or expired."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, binascii.Error) as e:
            raise ValueError(str(e) or type(e).__name__) from e
        return dict(decoded.claims)

    def encrypt(self, audience: str, values: dict[str, str], *, ttl_seconds: int) -> str:
        """Like :meth:`seal`, but the values are encrypted too (compact JWE)."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + ttl_seconds}
        plaintext = json.dumps({**values, **claims}, separators=(",", ":")).encode()
        header = {"alg": "dir", "enc": "A256GCM"}
        return jwe.encrypt_compact(header, plaintext, self._encryption_key)

    def decrypt(self, audience: str, token: str) -> dict[str, Any]:
        """The values :meth:`encrypt` encrypted for ``audience``; ValueError if forged,
        changed or expired."""
        try:
            decrypted = jwe.decrypt_compact(
                token, self._encryption_key, algorithms=["dir", "A256GCM"]
            )
            claims = json.loads(decrypted.plaintext or b"")
        except (JoseError, ValueError, binascii.Error) as e:
            raise ValueError(str(e) or type(e).__name__) from e
        if not isinstance(claims, dict):  # authentic, so only ever what encrypt() made
            raise TypeError("the decrypted value is not a JSON object")
        try:
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
            ).validate(claims)
        except JoseError as e:
            raise ValueError(str(e) or type(e).__name__) from e
        return claims


def session_signer(request: Request) -> PortalSessionSigner | None:
    """The app's :class:`PortalSessionSigner`, made on first use; None without OIDC sign-in."""
    signer: PortalSessionSigner | None = getattr(request.app.state, "portal_session_signer", None)
    if signer is None:
        settings: AttestationSettings = request.app.state.ctx.settings
        if not settings.portal_oidc_enabled:
            return None
        signer = PortalSessionSigner.from_settings(settings)
        request.app.state.portal_session_signer = signer
    return signer


async def validate_session_token(request: Request, token: str) -> Principal:
    """The principal a session token carries, validated like any bearer token."""
    signer = session_signer(request)
    if signer is not None:
        # The portal's own key first: a local check, where a miss on the API's validator
        # could make it refetch an external issuer's JWKS.
        with contextlib.suppress(Unauthorized):
            return await signer.validator.validate(token)
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


def secure_cookies(request: Request) -> bool:
    """Cookies get ``Secure`` when the portal is served over https."""
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(request),
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(request),
        samesite="strict",
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
        secure=secure_cookies(request),
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
