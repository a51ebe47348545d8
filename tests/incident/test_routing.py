"""Routing rules (admin-edited data, audited) and if-not-acknowledged escalation, driven at
chosen instants with an explicit ``now`` instead of sleeping."""

from __future__ import annotations

from typing import Any

from linegate.auth import Role
from linegate.events import Streams, Subjects
from tests.incident.incidents_support import Desk


async def test_only_admins_edit_rules_owners_are_people_and_changes_are_audited(
    desk: Desk,
) -> None:
    body: dict[str, Any] = {
        "incident_type": "drift",
        "queue": "data_science",
        "owner": "Dana Fischer",
        "acknowledge_within_minutes": 60,
    }
    r = await desk.client.post("/v1/routing-rules", json=body, headers=desk.auth())
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    for owner in ("Quality Team", "qa", "Maintenance Crew"):
        r = await desk.client.post(
            "/v1/routing-rules", json={**body, "owner": owner}, headers=desk.admin()
        )
        assert r.status_code == 422, owner
    r = await desk.client.post(
        "/v1/routing-rules", json={**body, "queue": "helpdesk"}, headers=desk.admin()
    )
    assert r.status_code == 422
    rule = await desk.rule(**body)
    assert rule["revision"] == 1
    assert rule["updated_by"] == "ada-admin"
    r = await desk.client.post("/v1/routing-rules", json=body, headers=desk.admin())
    assert r.status_code == 409
    assert r.json()["rule_id"] == rule["id"]

    r = await desk.client.patch(
        f"/v1/routing-rules/{rule['id']}",
        json={"owner": "Lena Hoffmann"},
        headers=desk.admin(),
    )
    assert r.status_code == 422  # a change gives its reason
    r = await desk.client.patch(
        f"/v1/routing-rules/{rule['id']}",
        json={"owner": "Lena Hoffmann", "reason": "Dana is on leave until March"},
        headers=desk.admin(),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["owner"], r.json()["revision"]) == ("Lena Hoffmann", 2)
    listed = (await desk.client.get("/v1/routing-rules", headers=desk.auth(Role.AUDITOR))).json()
    assert [x["owner"] for x in listed] == ["Lena Hoffmann"]
    r = await desk.client.get("/v1/routing-rules/rule-nope", headers=desk.auth())
    assert r.status_code == 404
    actions = await desk.audit_actions()
    assert actions.count("routing_rule.create") == 1
    assert actions.count("routing_rule.update") == 1


async def test_an_incident_goes_to_every_matching_queue_with_its_owner(desk: Desk) -> None:
    await desk.rule()  # defect_escape -> QA
    await desk.rule(queue="data_science", owner="Dana Fischer", escalation=[])
    await desk.rule(queue="ot", owner="Otto Brandt", min_severity="critical", escalation=[])
    incident = await desk.incident((await desk.raise_signal(severity="high")).incident.id)
    routes = {(a["queue"], a["owner"], a["level"]) for a in incident["assignments"]}
    assert routes == {("qa", "Maria Keller", 0), ("data_science", "Dana Fischer", 0)}
    routed = [e["detail"] for e in await desk.timeline(incident["id"]) if e["kind"] == "routed"]
    assert len(routed) == 2
    for queue, owner in (("qa", "Maria Keller"), ("data_science", "Dana Fischer")):
        announced = await desk.last_on(Subjects.incident_assigned(queue))
        assert announced is not None, queue
        assert (announced["incident_id"], announced["owner"]) == (incident["id"], owner)
        assert (announced["reason"], announced["level"]) == ("routed", 0)
        assert announced["summary"] == incident["summary"]
    assert await desk.last_on(Subjects.incident_assigned("ot")) is None

    assert [i["id"] for i in await desk.incidents(queue="data_science")] == [incident["id"]]
    assert [i["id"] for i in await desk.incidents(owner="Maria Keller")] == [incident["id"]]
    assert await desk.incidents(queue="ot") == []
    unrouted = await desk.incident(
        (await desk.raise_signal(incident_type="scrap_spike", dedup_key="scrap:line3")).incident.id
    )
    [assignment] = unrouted["assignments"]
    assert (assignment["queue"], assignment["owner"]) == ("triage", None)
    assert [i["id"] for i in await desk.incidents(queue="triage")] == [unrouted["id"]]
    assert len(await desk.incidents(status="active")) == 2


async def test_unacknowledged_incidents_escalate_level_by_level_and_acknowledging_stops_it(
    desk: Desk,
) -> None:
    await desk.rule()  # Maria 15 min -> Jonas 30 min -> Petra (last)
    opened_at = desk.now
    incident_id = (await desk.raise_signal()).incident.id

    def owner(incident: dict[str, Any]) -> tuple[str, int]:
        [a] = incident["assignments"]
        return a["owner"], a["level"]

    assert await desk.runtime.escalate(desk.later(minutes=14, seconds=59)) == {
        "incidents": 0,
        "tickets": 0,
    }
    assert owner(await desk.incident(incident_id)) == ("Maria Keller", 0)
    assert (await desk.runtime.escalate(desk.later(seconds=1)))["incidents"] == 1
    assert owner(await desk.incident(incident_id)) == ("Jonas Weber", 1)
    # Jonas has 30 minutes from his assignment, not from the opening.
    assert (await desk.runtime.escalate(desk.later(minutes=29)))["incidents"] == 0
    assert (await desk.runtime.escalate(desk.later(minutes=1)))["incidents"] == 1
    incident = await desk.incident(incident_id)
    assert owner(incident) == ("Petra Schulz", 2)
    assert incident["assignments"][0]["escalate_at"] is None  # the last level keeps it
    assert (await desk.runtime.escalate(desk.later(days=3)))["incidents"] == 0
    escalations = [e for e in await desk.timeline(incident_id) if e["kind"] == "escalated"]
    assert [e["data"]["to"] for e in escalations] == ["Jonas Weber", "Petra Schulz"]
    assert (await desk.audit_actions()).count("incident.escalate") == 2
    # Each assignment is announced for the notification bridge, the last escalation last.
    announced = await desk.last_on(Subjects.incident_assigned("qa"))
    assert announced is not None
    assert {k: announced[k] for k in ("incident_id", "reason", "owner", "previous_owner")} == {
        "incident_id": incident_id,
        "reason": "escalated",
        "owner": "Petra Schulz",
        "previous_owner": "Jonas Weber",
    }
    assert (announced["level"], announced["acknowledge_by"]) == (2, None)
    info = await desk.js.stream_info(Streams.INCIDENT.name, subjects_filter="linegate.incident.>")
    assert info.state.subjects is not None
    assert info.state.subjects[Subjects.incident_assigned("qa")] == 3  # routed + 2 escalations

    # A second incident is acknowledged in time: it never escalates.
    desk.now = opened_at
    other = (await desk.raise_signal(dedup_key="outcome:other")).incident.id
    desk.later(minutes=5)
    assert (await desk.status(other, "acknowledged", reason="Maria is on it")).status_code == 200
    assert (await desk.runtime.escalate(desk.later(hours=2)))["incidents"] == 0
    assert owner(await desk.incident(other)) == ("Maria Keller", 0)
