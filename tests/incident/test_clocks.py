"""Regulatory clocks (EU AI Act Art. 73, NIS2 Art. 23), overdue reports, report drafts and the
evidence freeze. Deadlines are computed from an awareness time the test chooses; "overdue" is
asked as of an instant the test chooses, never the wall clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from incident.incidents.clocks import add_months, deadlines
from incident.incidents.schemas import TriageDecision
from linegate.auth import Role
from linegate.events import EvidenceFreezeV1, Streams, Subjects
from linegate.signing import dsse_verify, load_public_key
from tests.incident.incidents_support import MODEL, Desk

AWARE = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
WHY = "a cracked seam reached a customer's assembly line; QA confirmed the model passed it"


def decide(**kw: Any) -> TriageDecision:
    return TriageDecision(rationale=WHY, **kw)


def due(decision: TriageDecision) -> dict[tuple[str, str], datetime]:
    return {(d.regime, d.report): d.due_at for d in deadlines(decision, AWARE)}


def test_ai_act_deadlines_for_each_case() -> None:
    general = due(decide(serious=True, categories=["property_environment"]))
    assert general == {("eu_ai_act_art73", "initial"): AWARE + timedelta(days=15)}
    harm = due(decide(serious=True, categories=["health"]))
    assert harm[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=15)
    death = due(decide(serious=True, categories=["health"], death=True))
    assert death[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=10)
    infrastructure = due(decide(serious=True, categories=["critical_infrastructure"]))
    assert infrastructure[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=2)
    widespread = due(
        decide(serious=True, categories=["fundamental_rights"], widespread_infringement=True)
    )
    assert widespread[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=2)
    rights = due(decide(serious=True, categories=["fundamental_rights"]))
    assert rights[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=15)
    # The shortest applicable deadline binds.
    both = due(decide(serious=True, categories=["health", "critical_infrastructure"], death=True))
    assert both[("eu_ai_act_art73", "initial")] == AWARE + timedelta(days=2)
    assert due(decide(serious=False)) == {}


def test_nis2_deadlines_and_calendar_months() -> None:
    clocks = due(decide(serious=False, nis2_significant=True))
    assert clocks == {
        ("nis2_art23", "early_warning"): AWARE + timedelta(hours=24),
        ("nis2_art23", "notification"): AWARE + timedelta(hours=72),
        # One month after the notification's deadline (2 Feb) until it is submitted.
        ("nis2_art23", "final"): datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    }
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 15, tzinfo=UTC), 1) == datetime(2027, 1, 15, tzinfo=UTC)
    combined = due(decide(serious=True, categories=["health"], nis2_significant=True))
    assert len(combined) == 4


def test_inconsistent_triage_is_refused() -> None:
    for bad in (
        {"serious": True},  # no category
        {"serious": False, "categories": ["health"]},
        {"serious": True, "categories": ["property_environment"], "death": True},
        {"serious": True, "categories": ["health"], "widespread_infringement": True},
    ):
        with pytest.raises(ValidationError):
            decide(**bad)
    with pytest.raises(ValidationError):
        TriageDecision(serious=False, rationale="")


async def triage(desk: Desk, incident_id: str, **body: Any) -> Any:
    return await desk.client.post(
        f"/v1/incidents/{incident_id}/triage",
        json={"rationale": WHY, "aware_at": AWARE.isoformat(), **body},
        headers=desk.auth(sub="rita-responder"),
    )


async def test_triage_sets_clocks_overdue_list_submission_and_freeze(desk: Desk) -> None:
    desk.now = AWARE + timedelta(hours=1)
    incident_id = (await desk.raise_signal(severity="critical")).incident.id
    r = await desk.client.get(f"/v1/incidents/{incident_id}/reports/initial", headers=desk.auth())
    assert r.status_code == 409  # not triaged yet
    r = await triage(desk, incident_id, serious=True, categories=["health"])
    assert r.status_code == 200, r.text
    assert r.json()["serious"] is True
    r = await triage(
        desk, incident_id, serious=True, categories=["health"], nis2_significant=True, death=True
    )
    assert r.status_code == 200, r.text  # a revised decision re-computes unsubmitted clocks
    clocks = (
        await desk.client.get(f"/v1/incidents/{incident_id}/clocks", headers=desk.auth())
    ).json()
    assert [(c["regime"], c["report"]) for c in clocks] == [
        ("nis2_art23", "early_warning"),
        ("nis2_art23", "notification"),
        ("eu_ai_act_art73", "initial"),
        ("nis2_art23", "final"),
    ]
    ai_act = next(c for c in clocks if c["regime"] == "eu_ai_act_art73")
    assert datetime.fromisoformat(ai_act["due_at"]) == AWARE + timedelta(days=10)
    assert "Art. 73(4)" in ai_act["basis"]

    async def overdue(at: datetime) -> list[tuple[str, str]]:
        r = await desk.client.get(
            "/v1/incidents/overdue-reports",
            params={"at": at.isoformat()},
            headers=desk.auth(Role.AUDITOR),
        )
        assert r.status_code == 200, r.text
        assert all(c["overdue"] for c in r.json())
        return [(c["regime"], c["report"]) for c in r.json()]

    assert await overdue(AWARE + timedelta(hours=23)) == []
    assert await overdue(AWARE + timedelta(hours=25)) == [("nis2_art23", "early_warning")]
    early, notification = clocks[0], clocks[1]
    desk.now = AWARE + timedelta(hours=21)
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/{early['id']}/submission",
        json={
            "reference": "CSIRT-DE 2026-0117",
            "submitted_at": (AWARE + timedelta(hours=20)).isoformat(),
        },
        headers=desk.auth(),
    )
    assert r.status_code == 200, r.text
    assert await overdue(AWARE + timedelta(hours=25)) == []
    assert await overdue(AWARE + timedelta(days=11)) == [
        ("nis2_art23", "notification"),
        ("eu_ai_act_art73", "initial"),
    ]
    # Submitting the notification moves the final report to one month after it.
    submitted = AWARE + timedelta(hours=50)
    desk.now = submitted + timedelta(minutes=5)
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/{notification['id']}/submission",
        json={"reference": "CSIRT-DE 2026-0117/2", "submitted_at": submitted.isoformat()},
        headers=desk.auth(),
    )
    assert r.status_code == 200
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/{notification['id']}/submission",
        json={"reference": "again"},
        headers=desk.auth(),
    )
    assert r.status_code == 409
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/{clocks[2]['id']}/submission",
        json={
            "reference": "AI-OFFICE-1",
            "submitted_at": (desk.now + timedelta(days=1)).isoformat(),
        },
        headers=desk.auth(),
    )
    assert r.status_code == 422
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/999999/submission",
        json={"reference": "nothing"},
        headers=desk.auth(),
    )
    assert r.status_code == 404
    # An id past the column's 32 bits is refused by validation, not by the database (a 500).
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/clocks/{2**31}/submission",
        json={"reference": "nothing"},
        headers=desk.auth(),
    )
    assert r.status_code == 422, r.text
    clocks = (
        await desk.client.get(f"/v1/incidents/{incident_id}/clocks", headers=desk.auth())
    ).json()
    final = next(c for c in clocks if c["report"] == "final")
    assert datetime.fromisoformat(final["due_at"]) == add_months(submitted, 1)

    # A reportable triage froze the implicated version as evidence.
    event = await desk.last_on(Subjects.INCIDENT_FREEZE)
    assert event is not None
    assert (event["model"], event["version"], event["frozen"]) == (MODEL, "2.1.0", True)
    assert event["incident_id"] == incident_id
    freeze = (
        await desk.client.get(f"/v1/incidents/{incident_id}/freeze", headers=desk.auth())
    ).json()
    assert freeze["released_at"] is None
    actions = await desk.audit_actions()
    assert actions.count("incident.triage") == 2
    assert actions.count("incident.freeze") == 1  # not frozen twice by the revision


async def test_freeze_by_a_responder_and_release_only_with_a_rationale(desk: Desk) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    r = await triage(desk, incident_id, serious=False)
    assert r.status_code == 200
    assert await desk.last_on(Subjects.INCIDENT_FREEZE) is None  # nothing reportable
    url = f"/v1/incidents/{incident_id}/freeze"
    assert (await desk.client.get(url, headers=desk.auth())).status_code == 404
    r = await desk.client.post(
        url, json={"reason": "keep for root cause"}, headers=desk.auth(Role.AUDITOR)
    )
    assert r.status_code == 403
    r = await desk.client.post(url, json={"reason": "keep for root cause"}, headers=desk.auth())
    assert r.status_code == 201, r.text
    assert (
        await desk.client.post(url, json={"reason": "twice"}, headers=desk.auth())
    ).status_code == 409
    r = await desk.client.post(f"{url}/release", json={}, headers=desk.auth())
    assert r.status_code == 422
    r = await desk.client.post(f"{url}/release", json={"rationale": "ok"}, headers=desk.auth())
    assert r.status_code == 422
    assert (await desk.last_on(Subjects.INCIDENT_FREEZE) or {}).get("frozen") is True
    r = await desk.client.post(
        f"{url}/release",
        json={"rationale": "root cause found in the lighting; 2.1.0 itself is sound"},
        headers=desk.auth(sub="ute-responder"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["released_by"] == "ute-responder"
    event = await desk.last_on(Subjects.INCIDENT_FREEZE)
    assert event is not None
    assert event["frozen"] is False
    assert event["reason"] == "root cause found in the lighting; 2.1.0 itself is sound"
    # On the subject: a DSSE envelope signed by the action key, under the freeze's own
    # payloadType (a forged release must not reach the gateway as genuine).
    msg = await desk.js.get_last_msg(Streams.INCIDENT.name, Subjects.INCIDENT_FREEZE)
    pinned = load_public_key(desk.app.state.ctx.settings.action_public_key_path.read_bytes())
    verified = dsse_verify(json.loads(msg.data), [pinned])
    assert verified.payload_type == EvidenceFreezeV1.PAYLOAD_TYPE
    assert EvidenceFreezeV1.model_validate_json(verified.payload).model_dump(mode="json") == event
    assert verified.signer_key_ids == (desk.runtime.signer.key_id,)
    r = await desk.client.post(
        f"{url}/release", json={"rationale": "releasing once more for luck"}, headers=desk.auth()
    )
    assert r.status_code == 409
    kinds = [e["kind"] for e in await desk.timeline(incident_id)]
    assert kinds.count("evidence_freeze") == 2


async def test_report_drafts_are_prefilled_as_json_and_markdown(desk: Desk) -> None:
    desk.now = AWARE + timedelta(hours=1)
    incident_id = (await desk.raise_signal()).incident.id
    await triage(desk, incident_id, serious=True, categories=["property_environment"])
    r = await desk.client.get(
        f"/v1/incidents/{incident_id}/reports/initial", headers=desk.auth(Role.AUDITOR)
    )
    assert r.status_code == 200, r.text
    draft = r.json()
    assert draft["kind"] == "initial"
    assert draft["incident"]["id"] == incident_id
    assert draft["incident"]["aware_at"] == AWARE.isoformat()
    assert draft["ai_system"] == {
        "model": MODEL,
        "version": "2.1.0",
        "line": "line3",
        "station": None,
        "device_id": None,
        "rollout_id": None,
        "frozen_as_evidence": True,
    }
    assert draft["classification"]["art_3_49_categories"] == ["property_environment"]
    assert draft["classification"]["decided_by"] == "rita-responder"
    [clock] = draft["deadlines"]
    assert datetime.fromisoformat(clock["due_at"]) == AWARE + timedelta(days=15)
    assert draft["evidence"] == {"escape_rate": 0.041, "baseline": 0.004}
    assert draft["timeline"][0]["kind"] == "opened"
    assert "root cause analysis" not in draft["to_complete"]

    r = await desk.client.get(
        f"/v1/incidents/{incident_id}/reports/final",
        params={"format": "markdown"},
        headers=desk.auth(),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith(f"# Final incident report (draft): {incident_id}")
    assert "Serious incident (EU AI Act Art. 3(49)): yes (property_environment)" in md
    assert "| eu_ai_act_art73 | initial |" in md
    assert "- [ ] root cause analysis" in md
    assert "the incident is still open: mitigate it first" in md
    r = await desk.client.get(f"/v1/incidents/{incident_id}/reports/interim", headers=desk.auth())
    assert r.status_code == 422
