"""Audit proofs: an entry with its chain segment to a signed checkpoint, verified offline; the
proof API of a running service; retention floors."""

import copy
import json

import pytest
from pydantic import ValidationError

from linegate.audit import (
    AUDIT_LOG_RETENTION_FLOOR_DAYS,
    DOCUMENTATION_RETENTION_FLOOR_DAYS,
    AuditLog,
    ProofUnavailable,
    verify_proof,
)
from linegate.auth import Role
from linegate.service import AUDIT_SEQ_MAX
from linegate.settings import LinegateSettings
from linegate.signing import generate_private_key, load_public_key
from linegate.testing.fixtures import bearer
from registry.app import create_app
from registry.settings import RegistrySettings
from tests.libs.test_audit import _fill, db, key  # noqa: F401 - fixtures
from tests.registry.conftest import system_body


async def _proof(db, audit, seq, **kw):  # noqa: F811 - db is the fixture's value
    async with db.session() as s:
        return await AuditLog.proof(s, seq, service="registry", **kw)


async def test_a_proof_verifies_offline_and_names_its_segment(db, key):  # noqa: F811
    audit = AuditLog("registry", key, checkpoint_every=4)
    await _fill(db, audit, 10)
    proof = await _proof(db, audit, 6)
    # First checkpoint at or after 6 is 8: entries 6, 7, 8.
    assert [e["seq"] for e in proof["entries"]] == [6, 7, 8]
    assert proof["checkpoint"]["seq"] == 8
    # Through JSON, as an auditor receives it, with only the public key.
    report = verify_proof(json.loads(json.dumps(proof)), [key.public_key()], service="registry")
    assert report.ok, report.errors
    assert report.proves(6)
    assert report.proves(8)
    assert not report.proves(9)


async def test_a_proof_against_a_later_checkpoint_covers_every_entry_between(db, key):  # noqa: F811
    audit = AuditLog("registry", key, checkpoint_every=4)
    await _fill(db, audit, 12)
    proof = await _proof(db, audit, 2, checkpoint=12)
    report = verify_proof(proof, [key.public_key()], seqs=[2, 5, 12])
    assert report.ok, report.errors
    assert (report.first, report.last, report.checkpoint_seq) == (2, 12, 12)


async def test_an_entry_without_a_covering_checkpoint_has_no_proof_until_one_is_signed(
    db,  # noqa: F811
    key,  # noqa: F811
):
    audit = AuditLog("registry", key, checkpoint_every=100)
    await _fill(db, audit, 3)
    with pytest.raises(ProofUnavailable, match="no signed checkpoint covers entry 2"):
        await _proof(db, audit, 2)
    with pytest.raises(ProofUnavailable, match="no audit entry 9"):
        await _proof(db, audit, 9)
    async with db.session() as s:
        cp = await audit.checkpoint_now(s, actor="auditor", reason="bundle export")
    # The request is logged as entry 4 and the checkpoint signs it too.
    assert cp.seq == 4
    proof = await _proof(db, audit, 2)
    assert proof["entries"][-1]["action"] == "audit.checkpoint"
    assert verify_proof(proof, [key.public_key()]).ok
    await _fill(db, audit, 1)
    with pytest.raises(ProofUnavailable, match="checkpoint 4 is older than entry 5"):
        await _proof(db, audit, 5, checkpoint=4)


def _tampered(proof, path, value):
    bad = copy.deepcopy(proof)
    target = bad
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("entries", 0, "actor"), "mallory", "seq 5: content does not match its hash"),
        (("entries", 1, "reason"), "because", "seq 6: content does not match"),
        (("entries", 0, "hash"), "0" * 64, "seq 6: prev_hash does not match"),
        (("entries", 2, "seq"), 9, "expected seq 7"),
        (("checkpoint", "envelope", "payload"), "e30=", "signature invalid"),
        (("service",), "attestation", "checkpoint signed by service 'registry'"),
    ],
    ids=["actor", "reason", "hash", "seq", "checkpoint", "service"],
)
async def test_any_change_to_a_proof_is_named(db, key, path, value, expected):  # noqa: F811
    audit = AuditLog("registry", key, checkpoint_every=8)
    await _fill(db, audit, 8)
    proof = await _proof(db, audit, 5)
    assert verify_proof(proof, [key.public_key()]).ok
    report = verify_proof(_tampered(proof, path, value), [key.public_key()])
    assert not report.ok
    assert any(expected in e for e in report.errors), report.errors


