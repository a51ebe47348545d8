"""Human-approved incident actions and evidence freezes, carried out by the gateway on real
agents (per-device auth): every change reaches the device signed in its desired state, the
agent verifies it and its inference API obeys it; a replayed older document cannot undo it.
Actions arrive signed by the incident service (DSSE, its real key in the shared data dir);
unsigned, tampered, foreign-key, stale and replayed ones are refused, audited, and change
nothing. Evidence freezes travel signed the same way; the pinned key is read once; an action
id is claimed before the action is carried out, so a racing replay cannot run it twice."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from edge_gateway import distribution, incidents
from edge_gateway.models import DesiredState, IncidentAction
from edge_gateway.rollouts import evaluator
from incident.incidents.actions import ActionSigner
from incident.settings import IncidentSettings
from linegate.auth import Role
from linegate.events import (
    EvidenceFreezeV1,
    IncidentActionResultV1,
    IncidentActionV1,
    Subjects,
)
from linegate.signing import dsse_sign, generate_private_key, public_key_pem
from linegate.testing.fixtures import bearer
from tests.edge_gateway.conftest import MODEL, PLANT, Line, wait_for

APPROVERS = ["rita-responder", "quinn-qa"]


def incident_signer(t: Line) -> ActionSigner:
    """The incident service's own signer on the gateway's data dir, as in ``linegate up``:
    it writes the public key where the gateway looks for it by default."""
    return ActionSigner.from_settings(IncidentSettings(data_dir=t.gw.settings.data_dir))


def approved(action: str, **fields: Any) -> IncidentActionV1:
    return IncidentActionV1(
        actor="quinn-qa",
        action_id=uuid.uuid4().hex,
        incident_id="inc-42",
        action=action,  # type: ignore[arg-type]
        model=MODEL,
        approved_by=APPROVERS,
        rationale="line 3 lighting degraded; escapes at incoming inspection",
        **fields,
    )


async def send(t: Line, subject: str, body: bytes, action_id: str) -> IncidentActionResultV1:
    """Publish ``body`` on ``subject``; return the gateway's result for ``action_id``."""
    results = await t.service.subscribe(Subjects.INCIDENT_ACTION_RESULT)
    try:
        await t.service.jetstream().publish(subject, body)
        while True:
            result = IncidentActionResultV1.model_validate_json((await results.next_msg(30)).data)
            if result.action_id == action_id:
                return result
    finally:
        await results.unsubscribe()


async def act(t: Line, action: str, **fields: Any) -> IncidentActionResultV1:
    """Publish an approved action as the incident service does; return the gateway's result."""
    event = approved(action, **fields)
    body = json.dumps(incident_signer(t).envelope(event)).encode()
    return await send(t, Subjects.incident_action(action), body, event.action_id)


async def obeyed(
    line: Line, device_id: str, check: Any, *, label: str = "ok", seed: int = 0
) -> Any:
    """Infer until the response satisfies ``check`` (the agent applies orders as they come)."""

    async def ok() -> Any:
        r = await line.infer(device_id, label, seed)
        return r if check(r) else None

    return await wait_for(ok, f"{device_id} to obey the order")


