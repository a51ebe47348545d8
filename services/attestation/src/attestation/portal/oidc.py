"""Portal sign-in through an external OpenID Connect provider (authorization code + PKCE).

``GET /portal/login/oidc`` makes a :class:`SignInFlow` (``state``, ``nonce`` and a PKCE S256
``code_verifier``), keeps it in a short-lived cookie signed by the portal's session key and
sends the browser to the provider's authorization endpoint. The provider sends it back to
``/portal/login/oidc/callback``, where the state must match the cookie's, the code is
exchanged (with the verifier) at the token endpoint, and the ID token is validated in full
(OpenID Connect Core 3.1.3.7): signature against the provider's JWKS, ``iss``, ``aud``
(and ``azp``), ``exp``/``iat``, ``nonce`` and, when present, ``at_hash``. Its claims are then
mapped to Linegate roles and a supplier tenant (:func:`map_identity`).

Signing out (OpenID Connect RP-Initiated Logout 1.0): when the provider's discovery document
names an ``end_session_endpoint``, the portal sends the browser there after clearing its own
session, with ``id_token_hint``, ``client_id`` and ``post_logout_redirect_uri``. The ID token
is kept from the callback until then in a cookie of its own (:func:`seal_logout_hint`):
encrypted, bound to the portal session it came with, and sent only to ``/portal/logout`` so
the session cookie every page receives stays small.

The provider's discovery document and JWKS are fetched from the configured issuer and
cached. A multi-tenant provider (Entra ID's ``.../common/v2.0``) publishes an issuer template
(``.../{tenantid}/v2.0``); it is accepted only with ``LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS``,
and then each ID token's ``iss`` must be the template with the token's own ``tid`` in it and
``tid`` one of the allowed tenants (:meth:`OidcProvider.expected_issuer`).

Claim checks are Authlib's (:class:`authlib.oidc.core.CodeIDToken`), JOSE is ``joserfc`` as
everywhere in Linegate. Every failure is an :class:`OidcError` with the HTTP status the
portal answers with (400 flow, 401 provider refusal or bad token, 403 no role, 502 provider
unreachable), never a 500.

Example::

    provider = OidcProvider(settings)
    flow = SignInFlow.new(next_url="/portal/")
    url = await provider.authorization_url(flow)
    ...  # the browser comes back with ?code=...&state=...
    tokens = await provider.exchange_code(code, flow.verifier)
    claims = await provider.validate_id_token(tokens.id_token, nonce=flow.nonce,
                                              access_token=tokens.access_token)
    identity = map_identity(claims, settings)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import httpx
from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]  # no py.typed
    create_s256_code_challenge,
)
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]  # no py.typed
from fastapi import Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from attestation.portal.security import PORTAL_ROLES, PortalSessionSigner
from attestation.settings import AttestationSettings
from linegate.auth import ALGORITHMS, RemoteJWKS
from linegate.errors import LinegateError, NotFound, Unauthorized
from linegate.roles import Role

#: The sign-in flow's cookie: only the two OIDC routes ever receive it.
FLOW_COOKIE = "linegate_portal_oidc"
FLOW_COOKIE_PATH = "/portal/login/oidc"
#: Ten minutes to get through the provider's sign-in page.
FLOW_TTL_SECONDS = 600
FLOW_AUDIENCE = "linegate-portal-oidc-flow"
#: The ID token kept for RP-initiated logout: only the sign-out route receives it.
LOGOUT_HINT_COOKIE = "linegate_portal_logout"
LOGOUT_HINT_COOKIE_PATH = "/portal/logout"
LOGOUT_HINT_AUDIENCE = "linegate-portal-logout-hint"
#: Browsers keep a cookie's name and value up to 4096 bytes; the rest is for the attributes.
MAX_COOKIE_BYTES = 4000
HTTP_TIMEOUT_SECONDS = 10.0
#: The placeholder a multi-tenant provider's discovery document puts in its issuer.
TENANT_PLACEHOLDER = "{tenantid}"


class OidcError(LinegateError):
    """A sign-in through the OIDC provider that did not complete."""


class SignInFlowInvalid(OidcError):
    status = 400
    title = "Sign-in could not be completed"


class ProviderRefused(OidcError):
    status = 401
    title = "Sign-in refused by the identity provider"


class IdTokenInvalid(OidcError):
    status = 401
    title = "Invalid ID token"


class NoPortalRole(OidcError):
    status = 403
    title = "No portal role"


class ProviderUnavailable(OidcError):
    status = 502
    title = "Identity provider unavailable"


class OidcNotConfigured(NotFound):
    title = "Not found"


# ------------------------------------------------------------------------------ the flow


@dataclass(frozen=True)
class SignInFlow:
    """What the callback must find again: kept in the browser, signed, for ten minutes."""

    state: str
    nonce: str
    verifier: str
    next_url: str

    @classmethod
    def new(cls, next_url: str) -> SignInFlow:
        # token_urlsafe(48) is 64 characters of [A-Za-z0-9_-]: a valid RFC 7636 verifier.
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next_url=next_url,
        )

    @property
    def challenge(self) -> str:
        challenge: str = create_s256_code_challenge(self.verifier)
        return challenge

    def seal(self, signer: PortalSessionSigner) -> str:
        values = {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.verifier,
            "next": self.next_url,
        }
        return signer.seal(FLOW_AUDIENCE, values, ttl_seconds=FLOW_TTL_SECONDS)

    @classmethod
    def from_callback(
        cls, signer: PortalSessionSigner, cookie: str | None, state: str | None
    ) -> SignInFlow:
        """The flow the cookie carries, if it is genuine, current and for this ``state``."""
        if not cookie:
            raise SignInFlowInvalid(
                "no sign-in in progress in this browser (or it took longer than ten minutes): "
                "start again from the sign-in page"
            )
        try:
            values = signer.unseal(FLOW_AUDIENCE, cookie)
        except ValueError as e:
            raise SignInFlowInvalid(
                f"the sign-in state cookie is invalid or expired ({e}): start again"
            ) from e
        fields = [values.get(k) for k in ("state", "nonce", "verifier", "next")]
        if not all(isinstance(v, str) and v for v in fields):
            raise SignInFlowInvalid("the sign-in state cookie is incomplete: start again")
        flow = cls(*(str(v) for v in fields))
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            # Another sign-in's answer, or a forged one (login CSRF): never exchanged.
            raise SignInFlowInvalid("the provider's answer does not belong to this sign-in")
        return flow


# -------------------------------------------------------------------------- the provider


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the discovery document the portal uses."""

    #: The configured issuer, or the template a multi-tenant provider publishes.
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    id_token_algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]
    #: RP-Initiated Logout 1.0; None when the provider publishes none.
    end_session_endpoint: str | None = None

    @property
    def issuer_is_template(self) -> bool:
        return TENANT_PLACEHOLDER in self.issuer


