"""Token issue and validation through a real service: every failure is 401/403 problem+json."""

import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from linegate.auth import Role, TokenIssuer, TokenValidator
from linegate.errors import Unauthorized
from linegate.settings import LinegateSettings
from registry.app import create_app
from registry.settings import RegistrySettings


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def registry(settings_factory, service_client):
    async with service_client(create_app(settings_factory(RegistrySettings))) as client:
        yield client


async def test_a_valid_token_names_its_principal(registry, mint_token):
    r = await registry.get(
        "/v1/whoami", headers=bearer(mint_token(Role.SUPPLIER, tenant="optivision", sub="ci"))
    )
    assert r.status_code == 200
    assert r.json() == {
        "subject": "ci",
        "roles": ["supplier"],
        "tenant": "optivision",
        "device_id": None,
    }


async def _assert_problem(response, status, fragment):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"]


async def test_missing_token_is_401(registry):
    r = await registry.get("/v1/audit/entries")
    await _assert_problem(r, 401, "missing bearer token")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_expired_token_is_401(registry, mint_token):
    token = mint_token(Role.AUDITOR, now=time.time() - 3600, ttl_seconds=60)
    await _assert_problem(
        await registry.get("/v1/audit/entries", headers=bearer(token)), 401, "expired"
    )


async def test_wrong_audience_is_401(registry, tmp_path):
    issuer = TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path / "data"))
    issuer.audience = "someone-else"
    token, _ = issuer.issue("x", [Role.AUDITOR])
    await _assert_problem(
        await registry.get("/v1/audit/entries", headers=bearer(token)), 401, "aud"
    )


async def test_wrong_issuer_is_401(registry, tmp_path):
    issuer = TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path / "data"))
    issuer.issuer = "https://evil.example"
    token, _ = issuer.issue("x", [Role.AUDITOR])
    await _assert_problem(
        await registry.get("/v1/audit/entries", headers=bearer(token)), 401, "iss"
    )


async def test_token_signed_by_another_key_is_401(registry):
    key = ECKey.generate_key("P-256", private=True)
    forged = TokenIssuer(key, issuer="http://127.0.0.1:8101", audience="linegate", ttl_seconds=60)
    token, _ = forged.issue("mallory", [Role.ADMIN])
    r = await registry.get("/v1/audit/entries", headers=bearer(token))
    await _assert_problem(r, 401, "invalid token")


async def test_token_with_alg_none_is_401(registry):
    now = int(time.time())
    claims = {
        "iss": "http://127.0.0.1:8101",
        "aud": "linegate",
        "sub": "m",
        "exp": now + 60,
        "scope": "admin",
    }

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    r = await registry.get("/v1/audit/entries", headers=bearer(token))
    assert r.status_code == 401


async def test_garbage_token_is_401(registry):
    r = await registry.get("/v1/audit/entries", headers=bearer("not.a.jwt"))
    assert r.status_code == 401
    r = await registry.get("/v1/audit/entries", headers={"Authorization": "Basic abc"})
    await _assert_problem(r, 401, "Bearer")


async def test_missing_role_is_403(registry, mint_token):
    r = await registry.get(
        "/v1/audit/entries", headers=bearer(mint_token(Role.SUPPLIER, tenant="acme"))
    )
    await _assert_problem(r, 403, "auditor or admin")
    assert r.json()["required_roles"] == ["auditor", "admin"]


async def test_admin_holds_every_role(registry, mint_token):
    r = await registry.get("/v1/audit/entries", headers=bearer(mint_token(Role.ADMIN)))
    assert r.status_code == 200


def test_supplier_tokens_need_a_tenant_and_device_tokens_a_device_id(tmp_path):
    issuer = TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path))
    with pytest.raises(ValueError, match="tenant"):
        issuer.issue("x", [Role.SUPPLIER])
    with pytest.raises(ValueError, match="device id"):
        issuer.issue("x", [Role.DEVICE])


async def test_a_supplier_token_without_tenant_claim_is_refused(tmp_path):
    settings = LinegateSettings(data_dir=tmp_path)
    issuer = TokenIssuer.embedded(settings)
    claims = {
        "iss": settings.issuer,
        "aud": "linegate",
        "sub": "s",
        "exp": int(time.time()) + 60,
        "scope": "supplier",
    }
    token = jwt.encode({"alg": "ES256", "kid": issuer.kid}, claims, issuer._key)
    with pytest.raises(Unauthorized, match="tenant"):
        await TokenValidator.from_settings(settings).validate(token)


def test_embedded_issuer_refuses_when_an_external_issuer_is_configured(tmp_path):
    settings = LinegateSettings(data_dir=tmp_path, auth_jwks_url="https://idp.example/jwks")
    with pytest.raises(RuntimeError, match="external token issuer"):
        TokenIssuer.embedded(settings)


def test_production_settings_refuse_development_defaults():
    with pytest.raises(ValueError, match="LINEGATE_AUTH_JWKS_URL"):
        LinegateSettings(environment="production")


async def test_a_cached_token_is_refused_once_it_expires(tmp_path):
    settings = LinegateSettings(data_dir=tmp_path)
    token, _ = TokenIssuer.embedded(settings).issue("x", [Role.AUDITOR], ttl_seconds=60)
    validator = TokenValidator.from_settings(settings)
    assert (await validator.validate(token)).subject == "x"
    with pytest.raises(Unauthorized, match="expired"):
        await validator.validate(token, now=time.time() + 60 + settings.auth_leeway_seconds + 5)
