"""OAuth2 client credentials and JWT access tokens (RFC 9068) for every Linegate API.

- :class:`TokenIssuer` signs access tokens with an ES256 key. The embedded stack keeps that
  key in ``<data_dir>/keys/issuer.pem`` (created on first use); production points every
  service at an external OIDC issuer's JWKS instead (``LINEGATE_AUTH_JWKS_URL``).
- :class:`TokenValidator` checks signature (JWKS), ``iss``, ``aud``, ``exp``/``nbf`` and
  turns the claims into a :class:`Principal`.
- :func:`require` is the FastAPI dependency every route uses: ``require(Role.PROCUREMENT)``.
- :func:`token_router` is the RFC 6749 section 4.4 token endpoint, over any
  :class:`ClientStore` (the attestation service keeps suppliers' clients in its database).

JOSE comes from ``joserfc``: Authlib's own ``authlib.jose`` is deprecated in its favour by the
same maintainers and warns on import.

Example::

    issuer = TokenIssuer.embedded(settings)
    token, _ = issuer.issue("ci@acme", [Role.SUPPLIER], tenant="acme")
    principal = await TokenValidator.from_settings(settings).validate(token)
    assert principal.tenant == "acme"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from linegate.errors import PROBLEM_BASE, Forbidden, Unauthorized, problem_response
from linegate.roles import Role
from linegate.settings import LinegateSettings
from linegate.signing import load_or_create_private_key, private_key_pem

__all__ = [
    "ClientRecord",
    "ClientStore",
    "GrantRefused",
    "KeySource",
    "Principal",
    "PrincipalDep",
    "RemoteJWKS",
    "Role",
    "StaticKeySource",
    "TokenGrant",
    "TokenIssuer",
    "TokenValidator",
    "check_client_secret",
    "current_principal",
    "grant_client_credentials",
    "hash_client_secret",
    "new_client_secret",
    "parse_roles",
    "require",
    "token_router",
]

ALGORITHMS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
ISSUER_KEY_FILE = "issuer.pem"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the validated claims of a bearer token."""

    subject: str
    roles: frozenset[Role]
    tenant: str | None = None
    device_id: str | None = None
    client_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_any(self, roles: Iterable[Role]) -> bool:
        return Role.ADMIN in self.roles or any(r in self.roles for r in roles)

    @property
    def actor(self) -> str:
        """How this principal is named in the audit log."""
        parts = [self.subject]
        if self.tenant:
            parts.append(f"tenant={self.tenant}")
        if self.device_id:
            parts.append(f"device={self.device_id}")
        return " ".join(parts)


def _check_role_claims(roles: Iterable[Role], tenant: str | None, device_id: str | None) -> None:
    roles = set(roles)
    if Role.SUPPLIER in roles and not tenant:
        raise ValueError("a supplier token needs a tenant (supplier id)")
    if Role.DEVICE in roles and not device_id:
        raise ValueError("a device token needs a device id")


def parse_roles(scope: str) -> frozenset[Role]:
    """Roles named in an OAuth2 ``scope`` string; unknown scopes are ignored."""
    known = {r.value: r for r in Role}
    return frozenset(known[s] for s in scope.split() if s in known)


# ---------------------------------------------------------------------------------- issuer