@dataclass(frozen=True)
class TokenResponse:
    id_token: str
    access_token: str | None


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def is_tenant_template(published: str, configured: str) -> bool:
    """Whether ``published`` is ``configured`` with exactly one path segment replaced by
    ``{tenantid}`` (``.../common/v2.0`` -> ``.../{tenantid}/v2.0``): the one shape of issuer
    template accepted, so the template still names the provider that was configured."""
    pub, conf = urlsplit(published), urlsplit(configured)
    if (pub.scheme, pub.netloc, pub.query, pub.fragment) != (conf.scheme, conf.netloc, "", ""):
        return False
    if conf.query or conf.fragment or published.count(TENANT_PLACEHOLDER) != 1:
        return False
    pub_parts, conf_parts = pub.path.split("/"), conf.path.split("/")
    if len(pub_parts) != len(conf_parts):
        return False
    differ = [(p, c) for p, c in zip(pub_parts, conf_parts, strict=True) if p != c]
    return len(differ) == 1 and differ[0][0] == TENANT_PLACEHOLDER


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to the query it may already have."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), *params.items()])))


class OidcProvider:
    """The configured provider: discovery (cached), authorization URL, code exchange, ID
    token validation. Built from settings; holds no connection between calls."""

    metadata_max_age: ClassVar[float] = 3600.0

    def __init__(self, settings: AttestationSettings) -> None:
        assert settings.portal_oidc_issuer is not None
        assert settings.portal_oidc_client_id is not None
        self.issuer = settings.portal_oidc_issuer
        self.client_id = settings.portal_oidc_client_id
        secret = settings.portal_oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret is not None else None
        self.redirect_url = settings.portal_oidc_callback_url
        self.post_logout_url = settings.portal_oidc_post_logout_url
        self.scopes = settings.portal_oidc_scopes
        self.leeway = settings.auth_leeway_seconds
        self.name = settings.portal_oidc_display_name
        self.allowed_tenants = frozenset(settings.portal_oidc_allowed_tenants)
        self._metadata: ProviderMetadata | None = None
        self._fetched_at = 0.0
        self._jwks: RemoteJWKS | None = None

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                body = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise ProviderUnavailable(f"cannot fetch {self.name}'s {what}: {e}") from e
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{self.name}'s {what} is not a JSON object")
        return body

    async def metadata(self) -> ProviderMetadata:
        """The discovery document (OpenID Connect Discovery 1.0), cached for an hour."""
        now = time.monotonic()
        if self._metadata is not None and now - self._fetched_at < self.metadata_max_age:
            return self._metadata
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url, "discovery document")
        # Discovery 4.3: the document must name the issuer we asked (mix-up defence), or,
        # for a multi-tenant provider the operator opted in to, its template.
        published = doc.get("issuer")
        issuer = self.issuer
        if published != self.issuer:
            templated = isinstance(published, str) and is_tenant_template(published, self.issuer)
            if not templated:
                raise ProviderUnavailable(
                    f"the discovery document names issuer {published!r}, "
                    f"not the configured {self.issuer!r}"
                )
            if not self.allowed_tenants:
                raise ProviderUnavailable(
                    f"the discovery document names the multi-tenant issuer template "
                    f"{published!r}: set LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS to the tenants "
                    "whose users may sign in"
                )
            issuer = str(published)
        endpoints = [doc.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
        if not all(isinstance(e, str) and e for e in endpoints):
            raise ProviderUnavailable("the discovery document lacks an endpoint the flow needs")
        methods = _strings(doc.get("code_challenge_methods_supported"))
        if "code_challenge_methods_supported" in doc and "S256" not in methods:
            raise ProviderUnavailable("the provider does not support PKCE with S256")
        algorithms = tuple(
            a
            for a in _strings(doc.get("id_token_signing_alg_values_supported")) or ("RS256",)
            if a in ALGORITHMS  # asymmetric only: never "none", never a shared secret
        )
        if not algorithms:
            raise ProviderUnavailable("the provider signs ID tokens with no algorithm accepted")
        end_session = doc.get("end_session_endpoint")
        metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=str(endpoints[0]),
            token_endpoint=str(endpoints[1]),
            jwks_uri=str(endpoints[2]),
            id_token_algorithms=algorithms,
            token_auth_methods=_strings(doc.get("token_endpoint_auth_methods_supported")),
            end_session_endpoint=end_session
            if isinstance(end_session, str) and end_session
            else None,
        )
        if self._jwks is None or self._jwks.url != metadata.jwks_uri:
            self._jwks = RemoteJWKS(metadata.jwks_uri)
        self._metadata, self._fetched_at = metadata, now
        return metadata

    async def authorization_url(self, flow: SignInFlow) -> str:
        metadata = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_url,
            "scope": self.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": flow.challenge,
            "code_challenge_method": "S256",
        }
        return _with_query(metadata.authorization_endpoint, params)

    async def end_session_url(self, id_token_hint: str | None) -> str | None:
        """Where to send the browser to sign out at the provider too (RP-Initiated Logout
        1.0, section 2), or None when the provider has no end-session endpoint. Without the
        ID token the provider may ask the user to confirm."""
        metadata = await self.metadata()
        if metadata.end_session_endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": self.post_logout_url}
        if id_token_hint:
            params = {"id_token_hint": id_token_hint, **params}
        return _with_query(metadata.end_session_endpoint, params)

    async def exchange_code(self, code: str, verifier: str) -> TokenResponse:
        """The token request of RFC 6749 4.1.3 with the PKCE ``code_verifier``."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if self.client_secret is None:
            form["client_id"] = self.client_id
        elif "client_secret_post" not in metadata.token_auth_methods or (
            "client_secret_basic" in metadata.token_auth_methods
        ):
            # RFC 6749 2.3.1: both parts form-encoded before Basic encoding.
            basic = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
        else:
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
                response = await client.post(
                    metadata.token_endpoint,
                    data=form,
                    headers=headers,
                )
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"cannot reach {self.name}'s token endpoint: {e}") from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if response.status_code >= 500 or (response.is_success and not body):
            raise ProviderUnavailable(
                f"{self.name}'s token endpoint answered {response.status_code}"
            )
        if not response.is_success:
            error = str(body.get("error") or response.status_code)
            description = body.get("error_description")
            raise ProviderRefused(
                f"{self.name} refused the authorization code: {error}"
                + (f" ({description})" if description else "")
            )
        id_token, access_token = body.get("id_token"), body.get("access_token")
        if not isinstance(id_token, str) or not id_token:
            raise IdTokenInvalid(f"{self.name}'s token response carries no ID token")
        return TokenResponse(id_token, access_token if isinstance(access_token, str) else None)

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        await self.metadata()
        assert self._jwks is not None
        try:
            return await self._jwks.key_set(refresh=refresh)
        except Unauthorized as e:  # RemoteJWKS's way of saying it could not fetch
            raise ProviderUnavailable(f"cannot fetch {self.name}'s JWKS: {e.detail}") from e

    async def validate_id_token(
        self, id_token: str, *, nonce: str, access_token: str | None
    ) -> dict[str, Any]:
        """The ID token's claims, validated per OpenID Connect Core 3.1.3.7."""
        metadata = await self.metadata()
        algorithms = list(metadata.id_token_algorithms)
        keys = await self._key_set()
        try:
            try:
                decoded = jwt.decode(id_token, keys, algorithms=algorithms)
            except (JoseError, ValueError):
                fresh = await self._key_set(refresh=True)  # the provider may have rotated
                if fresh is keys:
                    raise
                decoded = jwt.decode(id_token, fresh, algorithms=algorithms)
        except (JoseError, ValueError) as e:
            raise IdTokenInvalid(f"the ID token's signature does not verify: {e}") from e
        issuer = self.expected_issuer(metadata, decoded.claims)
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": self.client_id},
                "nonce": {"essential": True, "value": nonce},
            },
            {"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        try:
            claims.validate(now=int(time.time()), leeway=self.leeway)
        except JoseError as e:
            raise IdTokenInvalid(f"the ID token was refused: {e.description or e.error}") from e
        return dict(claims)

    def expected_issuer(self, metadata: ProviderMetadata, claims: dict[str, Any]) -> str:
        """The ``iss`` this (signature-checked) ID token must carry. With allowed tenants its
        ``tid`` must be one of them, and a templated issuer is filled in with that ``tid``
        (never with anything the allow-list did not name)."""
        if not self.allowed_tenants:
            return metadata.issuer
        tid = claims.get("tid")
        if not isinstance(tid, str) or tid not in self.allowed_tenants:
            shown = repr(tid) if isinstance(tid, str) else "no 'tid' claim"
            raise IdTokenInvalid(
                f"the ID token was refused: tenant {shown} is not among the tenants allowed "
                "to sign in here (LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS)"
            )
        if metadata.issuer_is_template:
            return metadata.issuer.replace(TENANT_PLACEHOLDER, tid)
        return metadata.issuer


def oidc_provider(request: Request) -> OidcProvider:
    """The app's :class:`OidcProvider` (made on first use); 404 when none is configured."""
    provider: OidcProvider | None = getattr(request.app.state, "portal_oidc", None)
    if provider is None:
        settings: AttestationSettings = request.app.state.ctx.settings
        if not settings.portal_oidc_enabled:
            raise OidcNotConfigured("sign-in with an OIDC provider is not configured here")
        provider = OidcProvider(settings)
        request.app.state.portal_oidc = provider
    return provider


# ------------------------------------------------------------------ the ID token for logout


def _session_binding(session_token: str) -> str:
    return hashlib.sha256(b"linegate-portal-logout:" + session_token.encode()).hexdigest()


def seal_logout_hint(
    signer: PortalSessionSigner, id_token: str, *, session_token: str, ttl_seconds: int
) -> str | None:
    """The logout-hint cookie's value: the ID token encrypted and bound to the portal session
    it came with; None when it would not fit in a cookie (sign-out then goes without it)."""
    value = signer.encrypt(
        LOGOUT_HINT_AUDIENCE,
        {"id_token": id_token, "session": _session_binding(session_token)},
        ttl_seconds=ttl_seconds,
    )
    return value if len(LOGOUT_HINT_COOKIE) + 1 + len(value) <= MAX_COOKIE_BYTES else None


def open_logout_hint(
    signer: PortalSessionSigner, cookie: str | None, *, session_token: str
) -> str | None:
    """The ID token the cookie keeps for this session; None if absent, forged, expired or
    another session's (a hint must name the session being ended)."""
    if not cookie:
        return None
    try:
        values = signer.decrypt(LOGOUT_HINT_AUDIENCE, cookie)
    except ValueError:
        return None
    bound, id_token = values.get("session"), values.get("id_token")
    if not isinstance(bound, str) or not isinstance(id_token, str) or not id_token:
        return None
    if not hmac.compare_digest(bound.encode(), _session_binding(session_token).encode()):
        return None
    return id_token


# ---------------------------------------------------------------------- claims to roles


@dataclass(frozen=True)
class PortalIdentity:
    """Who signed in, in Linegate's terms."""

    subject: str
    roles: frozenset[Role]
    tenant: str | None


def claim_at(claims: dict[str, Any], path: str) -> object:
    """``claims["realm_access"]["roles"]`` for ``realm_access.roles``; None if absent. A claim
    whose own name has dots (Entra, Okta URLs) is found by its whole name first."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def map_identity(claims: dict[str, Any], settings: AttestationSettings) -> PortalIdentity:
    """Linegate roles and tenant from validated ID-token claims; :class:`NoPortalRole` for a
    user the portal has nothing for, :class:`IdTokenInvalid` for unusable claims."""
    subject = claim_at(claims, settings.portal_oidc_subject_claim)
    if not isinstance(subject, str) or not subject.strip():
        raise IdTokenInvalid(
            f"the ID token has no {settings.portal_oidc_subject_claim!r} claim to name you by"
        )
    raw = claim_at(claims, settings.portal_oidc_roles_claim)
    if isinstance(raw, str):
        values = raw.split()
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        values = list(raw)
    elif raw is None:
        values = []
    else:
        raise IdTokenInvalid(
            f"the ID token's {settings.portal_oidc_roles_claim!r} claim is not a list of names"
        )
    roles = frozenset(r for v in values for r in settings.portal_oidc_role_map.get(v, ()))
    if not roles:
        raise NoPortalRole(
            f"your account at {settings.portal_oidc_display_name} holds no Linegate role "
            f"(claim {settings.portal_oidc_roles_claim!r}); ask procurement for access"
        )
    if Role.ADMIN not in roles and not roles & set(PORTAL_ROLES):
        raise NoPortalRole("your Linegate roles include none the portal serves")
    tenant: str | None = None
    if Role.SUPPLIER in roles:
        value = claim_at(claims, settings.portal_oidc_tenant_claim)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            raise NoPortalRole(
                "a supplier user needs exactly one supplier in the ID token's "
                f"{settings.portal_oidc_tenant_claim!r} claim; ask your administrator"
            )
        tenant = value.strip()
    return PortalIdentity(subject=subject.strip(), roles=roles, tenant=tenant)
