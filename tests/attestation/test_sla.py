"""SLAs, scorecards and breach events, with real signed evidence and real NATS."""

import json
from datetime import UTC, datetime, timedelta

import httpx
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
    for bad_terms in (
        {**TERMS, "max_attestation_age_days": 0},
        {**TERMS, "performance_commitments": [{"metric": "recall"}]},  # no bound
        {**TERMS, "performance_commitments": [{"metric": "recall", "min": 0.9, "max": 0.8}]},
        {
            **TERMS,
            "performance_commitments": [
                {"metric": "false-reject-rate", "max": 1.5},
                {"metric": "False Reject_Rate", "max": 2},  # the same commitment twice
            ],
        },
    ):
        bad = await stack.client.put(
            "/v1/suppliers/optivision/sla", json=bad_terms, headers=stack.token(Role.PROCUREMENT)
        )
        assert bad.status_code == 422, bad_terms
        assert bad.headers["content-type"].startswith("application/problem+json")


# ------------------------------------------------------------ performance commitments

CYCLONEDX_V16 = "https://cyclonedx.org/bom/v1.6"
SLA_EVIDENCE = "https://linegate.dev/attestation/sla-evidence/v1"
MODEL = "weld-seam-inspector"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def ml_bom(metrics: list[dict[str, str]], *, at: datetime) -> dict:
    """A CycloneDX 1.6 ML-BOM whose model card reports `metrics`."""
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {"timestamp": _stamp(at)},
        "components": [
            {
                "type": "machine-learning-model",
                "bom-ref": MODEL,
                "name": MODEL,
                "version": "2.1.0",
                "modelCard": {"quantitativeAnalysis": {"performanceMetrics": metrics}},
            }
        ],
    }


def sla_evidence(
    metric: str, measured: float, *, end: datetime, model: str = MODEL, slice_: str | None = None
) -> dict:
    """Linegate SLA evidence for the model-performance term, one measurement."""
    sliced = {"slice": slice_} if slice_ else {}
    return {
        "agreement": {"reference": "SLA-OPTI-2026-001"},
        "term": "model-performance",
        "period": {"start": _stamp(end - timedelta(days=7)), "end": _stamp(end)},
        "scope": {"model": model, "modelVersion": "2.1.0", "lines": ["line-3"]},
        "measurements": [
            {
                "metric": metric,
                "unit": "ratio",
                "committed": {"operator": ">=", "value": 0.95},
                "measured": measured,
                "evidence": ["golden-set"],
                **sliced,
            }
        ],
        "evidence": [{"id": "golden-set", "kind": "test-run", "digest": {"sha256": MODEL_DIGEST}}],
    }


async def _upload(stack, supplier, key, predicate_type, predicate):
    r = await stack.upload(supplier, sign(key, statement(MODEL_SUBJECT, predicate_type, predicate)))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _by_metric(card):
    return {p["metric"]: p for p in card["performance"]}


