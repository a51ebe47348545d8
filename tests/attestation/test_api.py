"""Ingest through the HTTP API with real signatures, real NATS and a real database."""

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.auth import Role
from linegate.signing import public_key_pem

from .conftest import (
    DSSE,
    MODEL_DIGEST,
    MODEL_SUBJECT,
    SLSA_V1,
    TESTDATA,
    sign,
    slsa_predicate,
    statement,
)


def _slsa_envelope(key, **kw):
    return sign(key, statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate(**kw)))


async def test_a_signed_slsa_statement_is_verified_recorded_and_announced(stack):
    key = await stack.onboard("optivision")
    sub = await stack.app.state.ctx.nats.js.subscribe("linegate.attestation.verified", durable="t1")
    body = _slsa_envelope(key)
    r = await stack.upload("optivision", body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "verified"
    assert created["verified"] is True
    assert created["supplier"] == "optivision"
    assert created["predicate_type"] == SLSA_V1
    assert created["predicate_kind"] == "slsa-provenance-v1"
    assert created["subjects"] == [
        {"name": "weld-seam-inspector-2.1.0.onnx", "digest": {"sha256": MODEL_DIGEST}}
    ]
    assert datetime.fromisoformat(created["expires_at"]) > datetime.now(UTC)

    found = await stack.client.get(
        f"/v1/attestations?subject_digest=sha256:{MODEL_DIGEST}",
        headers=stack.token(Role.REGISTRY_APPROVE),
    )
    assert [a["id"] for a in found.json()["items"]] == [created["id"]]
    raw = await stack.client.get(
        f"/v1/attestations/{created['id']}/raw", headers=stack.token(Role.AUDITOR)
    )
    assert raw.content == body
    assert raw.headers["content-type"] == DSSE

    msg = await sub.next_msg(timeout=20)
    await sub.unsubscribe()
    event = json.loads(msg.data)
    assert event["attestation_id"] == created["id"]
    assert event["subjects"][0]["digest"]["sha256"] == MODEL_DIGEST


async def test_re_uploading_the_same_bytes_is_idempotent(stack):
    key = await stack.onboard("optivision")
    body = _slsa_envelope(key)
    first = await stack.upload("optivision", body)
    again = await stack.upload("optivision", body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    listed = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert len(listed.json()["items"]) == 1


async def test_envelopes_signed_with_ed25519_and_p384_keys_verify(stack):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    await stack.onboard("optivision", key=False)
    for private in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP384R1())):
        r = await stack.client.post(
            "/v1/suppliers/optivision/keys",
            json={"public_key_pem": public_key_pem(private.public_key()).decode()},
            headers=stack.token(Role.PROCUREMENT),
        )
        assert r.status_code == 201
        up = await stack.upload("optivision", _slsa_envelope(private))
        assert up.status_code == 201, up.text


def _tamper_payload(body: bytes) -> bytes:
    env = json.loads(body)
    payload = base64.b64decode(env["payload"]).replace(MODEL_DIGEST.encode(), b"0" * 64)
    env["payload"] = base64.b64encode(payload).decode()
    return json.dumps(env).encode()


def _drop_signatures(body: bytes) -> bytes:
    env = json.loads(body)
    env["signatures"] = []
    return json.dumps(env).encode()


def _bad_base64(body: bytes) -> bytes:
    env = json.loads(body)
    env["payload"] = "%%%not-base64%%%"
    return json.dumps(env).encode()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        (lambda key: b"{not json", 400, "not valid JSON"),
        (lambda key: _nested(100_000), 400, "not valid JSON"),
        (lambda key: _nested(200), 400, "nested deeper than 64"),
        (lambda key: _bad_base64(_slsa_envelope(key)), 400, "invalid base64"),
        (lambda key: _drop_signatures(_slsa_envelope(key)), 400, "no signatures"),
        (
            lambda key: sign(key, b"{}", "application/json"),
            422,
            "payloadType must be application/vnd.in-toto+json",
        ),
        (lambda key: _tamper_payload(_slsa_envelope(key)), 422, "no signature verifies"),
        (
            lambda key: sign(key, statement([{"name": "m.onnx"}], SLSA_V1, slsa_predicate())),
            422,
            "subject[0] (m.onnx) has no digest",
        ),
        (
            lambda key: sign(
                key,
                statement([{"name": "m", "digest": {"sha256": "abc"}}], SLSA_V1, slsa_predicate()),
            ),
            422,
            "digest sha256 is malformed",
        ),
        (
            lambda key: sign(key, statement([], SLSA_V1, slsa_predicate())),
            422,
            "statement has no subject",
        ),
        (
            lambda key: sign(
                key,
                statement(
                    MODEL_SUBJECT,
                    "https://example.com/custom/v1",
                    {"validUntil": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
                ),
            ),
            422,
            "expired on",
        ),
        (
            lambda key: _slsa_envelope(key, finished_on=datetime.now(UTC) + timedelta(days=3)),
            422,
            "issued in the future",
        ),
        (
            lambda key: sign(key, statement(MODEL_SUBJECT, SLSA_V1, {"buildDefinition": {}})),
            422,
            "predicate (slsa-provenance-v1) invalid",
        ),
        (
            lambda key: sign(
                ec.generate_private_key(ec.SECP256R1()),
                statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate()),
            ),
            422,
            "no signature verifies with a key registered to supplier 'optivision'",
        ),
    ],
    ids=[
        "malformed-json",
        "bracket-bomb",
        "too-deep",
        "bad-base64",
        "empty-signatures",
        "wrong-payload-type",
        "tampered-payload",
        "subject-without-digest",
        "malformed-digest",
        "no-subjects",
        "expired",
        "future",
        "invalid-predicate",
        "unknown-key",
    ],
)
async def test_bad_uploads_are_refused_with_the_reason_and_recorded(stack, make, status, reason):
    key = await stack.onboard("optivision")
    r = await stack.upload("optivision", make(key))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert any(reason in x for x in problem["reasons"]), problem["reasons"]
    record = await stack.client.get(
        f"/v1/attestations/{problem['id']}", headers=stack.token(Role.SUPPLIER, tenant="optivision")
    )
    assert record.json()["status"] == "rejected"
    assert record.json()["reasons"] == problem["reasons"]
    verified = await stack.client.get(
        "/v1/attestations?status=verified", headers=stack.token(Role.PROCUREMENT)
    )
    assert verified.json()["items"] == []


