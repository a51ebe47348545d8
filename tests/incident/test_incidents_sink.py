"""The signal sink and the incident workflow on a real app, real NATS and a real database:
dedup, snooze, status changes with reasons, the timeline, roles, audit, problem+json, and the
consumers that turn the gateway's and the devices' events into incidents."""

from __future__ import annotations

import asyncio
from typing import Any

from incident.incidents.core import ACTOR
from linegate.auth import Role
from linegate.events import DeviceStatusV1, IncidentOpenedV1, Subjects
from tests.incident.incidents_support import MODEL, Desk, wait_for


async def test_one_cause_opens_one_incident_and_later_signals_join_its_timeline(
    desk: Desk,
) -> None:
    first = await desk.raise_signal()
    assert first.action == "opened"
    incident_id = first.incident.id
    desk.later(minutes=10)
    second = await desk.raise_signal(
        severity="critical", summary="escapes 6.0%", evidence={"escape_rate": 0.06}
    )
    assert second.action == "joined"
    assert second.incident.id == incident_id
    other = await desk.raise_signal(dedup_key="drift:cam-3-1", incident_type="drift")
    assert other.action == "opened"
    assert other.incident.id != incident_id

    incident = await desk.incident(incident_id)
    assert incident["signal_count"] == 2
    assert incident["severity"] == "critical"  # raised by the worse signal
    assert incident["status"] == "open"
    assert (incident["line"], incident["model"], incident["version"]) == ("line3", MODEL, "2.1.0")
    kinds = [e["kind"] for e in await desk.timeline(incident_id)]
    assert kinds[0] == "opened"
    assert "signal" in kinds
    joined = next(e for e in await desk.timeline(incident_id) if e["kind"] == "signal")
    assert "severity raised from high to critical" in joined["detail"]
    assert joined["data"]["evidence"] == {"escape_rate": 0.06}

    # One opened event per incident, published through the outbox by this service.
    opened = await desk.last_on(Subjects.INCIDENT_OPENED)
    assert opened is not None
    assert opened["actor"] == ACTOR
    assert opened["incident_id"] == other.incident.id
    actions = await desk.audit_actions()
    assert actions.count("incident.open") == 2
    assert actions.count("incident.signal") == 1


async def test_concurrent_signals_with_one_key_open_one_incident(desk: Desk) -> None:
    outcomes = await asyncio.gather(*(desk.raise_signal() for _ in range(4)))
    assert sorted(o.action for o in outcomes) == ["joined", "joined", "joined", "opened"]
    assert len({o.incident.id for o in outcomes}) == 1
    [incident] = await desk.incidents()
    assert incident["signal_count"] == 4


async def test_snooze_suppresses_new_incidents_until_it_expires(desk: Desk) -> None:
    key = "drift:cam-3-1:brightness"
    r = await desk.client.post(
        "/v1/snoozes",
        json={"dedup_key": key, "minutes": 60, "reason": "lamp replaced, re-baselining"},
        headers=desk.auth(),
    )
    assert r.status_code == 201, r.text
    for _ in range(2):
        outcome = await desk.raise_signal(dedup_key=key, incident_type="drift")
        assert (outcome.action, outcome.incident) == ("suppressed", None)
    r = await desk.client.get("/v1/snoozes", headers=desk.auth(Role.AUDITOR))
    [snooze] = r.json()
    assert snooze["suppressed"] == 2
    assert await desk.incidents(type="drift") == []

    desk.later(minutes=61)
    outcome = await desk.raise_signal(dedup_key=key, incident_type="drift")
    assert outcome.action == "opened"
    assert "incident.signal_snoozed" in await desk.audit_actions()
    # Expired snoozes are no longer listed.
    assert (await desk.client.get("/v1/snoozes", headers=desk.auth())).json() == []


async def test_unsnooze_needs_a_reason_and_an_active_snooze(desk: Desk) -> None:
    key = "override:line3"
    body = {"dedup_key": key, "minutes": 30, "reason": "training shift"}
    assert (
        await desk.client.post("/v1/snoozes", json=body, headers=desk.auth())
    ).status_code == 201
    r = await desk.client.delete(f"/v1/snoozes/{key}", headers=desk.auth())
    assert r.status_code == 422
    r = await desk.client.delete(
        f"/v1/snoozes/{key}", params={"reason": "training over"}, headers=desk.auth()
    )
    assert r.status_code == 204
    r = await desk.client.delete(
        f"/v1/snoozes/{key}", params={"reason": "again"}, headers=desk.auth()
    )
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert (await desk.raise_signal(dedup_key=key, incident_type="override_cluster")).action == (
        "opened"
    )


async def test_status_workflow_with_reasons_and_a_closed_incident_frees_its_key(
    desk: Desk,
) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    r = await desk.status(incident_id, "mitigated")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["allowed"] == ["acknowledged", "closed"]
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/status", json={"status": "acknowledged"}, headers=desk.auth()
    )
    assert r.status_code == 422  # no reason
    for to in ("acknowledged", "investigating", "mitigated", "investigating", "mitigated"):
        desk.later(minutes=5)
        r = await desk.status(incident_id, to, reason=f"moving to {to}")
        assert r.status_code == 200, r.text
    r = await desk.status(incident_id, "closed", reason="lamp replaced; escapes back to 0.3%")
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "closed"
    assert closed["acknowledged_at"] is not None
    assert closed["closed_at"] is not None
    assert (await desk.status(incident_id, "investigating")).status_code == 409

    statuses = [e["detail"] for e in await desk.timeline(incident_id) if e["kind"] == "status"]
    assert statuses[-1] == "mitigated -> closed: lamp replaced; escapes back to 0.3%"
    again = await desk.raise_signal()
    assert again.action == "opened"
    assert again.incident.id != incident_id
    actions = await desk.audit_actions()
    for action in ("incident.acknowledged", "incident.mitigated", "incident.closed"):
        assert action in actions


