"""The reference scenario's steps 4-5 across services on one bus (shared/DESIGN.md).

A real edge gateway and two real device agents on line 3 (each logged in with its own nkey,
confined by the server to its own subjects) run weld-seam-inspector 2.1.0; the incident service
runs beside them on the same nats-server. The agents' telemetry lands in the incident service's
post-market log. The outcome monitor's signal (escapes rise while the model stays confident;
the monitor's own statistics are tests/incident/test_monitors.py's subject) opens an incident
that is routed to QA and data science. Two responders approve "switch line 3 to manual
inspection": the incident service publishes the action, the gateway signs a control for the
devices, and the agents then send even a confident part to a person. Two responders approve
"roll back to 2.0.4": the devices install it under a signed rollback instruction. The gateway's
results land on the incident's timeline; the incident is triaged as not serious and closed, and
both services' audit chains verify.
"""

from __future__ import annotations

from typing import Any

import pytest

from incident.app import create_app as create_incident
from incident.settings import IncidentSettings
from incident.signals import Signal
from linegate.auth import Role
from linegate.embedded import free_port
from linegate.testing.fixtures import bearer
from tests.edge_gateway.conftest import (
    MODEL,
    SERVICE_PASSWORD,
    SERVICE_USER,
    Line,
    _no_periodic_evaluator,  # noqa: F401  (autouse: the test drives the rollout evaluator)
    line,  # noqa: F401  (the gateway, the secured nats-server and two registered devices)
    wait_for,
)

WHY = "escapes 4.1% on the night shift while the model passes 97%: confident but wrong"

pytestmark = pytest.mark.e2e


class Desk:
    """The incident service as responders use it."""

    def __init__(self, app: Any, client: Any, mint: Any) -> None:
        self.app, self.client, self.mint = app, client, mint

    def auth(self, role: Role = Role.RESPONDER, sub: str = "rita-responder") -> dict[str, str]:
        return bearer(self.mint(role, sub=sub))

    async def post(self, path: str, body: dict[str, Any], **auth: Any) -> dict[str, Any]:
        r = await self.client.post(path, json=body, headers=self.auth(**auth))
        assert r.status_code in (200, 201), (path, r.text)
        return r.json()  # type: ignore[no-any-return]

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.client.get(path, params=params, headers=self.auth(Role.AUDITOR))
        assert r.status_code == 200, (path, r.text)
        return r.json()

    async def approved_action(self, incident_id: str, kind: str, step: str, **body: Any) -> str:
        """Propose ``kind``, have two other responders approve it, wait for the gateway's
        result on the incident; returns the action id."""
        action = await self.post(
            f"/v1/incidents/{incident_id}/actions",
            {"action": kind, "step_id": step, "rationale": WHY, **body},
        )
        for approver in ("sam-responder", "ute-responder"):
            await self.post(
                f"/v1/incidents/{incident_id}/actions/{action['id']}/approvals",
                {"rationale": f"{approver}: figures checked with QA, agree"},
                sub=approver,
            )

        async def done() -> bool:
            for a in await self.get(f"/v1/incidents/{incident_id}/actions"):
                if a["id"] == action["id"]:
                    assert a["state"] != "failed", a
                    return bool(a["state"] == "done")
            return False

        await wait_for(done, f"the gateway to carry out {kind}")
        return str(action["id"])