async def test_evidence_older_than_the_maximum_age_is_kept_but_already_expired(stack):
    key = await stack.onboard("optivision")
    r = await stack.upload(
        "optivision", _slsa_envelope(key, finished_on=datetime.now(UTC) - timedelta(days=800))
    )
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["expires_at"]) < datetime.now(UTC)
    assert "not current evidence" in r.json()["summary"]["stale"]


async def test_a_signature_by_another_suppliers_key_is_impersonation(stack):
    await stack.onboard("optivision")
    acme_key = await stack.onboard("acme")
    r = await stack.upload("optivision", _slsa_envelope(acme_key))
    assert r.status_code == 422
    assert "impersonation" in r.json()["detail"]
    assert "acme" not in r.text  # another tenant's name never leaks


async def test_a_revoked_key_no_longer_verifies_but_old_records_stay(stack):
    key = await stack.onboard("optivision")
    first = await stack.upload("optivision", _slsa_envelope(key))
    assert first.status_code == 201
    keys = (
        await stack.client.get(
            "/v1/suppliers/optivision/keys", headers=stack.token(Role.PROCUREMENT)
        )
    ).json()
    revoke = await stack.client.post(
        f"/v1/suppliers/optivision/keys/{keys[0]['key_id']}/revoke",
        json={"reason": "laptop stolen"},
        headers=stack.token(Role.SUPPLIER, tenant="optivision"),
    )
    assert revoke.status_code == 200
    r = await stack.upload("optivision", _slsa_envelope(key, finished_on=datetime.now(UTC)))
    assert r.status_code == 422
    assert "revoked" in r.json()["detail"]
    assert "laptop stolen" in r.json()["detail"]
    old = await stack.client.get(
        f"/v1/attestations/{first.json()['id']}", headers=stack.token(Role.PROCUREMENT)
    )
    assert old.json()["status"] == "verified"


async def test_a_key_outside_its_validity_window_is_refused(stack):
    await stack.onboard("optivision", key=False)
    private = ec.generate_private_key(ec.SECP256R1())
    past = datetime.now(UTC) - timedelta(days=30)
    r = await stack.client.post(
        "/v1/suppliers/optivision/keys",
        json={
            "public_key_pem": public_key_pem(private.public_key()).decode(),
            "not_before": (past - timedelta(days=30)).isoformat(),
            "not_after": past.isoformat(),
        },
        headers=stack.token(Role.PROCUREMENT),
    )
    assert r.status_code == 201
    up = await stack.upload("optivision", _slsa_envelope(private))
    assert up.status_code == 422
    assert "outside its validity window" in up.json()["detail"]


