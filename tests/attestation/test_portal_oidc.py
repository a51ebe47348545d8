"""Portal sign-in through an external OpenID Connect provider (authorization code + PKCE).

The provider is real and small: a FastAPI app served over loopback HTTP (``serve_http``) with
discovery, ``/authorize`` (signs in whoever the test says, with no page), ``/token`` (checks
the client, the code, the redirect URI and the PKCE S256 verifier), ``/jwks`` and ``/logout``
(RP-initiated logout: checks the ID token hint, the client and the post-logout redirect URI),
issuing RS256 ID tokens with a key made in the fixture. The browser is httpx: one cookie jar
against the real portal, plain HTTP against the provider, following each redirect by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from attestation.app import create_app
from attestation.portal.oidc import is_tenant_template
from attestation.settings import AttestationSettings, PortalOidcTenant
from linegate.auth import Role
from linegate.embedded import free_port
from linegate.testing.postgres import postgres_url

from .conftest import Stack
from .test_portal import csrf_of, envelope, subject

CLIENT_ID = "linegate-portal"
CLIENT_SECRET = "portal-client-secret"
REDIRECT = "http://testserver/portal/login/oidc/callback"
POST_LOGOUT = "http://testserver/portal/login"
ROLE_MAP = {
    "lg-procurement": ["procurement"],
    "lg-supplier": ["supplier"],
    "lg-responder": ["responder"],
}
PROCUREMENT_USER = {
    "sub": "5b1c0e2a-procurement",
    "email": "petra@plant.example",
    "realm_access": {"roles": ["offline_access", "lg-procurement"]},
}
SUPPLIER_USER = {
    "sub": "9d3f-supplier",
    "email": "sam@optivision.example",
    "realm_access": {"roles": ["lg-supplier"]},
    "supplier": "optivision",
}
#: Entra ID tenants (directory ids are GUIDs): the plant's own, one no setting names, and
#: the supplier optivision's.
TENANT = "3f2c8e51-7a44-4c0e-9d6b-1b2f3a4c5d6e"
OTHER_TENANT = "b7e1d2c3-0f9a-4e8b-a1c2-d3e4f5a6b7c8"
SUPPLIER_TENANT = "0c5a9f7e-2d1b-4f3a-8e6c-5b4a3d2c1e0f"
#: Where a multi-tenant provider's discovery lives, as Entra's common endpoint.
COMMON = "/common/v2.0"


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """SQLite unless a test asks for both: the flow does not touch the database; the one test
    that reads through tenancy-confined queries runs on PostgreSQL too."""
    backend: str = getattr(request, "param", "sqlite")
    if backend == "postgresql" and postgres_url() is None:
        pytest.skip("PostgreSQL is not reachable at LINEGATE_TEST_POSTGRES_URL / 127.0.0.1:5432")
    return backend


@pytest.fixture(scope="module")
def idp_keys() -> tuple[RSAKey, RSAKey]:
    """The provider's signing key and, under the same kid, a forger's."""
    params = {"kid": "idp-2026", "use": "sig", "alg": "RS256"}
    return RSAKey.generate_key(2048, params), RSAKey.generate_key(2048, params)


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


@dataclass
class Provider:
    """The test's identity provider; the test sets who signs in and how the provider errs."""

    key: RSAKey
    url: str = ""
    user: dict[str, Any] = field(default_factory=lambda: dict(PROCUREMENT_USER))
    #: Changes the next ID token's claims (wrong nonce, audience, expiry...).
    tamper: Callable[[dict[str, Any]], None] | None = None
    #: Signs the next ID token instead of the provider's key.
    sign_with: RSAKey | None = None
    #: Makes the next ID token from its claims instead of the provider's RS256 signing
    #: (another algorithm, no signature, a shared secret as key).
    forge: Callable[[dict[str, Any]], str] | None = None
    #: The authorize endpoint answers with this OAuth2 error instead of a code.
    deny: str | None = None
    #: Endpoints that answer 503.
    broken: set[str] = field(default_factory=set)
    #: Whether discovery publishes an end_session_endpoint (read when the portal first asks).
    end_session: bool = True
    #: Multi-tenant, like Entra ID: discovery under /common/v2.0 names the issuer template
    #: {url}/{tenantid}/v2.0, and each ID token's iss is the user's own tenant's.
    multi_tenant: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    #: Every ID token issued, newest last.
    id_tokens: list[str] = field(default_factory=list)
    #: What each end-session request carried, once the provider accepted it.
    logouts: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        def unavailable(endpoint: str) -> JSONResponse | None:
            return JSONResponse({}, status_code=503) if endpoint in self.broken else None

        @app.get("/.well-known/openid-configuration")
        @app.get(COMMON + "/.well-known/openid-configuration")
        async def discovery() -> Any:
            logout = {"end_session_endpoint": f"{self.url}/logout"} if self.end_session else {}
            return unavailable("discovery") or {
                **logout,
                "issuer": f"{self.url}/{{tenantid}}/v2.0" if self.multi_tenant else self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }

        @app.get("/jwks")
        async def jwks() -> Any:
            return unavailable("jwks") or {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize")
        async def authorize(request: Request) -> Any:
            q = request.query_params
            checks = {
                "response_type": q.get("response_type") == "code",
                "client_id": q.get("client_id") == CLIENT_ID,
                "redirect_uri": q.get("redirect_uri") == REDIRECT,
                "scope": "openid" in q.get("scope", "").split(),
                "pkce": q.get("code_challenge_method") == "S256" and bool(q.get("code_challenge")),
                "state": bool(q.get("state")),
                "nonce": bool(q.get("nonce")),
            }
            failed = [k for k, ok in checks.items() if not ok]
            if failed:
                return JSONResponse({"error": "invalid_request", "failed": failed}, 400)
            if self.deny:
                answer = {"error": self.deny, "error_description": "The user said no"}
            else:
                code = secrets.token_urlsafe(16)
                self.codes[code] = {
                    "challenge": q["code_challenge"],
                    "nonce": q["nonce"],
                    "user": dict(self.user),
                }
                answer = {"code": code}
            return RedirectResponse(
                f"{REDIRECT}?{urlencode({**answer, 'state': q['state']})}", status_code=302
            )

        @app.post("/token")
        async def token(
            request: Request,
            grant_type: str = Form(),
            code: str = Form(),
            redirect_uri: str = Form(),
            code_verifier: str | None = Form(None),
        ) -> Any:
            if down := unavailable("token"):
                return down
            self.token_requests.append(
                {
                    "code_verifier": code_verifier,
                    "authorization": request.headers.get("authorization"),
                }
            )
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            user, _, password = base64.b64decode(value).decode().partition(":")
            if scheme != "Basic" or (unquote_plus(user), unquote_plus(password)) != (
                CLIENT_ID,
                CLIENT_SECRET,
            ):
                return JSONResponse({"error": "invalid_client"}, 401)
            grant = self.codes.pop(code, None)  # single use
            if grant_type != "authorization_code" or grant is None or redirect_uri != REDIRECT:
                return JSONResponse({"error": "invalid_grant"}, 400)
            if code_verifier is None or s256(code_verifier) != grant["challenge"]:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "PKCE verification failed"},
                    400,
                )
            access_token = secrets.token_urlsafe(32)
            digest = hashlib.sha256(access_token.encode()).digest()
            now = int(time.time())
            claims = {
                "iss": self.url,
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 300,
                "nonce": grant["nonce"],
                "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode(),
                **grant["user"],
            }
            if self.multi_tenant:
                claims["iss"] = f"{self.url}/{claims.get('tid')}/v2.0"
            if self.tamper:
                self.tamper(claims)
            key = self.sign_with or self.key
            if self.forge:
                id_token = self.forge(claims)
            else:
                id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
            self.id_tokens.append(id_token)
            return {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }

        @app.get("/logout")
        async def end_session(request: Request) -> Any:
            q = request.query_params
            subject = None
            if hint := q.get("id_token_hint"):
                # RP-Initiated Logout 2: a hint the OP issued to this client (expired is fine).
                try:
                    claims = jwt.decode(hint, self.key, algorithms=["RS256"]).claims
                except (JoseError, ValueError) as e:
                    return JSONResponse({"error": "invalid_request", "detail": str(e)}, 400)
                if claims.get("aud") != CLIENT_ID or claims.get("iss") != self.url:
                    return JSONResponse({"error": "invalid_request"}, 400)
                subject = claims["sub"]
            if q.get("client_id") != CLIENT_ID or q.get("post_logout_redirect_uri") != POST_LOGOUT:
                return JSONResponse({"error": "invalid_request"}, 400)
            self.logouts.append({"sub": subject, "id_token_hint": hint})
            return RedirectResponse(q["post_logout_redirect_uri"], status_code=302)

        return app


