"""Tenancy matrix: every attestation-service endpoint x (own supplier, other supplier,
procurement, device, no token). A supplier never sees or changes another supplier's records."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.auth import Role
from linegate.signing import public_key_pem

from .conftest import MODEL_DIGEST, MODEL_SUBJECT, SLSA_V1, sign, slsa_predicate, statement

PRINCIPALS = ["own", "other", "procurement", "device", "none"]


@pytest.fixture
async def world(stack):
    key = await stack.onboard("optivision")
    await stack.onboard("acme")
    r = await stack.upload(
        "optivision", sign(key, statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate()))
    )
    assert r.status_code == 201
    keys = (
        await stack.client.get(
            "/v1/suppliers/optivision/keys", headers=stack.token(Role.PROCUREMENT)
        )
    ).json()
    headers = {
        "own": stack.token(Role.SUPPLIER, tenant="optivision"),
        "other": stack.token(Role.SUPPLIER, tenant="acme"),
        "procurement": stack.token(Role.PROCUREMENT),
        "device": stack.token(Role.DEVICE, device_id="cam-1"),
        "none": {},
    }
    return stack, r.json()["id"], keys[0]["key_id"], headers


def _pem():
    return public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key()).decode()


# (method, path template, json body factory, expected status per principal)
MATRIX = [
    (
        "GET",
        "/v1/suppliers/optivision",
        None,
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/suppliers/optivision/keys",
        None,
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/suppliers/optivision/identities",
        None,
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "POST",
        "/v1/suppliers/optivision/keys",
        lambda: {"public_key_pem": _pem()},
        {"own": 403, "other": 403, "procurement": 201, "device": 403, "none": 401},
    ),
    (
        "POST",
        "/v1/suppliers/optivision/identities",
        lambda: {"issuer": "https://idp", "subject": "ci"},
        {"own": 403, "other": 403, "procurement": 201, "device": 403, "none": 401},
    ),
    (
        "POST",
        "/v1/suppliers/optivision/clients",
        dict,
        {"own": 403, "other": 403, "procurement": 201, "device": 403, "none": 401},
    ),
    (
        "POST",
        "/v1/suppliers",
        lambda: {"id": "newco", "name": "NewCo"},
        {"own": 403, "other": 403, "procurement": 201, "device": 403, "none": 401},
    ),
    (
        "POST",
        "/v1/suppliers/optivision/keys/{key_id}/revoke",
        lambda: {"reason": "rotation"},
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/attestations/{att}",
        None,
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/attestations/{att}/raw",
        None,
        {"own": 200, "other": 404, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/attestations",
        None,
        {"own": 200, "other": 200, "procurement": 200, "device": 403, "none": 401},
    ),
    (
        "GET",
        "/v1/suppliers",
        None,
        {"own": 200, "other": 200, "procurement": 200, "device": 403, "none": 401},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
@pytest.mark.parametrize("who", PRINCIPALS)
async def test_tenancy_matrix(world, method, path, body, expected, who):
    stack, att, key_id, headers = world
    url = path.format(att=att, key_id=key_id)
    r = await stack.client.request(method, url, json=body() if body else None, headers=headers[who])
    assert r.status_code == expected[who], r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json"


async def test_listings_are_confined_to_the_callers_tenant(world):
    stack, att, _, headers = world
    by_digest = f"/v1/attestations?subject_digest=sha256:{MODEL_DIGEST}"
    assert [
        a["id"] for a in (await stack.client.get(by_digest, headers=headers["own"])).json()["items"]
    ] == [att]
    assert (await stack.client.get(by_digest, headers=headers["other"])).json()["items"] == []
    assert [
        a["id"]
        for a in (await stack.client.get(by_digest, headers=headers["procurement"])).json()["items"]
    ] == [att]
    # Asking for another supplier explicitly does not widen a supplier's view.
    assert (
        await stack.client.get("/v1/attestations?supplier=optivision", headers=headers["other"])
    ).json()["items"] == []
    suppliers = (await stack.client.get("/v1/suppliers", headers=headers["other"])).json()
    assert [s["id"] for s in suppliers] == ["acme"]
    everyone = (await stack.client.get("/v1/suppliers", headers=headers["procurement"])).json()
    assert {s["id"] for s in everyone} == {"optivision", "acme"}
