"""The release gate: golden-set validation, four-eyes approvals, release, revocation, events."""

import asyncio
import json
from typing import Any

import pytest

from linegate.auth import Role
from linegate.signing import dsse_verify
from tests.registry.conftest import MODEL


@pytest.fixture
async def line(registry: Any) -> Any:
    await registry.create_system(tier=1)
    model = await registry.create_model()
    assert (await registry.add_golden_set()).status_code == 201
    return model


async def next_event(sub: Any) -> dict[str, Any]:
    msg = await sub.next_msg(timeout=30)
    await msg.ack()
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_tier1_version_goes_from_draft_to_released_with_two_approvers(
    registry: Any, line: Any
) -> None:
    js = registry.app.state.ctx.nats.js
    sub = await js.subscribe("linegate.registry.>", durable="gate-test")
    assert (await registry.push("2.1.0", sub="dana-datasci")).status_code == 201
    assert (await registry.version("2.1.0"))["state"] == "draft"

    # Not validated yet: no approvals, no release.
    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 409
    assert "validated" in r.json()["detail"]

    r = await registry.validate("2.1.0")
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["passed"] is True
    report = run["report"]
    assert report["accuracy"] == 1.0
    assert {c["name"] for c in report["classes"]} == {"ok", "scratch", "dent"}
    assert {d["kind"] for d in report["defects"]} == {"scratch", "crack", "porosity", "occlusion"}
    # The result is an in-toto statement about model.onnx, DSSE-signed by the registry.
    envelope = run["envelope"]
    key_pem = (registry.app.state.registry.report_key_path).read_bytes()
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    public = load_pem_private_key(key_pem, None).public_key()
    verified = dsse_verify(envelope, [public])
    statement = json.loads(verified.payload)
    version = await registry.version("2.1.0")
    assert statement["subject"][0]["digest"]["sha256"] == version["artefact_digest"]
    assert statement["predicate"]["report"]["passed"] is True
    assert version["state"] == "validated"

    # The uploader may not approve; a rationale is required; the same person counts once.
    r = await registry.decide("2.1.0", "dana-datasci")
    assert r.status_code == 403
    assert "may not approve" in r.json()["detail"]
    r = await registry.decide("2.1.0", "alex-approver", rationale="ok")
    assert r.status_code == 422
    assert "rationale" in r.json()["detail"]
    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 201
    assert r.json()["state"] == "validated"
    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 409
    r = await registry.release("2.1.0")
    assert r.status_code == 409  # one of two approvals
    r = await registry.decide("2.1.0", "bea-approver")
    assert r.status_code == 201
    assert r.json()["state"] == "approved"
    assert [a["approver"] for a in r.json()["approvals"]] == ["alex-approver", "bea-approver"]

    r = await registry.release("2.1.0")
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["state"] == "released"
    assert released["release_evidence"]["signature"]["verified"] is True
    event = await next_event(sub)
    assert event["kind"] == "registry.released.v1"
    assert event["model"] == MODEL
    assert event["version"] == "2.1.0"
    assert event["artefact_digest"] == f"sha256:{released['artefact_digest']}"

    # Kill switch: a responder revokes it; the gateway gets the event.
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions/2.1.0/revoke",
        json={"reason": "escapes at incoming inspection"},
        headers=registry.auth(Role.RESPONDER, sub="rita-responder"),
    )
    assert r.status_code == 200
    assert r.json()["state"] == "revoked"
    event = await next_event(sub)
    assert event["kind"] == "registry.revoked.v1"
    assert event["reason"] == "escapes at incoming inspection"
    r = await registry.release("2.1.0")
    assert r.status_code == 409
    await sub.unsubscribe()

    entries = (
        await registry.client.get(
            "/v1/audit/entries?limit=100", headers=registry.auth(Role.AUDITOR)
        )
    ).json()
    actions = [e["action"] for e in entries]
    for action in (
        "model.version.validated",
        "model.version.approved",
        "model.version.released",
        "model.version.revoked",
    ):
        assert action in actions
    approvals = [e for e in entries if e["action"] == "model.version.approved"]
    assert all(e["reason"] for e in approvals)
    verify = await registry.client.get("/v1/audit/verify", headers=registry.auth(Role.AUDITOR))
    assert verify.json()["ok"] is True


async def test_regression_on_a_critical_class_fails_validation(registry: Any, line: Any) -> None:
    await registry.to_released("2.0.4")
    r = await registry.push("2.1.0", bad_class=1)  # never predicts "scratch"
    assert r.status_code == 201
    r = await registry.validate("2.1.0")
    assert r.status_code == 201
    run = r.json()
    assert run["passed"] is False
    assert any("scratch" in reason for reason in run["report"]["reasons"])
    assert run["baseline_version_id"] is not None
    assert (await registry.version("2.1.0"))["state"] == "draft"
    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 409