@dataclass
class Portal:
    stack: Stack
    provider: Provider
    #: The query of the last authorization request the portal sent the browser with.
    last_request: dict[str, list[str]] = field(default_factory=dict)

    @asynccontextmanager
    async def browser(self):
        transport = httpx.ASGITransport(app=self.stack.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
            yield web

    async def authorize(self, web: httpx.AsyncClient, start: str = "/portal/login/oidc") -> str:
        """Start the flow in the portal, let the provider answer; the callback URL it sends
        the browser to."""
        r = await web.get(start)
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(f"{self.provider.url}/authorize?")
        self.last_request = parse_qs(urlsplit(r.headers["location"]).query)
        async with httpx.AsyncClient() as idp:
            answer = await idp.get(r.headers["location"])
        assert answer.status_code == 302, answer.text
        callback: str = answer.headers["location"]
        assert callback.startswith(REDIRECT + "?")
        return callback

    async def sign_in(self, web: httpx.AsyncClient, start: str = "/portal/login/oidc"):
        return await web.get(await self.authorize(web, start))


@pytest.fixture
async def portal(request, settings_factory, service_client, mint_token, serve_http, idp_keys):
    """The portal against the loopback provider. ``indirect`` parametrization overrides
    settings; ``multi_tenant`` makes the provider Entra-like (configured as ``.../common/v2.0``)."""
    overrides: dict[str, Any] = dict(getattr(request, "param", {}))
    provider = Provider(key=idp_keys[0], multi_tenant=overrides.pop("multi_tenant", False))
    provider.url = serve_http(provider.app())
    values: dict[str, Any] = {
        "portal_oidc_issuer": provider.url + (COMMON if provider.multi_tenant else ""),
        "portal_oidc_client_id": CLIENT_ID,
        "portal_oidc_client_secret": CLIENT_SECRET,
        "portal_oidc_redirect_url": REDIRECT,
        "portal_oidc_post_logout_redirect_url": POST_LOGOUT,
        "portal_oidc_provider_name": "Keycloak",
        "portal_oidc_roles_claim": "realm_access.roles",
        "portal_oidc_role_map": ROLE_MAP,
        "portal_oidc_subject_claim": "email",
    }
    settings = settings_factory(AttestationSettings, **{**values, **overrides})
    app = create_app(settings)
    async with service_client(app) as client:
        yield Portal(Stack(client=client, app=app, mint=mint_token), provider)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_jws(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]):
    """A JWS in compact form, put together by hand: joserfc will not make the bad ones."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def refused(r: httpx.Response, status: int, text: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/html")
    assert text in html.unescape(r.text), r.text
    assert "linegate_portal=" not in r.headers.get("set-cookie", "")


# ---------------------------------------------------------------------------- sign-in


async def test_a_procurement_user_signs_in_with_the_provider(portal, caplog):
    caplog.set_level(logging.INFO, logger="attestation.portal")
    async with portal.browser() as web:
        login = await web.get("/portal/login?next=/portal/suppliers")
        assert "Sign in with Keycloak" in login.text
        assert 'href="/portal/login/oidc?next=/portal/suppliers"' in login.text

        start = await web.get("/portal/login/oidc?next=/portal/suppliers")
        flow_cookie = next(
            h for h in start.headers.get_list("set-cookie") if h.startswith("linegate_portal_oidc=")
        )
        attributes = {a.strip().lower() for a in flow_cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/portal/login/oidc"} <= attributes

        r = await portal.sign_in(web, "/portal/login/oidc?next=/portal/suppliers")
        assert r.status_code == 200, r.text
        assert '<meta http-equiv="refresh" content="0; url=/portal/suppliers">' in r.text
        assert "petra@plant.example" in r.text
        signed_in = [m for m in caplog.messages if m.startswith("portal OIDC sign-in:")]
        assert signed_in == ["portal OIDC sign-in: petra@plant.example"]
        session = next(
            h for h in r.headers.get_list("set-cookie") if h.startswith("linegate_portal=")
        )
        assert {"httponly", "samesite=strict", "path=/portal"} <= {
            a.strip().lower() for a in session.split(";")[1:]
        }
        assert "linegate_portal_oidc" not in web.cookies  # the flow is spent
        # The token request carried the verifier of the challenge sent (the provider checks
        # it) and authenticated the confidential client.
        sent = portal.provider.token_requests[-1]
        assert portal.last_request["code_challenge_method"] == ["S256"]
        assert s256(sent["code_verifier"]) == portal.last_request["code_challenge"][0]
        assert sent["authorization"].startswith("Basic ")

        page = await web.get("/portal/suppliers")
        assert page.status_code == 200
        assert "Signed in as <strong>petra@plant.example</strong>" in page.text
        # A portal session, not an API credential.
        token = web.cookies["linegate_portal"]
        who = await web.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert who.status_code == 401


@pytest.mark.parametrize(
    "database_backend",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)
async def test_a_supplier_user_signs_in_and_sees_only_its_own_supplier(portal):
    stack = portal.stack
    opti = await stack.onboard("optivision")
    acme = await stack.onboard("acme")
    mine = (await stack.upload("optivision", envelope(opti, subject("opti.onnx")))).json()["id"]
    theirs = (await stack.upload("acme", envelope(acme, subject("acme-secret.onnx")))).json()["id"]
    portal.provider.user = dict(SUPPLIER_USER)
    async with portal.browser() as web:
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        assert '<meta http-equiv="refresh" content="0; url=/portal/">' in r.text
        home = await web.get("/portal/")
        assert (home.status_code, home.headers["location"]) == (303, "/portal/attestations")
        page = await web.get("/portal/attestations?supplier=acme")
        assert page.status_code == 200
        assert "(supplier optivision)" in page.text
        assert mine in page.text
        assert theirs not in page.text
        assert "acme-secret" not in page.text
        for url in (f"/portal/attestations/{theirs}", "/portal/suppliers/acme"):
            assert (await web.get(url)).status_code == 404, url
        assert (await web.get("/portal/suppliers")).status_code == 403


# ---------------------------------------------------------------------------- sign-out


def cookie_attributes(response: httpx.Response, name: str) -> tuple[str, set[str]]:
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(name + "="))
    value, *attributes = header.split(";")
    return value.partition("=")[2].strip('"'), {a.strip().lower() for a in attributes}


REFRESH = re.compile(r'<meta http-equiv="refresh" content="0; url=([^"]+)">')


async def test_signing_out_ends_the_session_at_the_provider_too(portal, caplog):
    caplog.set_level(logging.INFO, logger="attestation.portal")
    provider = portal.provider
    async with portal.browser() as web:
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        id_token = provider.id_tokens[-1]
        # The ID token is kept for sign-out encrypted, for the sign-out route only, and not in
        # the session cookie every page receives.
        hint, attributes = cookie_attributes(r, "linegate_portal_logout")
        assert {"httponly", "samesite=strict", "path=/portal/logout"} <= attributes
        assert len(hint.split(".")) == 5  # compact JWE
        assert id_token not in hint
        assert id_token.split(".")[1] not in web.cookies["linegate_portal"]

        page = await web.get("/portal/suppliers")
        # Still CSRF-protected: a cross-site form post without the token signs no one out.
        forged = await web.post("/portal/logout", data={"csrf": "0" * 64})
        assert forged.status_code == 403
        assert not provider.logouts
        assert (await web.get("/portal/suppliers")).status_code == 200

        out = await web.post("/portal/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 200, out.text
        assert out.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in out.headers["content-security-policy"]
        assert "linegate_portal" not in web.cookies
        assert "linegate_portal_logout" not in web.cookies
        match = REFRESH.search(out.text)
        assert match, out.text
        end_session = html.unescape(match.group(1))
        assert f'href="{match.group(1)}"' in out.text  # and a link, should the refresh not run
        assert end_session.startswith(f"{provider.url}/logout?")
        assert parse_qs(urlsplit(end_session).query) == {
            "id_token_hint": [id_token],
            "client_id": [CLIENT_ID],
            "post_logout_redirect_uri": [POST_LOGOUT],
        }
        assert "portal OIDC sign-out: petra@plant.example" in caplog.messages

        async with httpx.AsyncClient() as idp:
            back = await idp.get(end_session)
        assert (back.status_code, back.headers["location"]) == (302, POST_LOGOUT)
        assert provider.logouts == [{"sub": PROCUREMENT_USER["sub"], "id_token_hint": id_token}]
        assert (await web.get("/portal/suppliers")).status_code == 303


async def test_a_logout_hint_of_another_session_is_not_sent(portal):
    async with portal.browser() as web, portal.browser() as other:
        assert (await portal.sign_in(web)).status_code == 200
        assert (await portal.sign_in(other)).status_code == 200
        # Another session's hint (or a forged one) is no hint for this session.
        for hint in (other.cookies["linegate_portal_logout"], "a.b.c.d.e"):
            web.cookies.set(
                "linegate_portal_logout", hint, domain="testserver.local", path="/portal/logout"
            )
            page = await web.get("/portal/suppliers")
            out = await web.post("/portal/logout", data={"csrf": csrf_of(page)})
            match = REFRESH.search(out.text)
            assert match, out.text
            query = parse_qs(urlsplit(html.unescape(match.group(1))).query)
            assert query == {"client_id": [CLIENT_ID], "post_logout_redirect_uri": [POST_LOGOUT]}
            assert (await portal.sign_in(web)).status_code == 200


async def test_an_id_token_too_large_for_a_cookie_is_not_kept(portal, caplog):
    caplog.set_level(logging.WARNING, logger="attestation.portal")
    # Entra and Okta put every group in the token; 150 of them is no cookie any more.
    groups = [f"plant-group-{i:04d}-{secrets.token_hex(4)}" for i in range(150)]
    portal.provider.user = {**PROCUREMENT_USER, "groups": groups}
    async with portal.browser() as web:
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        assert len(portal.provider.id_tokens[-1]) > 4096
        assert "linegate_portal_logout" not in web.cookies
        assert any("too large to keep for sign-out" in m for m in caplog.messages)
        page = await web.get("/portal/suppliers")
        out = await web.post("/portal/logout", data={"csrf": csrf_of(page)})
        match = REFRESH.search(out.text)
        assert match, out.text
        query = parse_qs(urlsplit(html.unescape(match.group(1))).query)
        assert query == {"client_id": [CLIENT_ID], "post_logout_redirect_uri": [POST_LOGOUT]}
        async with httpx.AsyncClient() as idp:
            back = await idp.get(html.unescape(match.group(1)))
        assert back.status_code == 302
    assert portal.provider.logouts == [{"sub": None, "id_token_hint": None}]


async def test_other_sessions_sign_out_of_the_portal_only(portal):
    async with portal.browser() as web:
        # A pasted token (development): not a session of the provider, whatever it publishes.
        form = await web.get("/portal/login")
        token = portal.stack.mint(Role.PROCUREMENT)
        r = await web.post("/portal/login", data={"csrf": csrf_of(form), "token": token})
        assert r.status_code == 303, r.text
        page = await web.get("/portal/suppliers")
        out = await web.post("/portal/logout", data={"csrf": csrf_of(page)})
        assert (out.status_code, out.headers["location"]) == (303, "/portal/login")
        assert (await web.get("/portal/suppliers")).status_code == 303
    assert not portal.provider.logouts


async def test_without_an_end_session_endpoint_sign_out_stays_local(portal):
    portal.provider.end_session = False
    async with portal.browser() as web:
        assert (await portal.sign_in(web)).status_code == 200
        page = await web.get("/portal/suppliers")
        assert (await web.post("/portal/logout", data={"csrf": "wrong"})).status_code == 403
        out = await web.post("/portal/logout", data={"csrf": csrf_of(page)})
        assert (out.status_code, out.headers["location"]) == (303, "/portal/login")
        assert "linegate_portal" not in web.cookies
        assert "linegate_portal_logout" not in web.cookies
        assert (await web.get("/portal/suppliers")).status_code == 303
    assert not portal.provider.logouts


# ------------------------------------------------------------------ multi-tenant issuer

ENTRA_LIKE = {
    "multi_tenant": True,
    "portal_oidc_tenants": {TENANT: {"staff": True}},
    "portal_oidc_subject_claim": "sub",
}


@pytest.mark.parametrize("portal", [ENTRA_LIKE], indirect=True)
async def test_a_multi_tenant_provider_signs_in_only_allowed_tenants(portal, caplog):
    caplog.set_level(logging.INFO, logger="attestation.portal")
    provider = portal.provider
    async with portal.browser() as web:
        provider.user = {**PROCUREMENT_USER, "tid": TENANT}
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        assert f"{TENANT}/{PROCUREMENT_USER['sub']}" in r.text
        claims = jwt.decode(provider.id_tokens[-1], provider.key).claims
        assert claims["iss"] == f"{provider.url}/{TENANT}/v2.0"
        record = next(r for r in caplog.records if r.msg.startswith("portal OIDC sign-in:"))
        assert record.id_token_issuer == claims["iss"]

    cases: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], None] | None, str]] = {
        # Another tenant's user, with that tenant's own, correctly signed issuer.
        "another tenant": ({"tid": OTHER_TENANT}, None, f"tenant '{OTHER_TENANT}' is not"),
        "no tenant": ({}, None, "no 'tid' claim"),
        # An allowed tid does not make another tenant's issuer good.
        "tid and iss disagree": (
            {"tid": TENANT},
            lambda c: c.update(iss=f"{provider.url}/{OTHER_TENANT}/v2.0"),
            "iss",
        ),
        # Nor is the template itself an issuer.
        "the template as issuer": (
            {"tid": TENANT},
            lambda c: c.update(iss=f"{provider.url}/{{tenantid}}/v2.0"),
            "iss",
        ),
    }
    for case, (tenant, tamper, reason) in cases.items():
        provider.user, provider.tamper = {**PROCUREMENT_USER, **tenant}, tamper
        async with portal.browser() as web:
            r = await portal.sign_in(web)
            refused(r, 401, "the ID token was refused")
            assert reason in html.unescape(r.text), (case, r.text)


@pytest.mark.parametrize("portal", [{"multi_tenant": True}], indirect=True)
async def test_a_multi_tenant_provider_is_refused_without_allowed_tenants(portal):
    portal.provider.user = {**PROCUREMENT_USER, "tid": TENANT}
    async with portal.browser() as web:
        r = await web.get("/portal/login/oidc")
        refused(r, 502, "multi-tenant issuer template")
        assert "LINEGATE_PORTAL_OIDC_TENANTS" in r.text
        refused(await web.get("/portal/login/oidc/callback?code=x&state=y"), 400, "no sign-in")


@pytest.mark.parametrize(
    "portal",
    [
        {
            "portal_oidc_tenants": {TENANT: {"staff": True}, "contoso": {"staff": True}},
            "portal_oidc_subject_claim": "sub",
        }
    ],
    indirect=True,
)
async def test_allowed_tenants_confine_a_single_tenant_provider_too(portal):
    provider = portal.provider
    async with portal.browser() as web:
        provider.user = {**PROCUREMENT_USER, "tid": "contoso"}
        assert (await portal.sign_in(web)).status_code == 200
        provider.user = {**PROCUREMENT_USER, "tid": OTHER_TENANT}
        refused(await portal.sign_in(web), 401, "is not among the tenants allowed")
        # The issuer is still matched exactly: a tenant id does not change it.
        provider.user = {**PROCUREMENT_USER, "tid": TENANT}
        provider.tamper = lambda c: c.update(iss=f"{provider.url}/{TENANT}/v2.0")
        refused(await portal.sign_in(web), 401, "iss")


#: The plant's directory and optivision's, behind one Entra-like multi-tenant provider.
TWO_DIRECTORIES = {
    "multi_tenant": True,
    "portal_oidc_tenants": {
        TENANT: {"staff": True},
        SUPPLIER_TENANT: {"supplier": "optivision"},
    },
    "portal_oidc_subject_claim": "sub",
    "portal_oidc_role_map": {**ROLE_MAP, "lg-admin": ["admin"], "lg-auditor": ["auditor"]},
}


@pytest.mark.parametrize("portal", [TWO_DIRECTORIES], indirect=True)
async def test_a_suppliers_directory_yields_only_that_suppliers_role(portal, caplog):
    """Each directory's administrator sets its users' roles, attributes and emails: a
    supplier's may withhold access but never grant procurement, another supplier or a name."""
    caplog.set_level(logging.INFO, logger="attestation.portal")
    stack, provider = portal.stack, portal.provider
    opti = await stack.onboard("optivision")
    acme = await stack.onboard("acme")
    mine = (await stack.upload("optivision", envelope(opti, subject("opti.onnx")))).json()["id"]
    theirs = (await stack.upload("acme", envelope(acme, subject("acme-secret.onnx")))).json()["id"]
    # Everything optivision's administrator could give a user to pass for someone else.
    escalated = {
        "sub": "opti-user-7",
        "tid": SUPPLIER_TENANT,
        "email": PROCUREMENT_USER["email"],
        "preferred_username": PROCUREMENT_USER["email"],
        "supplier": "acme",
    }

    # The plant's own directory: the role map applies in full.
    async with portal.browser() as web:
        provider.user = {**PROCUREMENT_USER, "tid": TENANT}
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        page = await web.get("/portal/suppliers")
        assert page.status_code == 200
        assert f"Signed in as <strong>{TENANT}/{PROCUREMENT_USER['sub']}</strong>" in page.text
        assert (await web.get("/portal/suppliers/acme")).status_code == 200

    # Staff roles claimed in optivision's directory, without the supplier role: nothing.
    async with portal.browser() as web:
        provider.user = {
            **escalated,
            "realm_access": {"roles": ["lg-procurement", "lg-admin", "lg-auditor"]},
        }
        refused(await portal.sign_in(web), 403, "your directory is supplier optivision's")
        assert "linegate_portal" not in web.cookies

    # With the supplier role as well: optivision's supplier, and nothing more.
    async with portal.browser() as web:
        provider.user = {
            **escalated,
            "realm_access": {"roles": ["lg-procurement", "lg-admin", "lg-supplier"]},
        }
        r = await portal.sign_in(web)
        assert r.status_code == 200, r.text
        name = f"{SUPPLIER_TENANT}/opti-user-7"
        assert name in r.text
        assert PROCUREMENT_USER["email"] not in r.text
        home = await web.get("/portal/")
        assert (home.status_code, home.headers["location"]) == (303, "/portal/attestations")
        page = await web.get("/portal/attestations?supplier=acme")
        assert "(supplier optivision)" in page.text
        assert f"Signed in as <strong>{name}</strong>" in page.text
        assert mine in page.text
        assert theirs not in page.text
        assert (await web.get("/portal/suppliers")).status_code == 403
        assert (await web.get("/portal/suppliers/acme")).status_code == 404
        assert (await web.get(f"/portal/attestations/{theirs}")).status_code == 404
    signed_in = next(r for r in caplog.records if r.getMessage() == f"portal OIDC sign-in: {name}")
    assert (signed_in.roles, signed_in.tenant) == (["supplier"], "optivision")
    assert signed_in.directory == SUPPLIER_TENANT
    withheld = next(r for r in caplog.records if "not granted" in r.getMessage())
    assert withheld.levelno == logging.WARNING
    assert withheld.withheld_roles == ["admin", "procurement"]
    assert not any(PROCUREMENT_USER["email"] in r.getMessage() for r in caplog.records)

    # The tenant claim is not read for a supplier's directory, absent or not.
    async with portal.browser() as web:
        provider.user = {
            "sub": "opti-user-8",
            "tid": SUPPLIER_TENANT,
            "realm_access": {"roles": ["lg-supplier"]},
        }
        assert (await portal.sign_in(web)).status_code == 200
        page = await web.get("/portal/attestations")
        assert "(supplier optivision)" in page.text
        assert mine in page.text