async def test_escapes_on_line_3_end_in_manual_inspection_and_a_rollback(
    line: Line,  # noqa: F811
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
) -> None:
    # Step 4 (condensed): 2.0.4 was released before, 2.1.0 now runs on line 3.
    await line.release("2.0.4", 2)
    await line.release("2.1.0", 3)
    for device_id in line.devices:
        line.start_agent(device_id)
    assert (await line.assign("2.1.0", line="line3")).status_code == 200
    await line.runs("2.1.0")

    settings = settings_factory(
        IncidentSettings,
        nats_url=line.nats.url,
        nats_user=SERVICE_USER,
        nats_password=SERVICE_PASSWORD,
        registry_url=f"http://127.0.0.1:{free_port()}",  # not running: default tier
        # ... and approvals of corrective actions are accepted, flagged as unchecked
        # (tests/incident/test_action_competence.py checks them against a real registry).
        competence_unverifiable="flag",
        monitor_interval_seconds=0,
    )
    app = create_incident(settings)
    async with service_client(app) as client:
        desk = Desk(app, client, mint_token)
        for queue, owner in (("qa", "Maria Keller"), ("data_science", "Dana Fischer")):
            rule = {
                "incident_type": "defect_escape",
                "queue": queue,
                "owner": owner,
                "acknowledge_within_minutes": 15,
                "reason": "escapes on line 3",
            }
            await desk.post("/v1/routing-rules", rule, role=Role.ADMIN, sub="admin")

        # The line runs: every decision is telemetry in the post-market log.
        decided = [await line.infer("cam-3-1", label) for label in ("ok", "scratch", "ok")]
        assert [d["decision"] for d in decided] == ["pass", "reject", "pass"]

        async def logged() -> bool:
            page = await desk.get("/v1/postmarket/events", device_id="cam-3-1", line="line3")
            items = page["items"] if isinstance(page, dict) else page
            return len(items) > 0

        await wait_for(logged, "the agent's telemetry in the post-market log", timeout=90)

        # Step 5: the outcome monitor's signal opens one incident for QA and data science.
        signal = Signal(
            incident_type="defect_escape",
            severity="high",
            dedup_key=f"outcome:{MODEL}:2.1.0:line3",
            summary=WHY,
            source="monitor:outcome",
            line="line3",
            model=MODEL,
            version="2.1.0",
            evidence={"risk_tier": 1, "escape_rate": 0.041, "pass_rate": 0.97},
        )
        async with app.state.ctx.db.session() as session:
            await app.state.signal_sink.raise_signal(session, signal)
        app.state.ctx.outbox.wake()
        incidents = await desk.get("/v1/incidents", status="active")
        incidents = incidents["items"] if isinstance(incidents, dict) else incidents
        assert len(incidents) == 1
        incident_id = incidents[0]["id"]
        incident = await desk.get(f"/v1/incidents/{incident_id}")
        assert {a["queue"] for a in incident["assignments"]} == {"qa", "data_science"}
        for state, why in (("acknowledged", "Maria on it"), ("investigating", "DS joins")):
            status = {"status": state, "reason": why}
            await desk.post(f"/v1/incidents/{incident_id}/status", status, sub="maria")

        # "Switch line 3 to manual inspection": a confident pass now goes to a person.
        await desk.approved_action(incident_id, "manual_inspection", "contain")

        async def manual() -> bool:
            decision = await line.infer("cam-3-1", "ok")
            return bool(decision["decision"] == "manual_inspection")

        await wait_for(manual, "cam-3-1 to send every part to manual inspection")
        assert (await line.infer("cam-3-2", "ok"))["decision"] == "manual_inspection"

        # "Roll back to 2.0.4", after the runbook's human gates.
        for gate in ("quarantine", "check-camera"):
            note = {"note": f"{gate}: lamp on W3 degraded, parts since 22:00 held"}
            await desk.post(f"/v1/incidents/{incident_id}/runbook/steps/{gate}", note)
        await desk.approved_action(incident_id, "rollback", "rollback", target_version="2.0.4")
        await line.runs("2.0.4")
        record = await line.device_record("cam-3-1")
        assert record["desired"]["rollback"], record

        triage = {
            "serious": False,
            "nis2_significant": False,
            "rationale": "held parts re-inspected; no defective seam left the plant",
        }
        await desk.post(f"/v1/incidents/{incident_id}/triage", triage)
        for state, why in (("mitigated", "2.0.4 back"), ("closed", "lamp replaced")):
            await desk.post(f"/v1/incidents/{incident_id}/status", {"status": state, "reason": why})
        kinds = [e["kind"] for e in await desk.get(f"/v1/incidents/{incident_id}/timeline")]
        assert kinds.count("action_result") == 2, kinds
        assert (await desk.get("/v1/audit/verify"))["ok"] is True
    gateway_audit = await line.client.get(
        "/v1/audit/verify", headers=bearer(mint_token(Role.AUDITOR))
    )
    assert gateway_audit.json()["ok"] is True, gateway_audit.json()