async def test_manual_inspection_thresholds_and_rollback_reach_the_agents_signed(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.1.0", line="line3")).status_code == 200
    for device_id in line.devices:
        line.start_agent(device_id)
    await line.runs("2.1.0")
    confidences = {
        seed: (await line.infer("cam-3-1", "ok", seed))["confidence"] for seed in range(8)
    }
    low, high = min(confidences, key=confidences.get), max(confidences, key=confidences.get)
    limit = round((confidences[low] + confidences[high]) / 2, 4)
    assert confidences[low] < limit < confidences[high]
    before = await line.desired_doc("cam-3-1")

    result = await act(line, "manual_inspection", line="line3", version="2.1.0")
    assert (result.outcome, sorted(result.devices)) == ("done", ["cam-3-1", "cam-3-2"])
    for device_id in line.devices:
        r = await obeyed(line, device_id, lambda r: r["decision"] == "manual_inspection")
        assert r["control_incident_id"] == "inc-42"
        assert "inc-42 orders manual inspection" in r["reason"]
        # A confident defect goes to a person too, never a silent reject or pass.
        r = await line.infer(device_id, "scratch")
        assert (r["decision"], r["label"]) == ("manual_inspection", "scratch")

    # Whoever can write the bucket cannot lift the order by replaying the older document.
    kv = await line.service.jetstream().key_value("desired")
    await kv.put("cam-3-1", before)

    async def refused() -> bool:
        record = await line.device_record("cam-3-1")
        return record["last_state"] == "refused" and "replay" in (record["last_detail"] or "")

    await wait_for(refused, "the agent to refuse the replay")
    assert (await line.infer("cam-3-1", "ok"))["decision"] == "manual_inspection"
    await distribution.publish_desired(line.gw)  # the gateway repairs the bucket

    result = await act(line, "raise_threshold", line="line3", threshold=limit)
    assert result.outcome == "done"
    await obeyed(line, "cam-3-2", lambda r: r["threshold"] == limit)
    result = await act(line, "resume_automatic", line="line3", version="2.1.0")
    assert result.outcome == "done"
    for device_id in line.devices:
        r = await obeyed(line, device_id, lambda r: r["decision"] == "pass", seed=high)
        # Automatic again, at the raised threshold: the least confident part goes to a person.
        assert r["threshold"] == limit
        r = await line.infer(device_id, "ok", low)
        assert r["decision"] == "manual_inspection"
        assert f"below the threshold {limit:g}" in r["reason"]
        assert (await line.infer(device_id, "ok", high))["decision"] == "pass"

    result = await act(line, "rollback", line="line3", version="2.1.0", target_version="2.0.4")
    assert (result.outcome, sorted(result.devices)) == ("done", ["cam-3-1", "cam-3-2"])
    await line.runs("2.0.4")
    block = line.release_block(await line.desired_doc("cam-3-2"))
    assert block["rollback"]["incident_id"] == "inc-42"
    assert block["rollback"]["approved_by"] == APPROVERS
    assert block["device"]["control"]["threshold"] == f"{limit:g}"  # the order stays
    r = await line.infer("cam-3-2", "ok", high)
    assert (r["version"], r["decision"]) == ("2.0.4", "pass")

    # An action that matches no device fails, and says why; each action is audited once.
    result = await act(line, "manual_inspection", line="line9")
    assert result.outcome == "failed"
    assert "no device on line line9" in (result.detail or "")
    entries = await audit_entries(line)
    actions = [
        (e["action"], e["actor"], e["subject"])
        for e in entries
        if e["action"].startswith("incident_action.")
    ]
    assert actions == [
        (f"incident_action.{kind}", "quinn-qa", "incident:inc-42")
        for kind in (
            "manual_inspection",
            "raise_threshold",
            "resume_automatic",
            "rollback",
            "manual_inspection",
        )
    ]
    async with line.gw.db.session() as session:
        rows = (await session.exec(select(IncidentAction))).all()
    assert sorted(r.outcome for r in rows) == ["done"] * 4 + ["failed"]


async def audit_entries(t: Line, *actions: str) -> list[dict[str, Any]]:
    """The gateway's audit entries as the API lists them: those of ``actions`` if any are named."""
    r = await t.client.get(
        "/v1/audit/entries", params={"limit": 1000}, headers=bearer(t.mint(Role.AUDITOR))
    )
    return [e for e in r.json() if not actions or e["action"] in actions]


async def await_audited(t: Line, action: str, count: int) -> list[dict[str, Any]]:
    """Wait until the audit log holds ``count`` entries of ``action``; returns them."""

    async def enough() -> list[dict[str, Any]] | None:
        found = await audit_entries(t, action)
        return found if len(found) == count else None

    found: list[dict[str, Any]] = await wait_for(enough, f"{count} {action} entries")
    return found


async def refusals(t: Line) -> list[dict[str, Any]]:
    return await audit_entries(t, "incident_action.refused")


async def test_unsigned_tampered_foreign_stale_and_replayed_actions_are_refused(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.1.0", line="line3")).status_code == 200
    signer = incident_signer(line)
    subject = Subjects.incident_action("rollback")
    rollback = approved("rollback", line="line3", version="2.1.0", target_version="2.0.4")
    genuine = json.dumps(signer.envelope(rollback)).encode()
    result = await send(line, subject, genuine, rollback.action_id)
    assert (result.outcome, sorted(result.devices)) == ("done", ["cam-3-1", "cam-3-2"])
    assert line.release_block(await line.desired_doc("cam-3-1"))["version"] == "2.0.4"
    assert (await line.assign("2.1.0", line="line3")).status_code == 200  # the line is fixed

    async with line.gw.db.session() as session:
        revisions = {d.device_id: d.revision for d in (await session.exec(select(DesiredState)))}

    def signed(event: IncidentActionV1, key: Any = None) -> bytes:
        envelope = dsse_sign(
            event.model_dump_json().encode(), IncidentActionV1.PAYLOAD_TYPE, key or signer.key
        )
        return json.dumps(envelope).encode()

    other = approved("rollback", line="line3", version="2.1.0", target_version="2.0.4")
    tampered = json.loads(signed(other))
    claim = json.loads(base64.b64decode(tampered["payload"]))
    tampered["payload"] = base64.b64encode(
        json.dumps({**claim, "line": None}).encode()  # every line, not line 3
    ).decode()
    forged_under = f"nats:{subject}"  # not in the incident's trail: nothing says it is real
    misrouted = approved("manual_inspection", line="line3", version="2.1.0")
    cases = [
        (subject, other.model_dump_json().encode(), "unsigned: not a DSSE envelope", forged_under),
        (subject, json.dumps(tampered).encode(), "bad signature", forged_under),
        (subject, signed(other, generate_private_key()), "bad signature", forged_under),
        (
            subject,
            genuine,
            f"replayed: action {rollback.action_id} was already handled",
            "incident:inc-42",
        ),
        # Genuinely signed, but sent where another kind of action is carried out.
        (subject, signed(misrouted), f"a manual_inspection action on {subject}", "incident:inc-42"),
    ]
    for n, (where, body, reason, audited_under) in enumerate(cases, 1):
        await line.service.jetstream().publish(where, body)
        entry = (await await_audited(line, "incident_action.refused", n))[-1]
        assert entry["reason"].startswith(reason), entry
        assert (entry["actor"], entry["subject"]) == ("service:edge-gateway", audited_under)

    # A genuine action issued outside the window: refused, and the refusal is the result.
    stale = approved(
        "rollback",
        line="line3",
        version="2.1.0",
        target_version="2.0.4",
        occurred_at=datetime.now(UTC) - timedelta(hours=2),
    )
    result = await send(line, subject, signed(stale), stale.action_id)
    assert (result.outcome, result.devices) == ("failed", [])
    assert (result.detail or "").startswith("refused: stale: issued at")
    [entry] = (await refusals(line))[len(cases) :]
    assert entry["reason"].startswith("stale")

    # Nothing was rolled back or re-issued; only the genuine action was carried out.
    for device_id in line.devices:
        assert line.release_block(await line.desired_doc(device_id))["version"] == "2.1.0"
    async with line.gw.db.session() as session:
        now = {d.device_id: d.revision for d in (await session.exec(select(DesiredState)))}
        rows = {r.action_id: r.outcome for r in (await session.exec(select(IncidentAction)))}
    assert now == revisions
    assert rows == {rollback.action_id: "done", stale.action_id: "refused"}


def freeze_event(
    version: str, incident_id: str, frozen: bool = True, **kw: Any
) -> EvidenceFreezeV1:
    fields: dict[str, Any] = {
        "actor": "rita-responder",
        "reason": "evidence for the escape investigation",
        **kw,
    }
    return EvidenceFreezeV1(
        incident_id=incident_id, model=MODEL, version=version, frozen=frozen, **fields
    )


async def freeze(line: Line, version: str, incident_id: str, frozen: bool = True) -> None:
    """Publish a freeze (or release) signed as the incident service does."""
    event = freeze_event(version, incident_id, frozen)
    body = json.dumps(incident_signer(line).envelope(event)).encode()
    await line.service.jetstream().publish(Subjects.INCIDENT_FREEZE, body)


async def test_a_frozen_version_is_not_assigned_started_or_advanced_until_released(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    body = {
        "model": MODEL,
        "version": "2.1.0",
        "selector": {"plant": PLANT},
        "stages": [{"kind": "canary", "line": "line3", "soak_seconds": 0}],
        "reason": "2.1.0 on line 3",
    }
    running = (await line.client.post("/v1/rollouts", json=body, headers=line.ops())).json()["id"]
    draft = (await line.client.post("/v1/rollouts", json=body, headers=line.ops())).json()["id"]
    r = await line.client.post(
        f"/v1/rollouts/{running}/start", json={"reason": "go"}, headers=line.ops()
    )
    assert r.status_code == 200, r.text

    await freeze(line, "2.1.0", "inc-7")

    async def frozen() -> bool:
        # Polling with assignments instead would assign 2.1.0 while the event is in flight.
        async with line.gw.db.session() as session:
            return await distribution.frozen(session, MODEL, "2.1.0") is not None

    await wait_for(frozen, "the freeze to reach the gateway")
    listed = await line.client.get("/v1/frozen-versions", headers=bearer(line.mint(Role.AUDITOR)))
    assert listed.status_code == 200, listed.text
    assert [(f["model"], f["version"], f["incident_id"]) for f in listed.json()] == [
        (MODEL, "2.1.0", "inc-7")
    ]
    supplier = bearer(line.mint(Role.SUPPLIER, tenant="optivision"))
    assert (await line.client.get("/v1/frozen-versions", headers=supplier)).status_code == 403
    assert (await line.client.get("/v1/frozen-versions")).status_code == 401
    r = await line.assign("2.1.0", device_ids=["cam-3-1"])
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["incident_id"] == "inc-7"
    assert "frozen as evidence by incident inc-7" in r.json()["detail"]

    # The running rollout neither installs nor advances; commands that would go on are refused.
    await evaluator.evaluate(line.gw, now=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    s = (await line.client.get(f"/v1/rollouts/{running}", headers=line.ops())).json()
    assert s["evaluation"]["blocking"][0].startswith("frozen as evidence by incident inc-7")
    assert {d["state"] for d in s["devices"]} == {"waiting_window"}
    assert line.release_block(await line.desired_doc("cam-3-1"))["version"] == "2.0.4"
    r = await line.client.post(
        f"/v1/rollouts/{running}/pause", json={"reason": "hold"}, headers=line.ops()
    )
    assert r.status_code == 200, r.text
    for rollout, command in ((running, "resume"), (draft, "start")):
        r = await line.client.post(
            f"/v1/rollouts/{rollout}/{command}", json={"reason": "x"}, headers=line.ops()
        )
        assert r.status_code == 409, (command, r.text)
        assert r.json()["incident_id"] == "inc-7"

    # Only the incident that froze it releases it (freezes are handled in order).
    await freeze(line, "2.1.0", "inc-8", frozen=False)
    await freeze(line, "2.0.4", "inc-9")

    async def second_freeze() -> bool:
        return (await line.assign("2.0.4", device_ids=["cam-3-1"])).status_code == 409

    await wait_for(second_freeze, "the second freeze")
    assert (await line.assign("2.1.0", device_ids=["cam-3-1"])).status_code == 409
    await freeze(line, "2.1.0", "inc-7", frozen=False)

    async def released() -> bool:
        return (await line.assign("2.1.0", device_ids=["cam-3-2"])).status_code == 200

    await wait_for(released, "the release of the freeze")
    listed = await line.client.get("/v1/frozen-versions", headers=bearer(line.mint(Role.AUDITOR)))
    assert [(f["version"], f["incident_id"]) for f in listed.json()] == [("2.0.4", "inc-9")]
    audit = await audit_entries(line)
    freezes = [
        (e["action"], e["subject"], e["actor"])
        for e in audit
        if e["action"] in ("release.frozen", "release.unfrozen")
    ]
    assert freezes == [
        ("release.frozen", f"model:{MODEL}@2.1.0", "rita-responder"),
        ("release.frozen", f"model:{MODEL}@2.0.4", "rita-responder"),
        ("release.unfrozen", f"model:{MODEL}@2.1.0", "rita-responder"),
    ]


async def freeze_refusals(t: Line) -> list[dict[str, Any]]:
    return await audit_entries(t, "evidence_freeze.refused")


async def frozen_by(t: Line, version: str) -> str | None:
    async with t.gw.db.session() as session:
        row = await distribution.frozen(session, MODEL, version)
    return row.incident_id if row is not None else None


async def test_forged_foreign_replayed_and_stale_freeze_releases_are_refused(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    signer = incident_signer(line)
    subject = Subjects.INCIDENT_FREEZE
    await freeze(line, "2.1.0", "inc-7")

    async def frozen_by_inc_7() -> bool:
        return await frozen_by(line, "2.1.0") == "inc-7"

    await wait_for(frozen_by_inc_7, "the genuine freeze")

    def signed(event: EvidenceFreezeV1, key: Any = None, payload_type: str = "") -> bytes:
        envelope = dsse_sign(
            event.model_dump_json().encode(),
            payload_type or EvidenceFreezeV1.PAYLOAD_TYPE,
            key or signer.key,
        )
        return json.dumps(envelope).encode()

    release = freeze_event("2.1.0", "inc-7", frozen=False)
    forged_under = f"nats:{subject}"
    cases = [
        # A forged release would let rollouts of the frozen version reach devices again.
        (release.model_dump_json().encode(), "unsigned: not a DSSE envelope", forged_under),
        (signed(release, generate_private_key()), "bad signature", forged_under),
        # A forged freeze under another incident would take the version over.
        (freeze_event("2.1.0", "inc-666").model_dump_json().encode(), "unsigned", forged_under),
        # Genuinely signed, but as an action: one payload type never passes for the other.
        (signed(release, payload_type=IncidentActionV1.PAYLOAD_TYPE), "payloadType", forged_under),
        (
            signed(
                freeze_event(
                    "2.1.0",
                    "inc-7",
                    frozen=False,
                    occurred_at=datetime.now(UTC) - timedelta(hours=2),
                )
            ),
            "stale: issued at",
            "incident:inc-7",
        ),
    ]
    for n, (body, reason, audited_under) in enumerate(cases, 1):
        await line.service.jetstream().publish(subject, body)
        entry = (await await_audited(line, "evidence_freeze.refused", n))[-1]
        assert entry["reason"].startswith(reason), entry
        assert (entry["actor"], entry["subject"]) == ("service:edge-gateway", audited_under)
        assert await frozen_by(line, "2.1.0") == "inc-7"
    assert (await line.assign("2.1.0", device_ids=["cam-3-1"])).status_code == 409

    # The genuine release, a new freeze by the same incident, then the release replayed.
    genuine_release = signed(release)
    await line.service.jetstream().publish(subject, genuine_release)

    async def released() -> bool:
        return await frozen_by(line, "2.1.0") is None

    await wait_for(released, "the genuine release")
    await freeze(line, "2.1.0", "inc-7")
    await wait_for(frozen_by_inc_7, "the second freeze")
    await line.service.jetstream().publish(subject, genuine_release)

    entry = (await await_audited(line, "evidence_freeze.refused", len(cases) + 1))[-1]
    assert entry["reason"].startswith(f"replayed: evidence freeze {release.event_id}")
    assert entry["subject"] == "incident:inc-7"
    assert await frozen_by(line, "2.1.0") == "inc-7"

    # A freeze is applied whatever its age: holding a version is the safe direction.
    old = freeze_event("2.0.4", "inc-9", occurred_at=datetime.now(UTC) - timedelta(hours=2))
    await line.service.jetstream().publish(subject, signed(old))

    async def old_freeze_held() -> bool:
        return await frozen_by(line, "2.0.4") == "inc-9"

    await wait_for(old_freeze_held, "the late freeze")


async def holders(t: Line, version: str) -> list[str]:
    async with t.gw.db.session() as session:
        return [h.incident_id for h in await distribution.freeze_holds(session, MODEL, version)]


async def test_a_version_frozen_by_several_incidents_stays_frozen_until_each_released_it(
    line: Line,
) -> None:
    await line.release("2.1.0", 2)
    signer = incident_signer(line)
    subject = Subjects.INCIDENT_FREEZE

    def signed(event: EvidenceFreezeV1, key: Any = None) -> bytes:
        envelope = dsse_sign(
            event.model_dump_json().encode(), EvidenceFreezeV1.PAYLOAD_TYPE, key or signer.key
        )
        return json.dumps(envelope).encode()

    async def held_by(*incident_ids: str) -> None:
        async def check() -> bool:
            return await holders(line, "2.1.0") == list(incident_ids)

        await wait_for(check, f"2.1.0 to be held by {incident_ids}")

    a = freeze_event("2.1.0", "inc-a", reason="first escape: seam images")
    b = freeze_event("2.1.0", "inc-b", reason="second escape: porosity", actor="sam-responder")
    await line.service.jetstream().publish(subject, signed(a))
    await held_by("inc-a")
    await line.service.jetstream().publish(subject, signed(b))
    await held_by("inc-a", "inc-b")

    listed = await line.client.get("/v1/frozen-versions", headers=bearer(line.mint(Role.AUDITOR)))
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()
    # The existing fields are the oldest hold's; every hold is listed with its own story.
    assert (entry["model"], entry["version"], entry["incident_id"]) == (MODEL, "2.1.0", "inc-a")
    assert entry["reason"] == a.reason
    assert [(h["incident_id"], h["reason"], h["frozen_by"]) for h in entry["holds"]] == [
        ("inc-a", a.reason, "rita-responder"),
        ("inc-b", b.reason, "sam-responder"),
    ]
    assert entry["frozen_at"] == entry["holds"][0]["frozen_at"]

    # B's release removes only B's hold: A still holds 2.1.0 as evidence.
    b_release = freeze_event("2.1.0", "inc-b", frozen=False, actor="sam-responder")
    await line.service.jetstream().publish(subject, signed(b_release))
    await held_by("inc-a")
    r = await line.assign("2.1.0", device_ids=["cam-3-1"])
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (r.json()["incident_id"], r.json()["incident_ids"]) == ("inc-a", ["inc-a"])
    listed = await line.client.get("/v1/frozen-versions", headers=bearer(line.mint(Role.AUDITOR)))
    assert [[h["incident_id"] for h in f["holds"]] for f in listed.json()] == [["inc-a"]]

    # A forged release of A's hold, and B's release replayed, change nothing.
    a_release = freeze_event("2.1.0", "inc-a", frozen=False)
    await line.service.jetstream().publish(subject, signed(a_release, generate_private_key()))
    await line.service.jetstream().publish(subject, signed(b_release))

    forged, replayed = await await_audited(line, "evidence_freeze.refused", 2)
    assert forged["reason"].startswith("bad signature")
    assert forged["subject"] == f"nats:{subject}"
    assert replayed["reason"].startswith(f"replayed: evidence freeze {b_release.event_id}")
    assert replayed["subject"] == "incident:inc-b"
    assert await holders(line, "2.1.0") == ["inc-a"]
    assert (await line.assign("2.1.0", device_ids=["cam-3-1"])).status_code == 409

    # A's genuine release lifts the last hold: 2.1.0 may be deployed again.
    await line.service.jetstream().publish(subject, signed(a_release))
    await held_by()
    assert (await line.assign("2.1.0", device_ids=["cam-3-1"])).status_code == 200
    listed = await line.client.get("/v1/frozen-versions", headers=bearer(line.mint(Role.AUDITOR)))
    assert listed.json() == []

    audit = await audit_entries(line)
    freezes = ("release.frozen", "release.hold_released", "release.unfrozen")
    changes = [
        (e["action"], e["subject"], e["actor"], e["reason"])
        for e in audit
        if e["action"] in freezes
    ]
    # Only the release of the last hold is audited as the version's unfreeze.
    version = f"model:{MODEL}@2.1.0"
    assert changes == [
        ("release.frozen", version, "rita-responder", a.reason),
        ("release.frozen", version, "sam-responder", b.reason),
        ("release.hold_released", version, "sam-responder", b_release.reason),
        ("release.unfrozen", version, "rita-responder", a_release.reason),
    ]


async def test_the_key_is_pinned_once_missing_refuses_and_a_replaced_file_is_not_trusted(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.1.0", line="line3")).status_code == 200
    # No incident service has written its key yet: nothing verifies, everything is refused.
    stranger = generate_private_key()
    early = approved("manual_inspection", line="line3", version="2.1.0")
    body = dsse_sign(early.model_dump_json().encode(), IncidentActionV1.PAYLOAD_TYPE, stranger)
    await line.service.jetstream().publish(
        Subjects.incident_action("manual_inspection"), json.dumps(body).encode()
    )

    async def first() -> list[dict[str, Any]] | None:
        return (await refusals(line)) or None

    [entry] = await wait_for(first, "the refusal without a key")
    assert entry["reason"].startswith("no incident-service key pinned at"), entry

    # The incident service writes its key; the next action pins it.
    result = await act(line, "manual_inspection", line="line3", version="2.1.0")
    assert result.outcome == "done"

    # Whoever replaces the file afterwards (another container on the keys volume) gains
    # nothing until a restart: an action signed with the new key is refused.
    path = line.gw.settings.incident_action_key_path
    path.write_bytes(public_key_pem(stranger.public_key()))
    forged = approved("resume_automatic", line="line3", version="2.1.0")
    body = dsse_sign(forged.model_dump_json().encode(), IncidentActionV1.PAYLOAD_TYPE, stranger)
    await line.service.jetstream().publish(
        Subjects.incident_action("resume_automatic"), json.dumps(body).encode()
    )

    entry = (await await_audited(line, "incident_action.refused", 2))[-1]
    assert entry["reason"].startswith("bad signature"), entry
    async with line.gw.db.session() as session:
        assert await session.get(IncidentAction, forged.action_id) is None


async def test_an_action_is_claimed_once_and_a_stale_claim_is_reported_failed(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.1.0", line="line3")).status_code == 200
    signer = incident_signer(line)
    pinned = incidents.PinnedKey(line.gw.settings.incident_action_key_path)
    subject = Subjects.incident_action("rollback")
    async with line.gw.db.session() as session:
        before = {d.device_id: d.revision for d in (await session.exec(select(DesiredState)))}

    # The genuine delivery and a replay racing it: exactly one carries the rollback out.
    rollback = approved("rollback", line="line3", version="2.1.0", target_version="2.0.4")
    raw = json.dumps(signer.envelope(rollback)).encode()
    results = await asyncio.gather(
        incidents.receive(line.gw, pinned, subject, raw),
        incidents.receive(line.gw, pinned, subject, raw),
    )
    assert sorted(r.outcome if r else "none" for r in results) == ["done", "none"]
    async with line.gw.db.session() as session:
        after = {d.device_id: d.revision for d in (await session.exec(select(DesiredState)))}
    assert {d: after[d] - before[d] for d in before} == {"cam-3-1": 1, "cam-3-2": 1}
    entries = await audit_entries(line)
    carried = [e for e in entries if e["action"] == "incident_action.rollback"]
    assert len(carried) == 1
    [refusal] = await refusals(line)
    assert refusal["reason"].startswith(f"replayed: action {rollback.action_id}")

    # A claim still held (another replica at work): a redelivery waits, a replay is refused.
    held = approved("manual_inspection", line="line3", version="2.1.0")
    stale = approved("manual_inspection", line="line3", version="2.1.0")
    crashed = approved("raise_threshold", line="line3", threshold=0.9)
    now = datetime.now(UTC)
    timeout = timedelta(seconds=line.gw.settings.incident_action_claim_timeout_seconds)
    async with line.gw.db.session() as session:
        for event, at in ((held, now), (stale, now - 2 * timeout), (crashed, now - 2 * timeout)):
            row = incidents._record(event, incidents.IN_PROGRESS, [], "claimed")
            row.received_at = at
            session.add(row)
    held_raw = json.dumps(signer.envelope(held)).encode()
    held_subject = Subjects.incident_action("manual_inspection")
    with pytest.raises(incidents.ActionInProgress):
        await incidents.receive(line.gw, pinned, held_subject, held_raw, redelivered=True)
    assert await incidents.receive(line.gw, pinned, held_subject, held_raw) is None
    assert (await refusals(line))[-1][
        "reason"
    ] == f"replayed: action {held.action_id} is being carried out"

    # A stale claim (the gateway stopped mid-action) is settled as failed and reported: by
    # its redelivery, or at the gateway's start for one that is never redelivered.
    stale_raw = json.dumps(signer.envelope(stale)).encode()
    result = await incidents.receive(line.gw, pinned, held_subject, stale_raw, redelivered=True)
    assert result is not None
    assert result.outcome == "failed"
    assert (result.detail or "").startswith("interrupted: claimed at")
    reported = await line.service.subscribe(Subjects.INCIDENT_ACTION_RESULT)
    try:
        [recovered] = await incidents.recover_interrupted(line.gw)
        assert (recovered.action_id, recovered.outcome) == (crashed.action_id, "failed")
        while True:
            msg = IncidentActionResultV1.model_validate_json((await reported.next_msg(30)).data)
            if msg.action_id == crashed.action_id:
                break
        assert msg.outcome == "failed"
        assert "propose it again" in (msg.detail or "")
    finally:
        await reported.unsubscribe()
    async with line.gw.db.session() as session:
        rows = {r.action_id: r.outcome for r in (await session.exec(select(IncidentAction)))}
    assert rows == {
        rollback.action_id: "done",
        held.action_id: incidents.IN_PROGRESS,
        stale.action_id: "failed",
        crashed.action_id: "failed",
    }
    assert await incidents.recover_interrupted(line.gw) == []  # the held claim is not stale