@pytest.mark.parametrize(
    "portal", [{**TWO_DIRECTORIES, "portal_oidc_subject_claim": "oid"}], indirect=True
)
async def test_a_multi_tenant_session_names_its_user_by_directory_and_object_id(portal):
    provider = portal.provider
    # The plant's directory may still host supplier users: its administrator is the plant's.
    provider.user = {
        "sub": "pairwise-sub",
        "oid": "6a1f-object-id",
        "tid": TENANT,
        "realm_access": {"roles": ["lg-supplier"]},
        "supplier": "acme",
    }
    async with portal.browser() as web:
        assert (await portal.sign_in(web)).status_code == 200
        page = await web.get("/portal/attestations")
        assert f"Signed in as <strong>{TENANT}/6a1f-object-id</strong>" in page.text
        assert "(supplier acme)" in page.text
        provider.user = {k: v for k, v in provider.user.items() if k != "oid"}
        refused(await portal.sign_in(web), 401, "no 'oid' claim")


def test_an_issuer_template_must_be_the_configured_issuer_with_a_tenant_segment():
    common = "https://login.microsoftonline.com/common/v2.0"
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert is_tenant_template(template, common)
    assert is_tenant_template(template, "https://login.microsoftonline.com/organizations/v2.0")
    for published in (
        "https://evil.example/{tenantid}/v2.0",  # another host
        "http://login.microsoftonline.com/{tenantid}/v2.0",  # another scheme
        "https://login.microsoftonline.com/{tenantid}/v1.0",  # more than the tenant differs
        "https://login.microsoftonline.com/{tenantid}/{tenantid}",
        "https://login.microsoftonline.com/{tenantid}/v2.0/extra",
        "https://login.microsoftonline.com/{tenantid}/v2.0?x=1",
        "https://login.microsoftonline.com/x{tenantid}/v2.0",  # not the whole segment
        common,
    ):
        assert not is_tenant_template(published, common), published