async def test_a_regression_within_the_lines_tolerance_is_allowed(registry: Any) -> None:
    # The regressing model sends scratches to "ok" and "dent": dent's precision drops by 1/3.
    await registry.create_system(tier=2)
    await registry.create_model(critical_classes=["dent"], tolerance=0.4)
    await registry.add_golden_set()
    await registry.to_validated("1.0.0")
    r = await registry.decide("1.0.0", "alex-approver")
    assert r.json()["state"] == "approved"  # tier 2: one approver
    assert (await registry.release("1.0.0")).status_code == 200
    await registry.push("1.1.0", bad_class=1)
    run = (await registry.validate("1.1.0")).json()
    assert run["passed"] is True, run["report"]["reasons"]


async def test_rejection_is_final_and_needs_a_rationale(registry: Any, line: Any) -> None:
    await registry.to_validated("2.1.0")
    r = await registry.decide("2.1.0", "alex-approver", decision="reject", rationale="   ")
    assert r.status_code == 422
    r = await registry.decide(
        "2.1.0",
        "alex-approver",
        decision="reject",
        rationale="Model card omits night-shift lighting limits.",
    )
    assert r.status_code == 201
    assert r.json()["state"] == "rejected"
    assert (await registry.decide("2.1.0", "bea-approver")).status_code == 409
    assert (await registry.release("2.1.0")).status_code == 409
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions/2.1.0/revoke", json={"reason": "x"}, headers=registry.auth()
    )
    assert r.status_code == 409


async def test_validation_needs_a_golden_set(registry: Any) -> None:
    await registry.create_system()
    await registry.create_model()
    await registry.push("1.0.0")
    r = await registry.validate("1.0.0")
    assert r.status_code == 409
    assert "golden set" in r.json()["detail"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not a zip at all", "npz"),
        (None, "lack the model's classes"),
    ],
)
async def test_bad_golden_sets_are_refused(registry: Any, data: bytes | None, needle: str) -> None:
    import io

    import numpy as np

    await registry.create_system()
    await registry.create_model(critical_classes=["porosity"])
    if data is None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            inputs=np.zeros((4, 3, 8, 8), np.float32),
            labels=np.array([0, 1, 0, 1]),
            label_names=np.array(["ok", "crack"]),
        )
        data = buffer.getvalue()
    before = list((registry.app.state.registry.store.root).rglob("sha256/*/*"))
    r = await registry.add_golden_set(data=data)
    assert r.status_code == 422, r.text
    assert needle in r.text.lower() or needle in r.text
    assert list((registry.app.state.registry.store.root).rglob("sha256/*/*")) == before


async def test_synthetic_defect_floor_blocks_a_blind_model(registry: Any) -> None:
    await registry.create_system(tier=2)
    # The tiny channel-mean classifier cannot see local defects: require 50% detection.
    await registry.create_model(critical_classes=[], min_defect_detection={"porosity": 0.5})
    await registry.add_golden_set()
    await registry.push("1.0.0")
    run = (await registry.validate("1.0.0")).json()
    assert run["passed"] is False
    assert any("porosity" in reason for reason in run["report"]["reasons"])


async def test_release_rechecks_the_signature(registry: Any, line: Any) -> None:
    await registry.to_validated("2.1.0")
    await registry.decide("2.1.0", "alex-approver")
    await registry.decide("2.1.0", "bea-approver")
    v = await registry.version("2.1.0")
    card = next(f for f in v["files"] if f["path"] == "model_card.md")
    path = registry.app.state.registry.store.path(card["sha256"])
    path.write_bytes(path.read_bytes() + b"\nApproved for all lines.\n")
    r = await registry.release("2.1.0")
    assert r.status_code == 409
    assert any("model_card.md" in reason for reason in r.json()["reasons"])
    assert (await registry.version("2.1.0"))["state"] == "approved"


async def test_release_refuses_an_unclassified_system(registry: Any) -> None:
    body = {"owner": None, "reason": "owner left the company"}
    await registry.create_system(tier=3)
    await registry.create_model(critical_classes=[])
    await registry.add_golden_set()
    await registry.to_validated("1.0.0")
    await registry.decide("1.0.0", "alex-approver")
    r = await registry.client.patch(
        "/v1/inventory/systems/weld-seam-qa-line3", json=body, headers=registry.auth()
    )
    assert r.status_code == 200, r.text
    r = await registry.release("1.0.0")
    assert r.status_code == 409
    assert any("owner" in reason for reason in r.json()["reasons"])


async def test_concurrent_approvals_count_each_person_once(registry: Any, line: Any) -> None:
    await registry.to_validated("2.1.0")
    results = await asyncio.gather(*(registry.decide("2.1.0", "alex-approver") for _ in range(4)))
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
    assert (await registry.version("2.1.0"))["state"] == "validated"
