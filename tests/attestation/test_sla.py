"""SLAs, scorecards and breach events, with real signed evidence and real NATS."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from attestation import sla
from attestation.app import create_app
from attestation.repository import SlaRepository
from attestation.settings import AttestationSettings
from linegate.auth import Role

from .conftest import (
    MODEL_DIGEST,
    MODEL_SUBJECT,
    SLSA_V1,
    TESTDATA,
    Stack,
    sign,
    slsa_predicate,
    statement,
)

TERMS = {
    "required_evidence": {"model": ["slsa-provenance-v1", "cyclonedx|spdx-3"]},
    "max_attestation_age_days": 90,
    "vulnerability_response_days": 5,
}


async def _contract(stack, terms=TERMS):
    staff = stack.token(Role.PROCUREMENT)
    r = await stack.client.put("/v1/suppliers/optivision/sla", json=terms, headers=staff)
    assert r.status_code == 200, r.text
    r = await stack.client.post(
        "/v1/suppliers/optivision/artefacts",
        json={
            "name": "weld-seam-inspector 2.1.0",
            "kind": "model",
            "digest": f"sha256:{MODEL_DIGEST}",
        },
        headers=staff,
    )
    assert r.status_code == 201, r.text


async def _card(stack, **params):
    r = await stack.client.get(
        "/v1/suppliers/optivision/scorecard", params=params, headers=stack.token(Role.PROCUREMENT)
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_scorecard_counts_only_verified_unexpired_evidence_for_contracted_artefacts(stack):
    key = await stack.onboard("optivision")
    await _contract(stack)
    card = await _card(stack)
    assert (card["required"], card["covered"], card["coverage"]) == (2, 0, 0.0)
    assert {b["term"] for b in card["breaches"]} == {"evidence-missing"}

    r = await stack.upload(
        "optivision", sign(key, statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate()))
    )
    assert r.status_code == 201
    # An unsigned SBOM is stored but is never signed evidence.
    sbom = (TESTDATA / "cyclonedx" / "valid-machine-learning-1.6.json").read_bytes()
    assert (
        await stack.upload("optivision", sbom, "application/vnd.cyclonedx+json")
    ).status_code == 201

    card = await _card(stack)
    assert (card["covered"], card["coverage"]) == (1, 0.5)
    [missing] = card["breaches"]
    assert missing["key"].endswith("#cyclonedx|spdx-3")
    states = {e["evidence"]: e["state"] for e in card["artefacts"][0]["evidence"]}
    assert states == {"slsa-provenance-v1": "covered", "cyclonedx|spdx-3": "missing"}

    # The SLA's 90-day maximum age sets the expiry: it shows as expiring within 100 days.
    assert [e["key"] for e in (await _card(stack, expiring_within_days=100))["expiring"]] == [
        f"sha256:{MODEL_DIGEST}#slsa-provenance-v1"
    ]


async def test_stale_evidence_is_an_expired_breach(stack):
    key = await stack.onboard("optivision")
    await _contract(stack, {**TERMS, "required_evidence": {"model": ["slsa-provenance-v1"]}})
    old = datetime.now(UTC) - timedelta(days=120)
    r = await stack.upload(
        "optivision", sign(key, statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate(finished_on=old)))
    )
    assert r.status_code == 201
    card = await _card(stack)
    assert [b["term"] for b in card["breaches"]] == ["evidence-expired"]
    assert card["coverage"] == 0.0


async def test_notice_response_time(stack):
    await stack.onboard("optivision", key=False)
    await _contract(stack, {**TERMS, "required_evidence": {}})
    staff = stack.token(Role.PROCUREMENT)
    late = await stack.client.post(
        "/v1/suppliers/optivision/notices",
        json={
            "kind": "vulnerability",
            "reference": "CVE-2026-0001",
            "sent_at": (datetime.now(UTC) - timedelta(days=9)).isoformat(),
        },
        headers=staff,
    )
    fresh = await stack.client.post(
        "/v1/suppliers/optivision/notices",
        json={"kind": "vulnerability", "reference": "CVE-2026-0002"},
        headers=staff,
    )
    assert late.status_code == fresh.status_code == 201
    [breach] = (await _card(stack))["breaches"]
    assert breach["term"] == "vulnerability-response"
    assert "CVE-2026-0001" in breach["detail"]

    supplier = stack.token(Role.SUPPLIER, tenant="optivision")
    answer = await stack.client.post(
        f"/v1/suppliers/optivision/notices/{fresh.json()['id']}/response",
        json={"response": "patched in 2.1.1"},
        headers=supplier,
    )
    assert answer.status_code == 200
    again = await stack.client.post(
        f"/v1/suppliers/optivision/notices/{fresh.json()['id']}/response",
        json={"response": "x"},
        headers=supplier,
    )
    assert again.status_code == 409
    assert len((await _card(stack))["breaches"]) == 1


async def test_breach_evaluation_opens_once_emits_an_event_audits_and_resolves(stack):
    key = await stack.onboard("optivision")
    await _contract(stack, {**TERMS, "required_evidence": {"model": ["slsa-provenance-v1"]}})
    ctx = stack.app.state.ctx
    sub = await ctx.nats.js.subscribe("linegate.attestation.sla.breached", durable="sla-test")

    async def evaluate():
        async with ctx.db.session() as session:
            opened = await sla.evaluate_breaches(SlaRepository(session), ctx.audit)
        await ctx.outbox.flush()
        return opened

    assert len(await evaluate()) == 1
    assert await evaluate() == []  # one cause, one breach
    event = json.loads((await sub.next_msg(timeout=20)).data)
    await sub.unsubscribe()
    assert (event["supplier"], event["term"]) == ("optivision", "evidence-missing")

    await stack.upload("optivision", sign(key, statement(MODEL_SUBJECT, SLSA_V1, slsa_predicate())))
    assert await evaluate() == []
    audit = await stack.client.get(
        "/v1/audit/entries?limit=1000", headers=stack.token(Role.AUDITOR)
    )
    actions = [e["action"] for e in audit.json()]
    assert actions.count("sla.breach.open") == 1
    assert actions.count("sla.breach.resolve") == 1


async def test_the_background_evaluator_publishes_breaches(
    settings_factory, service_client, mint_token
):
    settings = settings_factory(AttestationSettings, sla_evaluation_interval_seconds=0.2)
    app = create_app(settings)
    async with service_client(app) as client:
        stack = Stack(client=client, app=app, mint=mint_token)
        await stack.onboard("optivision", key=False)
        sub = await app.state.ctx.nats.js.subscribe(
            "linegate.attestation.sla.breached", durable="bg"
        )
        await _contract(stack)
        msg = await sub.next_msg(timeout=30)
        await sub.unsubscribe()
        assert json.loads(msg.data)["supplier"] == "optivision"


@pytest.mark.parametrize(
    ("who", "status"),
    [("own", 200), ("other", 404), ("procurement", 200), ("device", 403), ("none", 401)],
)
async def test_scorecard_tenancy(stack, who, status):
    await stack.onboard("optivision", key=False)
    await stack.onboard("acme", key=False)
    headers = {
        "own": stack.token(Role.SUPPLIER, tenant="optivision"),
        "other": stack.token(Role.SUPPLIER, tenant="acme"),
        "procurement": stack.token(Role.PROCUREMENT),
        "device": stack.token(Role.DEVICE, device_id="cam"),
        "none": {},
    }[who]
    r = await stack.client.get("/v1/suppliers/optivision/scorecard", headers=headers)
    assert r.status_code == status


async def test_only_procurement_sets_terms_and_sees_every_scorecard(stack):
    await stack.onboard("optivision", key=False)
    supplier = stack.token(Role.SUPPLIER, tenant="optivision")
    assert (
        await stack.client.put("/v1/suppliers/optivision/sla", json=TERMS, headers=supplier)
    ).status_code == 403
    assert (await stack.client.get("/v1/scorecards", headers=supplier)).status_code == 403
    cards = await stack.client.get("/v1/scorecards", headers=stack.token(Role.PROCUREMENT))
    assert [c["supplier"] for c in cards.json()] == ["optivision"]
    bad = await stack.client.put(
        "/v1/suppliers/optivision/sla",
        json={**TERMS, "max_attestation_age_days": 0},
        headers=stack.token(Role.PROCUREMENT),
    )
    assert bad.status_code == 422
