"""The embedded OAuth2 issuer: clients, the client-credentials grant and the JWKS."""

import base64

import pytest

from attestation.app import create_app
from attestation.settings import AttestationSettings
from linegate.auth import Role
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def attestation(settings_factory, service_client):
    async with service_client(create_app(settings_factory(AttestationSettings))) as client:
        yield client


async def _new_client(client, admin_token, **body):
    r = await client.post("/v1/clients", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    return r.json()


async def test_client_credentials_token_is_accepted_by_another_service(
    attestation, mint_token, settings_factory, service_client
):
    created = await _new_client(
        attestation, mint_token(Role.ADMIN), roles=["supplier"], tenant="optivision"
    )
    r = await attestation.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert r.headers["cache-control"] == "no-store"

    async with service_client(create_registry(settings_factory(RegistrySettings))) as registry:
        who = await registry.get("/v1/whoami", headers=bearer(body["access_token"]))
    assert who.json()["tenant"] == "optivision"
    assert who.json()["roles"] == ["supplier"]


async def test_http_basic_client_authentication_works(attestation, mint_token):
    created = await _new_client(
        attestation, mint_token(Role.ADMIN), roles=["procurement", "auditor"]
    )
    basic = base64.b64encode(f"{created['client_id']}:{created['client_secret']}".encode()).decode()
    r = await attestation.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "auditor"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200
    assert r.json()["scope"] == "auditor"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials", "secret": "wrong"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "admin"}, 400, "invalid_scope"),
    ],
)
async def test_bad_token_requests_are_refused(attestation, mint_token, form, status, error):
    created = await _new_client(
        attestation, mint_token(Role.ADMIN), roles=["supplier"], tenant="acme"
    )
    if form.pop("secret", None):
        form |= {"client_id": created["client_id"], "client_secret": "wrong"}
    elif "scope" in form:
        form |= {"client_id": created["client_id"], "client_secret": created["client_secret"]}
    r = await attestation.post("/oauth/token", data=form)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["error"] == error


async def test_token_request_without_form_fields_is_a_422_problem(attestation):
    r = await attestation.post("/oauth/token", data={})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


async def test_only_admin_registers_clients_and_every_registration_is_audited(
    attestation, mint_token
):
    refused = await attestation.post(
        "/v1/clients",
        json={"roles": ["admin"]},
        headers=bearer(mint_token(Role.SUPPLIER, tenant="acme")),
    )
    assert refused.status_code == 403
    created = await _new_client(
        attestation, mint_token(Role.ADMIN, sub="root"), roles=["device"], device_id="cam-1"
    )
    entries = (
        await attestation.get("/v1/audit/entries", headers=bearer(mint_token(Role.AUDITOR)))
    ).json()
    assert [(e["action"], e["subject"], e["actor"]) for e in entries] == [
        ("client.create", created["client_id"], "root")
    ]
    verify = (
        await attestation.get("/v1/audit/verify", headers=bearer(mint_token(Role.AUDITOR)))
    ).json()
    assert verify["ok"] is True


async def test_client_claims_must_match_roles(attestation, mint_token):
    r = await attestation.post(
        "/v1/clients", json={"roles": ["supplier"]}, headers=bearer(mint_token(Role.ADMIN))
    )
    assert r.status_code == 422


async def test_jwks_publishes_the_issuer_key(attestation):
    keys = (await attestation.get("/.well-known/jwks.json")).json()["keys"]
    assert keys[0]["kty"] == "EC"
    assert "d" not in keys[0]


async def test_clients_survive_a_restart(settings_factory, service_client, mint_token):
    settings = settings_factory(AttestationSettings)
    async with service_client(create_app(settings)) as client:
        created = await _new_client(client, mint_token(Role.ADMIN), roles=["responder"])
    async with service_client(create_app(settings)) as client:
        r = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": created["client_id"],
                "client_secret": created["client_secret"],
            },
        )
    assert r.status_code == 200