# ---------------------------------------------------------------------------- refusals


async def test_the_flow_is_refused_when_its_state_or_verifier_is_not_this_browsers(portal, caplog):
    caplog.set_level(logging.WARNING, logger="attestation.portal")
    async with portal.browser() as web:
        callback = await portal.authorize(web)
        state = parse_qs(urlsplit(callback).query)["state"][0]
        refused(await web.get(callback.replace(state, "forged-state")), 400, "does not belong")
        assert any("sign-in refused (400)" in m for m in caplog.messages), caplog.messages

        callback = await portal.authorize(web)
        cookie = web.cookies["linegate_portal_oidc"]
        flipped = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
        web.cookies.set(
            "linegate_portal_oidc", flipped, domain="testserver.local", path="/portal/login/oidc"
        )
        refused(await web.get(callback), 400, "sign-in state cookie is invalid")

        callback = await portal.authorize(web)
        web.cookies.clear()
        refused(await web.get(callback), 400, "no sign-in in progress")

        # Code injection: another browser's code with this browser's state. The provider
        # refuses it, because this browser's PKCE verifier is not that code's.
        mine = await portal.authorize(web)
        async with portal.browser() as other:
            theirs = parse_qs(urlsplit(await portal.authorize(other)).query)["code"][0]
        injected = mine.replace(parse_qs(urlsplit(mine).query)["code"][0], theirs)
        refused(await web.get(injected), 401, "PKCE verification failed")

        # A completed sign-in's answer cannot be replayed: its flow is spent.
        callback = await portal.authorize(web)
        assert (await web.get(callback)).status_code == 200
        refused(await web.get(callback), 400, "no sign-in in progress")

        portal.provider.deny = "access_denied"
        refused(await portal.sign_in(web), 401, "Keycloak answered access_denied")


