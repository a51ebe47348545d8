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
(``.../{tenantid}/v2.0``); it is accepted only with ``LINEGATE_PORTAL_OIDC_TENANTS``, and
then each ID token's ``iss`` must be the template with the token's own ``tid`` in it and
``tid`` one of the configured tenants (:meth:`OidcProvider.expected_issuer`). Each tenant is
configured with what its users may be, because its administrator controls their claims: a
supplier's directory yields only that supplier's ``supplier`` role (the role claim can only
withhold it), a ``staff`` directory goes through the role map and tenant claim, and the user
is named ``<tid>/<sub>`` (:func:`map_identity`).

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

from attestation.portal.oidc._errors import (
    IdTokenInvalid,
    NoPortalRole,
    OidcError,
    OidcNotConfigured,
    ProviderRefused,
    ProviderUnavailable,
    SignInFlowInvalid,
)
from attestation.portal.oidc._flow import (
    FLOW_AUDIENCE,
    FLOW_COOKIE,
    FLOW_COOKIE_PATH,
    FLOW_TTL_SECONDS,
    SignInFlow,
)
from attestation.portal.oidc._identity import PortalIdentity, claim_at, map_identity
from attestation.portal.oidc._logout import (
    LOGOUT_HINT_AUDIENCE,
    LOGOUT_HINT_COOKIE,
    LOGOUT_HINT_COOKIE_PATH,
    MAX_COOKIE_BYTES,
    open_logout_hint,
    seal_logout_hint,
)
from attestation.portal.oidc._provider import (
    HTTP_TIMEOUT_SECONDS,
    TENANT_PLACEHOLDER,
    OidcProvider,
    ProviderMetadata,
    TokenResponse,
    is_tenant_template,
    oidc_provider,
)

__all__ = [
    "FLOW_AUDIENCE",
    "FLOW_COOKIE",
    "FLOW_COOKIE_PATH",
    "FLOW_TTL_SECONDS",
    "HTTP_TIMEOUT_SECONDS",
    "LOGOUT_HINT_AUDIENCE",
    "LOGOUT_HINT_COOKIE",
    "LOGOUT_HINT_COOKIE_PATH",
    "MAX_COOKIE_BYTES",
    "TENANT_PLACEHOLDER",
    "IdTokenInvalid",
    "NoPortalRole",
    "OidcError",
    "OidcNotConfigured",
    "OidcProvider",
    "PortalIdentity",
    "ProviderMetadata",
    "ProviderRefused",
    "ProviderUnavailable",
    "SignInFlow",
    "SignInFlowInvalid",
    "TokenResponse",
    "claim_at",
    "is_tenant_template",
    "map_identity",
    "oidc_provider",
    "open_logout_hint",
    "seal_logout_hint",
]
