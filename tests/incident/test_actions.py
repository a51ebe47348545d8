"""Corrective actions: nothing reaches the gateway before an authorised human approves it;
critical incidents need two distinct approvers; the approved action is an IncidentActionV1 on
real NATS, signed (DSSE) with the key the service publishes for the gateway, and the gateway's
result lands on the timeline. Runbook gates come first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from linegate.auth import Role
from linegate.events import IncidentActionResultV1, IncidentActionV1, Streams, Subjects
from linegate.signing import SignatureError, dsse_verify, generate_private_key, load_public_key
from tests.incident.incidents_support import MODEL, Desk, wait_for

RATIONALE = "escapes at 4% on line 3 night shift; contain before the next shift starts"


async def propose(desk: Desk, incident_id: str, **body: Any) -> Any:
    return await desk.client.post(
        f"/v1/incidents/{incident_id}/actions",
        json={"rationale": RATIONALE, **body},
        headers=desk.auth(sub="rita-responder"),
    )


async def approve(desk: Desk, incident_id: str, action_id: str, sub: str) -> Any:
    return await desk.client.post(
        f"/v1/incidents/{incident_id}/actions/{action_id}/approvals",
        json={"rationale": "checked the escape figures with QA; agree"},
        headers=desk.auth(sub=sub),
    )


async def test_nothing_is_published_without_approval_and_wrong_roles_are_refused(
    desk: Desk,
) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/actions",
        json={"action": "manual_inspection", "rationale": RATIONALE},
        headers=desk.auth(Role.REGISTRY_APPROVE, sub="ot-engineer"),
    )
    assert r.status_code == 403
    r = await propose(desk, incident_id, action="manual_inspection")
    assert r.status_code == 201, r.text
    action = r.json()
    assert (action["state"], action["required_approvals"]) == ("pending_approval", 1)
    assert action["params"] == {
        "model": MODEL,
        "version": "2.1.0",
        "line": "line3",
        "device_ids": None,
    }
    assert await desk.last_on(Subjects.incident_action("manual_inspection")) is None

    url = f"/v1/incidents/{incident_id}/actions/{action['id']}/approvals"
    for headers in (
        desk.auth(Role.AUDITOR, sub="alex-auditor"),
        desk.auth(Role.REGISTRY_APPROVE, sub="qa-lead"),
        {"Authorization": "Bearer " + desk.mint(Role.DEVICE, device_id="cam-3-1")},
    ):
        r = await desk.client.post(
            url, json={"rationale": "looks right to me, go"}, headers=headers
        )
        assert r.status_code == 403, headers
        assert r.headers["content-type"] == "application/problem+json"
    r = await desk.client.post(url, json={}, headers=desk.auth(sub="sam-responder"))
    assert r.status_code == 422  # no rationale
    r = await desk.client.post(url, json={"rationale": "ok"}, headers=desk.auth(sub="sam"))
    assert r.status_code == 422  # a rationale says why
    assert await desk.last_on(Subjects.incident_action("manual_inspection")) is None
    listed = (
        await desk.client.get(f"/v1/incidents/{incident_id}/actions", headers=desk.auth())
    ).json()
    assert [(a["state"], a["approvals"]) for a in listed] == [("pending_approval", [])]

    r = await approve(desk, incident_id, action["id"], "sam-responder")
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "sent"
    event = await desk.last_on(Subjects.incident_action("manual_inspection"))
    assert event is not None
    assert event["action_id"] == action["id"]
    assert event["approved_by"] == ["sam-responder"]
    assert event["actor"] == "sam-responder"
    assert (event["model"], event["version"], event["line"]) == (MODEL, "2.1.0", "line3")
    r = await approve(desk, incident_id, action["id"], "tom-responder")
    assert r.status_code == 409  # already sent

    # On the subject: a DSSE envelope signed by the key the service published for the gateway.
    msg = await desk.js.get_last_msg(
        Streams.INCIDENT.name, Subjects.incident_action("manual_inspection")
    )
    envelope = json.loads(msg.data)
    settings = desk.app.state.ctx.settings
    pinned = load_public_key(settings.action_public_key_path.read_bytes())
    verified = dsse_verify(envelope, [pinned])
    assert verified.payload_type == "application/vnd.linegate.incident-action+json"
    assert IncidentActionV1.model_validate_json(verified.payload).model_dump(mode="json") == event
    assert verified.signer_key_ids == (desk.runtime.signer.key_id,)
    assert settings.action_key_path.stat().st_mode & 0o077 == 0  # the private key stays private
    with pytest.raises(SignatureError):
        dsse_verify(envelope, [generate_private_key().public_key()])


async def test_critical_needs_two_distinct_approvers_then_the_result_reaches_the_timeline(
    desk: Desk,
) -> None:
    incident_id = (await desk.raise_signal(severity="critical")).incident.id
    r = await propose(desk, incident_id, action="rollback")
    assert r.status_code == 422  # a rollback names its target
    r = await propose(desk, incident_id, action="rollback", target_version="2.1.0")
    assert r.status_code == 422  # not the implicated version itself
    r = await propose(desk, incident_id, action="rollback", target_version="2.0.4")
    assert r.status_code == 201, r.text
    action = r.json()
    assert action["required_approvals"] == 2

    assert (await approve(desk, incident_id, action["id"], "sam-responder")).json()["state"] == (
        "pending_approval"
    )
    r = await approve(desk, incident_id, action["id"], "sam-responder")
    assert r.status_code == 409
    assert "another person" in r.json()["detail"]
    assert await desk.last_on(Subjects.incident_action("rollback")) is None
    r = await approve(desk, incident_id, action["id"], "ute-responder")
    assert r.json()["state"] == "sent"
    event = await desk.last_on(Subjects.incident_action("rollback"))
    assert event is not None
    assert event["approved_by"] == ["sam-responder", "ute-responder"]
    assert event["target_version"] == "2.0.4"

    # Closing waits for the gateway's result.
    assert (await desk.status(incident_id, "closed", reason="done")).status_code == 409
    await desk.publish(
        Subjects.INCIDENT_ACTION_RESULT,
        IncidentActionResultV1(
            actor="service:edge-gateway",
            action_id=action["id"],
            incident_id=incident_id,
            outcome="done",
            devices=["cam-3-1", "cam-3-2"],
            detail="rolled back to 2.0.4 with a signed rollback instruction",
        ),
    )

    async def result() -> Any:
        return [e for e in await desk.timeline(incident_id) if e["kind"] == "action_result"]

    [entry] = await wait_for(result, "the action result on the timeline")
    assert entry["actor"] == "service:edge-gateway"
    assert "done on cam-3-1, cam-3-2" in entry["detail"]
    [done] = (
        await desk.client.get(f"/v1/incidents/{incident_id}/actions", headers=desk.auth())
    ).json()
    assert done["state"] == "done"
    assert done["result"]["devices"] == ["cam-3-1", "cam-3-2"]
    assert (await desk.status(incident_id, "closed", reason="rolled back")).status_code == 200
    actions = await desk.audit_actions()
    for name in ("incident.action.propose", "incident.action.send", "incident.action.done"):
        assert name in actions
    assert actions.count("incident.action.approve") == 2


async def test_a_tier_1_system_needs_two_approvers_even_below_critical(desk: Desk) -> None:
    incident_id = (
        await desk.raise_signal(severity="medium", evidence={"risk_tier": 1, "psi": 0.31})
    ).incident.id
    r = await propose(desk, incident_id, action="manual_inspection")
    assert r.json()["required_approvals"] == 2
    other = (await desk.raise_signal(dedup_key="drift:tier3", evidence={"risk_tier": 3})).incident
    r = await propose(desk, other.id, action="manual_inspection")
    assert r.json()["required_approvals"] == 1


async def test_runbook_human_gates_come_before_the_actions_after_them(desk: Desk) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    r = await desk.client.get(f"/v1/incidents/{incident_id}/runbook", headers=desk.auth())
    progress = r.json()
    assert (progress["runbook_id"], progress["version"]) == ("outcome-escape", 2)
    assert {s["id"]: s["state"] for s in progress["steps"]}["quarantine"] == "pending"

    r = await propose(desk, incident_id, action="manual_inspection", step_id="contain")
    assert r.status_code == 201, r.text  # the first step has no gate before it
    r = await propose(
        desk, incident_id, action="rollback", step_id="contain", target_version="2.0.4"
    )
    assert r.status_code == 422  # that step is not a rollback
    r = await propose(
        desk, incident_id, action="rollback", step_id="rollback", target_version="2.0.4"
    )
    assert r.status_code == 409
    assert r.json()["pending_gates"] == ["quarantine", "check-camera"]

    step = f"/v1/incidents/{incident_id}/runbook/steps"
    r = await desk.client.post(
        f"{step}/contain", json={"note": "done by hand"}, headers=desk.auth()
    )
    assert r.status_code == 409  # an action step completes through its approved action
    for gate in ("quarantine", "check-camera"):
        r = await desk.client.post(
            f"{step}/{gate}", json={"note": f"{gate}: done, see shift log"}, headers=desk.auth()
        )
        assert r.status_code == 200, r.text
    r = await desk.client.post(f"{step}/quarantine", json={"note": "again"}, headers=desk.auth())
    assert r.status_code == 409
    r = await desk.client.post(
        f"{step}/triage", json={"note": "by an auditor"}, headers=desk.auth(Role.AUDITOR)
    )
    assert r.status_code == 403
    r = await propose(
        desk, incident_id, action="rollback", step_id="rollback", target_version="2.0.4"
    )
    assert r.status_code == 201, r.text
    assert "incident.runbook_step.done" in await desk.audit_actions()


async def test_raise_threshold_and_cancel(desk: Desk) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    r = await propose(desk, incident_id, action="raise_threshold")
    assert r.status_code == 422
    r = await propose(desk, incident_id, action="raise_threshold", threshold=1.5)
    assert r.status_code == 422
    r = await propose(desk, incident_id, action="raise_threshold", threshold=0.9)
    assert r.status_code == 201, r.text
    action_id = r.json()["id"]
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/actions/{action_id}/cancel",
        json={"reason": "camera cleaned; not needed"},
        headers=desk.auth(),
    )
    assert r.json()["state"] == "cancelled"
    assert (await approve(desk, incident_id, action_id, "sam-responder")).status_code == 409
    assert await desk.last_on(Subjects.incident_action("raise_threshold")) is None
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/actions/act-nope/approvals",
        json={"rationale": "approving something that is not there"},
        headers=desk.auth(),
    )
    assert r.status_code == 404
    no_model = (await desk.raise_signal(dedup_key="feedback:x", model=None, version=None)).incident
    r = await propose(desk, no_model.id, action="manual_inspection")
    assert r.status_code == 422