async def test_an_id_token_that_does_not_validate_is_refused(portal, idp_keys):
    provider = portal.provider
    now = int(time.time())
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "wrong nonce": ({"nonce": "someone-elses"}, "nonce"),
        "wrong audience": ({"aud": "another-client"}, "aud"),
        "wrong issuer": ({"iss": "https://evil.example"}, "iss"),
        "expired": ({"iat": now - 7200, "exp": now - 3600}, "expired"),
        "issued in the future": ({"iat": now + 7200, "exp": now + 9000}, "in the future"),
        "wrong at_hash": ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash"),
    }
    async with portal.browser() as web:
        for case, (changes, reason) in cases.items():
            provider.tamper = lambda claims, changes=changes: claims.update(changes)
            r = await portal.sign_in(web)
            refused(r, 401, "the ID token was refused")
            assert reason in r.text, (case, r.text)
        provider.tamper = lambda claims: claims.pop("nonce")
        refused(await portal.sign_in(web), 401, "nonce")

        provider.tamper, provider.sign_with = None, idp_keys[1]
        refused(await portal.sign_in(web), 401, "signature does not verify")
        provider.sign_with = None
        assert (await portal.sign_in(web)).status_code == 200  # the same flow, untampered


async def test_an_id_token_signed_with_an_algorithm_not_allowed_is_refused(portal):
    """The algorithm comes from the provider's discovery document (asymmetric ones only),
    never from the token's header: no ``none``, no HS256 keyed with the client secret (the
    classic confusion), nothing the provider does not announce."""
    provider = portal.provider
    kid = provider.key.kid
    rsa = provider.key.private_key
    assert isinstance(rsa, RSAPrivateKey)

    def rsa_sign(alg: str, padding_: padding.AsymmetricPadding, digest: hashes.HashAlgorithm):
        return lambda claims: compact_jws(
            {"alg": alg, "kid": kid, "typ": "JWT"},
            claims,
            lambda data: rsa.sign(data, padding_, digest),
        )

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    forgeries: dict[str, Callable[[dict[str, Any]], str]] = {
        "none": lambda claims: compact_jws({"alg": "none", "kid": kid}, claims, lambda data: b""),
        # The classic confusion: the provider's public key or the client secret as HMAC key.
        "HS256": lambda claims: compact_jws(
            {"alg": "HS256", "kid": kid},
            claims,
            lambda data: hmac.new(CLIENT_SECRET.encode(), data, hashlib.sha256).digest(),
        ),
        # Genuinely signed with the provider's own key, in algorithms it does not announce
        # (discovery says RS256 only): PS256 is one Linegate knows, RS512 one it never takes.
        "PS256": rsa_sign("PS256", pss, hashes.SHA256()),
        "RS512": rsa_sign("RS512", padding.PKCS1v15(), hashes.SHA512()),
    }
    async with portal.browser() as web:
        for alg, forge in forgeries.items():
            provider.forge = forge
            r = await portal.sign_in(web)
            refused(r, 401, "signature does not verify")
            assert f"Algorithm of '{alg}' is not allowed" in html.unescape(r.text), r.text
            assert "linegate_portal" not in web.cookies, alg
            assert "linegate_portal_logout" not in web.cookies, alg
        # The same hand-made token with the announced algorithm is good: what was refused
        # above was the algorithm, not the way the token was put together.
        provider.forge = rsa_sign("RS256", padding.PKCS1v15(), hashes.SHA256())
        assert (await portal.sign_in(web)).status_code == 200


