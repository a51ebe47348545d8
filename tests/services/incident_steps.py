"""Driver steps for the incident service's state-changing routes (tests/services/
test_audit_routes.py): every route is driven to an acceptance through the real app, on real
NATS and a real database, and most to a refusal as well (a refusal must change nothing, or
bring its caller's audit entry with what it records).

The records the routes work on are made the way the service makes them: the incident through
the app's signal sink (the seam the monitors raise signals on), the maintenance ticket from a
device's MaintenanceAlertV1 on NATS. Both happen between probed requests and are waited for,
so no background write falls into a request's window. The app runs with its periodic tasks
off (escalation, the monitor runner) for the same reason.

Imported by the test itself, so that a half-built incident package cannot stop the other
services' checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func
from sqlmodel import col, select

from incident.signals import Signal
from linegate.auth import Role
from linegate.events import MaintenanceAlertV1, Subjects
from linegate.outbox import OutboxMessage
from linegate.testing.fixtures import bearer
from tests.services.audit_probe import AuditProbe

MODEL, VERSION, LINE = "weld-seam-inspector", "2.1.0", "line3"
RATIONALE = "escapes at 4% on line 3 night shift; contain before the next shift starts"
WHY = "a cracked seam reached a customer's assembly line; QA confirmed the model passed it"
R = Role.RESPONDER


def maintenance_public_key() -> str:
    """The maintenance team's public key (PEM): tickets are withheld without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def wait_for(predicate: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def _get(probe: AuditProbe, url: str, **params: Any) -> Any:
    """A read, outside the probe's bookkeeping (it changes nothing to check)."""
    headers = bearer(probe.mint(Role.AUDITOR, sub="audit-reader"))
    r = await probe.client.get(url, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def open_incident(probe: AuditProbe, **kw: Any) -> str:
    """An incident opened through the app's signal sink, as a monitor opens one."""
    values: dict[str, Any] = {
        "incident_type": "defect_escape",
        "severity": "high",
        "dedup_key": f"outcome:{MODEL}:{VERSION}:{LINE}",
        "summary": "escapes 4.1% on night shift while model pass rate stays 97%",
        "source": "monitor:outcome",
        "line": LINE,
        "model": MODEL,
        "version": VERSION,
        "evidence": {"escape_rate": 0.041, "baseline": 0.004},
        **kw,
    }
    ctx = probe.app.state.ctx
    async with ctx.db.session() as session:
        await probe.app.state.signal_sink.raise_signal(session, Signal(**values))
    ctx.outbox.wake()
    [incident] = [
        i
        for i in await _get(probe, "/v1/incidents", status="active")
        if i["dedup_key"] == values["dedup_key"]
    ]
    return str(incident["id"])


async def drive_incident(probe: AuditProbe, nc: Any) -> None:
    await drive_routing(probe)
    await drive_workflow(probe, await open_incident(probe))
    await drive_maintenance(probe, nc)
    await drive_monitors(probe)


async def drive_routing(probe: AuditProbe) -> None:
    rule = {
        "incident_type": "drift",
        "queue": "qa",
        "owner": "Lena Hoffmann",
        "acknowledge_within_minutes": 30,
        "reason": "QA owns drift on line 3",
    }
    r = await probe.call("POST", "/v1/routing-rules", Role.ADMIN, json=rule, expect=201)
    update = {"acknowledge_within_minutes": 15, "reason": "night shift staffed"}
    url = f"/v1/routing-rules/{r.json()['id']}"
    await probe.call("PATCH", url, R, json=update, expect=403)  # admins edit routing
    await probe.call("PATCH", url, Role.ADMIN, json=update, expect=200)
    snooze = {"dedup_key": "drift-line3-cam1", "minutes": 60, "reason": "lamp being replaced"}
    await probe.call("POST", "/v1/snoozes", R, json=snooze, expect=201)
    params = {"reason": "lamp replaced"}
    await probe.call("DELETE", "/v1/snoozes/drift-line3-cam1", R, params=params, expect=204)
    await probe.call("DELETE", "/v1/snoozes/drift-line3-cam1", R, params=params, expect=404)


async def drive_workflow(probe: AuditProbe, incident_id: str) -> None:
    base = f"/v1/incidents/{incident_id}"

    async def status(to: str, *, expect: int, role: Role = R) -> None:
        body = {"status": to, "reason": f"{to}: seen on the line"}
        await probe.call("POST", f"{base}/status", role, json=body, expect=expect)

    await status("mitigated", expect=409)  # an open incident is acknowledged first
    await status("acknowledged", role=Role.AUDITOR, expect=403)
    await status("acknowledged", expect=200)
    await status("investigating", expect=200)

    # Runbook outcome-escape v2: contain (action), quarantine and check-camera (human
    # gates), raise-threshold and rollback (actions), triage (decision), resume (action).
    steps = f"{base}/runbook/steps"
    note = {"note": "parts passed since 22:00 held at the gate"}
    await probe.call("POST", f"{steps}/contain", R, json=note, expect=409)  # via its action
    await probe.call("POST", f"{steps}/quarantine", R, json=note, expect=200)
    await probe.call("POST", f"{steps}/quarantine", R, json=note, expect=409)  # recorded

    actions = f"{base}/actions"
    contain = {"action": "manual_inspection", "step_id": "contain", "rationale": RATIONALE}
    await probe.call("POST", actions, Role.AUDITOR, json=contain, expect=403)
    await probe.call("POST", actions, R, json={**contain, "action": "rollback"}, expect=422)
    r = await probe.call("POST", actions, R, json=contain, expect=201)
    approvals = f"{actions}/{r.json()['id']}/approvals"
    approval = {"rationale": "checked the escape figures with QA; agree"}
    await probe.call("POST", approvals, Role.AUDITOR, json=approval, expect=403)
    await probe.call("POST", approvals, R, json={"rationale": "ok"}, expect=422)
    r = await probe.call("POST", approvals, R, json=approval, expect=201)
    assert r.json()["state"] == "sent", r.json()  # one approval suffices below critical
    await probe.call("POST", approvals, R, json=approval, expect=409)  # already sent

    threshold = {
        "action": "raise_threshold",
        "step_id": "raise-threshold",
        "threshold": 0.8,
        "rationale": RATIONALE,
    }
    r = await probe.call("POST", actions, R, json=threshold, expect=409)
    assert r.json()["pending_gates"] == ["check-camera"], r.json()
    await probe.call("POST", f"{steps}/check-camera", R, json=note, expect=200)
    r = await probe.call("POST", actions, R, json=threshold, expect=201)
    cancel = f"{actions}/{r.json()['id']}/cancel"
    reason = {"reason": "the camera lens was fogged; cleaned"}
    await probe.call("POST", cancel, Role.AUDITOR, json=reason, expect=403)
    await probe.call("POST", cancel, R, json=reason, expect=200)
    await probe.call("POST", cancel, R, json=reason, expect=409)  # only a pending one

    triage = f"{base}/triage"
    await probe.call("POST", triage, R, json={"serious": True, "rationale": WHY}, expect=422)
    decision = {"serious": True, "categories": ["health"], "rationale": WHY}
    await probe.call("POST", triage, R, json={**decision, "freeze_evidence": False}, expect=200)
    [clock] = await _get(probe, f"{base}/clocks")
    submission = f"{base}/clocks/{clock['id']}/submission"
    report = {"reference": "MSA-2026-0042"}
    await probe.call("POST", submission, Role.AUDITOR, json=report, expect=403)
    await probe.call("POST", submission, R, json=report, expect=200)
    await probe.call("POST", submission, R, json=report, expect=409)  # already submitted
    await probe.call("POST", f"{base}/clocks/999999/submission", R, json=report, expect=404)

    freeze = {"reason": "hold 2.1.0 as evidence"}
    await probe.call("POST", f"{base}/freeze", Role.AUDITOR, json=freeze, expect=403)
    await probe.call("POST", f"{base}/freeze", R, json=freeze, expect=201)
    await probe.call("POST", f"{base}/freeze", R, json=freeze, expect=409)  # held already
    release = f"{base}/freeze/release"
    await probe.call("POST", release, R, json={"rationale": "done"}, expect=422)
    rationale = {"rationale": "root cause fixed; the authority has the evidence"}
    await probe.call("POST", release, R, json=rationale, expect=200)
    await probe.call("POST", release, R, json=rationale, expect=409)  # nothing held


async def drive_maintenance(probe: AuditProbe, nc: Any) -> None:
    alert = MaintenanceAlertV1(
        actor="device:cam-3-1",
        asset="press-3-spindle",
        ewma=0.62,
        threshold=0.5,
        last_score=0.71,
        windows=412,
        model_digest="sha256:" + "ab" * 32,
    )

    async def subscribed() -> bool:
        return bool(probe.app.state.incidents.subscriptions)

    await wait_for(subscribed, "the incident consumers")  # assigned once all are in place
    await nc.jetstream(timeout=10).publish(
        Subjects.maintenance(alert.asset), alert.model_dump_json().encode()
    )

    async def tickets() -> Any:
        return await _get(probe, "/v1/maintenance-tickets", asset=alert.asset)

    [ticket] = await wait_for(tickets, "the maintenance ticket of the alert")
    url = f"/v1/maintenance-tickets/{ticket['id']}/acknowledge"
    note = {"note": "Kai takes it"}
    await probe.call("POST", url, Role.AUDITOR, json=note, expect=403)
    await probe.call("POST", url, R, json=note, expect=200)
    await probe.call("POST", url, R, json=note, expect=409)  # acknowledged already
    await probe.call("POST", "/v1/maintenance-tickets/nope/acknowledge", R, json=note, expect=404)
    # Closing the PdM incident closes its ticket too, in the same audited request.
    body = {"status": "closed", "reason": "spindle bearing replaced"}
    url = f"/v1/incidents/{ticket['incident_id']}/status"
    await probe.call("POST", url, R, json=body, expect=200)
    [closed] = await tickets()
    assert closed["status"] == "closed", closed


async def drive_monitors(probe: AuditProbe) -> None:
    group = f"/v1/monitors/{MODEL}/{VERSION}/{LINE}"
    change = {"thresholds": {"psi": 0.1}, "reason": "tighter after CAPA-12"}
    # Refused before the group exists: the configuration it would create is not kept.
    bad = {"thresholds": {"psi": -1}, "reason": "a typo"}
    await probe.call("PATCH", group, R, json=bad, expect=422)
    await probe.call("POST", f"{group}/evaluate", R, expect=404)  # no monitors yet
    await probe.call("PATCH", group, Role.AUDITOR, json=change, expect=403)
    await probe.call("PATCH", group, R, json=change, expect=200)
    await probe.call("POST", f"{group}/evaluate", Role.AUDITOR, expect=403)
    await probe.call("POST", f"{group}/evaluate", R, expect=200)

    feedback = {
        "line": LINE,
        "model": MODEL,
        "version": VERSION,
        "problem": "false_pass",
        "expected_decision": "reject",
        "comment": "porosity visible at the seam end, passed by the camera",
    }
    await probe.call("POST", "/v1/feedback", Role.AUDITOR, json=feedback, expect=403)
    await probe.call("POST", "/v1/feedback", R, json={**feedback, "line": "../x"}, expect=422)
    r = await probe.call("POST", "/v1/feedback", R, json=feedback, expect=201)
    assert r.json()["counted"] is True, r.json()


async def drain_outbox(app: Any) -> None:
    """Wait until every queued event is published, so the app stops with the relay idle
    (stopping it mid-flush on PostgreSQL can wedge the final audit checkpoint)."""
    ctx = app.state.ctx

    async def drained() -> bool:
        await ctx.outbox.flush()
        async with ctx.db.session() as session:
            stmt = select(func.count()).where(col(OutboxMessage.sent_at).is_(None))
            return bool((await session.exec(stmt)).one() == 0)

    await wait_for(drained, "the outbox to drain")


def settings_for_probe(registry_url: str) -> dict[str, Any]:
    """Settings that keep the app's own periodic writers out of the probed requests."""
    return {
        "escalation_interval_seconds": 0,
        "monitor_interval_seconds": 0,
        "registry_url": registry_url,
        "maintenance_public_key": maintenance_public_key(),
        # No registry answers: approvals are accepted, flagged as unchecked.
        "competence_unverifiable": "flag",
    }