async def test_a_dropped_entry_or_a_foreign_key_fails(db, key):  # noqa: F811
    audit = AuditLog("registry", key, checkpoint_every=8)
    await _fill(db, audit, 8)
    proof = await _proof(db, audit, 3)
    dropped = copy.deepcopy(proof)
    del dropped["entries"][2]
    assert any("expected seq 5" in e for e in verify_proof(dropped, [key.public_key()]).errors)
    truncated = copy.deepcopy(proof)
    truncated["entries"].pop()
    assert any(
        "not the segment's last" in e for e in verify_proof(truncated, [key.public_key()]).errors
    )
    foreign = verify_proof(proof, [generate_private_key().public_key()])
    assert any("signature invalid" in e for e in foreign.errors)
    assert not verify_proof({"entries": []}, [key.public_key()]).ok


async def test_the_proof_api_of_a_running_service(settings_factory, service_client, mint_token):
    app = create_app(settings_factory(RegistrySettings, audit_checkpoint_every=1000))
    qa = bearer(mint_token(Role.REGISTRY_APPROVE, sub="qa-lead"))
    auditor = bearer(mint_token(Role.AUDITOR, sub="ivo-auditor"))
    async with service_client(app) as client:
        r = await client.post("/v1/inventory/systems", json=system_body(), headers=qa)
        assert r.status_code == 201, r.text
        entries = (await client.get("/v1/audit/entries", headers=auditor)).json()
        seq = next(e["seq"] for e in entries if e["action"] == "inventory.system.created")
        r = await client.get(f"/v1/audit/entries/{seq}/proof", headers=auditor)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert "POST /v1/audit/checkpoints" in r.json()["detail"]
        assert (await client.get(f"/v1/audit/entries/{seq}/proof", headers=qa)).status_code == 403

        r = await client.post(
            "/v1/audit/checkpoints", params={"reason": "quarterly audit"}, headers=auditor
        )
        assert r.status_code == 201, r.text
        proof = (await client.get(f"/v1/audit/entries/{seq}/proof", headers=auditor)).json()
        pem = (await client.get("/v1/audit/public-key")).content
        report = verify_proof(proof, [load_public_key(pem)], service="registry", seqs=[seq])
        assert report.ok, report.errors
        last = proof["entries"][-1]
        assert (last["action"], last["actor"], last["reason"]) == (
            "audit.checkpoint",
            "ivo-auditor",
            "quarterly audit",
        )
        retention = (await client.get("/v1/audit/retention")).json()
        assert retention["audit_log_retention_days"] >= AUDIT_LOG_RETENTION_FLOOR_DAYS

        # Numbers past what the database holds are refused by validation, not by the driver.
        huge = AUDIT_SEQ_MAX + 1
        for path, params in (
            (f"/v1/audit/entries/{huge}/proof", {}),
            (f"/v1/audit/entries/{seq}/proof", {"checkpoint": huge}),
            ("/v1/audit/entries", {"after": huge}),
        ):
            r = await client.get(path, params=params, headers=auditor)
            assert r.status_code == 422, (path, params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        r = await client.get(f"/v1/audit/entries/{huge - 1}/proof", headers=auditor)
        assert r.status_code == 404, r.text


def test_retention_below_the_floors_is_refused_outside_development():
    production = {
        "environment": "production",
        "auth_jwks_url": "https://idp.example/jwks",
        "auth_issuer": "https://idp.example",
        "database_url": "postgresql+psycopg://lg@db/lg",
    }
    ok = LinegateSettings(**production)
    assert ok.audit_log_retention_days == AUDIT_LOG_RETENTION_FLOOR_DAYS
    assert ok.documentation_retention_days == DOCUMENTATION_RETENTION_FLOOR_DAYS
    with pytest.raises(ValidationError, match="LINEGATE_AUDIT_LOG_RETENTION_DAYS=90"):
        LinegateSettings(**production, audit_log_retention_days=90)
    with pytest.raises(ValidationError, match="LINEGATE_DOCUMENTATION_RETENTION_DAYS=3000"):
        LinegateSettings(**production, documentation_retention_days=3000)
    # At the floor is accepted; development may keep less (throwaway stacks).
    LinegateSettings(**production, audit_log_retention_days=AUDIT_LOG_RETENTION_FLOOR_DAYS)
    assert LinegateSettings(audit_log_retention_days=7).audit_log_retention_days == 7