class TokenIssuer:
    """Signs RFC 9068 JWT access tokens with one EC key."""

    def __init__(self, key: ECKey, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._key = key
        self.kid = key.kid or key.thumbprint()
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    @classmethod
    def embedded(cls, settings: LinegateSettings) -> TokenIssuer:
        """The embedded stack's issuer; refuses when an external issuer is configured."""
        if settings.external_issuer:
            raise RuntimeError(
                "an external token issuer is configured (LINEGATE_AUTH_JWKS_URL); "
                "get tokens from it, not from the embedded issuer"
            )
        pem = private_key_pem(load_or_create_private_key(settings.keys_dir / ISSUER_KEY_FILE))
        key = ECKey.import_key(pem)
        key = ECKey.import_key(pem, {"kid": key.thumbprint(), "use": "sig", "alg": "ES256"})
        return cls(
            key,
            issuer=settings.issuer,
            audience=settings.auth_audience,
            ttl_seconds=settings.token_ttl_seconds,
        )

    def jwks(self) -> dict[str, Any]:
        public = self._key.as_dict(private=False)
        public.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [public]}

    def issue(
        self,
        subject: str,
        roles: Iterable[Role],
        *,
        tenant: str | None = None,
        device_id: str | None = None,
        client_id: str | None = None,
        ttl_seconds: int | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """Return ``(access_token, expires_in)``."""
        roles = list(dict.fromkeys(roles))
        _check_role_claims(roles, tenant, device_id)
        issued = int(now if now is not None else time.time())
        ttl = ttl_seconds if ttl_seconds is not None else self.ttl_seconds
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "client_id": client_id or subject,
            "scope": " ".join(r.value for r in roles),
        }
        if tenant:
            claims["tenant"] = tenant
        if device_id:
            claims["device_id"] = device_id
        header = {"alg": "ES256", "kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._key), ttl


# ---------------------------------------------------------------------------------- JWKS


class KeySource(Protocol):
    """Where a validator finds the issuer's public keys."""

    async def key_set(self, *, refresh: bool = False) -> KeySet: ...


class StaticKeySource:
    """A fixed JWKS (the embedded issuer's own key)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]  # JWKS JSON is a dict

    async def key_set(self, *, refresh: bool = False) -> KeySet:
        return self._keys


class RemoteJWKS:
    """An issuer's JWKS fetched over HTTPS, cached, refreshed on an unknown ``kid``."""

    def __init__(
        self, url: str, *, max_age: float = 300.0, min_refresh_interval: float = 30.0
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    async def key_set(self, *, refresh: bool = False) -> KeySet:
        now = time.monotonic()
        stale = self._keys is None or now - self._fetched_at > self.max_age
        may_refresh = now - self._fetched_at > self.min_refresh_interval
        if stale or (refresh and may_refresh):
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    self._keys = KeySet.import_key_set(response.json())
                    self._fetched_at = now
            except (httpx.HTTPError, ValueError, JoseError) as e:
                if self._keys is None:
                    raise Unauthorized(f"cannot fetch the issuer's JWKS: {e}") from e
        assert self._keys is not None
        return self._keys


# ------------------------------------------------------------------------------ validator


class TokenValidator:
    """Validates bearer tokens and returns the :class:`Principal` they carry."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: int = 30,
        cache_size: int = 4096,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        # A client reuses one token for many requests; re-checking its signature each time
        # would cost more than the request. Entries are bounded and re-checked for expiry.
        self._cache: OrderedDict[str, tuple[Principal, int]] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def from_settings(cls, settings: LinegateSettings) -> TokenValidator:
        source: KeySource
        if settings.auth_jwks_url:
            source = RemoteJWKS(settings.auth_jwks_url)
        else:
            source = StaticKeySource(TokenIssuer.embedded(settings).jwks())
        return cls(
            source,
            issuer=settings.issuer,
            audience=settings.auth_audience,
            leeway=settings.auth_leeway_seconds,
        )

    async def validate(self, token: str, *, now: float | None = None) -> Principal:
        current = time.time() if now is None else now
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if current <= expires + self.leeway:
                self._cache.move_to_end(token)
                return principal
            del self._cache[token]
        principal = await self._validate_uncached(token, now)
        self._cache[token] = (principal, int(principal.claims["exp"]))
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _validate_uncached(self, token: str, now: float | None) -> Principal:
        try:
            keys = await self.keys.key_set()
            try:
                decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            except (JoseError, ValueError):
                # The issuer may have rotated its key since we cached the JWKS.
                fresh = await self.keys.key_set(refresh=True)
                if fresh is keys:
                    raise
                decoded = jwt.decode(token, fresh, algorithms=ALGORITHMS)
            registry = jwt.JWTClaimsRegistry(
                now=int(now) if now is not None else None,
                leeway=self.leeway,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except JoseError as e:
            raise Unauthorized(f"invalid token: {e.description or e.error}") from e
        except (ValueError, binascii.Error) as e:
            raise Unauthorized(f"malformed token: {e}") from e
        claims = decoded.claims
        roles = parse_roles(str(claims.get("scope", "")))
        tenant = claims.get("tenant")
        device_id = claims.get("device_id")
        try:
            _check_role_claims(roles, tenant, device_id)
        except ValueError as e:
            raise Unauthorized(f"invalid token: {e}") from e
        return Principal(
            subject=str(claims["sub"]),
            roles=roles,
            tenant=str(tenant) if tenant else None,
            device_id=str(device_id) if device_id else None,
            client_id=str(claims.get("client_id")) if claims.get("client_id") else None,
            claims=dict(claims),
        )


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing bearer token (Authorization: Bearer ...)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    """The validated caller; the app's validator lives at ``app.state.token_validator``."""
    validator: TokenValidator = request.app.state.token_validator
    return await validator.validate(_bearer(request))


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: a caller holding any of ``roles`` (``admin`` holds them all)."""

    async def dependency(principal: PrincipalDep) -> Principal:
        if not principal.has_any(roles):
            wanted = " or ".join(r.value for r in roles)
            raise Forbidden(
                f"this operation needs the {wanted} role",
                extra={"required_roles": [r.value for r in roles]},
            )
        return principal

    return dependency


# ------------------------------------------------------------------ client credentials grant


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_client_secret(secret: str) -> str:
    """Hash of a generated client secret.

    Secrets are 256 random bits made by :func:`new_client_secret`, so a plain SHA-256 cannot
    be brute-forced and keeps the token endpoint fast; a password KDF buys nothing here.
    """
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def check_client_secret(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_client_secret(secret), stored_hash)


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    secret_hash: str
    roles: frozenset[Role]
    tenant: str | None = None
    device_id: str | None = None
    active: bool = True


class ClientStore(Protocol):
    async def get_client(self, client_id: str) -> ClientRecord | None: ...


@dataclass(frozen=True)
class TokenGrant:
    """An access token issued by :func:`grant_client_credentials`."""

    access_token: str
    expires_in: int
    roles: frozenset[Role]


class GrantRefused(Exception):
    """A client-credentials request refused, with its RFC 6749 section 5.2 error code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


async def grant_client_credentials(
    store: ClientStore,
    issuer: TokenIssuer,
    *,
    client_id: str | None,
    client_secret: str | None,
    scope: str | None = None,
) -> TokenGrant:
    """The client-credentials grant: authenticate the client, narrow its roles to ``scope``
    and issue a token; raises :class:`GrantRefused`. The token endpoint and every other way
    of signing in with client credentials (the attestation portal) go through here, so there
    is one credential check."""
    if not client_id or not client_secret:
        raise GrantRefused(401, "invalid_client", "client authentication is required")
    client = await store.get_client(client_id)
    if (
        client is None
        or not client.active
        or not check_client_secret(client_secret, client.secret_hash)
    ):
        raise GrantRefused(401, "invalid_client", "unknown client or wrong secret")
    roles = set(client.roles)
    if scope:
        requested = set(scope.split())
        unknown = requested - {r.value for r in roles}
        if unknown:
            raise GrantRefused(
                400,
                "invalid_scope",
                f"scope not granted to this client: {' '.join(sorted(unknown))}",
            )
        roles = {r for r in roles if r.value in requested}
    token, expires_in = issuer.issue(
        client.client_id,
        roles,
        tenant=client.tenant,
        device_id=client.device_id,
        client_id=client.client_id,
    )
    return TokenGrant(token, expires_in, frozenset(roles))


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    # RFC 6749 section 5.2 members inside an RFC 9457 problem, so both kinds of client cope.
    return problem_response(
        status,
        "Token request refused",
        description,
        type_=PROBLEM_BASE + "oauth-" + error.replace("_", "-"),
        extra={"error": error, "error_description": description},
        headers={"WWW-Authenticate": 'Basic realm="linegate"'} if status == 401 else None,
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def token_router(
    store_dependency: Callable[..., Any], issuer_dependency: Callable[..., TokenIssuer]
) -> APIRouter:
    """``POST /oauth/token`` (client credentials) and ``GET /.well-known/jwks.json``."""
    router = APIRouter(tags=["identity"])

    @router.post("/oauth/token", summary="OAuth2 client-credentials grant")
    async def issue_token(
        request: Request,
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
        scope: Annotated[str | None, Form()] = None,
        # Plain defaults, not Annotated: the dependencies are this factory's arguments, which
        # postponed annotations could not resolve.
        store: ClientStore = Depends(store_dependency),
        issuer: TokenIssuer = Depends(issuer_dependency),
    ) -> JSONResponse:
        if grant_type != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "only client_credentials is supported"
            )
        basic = _basic_credentials(request)
        if basic is not None:
            client_id, client_secret = basic
        try:
            grant = await grant_client_credentials(
                store, issuer, client_id=client_id, client_secret=client_secret, scope=scope
            )
        except GrantRefused as e:
            return _oauth_error(e.status, e.error, e.description)
        return JSONResponse(
            {
                "access_token": grant.access_token,
                "token_type": "Bearer",
                "expires_in": grant.expires_in,
                "scope": " ".join(sorted(grant.roles)),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    @router.get("/.well-known/jwks.json", summary="Public keys that access tokens verify against")
    async def jwks(issuer: TokenIssuer = Depends(issuer_dependency)) -> dict[str, Any]:
        return issuer.jwks()

    return router