async def test_an_id_token_for_several_audiences_needs_azp_to_be_this_client(portal):
    provider = portal.provider
    cases: dict[str, dict[str, Any]] = {
        "azp missing": {"aud": [CLIENT_ID, "another-api"]},
        "azp another client": {"aud": [CLIENT_ID, "another-api"], "azp": "another-api"},
        "azp another client, one audience": {"aud": [CLIENT_ID], "azp": "another-api"},
    }
    async with portal.browser() as web:
        for case, changes in cases.items():
            provider.tamper = lambda claims, changes=changes: claims.update(changes)
            r = await portal.sign_in(web)
            refused(r, 401, "the ID token was refused")
            assert "azp" in r.text, (case, r.text)
            assert "linegate_portal" not in web.cookies, case
        provider.tamper = lambda claims: claims.update(
            aud=[CLIENT_ID, "another-api"], azp=CLIENT_ID
        )
        assert (await portal.sign_in(web)).status_code == 200


async def test_a_user_without_a_portal_role_or_tenant_is_refused(portal):
    provider = portal.provider
    users = {
        "no role": (
            {**PROCUREMENT_USER, "realm_access": {"roles": ["offline_access"]}},
            "no Linegate role",
        ),
        "no roles claim": ({"sub": "x", "email": "x@plant.example"}, "no Linegate role"),
        "only a role the portal does not serve": (
            {**PROCUREMENT_USER, "realm_access": {"roles": ["lg-responder"]}},
            "none the portal serves",
        ),
        "supplier without tenant": (
            {k: v for k, v in SUPPLIER_USER.items() if k != "supplier"},
            "needs exactly one supplier",
        ),
        "supplier with two tenants": (
            {**SUPPLIER_USER, "supplier": ["optivision", "acme"]},
            "needs exactly one supplier",
        ),
    }
    async with portal.browser() as web:
        for case, (user, text) in users.items():
            provider.user = user
            r = await portal.sign_in(web)
            refused(r, 403, text)
            assert "linegate_portal" not in web.cookies, case
        provider.user = {"sub": "no-email", "realm_access": {"roles": ["lg-procurement"]}}
        refused(await portal.sign_in(web), 401, "no 'email' claim")


