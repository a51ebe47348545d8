"""The provider client: discovery (incl. multi-tenant issuer templates), the authorization
and end-session URLs, the code exchange and ID-token validation."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import httpx
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]  # no py.typed
from fastapi import Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from attestation.portal.oidc._errors import (
    IdTokenInvalid,
    OidcNotConfigured,
    ProviderRefused,
    ProviderUnavailable,
)
from attestation.portal.oidc._flow import SignInFlow
from attestation.settings import AttestationSettings
from linegate.auth import ALGORITHMS, RemoteJWKS
from linegate.errors import Unauthorized

HTTP_TIMEOUT_SECONDS = 10.0
#: The placeholder a multi-tenant provider's discovery document puts in its issuer.
TENANT_PLACEHOLDER = "{tenantid}"


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
        self.allowed_tenants = frozenset(settings.portal_oidc_tenants)
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
                    f"{published!r}: set LINEGATE_PORTAL_OIDC_TENANTS to the tenants whose "
                    "users may sign in, each with what its users may be"
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
        """The ``iss`` this (signature-checked) ID token must carry. With tenants configured its
        ``tid`` must be one of them, and a templated issuer is filled in with that ``tid``
        (never with anything the allow-list did not name)."""
        if not self.allowed_tenants:
            return metadata.issuer
        tid = claims.get("tid")
        if not isinstance(tid, str) or tid not in self.allowed_tenants:
            shown = repr(tid) if isinstance(tid, str) else "no 'tid' claim"
            raise IdTokenInvalid(
                f"the ID token was refused: tenant {shown} is not among the tenants allowed "
                "to sign in here (LINEGATE_PORTAL_OIDC_TENANTS)"
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