async def test_oversized_body_is_413_and_records_nothing(stack):
    await stack.onboard("optivision")
    r = await stack.upload("optivision", b" " * (4 * 1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    listed = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/vnd.dev.sigstore.bundle+json"]
)
async def test_wrong_content_type_is_415(stack, content_type):
    key = await stack.onboard("optivision")
    r = await stack.upload("optivision", _slsa_envelope(key), content_type=content_type)
    assert r.status_code == 415
    assert "accepted" in r.json()["detail"] or "version" in r.json()["detail"]


async def test_upload_without_token_is_401_and_with_a_non_supplier_token_403(stack):
    key = await stack.onboard("optivision")
    body = _slsa_envelope(key)
    r = await stack.client.post("/v1/attestations", content=body, headers={"content-type": DSSE})
    assert r.status_code == 401
    r = await stack.client.post(
        "/v1/attestations",
        content=body,
        headers={"content-type": DSSE, **stack.token(Role.DEVICE, device_id="cam1")},
    )
    assert r.status_code == 403


async def test_a_supplier_that_was_never_onboarded_cannot_upload(stack):
    r = await stack.upload("ghost", b"{}")
    assert r.status_code == 404


async def test_an_unrecognised_predicate_is_stored_verified_and_marked(stack):
    key = await stack.onboard("optivision")
    r = await stack.upload(
        "optivision", sign(key, statement(MODEL_SUBJECT, "https://example.com/custom/v1", {"x": 1}))
    )
    assert r.status_code == 201, r.text
    assert r.json()["recognised"] is False
    assert "unrecognised predicate" in r.json()["summary"]["note"]


# ------------------------------------------------------------------- third-party documents


async def test_the_public_good_sigstore_bundle_verifies_offline_for_the_registered_identity(stack):
    identity = {
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
    }
    await stack.onboard("trailofbits", key=False, identity=identity)
    bundle = (TESTDATA / "sigstore" / "bundle_v3_github.whl.sigstore").read_bytes()
    r = await stack.upload(
        "trailofbits", bundle, content_type="application/vnd.dev.sigstore.bundle.v0.3+json"
    )
    assert r.status_code == 201, r.text
    wheel = (TESTDATA / "sigstore" / "bundle_v3_github.whl").read_bytes()
    assert r.json()["subjects"][0]["digest"]["sha256"] == hashlib.sha256(wheel).hexdigest()
    assert identity["subject"] in r.json()["signer"]


async def test_a_real_sigstore_dsse_bundle_is_ingested_for_the_registered_workflow(stack):
    # tests/attestation/data/README.md: a public-good DSSE bundle from a GitHub workflow.
    identity = {
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "https://github.com/wolfv/sigstore-test/.github/workflows/action.yaml@refs/heads/main",
    }
    await stack.onboard("wolfv", key=False, identity=identity)
    bundle = (Path(__file__).parent / "data" / "slsa-conda-dsse.sigstore.json").read_bytes()
    r = await stack.upload(
        "wolfv", bundle, content_type="application/vnd.dev.sigstore.bundle.v0.3+json"
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "verified"
    assert body["subjects"] == [
        {
            "name": "signed-package-1.2.0-hb0f4dca_0.conda",
            "digest": {
                "sha256": "59ed81ee7a2485c47588ebdbad14764bf722c93438b43fe953a651747bc62ad7"
            },
        }
    ]
    assert identity["subject"] in body["signer"]
    # The spec page's address is not the SLSA provenance v1 predicate type.
    assert body["predicate_type"] == "https://slsa.dev/spec/v1.0/provenance"
    assert body["recognised"] is False
    assert "unrecognised predicate" in body["summary"]["note"]

    # Another supplier uploading the same bytes is refused: the identity is not theirs.
    await stack.onboard(
        "optivision",
        key=False,
        identity={"issuer": "https://accounts.google.com", "subject": "ci@optivision.example"},
    )
    r = await stack.upload(
        "optivision", bundle, content_type="application/vnd.dev.sigstore.bundle.v0.3+json"
    )
    assert r.status_code == 422
    assert "does not verify for this supplier's identities" in r.json()["detail"]


async def test_a_sigstore_bundle_signed_by_someone_else_is_refused(stack):
    await stack.onboard(
        "optivision",
        key=False,
        identity={"issuer": "https://accounts.google.com", "subject": "ci@optivision.example"},
    )
    bundle = (TESTDATA / "sigstore" / "bundle_v3_github.whl.sigstore").read_bytes()
    r = await stack.upload(
        "optivision", bundle, content_type="application/vnd.dev.sigstore.bundle.v0.3+json"
    )
    assert r.status_code == 422
    assert "does not verify for this supplier's identities" in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("valid-machine-learning-1.6.json", "cyclonedx"), ("keycloak-10.0.2.bom.json", "cyclonedx")],
)
async def test_unsigned_cyclonedx_is_stored_but_not_verified(stack, name, kind):
    await stack.onboard("optivision", key=False)
    r = await stack.upload(
        "optivision",
        (TESTDATA / "cyclonedx" / name).read_bytes(),
        content_type="application/vnd.cyclonedx+json",
    )
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["verified"], r.json()["predicate_kind"]) == (
        "unsigned",
        False,
        kind,
    )


async def test_a_cyclonedx_document_failing_its_schema_is_refused(stack):
    await stack.onboard("optivision", key=False)
    body = (TESTDATA / "cyclonedx" / "invalid-hash-alg-1.6.json").read_bytes()
    r = await stack.upload("optivision", body, content_type="application/vnd.cyclonedx+json")
    assert r.status_code == 422
    assert "FOO" in r.json()["detail"]


async def test_an_spdx_document_is_stored_unsigned(stack):
    await stack.onboard("optivision", key=False)
    body = (TESTDATA / "spdx" / "software-example11.spdx23.json").read_bytes()
    r = await stack.upload("optivision", body, content_type="application/spdx+json")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "unsigned"