async def test_an_unreachable_or_failing_provider_answers_502(
    portal, settings_factory, service_client
):
    provider = portal.provider
    async with portal.browser() as web:
        # Keys not yet fetched and the JWKS down, then the token endpoint down.
        provider.broken = {"jwks"}
        refused(await portal.sign_in(web), 502, "JWKS")
        provider.broken = {"token"}
        refused(await portal.sign_in(web), 502, "token endpoint answered 503")
        provider.broken = set()
        assert (await portal.sign_in(web)).status_code == 200

    nowhere = settings_factory(
        AttestationSettings,
        portal_oidc_issuer=f"http://127.0.0.1:{free_port()}",
        portal_oidc_client_id=CLIENT_ID,
        data_dir=portal.stack.app.state.ctx.settings.data_dir.parent / "nowhere",
    )
    async with service_client(create_app(nowhere)) as web:
        refused(await web.get("/portal/login/oidc"), 502, "cannot fetch")


async def test_without_a_provider_there_is_no_button_and_no_flow(stack):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app), base_url="http://testserver"
    ) as web:
        assert "Sign in with" not in (await web.get("/portal/login")).text
        for url in ("/portal/login/oidc", "/portal/login/oidc/callback?code=x&state=y"):
            refused(await web.get(url), 404, "not configured")