async def test_performance_commitments_are_met_not_met_or_without_evidence(stack):
    key = await stack.onboard("optivision")
    other = await stack.onboard("acme")
    now = datetime.now(UTC)
    commitments = [
        {"metric": "recall", "model": MODEL, "min": 0.95},
        {"metric": "false-reject-rate", "model": f"{MODEL}@2.1.0", "max": 1.5},
        {"metric": "precision", "min": 0.9},
        {"metric": "recall", "model": MODEL, "slice": "porosity", "min": 0.9},
        {"metric": "recall", "model": "Weld Seam Inspector@2.1.0", "slice": "crack", "min": 0.9},
        {"metric": "latency_ms_p99", "model": MODEL, "max": 40},
        {"metric": "f1", "min": 0.9},
        {"metric": "recall", "model": "another-model", "min": 0.5},
    ]
    await _contract(
        stack, {**TERMS, "required_evidence": {}, "performance_commitments": commitments}
    )
    bom = await _upload(
        stack,
        "optivision",
        key,
        CYCLONEDX_V16,
        ml_bom(
            [
                {"type": "recall", "value": "0.97"},
                {"type": "False Reject Rate", "value": "2.0"},
                {"type": "precision", "value": "high"},
                {"type": "recall", "value": "0.85", "slice": "porosity"},
            ],
            at=now - timedelta(days=2),
        ),
    )
    # Too old for the SLA's 90 days: stored, verified, expired at once.
    await _upload(
        stack,
        "optivision",
        key,
        CYCLONEDX_V16,
        ml_bom([{"type": "f1", "value": "0.99"}], at=now - timedelta(days=120)),
    )
    report = await _upload(
        stack,
        "optivision",
        key,
        SLA_EVIDENCE,
        sla_evidence("recall", 0.96, end=now - timedelta(days=1), slice_="crack"),
    )
    # Another supplier's evidence about the same model never counts for this one.
    await _upload(stack, "acme", other, SLA_EVIDENCE, sla_evidence("latency_ms_p99", 20, end=now))

    card = await _card(stack)
    perf = {(p["metric"], p["slice"], p["model"]): p for p in card["performance"]}
    recall = perf[("recall", None, MODEL)]
    assert (recall["status"], recall["measured"], recall["attestation"]) == ("met", 0.97, bom)
    assert datetime.fromisoformat(recall["since"]) == datetime.fromisoformat(
        _stamp(now - timedelta(days=2))
    )
    frr = perf[("false-reject-rate", None, f"{MODEL}@2.1.0")]
    assert (frr["status"], frr["measured"], frr["attestation"]) == ("not_met", 2.0, bom)
    assert "above the committed maximum 1.5" in frr["reason"]
    sliced = perf[("recall", "porosity", MODEL)]
    assert (sliced["status"], sliced["measured"]) == ("not_met", 0.85)
    assert "below the committed minimum 0.9" in sliced["reason"]
    crack = perf[("recall", "crack", "Weld Seam Inspector@2.1.0")]
    assert (crack["status"], crack["measured"], crack["unit"]) == ("met", 0.96, "ratio")
    assert crack["attestation"] == report
    precision = perf[("precision", None, None)]
    assert (precision["status"], precision["measured"]) == ("no_evidence", None)
    assert precision["unscorable"] == [
        {
            "attestation": bom,
            "model": f"{MODEL}@2.1.0",
            "value": "high",
            "reason": "'high' is not a plain number",
        }
    ]
    assert "no numeric evidence" in precision["reason"]
    f1 = perf[("f1", None, None)]
    assert f1["status"] == "no_evidence"
    assert "expired" in f1["reason"]
    assert perf[("latency_ms_p99", None, MODEL)]["status"] == "no_evidence"
    assert perf[("recall", None, "another-model")]["status"] == "no_evidence"

    breaches = {b["key"]: b["term"] for b in card["breaches"]}
    assert breaches == {
        "false-reject-rate|weld-seam-inspector@2.1.0|": "performance-not-met",
        "recall|weld-seam-inspector|porosity": "performance-not-met",
        "precision|*|": "performance-no-evidence",
        "latency-ms-p99|weld-seam-inspector|": "performance-no-evidence",
        "f1|*|": "performance-no-evidence",
        "recall|another-model|": "performance-no-evidence",
    }
    # The supplier's own view is the same scorecard; acme's shows none of it.
    own = await stack.client.get(
        "/v1/suppliers/optivision/scorecard",
        headers=stack.token(Role.SUPPLIER, tenant="optivision"),
    )
    assert own.json()["performance"] == card["performance"]