async def test_roles_auditors_read_only_and_unknown_incidents_are_problems(desk: Desk) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    auditor = desk.auth(Role.AUDITOR, sub="alex-auditor")
    assert (
        await desk.client.get(f"/v1/incidents/{incident_id}", headers=auditor)
    ).status_code == 200
    r = await desk.client.post(
        f"/v1/incidents/{incident_id}/status",
        json={"status": "acknowledged", "reason": "looking"},
        headers=auditor,
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    r = await desk.client.get("/v1/incidents", headers=desk.auth(Role.REGISTRY_APPROVE))
    assert r.status_code == 403
    assert (await desk.client.get("/v1/incidents")).status_code == 401
    r = await desk.client.get("/v1/incidents/inc-nope", headers=auditor)
    assert r.status_code == 404
    assert r.json()["type"].endswith("/incident-not-found")


async def test_gateway_rollout_abort_opens_an_incident_but_our_own_opened_events_do_not(
    desk: Desk,
) -> None:
    ours = (await desk.raise_signal()).incident.id
    # Our opened event reaches the stream before the gateway's: the consumer sees it first.
    await wait_for(lambda: desk.last_on(Subjects.INCIDENT_OPENED), "our opened event")
    await desk.publish(
        Subjects.INCIDENT_OPENED,
        IncidentOpenedV1(
            actor="service:edge-gateway",
            incident_id="rollout-ro123-stage1",
            incident_type="rollout_threshold_crossed",
            severity="high",
            line="line3",
            model=MODEL,
            version="2.1.0",
        ),
    )

    async def gateway_incident() -> Any:
        found = await desk.incidents(type="rollout_abort")
        return found[0] if found else None

    incident = await wait_for(gateway_incident, "the rollout-abort incident")
    assert incident["rollout_id"] == "ro123"
    assert incident["external_ref"] == "rollout-ro123-stage1"
    assert incident["source"] == "nats:service:edge-gateway"
    assert incident["runbook_id"] == "rollout-abort"
    everything = await desk.incidents()
    assert {i["id"] for i in everything} == {ours, incident["id"]}


async def test_a_redelivered_event_changes_nothing(desk: Desk) -> None:
    event = DeviceStatusV1(
        device_id="cam-3-1", state="refused", model=MODEL, version="2.1.0", detail="bad sig"
    )
    later = DeviceStatusV1(
        device_id="cam-3-1", state="refused", model=MODEL, version="2.1.0", detail="again"
    )
    # The same event twice (as after a lost ack; no Nats-Msg-Id, so JetStream keeps both),
    # then a genuinely new report of the same cause, which joins.
    for e in (event, event, later):
        await desk.publish(Subjects.device_status("cam-3-1"), e)

    async def two_signals() -> Any:
        found = await desk.incidents(type="security")
        return found if found and found[0]["signal_count"] >= 2 else None

    [incident] = await wait_for(two_signals, "the later report to join")
    assert incident["signal_count"] == 2
    details = [e["detail"] for e in await desk.timeline(incident["id"]) if e["kind"] == "signal"]
    assert len(details) == 1
    assert "again" in details[0]


async def test_a_refused_release_on_a_device_opens_a_security_incident(desk: Desk) -> None:
    # Delivered in order: once the last one is handled, the first two were too.
    await desk.publish(
        Subjects.device_status("cam-3-2"),  # a device naming another one is ignored
        DeviceStatusV1(device_id="cam-9-9", state="refused", model=MODEL, version="2.1.0"),
    )
    await desk.publish(
        Subjects.device_status("cam-3-1"),
        DeviceStatusV1(device_id="cam-3-1", state="active", model=MODEL, version="2.0.4"),
    )
    await desk.publish(
        Subjects.device_status("cam-3-1"),
        DeviceStatusV1(
            device_id="cam-3-1",
            state="refused",
            model=MODEL,
            version="2.1.0",
            detail="model.onnx: sha256 does not match the signed metadata",
        ),
    )

    async def security() -> Any:
        return await desk.incidents(type="security")

    [incident] = await wait_for(security, "the security incident")
    assert incident["device_id"] == "cam-3-1"
    assert "sha256 does not match" in incident["summary"]
    assert incident["runbook_id"] == "security-refusal"
    assert len(await desk.incidents()) == 1


async def test_incident_events_land_in_the_post_market_log(desk: Desk) -> None:
    incident_id = (await desk.raise_signal()).incident.id
    desk.later(minutes=3)
    assert (await desk.status(incident_id, "acknowledged", reason="QA on it")).status_code == 200
    r = await desk.client.get(
        "/v1/postmarket/events", params={"incident_id": incident_id}, headers=desk.auth()
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["kind"] for i in items] == ["incident.opened", "incident.acknowledged"]
    assert {(i["model"], i["version"], i["line"]) for i in items} == {(MODEL, "2.1.0", "line3")}
    assert items[0]["payload"]["dedup_key"] == f"outcome:{MODEL}:2.1.0:line3"