def test_settings_refuse_an_incomplete_or_unsafe_provider():
    with pytest.raises(ValueError, match="CLIENT_ID is required"):
        AttestationSettings(portal_oidc_issuer="https://idp.example")
    with pytest.raises(ValueError, match="must include openid"):
        AttestationSettings(
            portal_oidc_issuer="https://idp.example",
            portal_oidc_client_id="c",
            portal_oidc_scopes="email",
        )
    with pytest.raises(ValueError, match="a person is no device"):
        AttestationSettings(
            portal_oidc_issuer="https://idp.example",
            portal_oidc_client_id="c",
            portal_oidc_role_map={"cams": [Role.DEVICE]},
        )
    with pytest.raises(ValueError, match="must be an https URL"):
        AttestationSettings(
            environment="production",
            auth_issuer="https://idp.example",
            auth_jwks_url="https://idp.example/jwks",
            database_url="postgresql+psycopg://db/x",
            portal_oidc_issuer="http://idp.example",
            portal_oidc_client_id="c",
        )
    with pytest.raises(ValueError, match="POST_LOGOUT_REDIRECT_URL must be an https URL"):
        AttestationSettings(
            environment="production",
            auth_issuer="https://idp.example",
            auth_jwks_url="https://idp.example/jwks",
            database_url="postgresql+psycopg://db/x",
            attestation_url="https://lg.example",
            portal_oidc_issuer="https://idp.example",
            portal_oidc_client_id="c",
            portal_oidc_post_logout_redirect_url="http://lg.example/portal/login",
        )
    with pytest.raises(ValueError, match="is not a tenant id"):
        AttestationSettings(
            portal_oidc_issuer="https://idp.example",
            portal_oidc_client_id="c",
            portal_oidc_tenants={"../other": {"staff": True}},
        )
    defaults = AttestationSettings(
        attestation_url="https://lg.example",
        portal_oidc_issuer="https://idp.example",
        portal_oidc_client_id="c",
    )
    assert re.fullmatch(
        r"https://lg\.example/portal/login/oidc/callback", defaults.portal_oidc_callback_url
    )
    assert defaults.portal_oidc_post_logout_url == "https://lg.example/portal/login"
    assert defaults.portal_oidc_tenants == {}


def test_tenants_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(
        "LINEGATE_PORTAL_OIDC_TENANTS",
        f'{{"{TENANT}": {{"staff": true}}, "{SUPPLIER_TENANT}": {{"supplier": "optivision"}}}}',
    )
    settings = AttestationSettings(
        portal_oidc_issuer="https://idp.example", portal_oidc_client_id="c"
    )
    assert settings.portal_oidc_tenants == {
        TENANT: PortalOidcTenant(staff=True),
        SUPPLIER_TENANT: PortalOidcTenant(supplier="optivision"),
    }


def test_settings_refuse_tenants_that_do_not_say_what_their_users_may_be(monkeypatch):
    def settings(**values: Any) -> AttestationSettings:
        return AttestationSettings(
            portal_oidc_issuer="https://idp.example", portal_oidc_client_id="c", **values
        )

    for policy in ({}, {"staff": False}, {"staff": True, "supplier": "optivision"}):
        with pytest.raises(ValueError, match='either the directory\'s "supplier" or "staff"'):
            settings(portal_oidc_tenants={TENANT: policy})
    with pytest.raises(ValueError, match="supplier"):
        settings(portal_oidc_tenants={TENANT: {"supplier": "../acme"}})
    with pytest.raises(ValueError, match="Extra inputs"):
        settings(portal_oidc_tenants={TENANT: {"supplier": "acme", "roles": ["admin"]}})
    # What a directory's administrator may set for any of their users never names one.
    for claim in ("email", "preferred_username", "upn"):
        with pytest.raises(ValueError, match="SUBJECT_CLAIM must be sub or oid"):
            settings(portal_oidc_tenants={TENANT: {"staff": True}}, portal_oidc_subject_claim=claim)
    assert settings(portal_oidc_subject_claim="email").portal_oidc_subject_claim == "email"
    oid = settings(portal_oidc_tenants={TENANT: {"staff": True}}, portal_oidc_subject_claim="oid")
    assert oid.portal_oidc_subject_claim == "oid"
    # The bare allow-list let any listed directory grant any role: refused, with the way on.
    for value in (TENANT, f'["{TENANT}"]'):
        monkeypatch.setenv("LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS", value)
        with pytest.raises(ValueError, match="replaced by LINEGATE_PORTAL_OIDC_TENANTS"):
            settings()


# ------------------------------------------------------------------------- stylesheet


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two ``#rgb`` / ``#rrggbb`` colours."""

    def luminance(colour: str) -> float:
        if len(colour) == 4:
            colour = "#" + "".join(c * 2 for c in colour[1:])
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def test_performance_statuses_are_coloured_like_the_other_statuses(stack):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app), base_url="http://testserver"
    ) as web:
        served = await web.get("/portal/static/portal.css")
    css = re.sub(r"/\*.*?\*/", "", served.text, flags=re.DOTALL)
    variables = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b", css))
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", css)

    def colour_of(selector: str) -> str:
        for selectors, body in rules:
            if selector in (s.strip() for s in selectors.split(",")):
                match = re.search(r"(?<![-\w])color:\s*var\(--([a-z]+)\)", body)
                if match:
                    return match.group(1)
        raise AssertionError(f"{selector} has no colour")

    # The same three colours the attestation and evidence statuses use, by meaning.
    assert colour_of(".state-met") == colour_of(".status-verified") == "ok"
    assert colour_of(".state-not_met") == colour_of(".state-missing") == "bad"
    assert colour_of(".state-no_evidence") == colour_of(".state-expired") == "bad"
    for status in ("met", "not_met", "no_evidence"):
        ratio = contrast(variables[colour_of(f".state-{status}")], variables["bg"])
        assert ratio >= 4.5, (status, ratio)  # WCAG AA for normal text