async def test_newest_performance_evidence_wins_and_breaches_open_once_and_clear(stack):
    key = await stack.onboard("optivision")
    now = datetime.now(UTC)
    await _contract(
        stack,
        {
            **TERMS,
            "required_evidence": {},
            "performance_commitments": [{"metric": "recall", "model": MODEL, "min": 0.95}],
        },
    )
    ctx = stack.app.state.ctx
    sub = await ctx.nats.js.subscribe("linegate.attestation.sla.breached", durable="perf-test")

    async def evaluate():
        async with ctx.db.session() as session:
            opened = await sla.evaluate_breaches(SlaRepository(session), ctx.audit)
        await ctx.outbox.flush()
        return [(b.term, b.key) for b in opened]

    ident = "recall|weld-seam-inspector|"
    assert await evaluate() == [("performance-no-evidence", ident)]
    assert await evaluate() == []  # one cause, one breach

    old = await _upload(
        stack,
        "optivision",
        key,
        CYCLONEDX_V16,
        ml_bom([{"type": "recall", "value": "0.91"}], at=now - timedelta(days=10)),
    )
    assert await evaluate() == [("performance-not-met", ident)]
    assert await evaluate() == []
    [recall] = (await _card(stack))["performance"]
    assert (recall["status"], recall["measured"], recall["attestation"]) == ("not_met", 0.91, old)

    # Newer SLA evidence (its period ended a day ago) replaces the older ML-BOM's value.
    end = now - timedelta(days=1)
    new = await _upload(
        stack, "optivision", key, SLA_EVIDENCE, sla_evidence("recall", 0.97, end=end)
    )
    assert await evaluate() == []
    [recall] = (await _card(stack))["performance"]
    assert (recall["status"], recall["measured"], recall["attestation"]) == ("met", 0.97, new)
    assert recall["unit"] == "ratio"
    assert datetime.fromisoformat(recall["since"]) == datetime.fromisoformat(_stamp(end))
    assert (await _card(stack))["breaches"] == []

    events = [json.loads((await sub.next_msg(timeout=20)).data) for _ in range(2)]
    await sub.unsubscribe()
    assert [(e["supplier"], e["term"]) for e in events] == [
        ("optivision", "performance-no-evidence"),
        ("optivision", "performance-not-met"),
    ]
    assert f"(attestation {old})" in events[1]["detail"]
    audit = await stack.client.get(
        "/v1/audit/entries?limit=1000", headers=stack.token(Role.AUDITOR)
    )
    entries = [e for e in audit.json() if e["action"].startswith("sla.breach.")]
    assert [(e["action"], e["subject"]) for e in entries] == [
        ("sla.breach.open", f"optivision/performance-no-evidence/{ident}"),
        # One evaluation opens the new breach and resolves the one it replaces.
        ("sla.breach.open", f"optivision/performance-not-met/{ident}"),
        ("sla.breach.resolve", f"optivision/performance-no-evidence/{ident}"),
        ("sla.breach.resolve", f"optivision/performance-not-met/{ident}"),
    ]

    # The portal's scorecards show the same (a session cookie is an access token).
    transport = httpx.ASGITransport(app=stack.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        token = stack.mint(Role.PROCUREMENT)
        browser.cookies.set("linegate_portal", token, domain="testserver.local", path="/portal")
        listing = await browser.get("/portal/suppliers")
        assert listing.status_code == 200
        assert "1/1 met" in listing.text
        detail = await browser.get("/portal/suppliers/optivision")
        assert detail.status_code == 200
        assert f'href="/portal/attestations/{new}"' in detail.text
        assert "recall measured 0.97 ratio: meets &gt;= 0.95" in detail.text


async def test_an_oversized_measurement_is_unscorable_and_never_stops_the_evaluation(stack):
    # A JSON integer of 400 digits is a valid `number` for the schema but no float.
    key = await stack.onboard("optivision")
    await _contract(
        stack,
        {
            **TERMS,
            "required_evidence": {},
            "performance_commitments": [{"metric": "recall", "model": MODEL, "min": 0.95}],
        },
    )
    huge = json.loads("1" + "0" * 400)
    await _upload(
        stack, "optivision", key, SLA_EVIDENCE, sla_evidence("recall", huge, end=datetime.now(UTC))
    )
    [recall] = (await _card(stack))["performance"]
    assert recall["status"] == "no_evidence"
    assert "too large to score" in recall["unscorable"][0]["reason"]
    r = await stack.client.get("/v1/scorecards", headers=stack.token(Role.PROCUREMENT))
    assert r.status_code == 200, r.text

    ctx = stack.app.state.ctx
    async with ctx.db.session() as session:
        opened = await sla.evaluate_breaches(SlaRepository(session), ctx.audit)
    assert [(b.term, b.key) for b in opened] == [
        ("performance-no-evidence", "recall|weld-seam-inspector|")
    ]
