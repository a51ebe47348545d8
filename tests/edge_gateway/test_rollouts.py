"""Rollout plans on a real gateway, real NATS and a real database: devices report and publish
telemetry the way the agent does (the same JSON on the same subjects), and the evaluator is
driven at chosen instants instead of sleeping.

Releases are put into the gateway's tables directly, signed with its own key: how a release
gets there from the registry is test_distribution's subject, and skipping it keeps this file
fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest

from edge_gateway import distribution
from edge_gateway.app import create_app as create_gateway
from edge_gateway.models import DeviceKpi, Release
from edge_gateway.rollouts import evaluator
from edge_gateway.rollouts.calendar import is_open, next_opening
from edge_gateway.rollouts.schemas import MaintenanceWindow
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.embedded import free_port
from linegate.events import (
    DeviceStatusV1,
    InferenceBatchV1,
    InferenceRecordV1,
    InputStatsV1,
    Subjects,
)
from linegate.nats_auth import read_desired
from linegate.testing.fixtures import bearer
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings
from tests.registry.conftest import RegistryClient

MODEL = "weld-seam-inspector"
PLANT = "wolfsburg"
#: A Monday, 05:50 in Berlin (CET): inside the 05:45-06:15 changeover.
T0 = datetime(2026, 3, 2, 4, 50, tzinfo=UTC)
DEVICES = {"cam-3-1": "line3", "cam-3-2": "line3", "cam-4-1": "line4", "cam-4-2": "line4"}
REASON = "weld-seam-inspector 2.1.0: fewer false rejects on porosity"
CHANGEOVER = {
    "days": ["mon", "tue", "wed"],
    "start": "05:45",
    "end": "06:15",
    "tz": "Europe/Berlin",
}


async def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Plant:
    """The gateway with two releases, four devices on two lines, all on 2.0.4."""

    def __init__(self, client: Any, app: Any, mint: Any, nc: Any) -> None:
        self.client = client
        self.app = app
        self.gw: distribution.Gateway = app.state.gateway
        self.mint = mint
        self.nc = nc
        self.js = nc.jetstream(timeout=10)

    def ops(self, sub: str = "ot-engineer") -> dict[str, str]:
        return bearer(self.mint(Role.REGISTRY_APPROVE, sub=sub))

    async def seed_release(self, version: str, security_version: int) -> None:
        digest = hashlib.sha256(version.encode()).hexdigest()
        release = Release(
            id=uuid.uuid4().hex,
            model=MODEL,
            version=version,
            security_version=security_version,
            artefact_digest=digest,
            manifest_digest=digest,
            files=[{"path": "model.onnx", "length": 1, "sha256": digest}],
            metadata_json="",
            expires_at=datetime.now(UTC),
            created_at=datetime.now(UTC),
        )
        release.metadata_json, release.expires_at = distribution._sign(
            self.gw, release, metadata_version=1
        )
        async with self.gw.db.session() as session:
            session.add(release)

    async def setup(self) -> None:
        await self.seed_release("2.0.4", 1)
        await self.seed_release("2.1.0", 2)
        admin = bearer(self.mint(Role.ADMIN))
        for device_id, line in DEVICES.items():
            body = {"id": device_id, "plant": PLANT, "line": line, "station": "W3"}
            r = await self.client.post("/v1/devices", json=body, headers=admin)
            assert r.status_code == 201, r.text
        body = {
            "model": MODEL,
            "version": "2.0.4",
            "selector": {"plant": PLANT},
            "reason": "baseline",
        }
        r = await self.client.post("/v1/assignments", json=body, headers=self.ops())
        assert r.status_code == 200, r.text

    # ---------------------------------------------------------------- API

    async def create(self, stages: list[dict[str, Any]], **kw: Any) -> str:
        body = {
            "model": MODEL,
            "version": "2.1.0",
            "selector": {"plant": PLANT},
            "stages": stages,
            "reason": REASON,
            **kw,
        }
        r = await self.client.post("/v1/rollouts", json=body, headers=self.ops())
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "draft"
        return str(r.json()["id"])

    async def cmd(self, rollout_id: str, action: str, reason: str = "", **kw: Any) -> Any:
        return await self.client.post(
            f"/v1/rollouts/{rollout_id}/{action}",
            json={"reason": reason or f"{action} by the test"},
            headers=kw.get("headers") or self.ops(),
        )

    async def ok(self, rollout_id: str, action: str, reason: str = "") -> dict[str, Any]:
        r = await self.cmd(rollout_id, action, reason)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def status(self, rollout_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/rollouts/{rollout_id}", headers=self.ops())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def devices(self, rollout_id: str) -> dict[str, dict[str, Any]]:
        return {d["device_id"]: d for d in (await self.status(rollout_id))["devices"]}

    async def tick(self, at: datetime) -> dict[str, str]:
        return await evaluator.evaluate(self.gw, now=at)

    async def audit(self) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=bearer(self.mint(Role.AUDITOR))
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- devices

    async def desired(self, device_id: str) -> tuple[str, dict[str, Any] | None]:
        entry = await read_desired(self.js, device_id)
        assert entry is not None
        release = json.loads(entry.value)["signed"]["x-linegate-release"]
        return release["version"], release.get("rollback")

    async def report(self, device_id: str, state: str, version: str, detail: str = "") -> None:
        status = DeviceStatusV1(
            device_id=device_id, state=state, model=MODEL, version=version, detail=detail or None
        )
        await self.js.publish(Subjects.device_status(device_id), status.model_dump_json().encode())

    async def active(self, rollout_id: str, *device_ids: str) -> None:
        for device_id in device_ids:
            await self.report(device_id, "self_test", "2.1.0", "passed")
            await self.report(device_id, "active", "2.1.0")

        async def reported() -> bool:
            devices = await self.devices(rollout_id)
            return all(devices[d]["state"] == "active" for d in device_ids)

        await wait_for(reported, f"{device_ids} to report active")

    async def telemetry(
        self, device_id: str, version: str, n: int, rejects: int, confidence: float = 0.93
    ) -> None:
        now = datetime.now(UTC)
        stats = InputStatsV1(brightness=0.5, contrast=0.2, sharpness=0.01)
        records = [
            InferenceRecordV1(
                record_id=uuid.uuid4().hex,
                occurred_at=now,
                camera="cam0",
                decision="reject" if i < rejects else "pass",
                label="porosity" if i < rejects else "ok",
                confidence=confidence,
                model=MODEL,
                version=version,
                threshold=0.5,
                stats=stats,
                latency_ms=4.0,
            )
            for i in range(n)
        ]
        line = DEVICES[device_id]
        batch = InferenceBatchV1(line=line, device_id=device_id, records=records)
        await self.js.publish(Subjects.telemetry(line, device_id), batch.model_dump_json().encode())

    async def counted(self, device_id: str, version: str, n: int) -> None:
        async def done() -> bool:
            async with self.gw.db.session() as session:
                kpi = await session.get(DeviceKpi, (device_id, MODEL, version))
                return kpi is not None and kpi.inferences >= n

        await wait_for(done, f"{n} inferences of {version} on {device_id}")

    async def baseline(self, rejects: int = 3) -> None:
        """Every device decided 100 parts on 2.0.4, ``rejects`` of them rejected."""
        for device_id in DEVICES:
            await self.telemetry(device_id, "2.0.4", 100, rejects)
        for device_id in DEVICES:
            await self.counted(device_id, "2.0.4", 100)


@pytest.fixture(autouse=True)
def _no_periodic_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests drive the evaluator with their own clock.
    monkeypatch.setenv("LINEGATE_ROLLOUT_EVALUATION_INTERVAL_SECONDS", "0")


@contextlib.asynccontextmanager
async def open_plant(
    settings: GatewaySettings, service_client: Any, mint_token: Any, nats_server: Any
) -> AsyncIterator[Plant]:
    app = create_gateway(settings)
    async with service_client(app) as client:
        nc = await nats.connect(nats_server.url)
        try:

            async def subscribed() -> bool:
                return len(app.state.subscriptions) == 5

            await wait_for(subscribed, "the gateway's consumers")
            p = Plant(client, app, mint_token, nc)
            await p.setup()
            yield p
        finally:
            await nc.close()


@pytest.fixture
async def plant(
    settings_factory: Any, service_client: Any, mint_token: Any, nats_server: Any
) -> Any:
    # No registry answers: approvals of a next stage are accepted, flagged as unchecked
    # (test_a_next_stage_needs_an_approver_trained_on_the_system checks a real registry).
    settings = settings_factory(
        GatewaySettings,
        registry_url=f"http://127.0.0.1:{free_port()}",
        competence_unverifiable="flag",
    )
    async with open_plant(settings, service_client, mint_token, nats_server) as p:
        yield p


def stage(kind: str = "canary", **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "soak_seconds": 600, "min_inferences": 100, **kw}


async def awaiting_approval(plant: Plant) -> str:
    """A rollout whose canary on cam-3-1 is done and whose next stage waits for approval."""
    rollout = await plant.create(
        [
            stage(count=1, soak_seconds=0, min_inferences=0),
            stage("percent", percent=100, soak_seconds=0, min_inferences=0, require_approval=True),
        ]
    )
    await plant.ok(rollout, "start")
    await plant.tick(T0)
    await plant.active(rollout, "cam-3-1")
    assert await plant.tick(T0 + timedelta(seconds=1)) == {rollout: "awaiting_approval"}
    return rollout


# --------------------------------------------------------------------------------- tests


async def test_a_line3_canary_advances_to_every_device_and_rolls_back_on_command(
    plant: Plant,
) -> None:
    await plant.baseline()
    rollout = await plant.create([stage(line="line3"), stage("percent", percent=100)])
    s = await plant.ok(rollout, "start", "canary on line 3")
    assert (s["state"], s["stage_index"]) == ("running", 0)
    assert {d["device_id"]: d["state"] for d in s["devices"]} == {
        "cam-3-1": "waiting_window",
        "cam-3-2": "waiting_window",
    }

    await plant.tick(T0)
    assert (await plant.desired("cam-3-1"))[0] == "2.1.0"
    assert (await plant.desired("cam-4-1"))[0] == "2.0.4"
    await plant.active(rollout, "cam-3-1", "cam-3-2")
    for device_id in ("cam-3-1", "cam-3-2"):
        await plant.telemetry(device_id, "2.1.0", 60, 2)
        await plant.counted(device_id, "2.1.0", 60)

    await plant.tick(T0 + timedelta(seconds=300))
    s = await plant.status(rollout)
    assert (s["state"], s["stage_index"]) == ("running", 0)
    assert s["evaluation"]["blocking"] == ["soak: 300 s left"]
    kpis = s["evaluation"]["kpis"]
    assert kpis["inferences"] == 120
    assert kpis["baseline"]["scope"] == "devices"
    assert kpis["reject_rate_delta"] == pytest.approx(4 / 120 - 0.03)

    assert await plant.tick(T0 + timedelta(seconds=600)) == {rollout: "stage 1 started"}
    assert (await plant.desired("cam-4-2"))[0] == "2.1.0"
    await plant.active(rollout, "cam-4-1", "cam-4-2")
    for device_id in ("cam-4-1", "cam-4-2"):
        await plant.telemetry(device_id, "2.1.0", 50, 1)
    await plant.counted("cam-4-2", "2.1.0", 50)
    await plant.counted("cam-4-1", "2.1.0", 50)
    assert await plant.tick(T0 + timedelta(seconds=1200)) == {rollout: "completed"}
    assert (await plant.status(rollout))["state"] == "completed"

    # Rollback works after completion too: every device returns to 2.0.4, with the signed
    # instruction devices need to install a lower security_version.
    s = await plant.ok(rollout, "rollback", "escapes at incoming inspection")
    assert s["state"] == "rolled_back"
    assert {d["state"] for d in s["devices"]} == {"rolled_back"}
    for device_id in DEVICES:
        version, instruction = await plant.desired(device_id)
        assert version == "2.0.4"
        assert instruction is not None
        assert instruction["from_security_version"] == 2
        assert instruction["approved_by"] == ["ot-engineer"]
    assert (await plant.cmd(rollout, "rollback")).status_code == 409


async def test_a_reject_rate_rise_aborts_the_canary_rolls_it_back_and_opens_an_incident(
    plant: Plant,
) -> None:
    incidents = await plant.nc.subscribe(Subjects.INCIDENT_OPENED)
    await plant.baseline(rejects=2)
    rollout = await plant.create([stage(line="line3"), stage("percent", percent=100)])
    await plant.ok(rollout, "start")
    await plant.tick(T0)
    await plant.active(rollout, "cam-3-1", "cam-3-2")
    for device_id in ("cam-3-1", "cam-3-2"):
        # 2% rejects on 2.0.4, 15% on 2.1.0: scrap would rise.
        await plant.telemetry(device_id, "2.1.0", 40, 6)
        await plant.counted(device_id, "2.1.0", 40)

    assert await plant.tick(T0 + timedelta(seconds=60)) == {rollout: "aborted"}
    s = await plant.status(rollout)
    assert s["state"] == "aborted"
    assert "reject rate" in s["abort_reason"]
    assert s["evaluation"]["breaches"][0].startswith("reject rate 0.1500 vs 0.0200 on 2.0.4")
    assert s["incident_id"] == f"rollout-{rollout}-stage0"
    for device_id in ("cam-3-1", "cam-3-2"):
        version, instruction = await plant.desired(device_id)
        assert version == "2.0.4"
        assert instruction is not None
        assert instruction["incident_id"] == s["incident_id"]
        assert instruction["approved_by"] == ["service:edge-gateway"]
    # Line 4 never got the candidate; its desired state was not touched.
    r = await plant.client.get("/v1/devices/cam-4-1", headers=plant.ops())
    assert r.json()["desired"]["reason"] == "baseline"

    plant.app.state.ctx.outbox.wake()
    msg = await incidents.next_msg(timeout=10)
    event = json.loads(msg.data)
    assert event["kind"] == "incident.opened.v1"
    assert event["incident_id"] == s["incident_id"]
    assert (event["incident_type"], event["line"], event["version"]) == (
        "rollout_threshold_crossed",
        "line3",
        "2.1.0",
    )
    aborted = [e for e in await plant.audit() if e["action"] == "rollout.aborted"]
    assert [(e["actor"], e["subject"]) for e in aborted] == [
        ("service:edge-gateway", f"rollout:{rollout}")
    ]
    assert aborted[0]["reason"].startswith("threshold crossed: reject rate")


async def test_a_self_test_failure_aborts_at_once(plant: Plant) -> None:
    rollout = await plant.create([stage(device_ids=["cam-3-1", "cam-3-2"])])
    await plant.ok(rollout, "start")
    await plant.tick(T0)
    await plant.report("cam-3-1", "refused", "2.1.0", "self-test failed: non-finite output")

    async def failed() -> bool:
        return (await plant.devices(rollout))["cam-3-1"]["state"] == "failed"

    await wait_for(failed, "the refusal to reach the rollout")
    assert await plant.tick(T0 + timedelta(seconds=5)) == {rollout: "aborted"}
    s = await plant.status(rollout)
    assert s["evaluation"]["breaches"] == [
        "failed devices 50.0% > 20%",
        "self-test failures 1 > 0",
    ]
    assert (await plant.desired("cam-3-1"))[0] == "2.0.4"


async def test_installs_wait_for_the_maintenance_window(plant: Plant) -> None:
    r = await plant.client.put(
        f"/v1/maintenance-windows/{PLANT}/line3",
        json={"windows": [CHANGEOVER], "reason": "night shift changeover only"},
        headers=plant.ops(),
    )
    assert r.status_code == 200, r.text
    r = await plant.client.put(
        f"/v1/maintenance-windows/{PLANT}",
        json={"windows": [{**CHANGEOVER, "days": ["sun"]}], "reason": "weekend for the rest"},
        headers=plant.ops(),
    )
    assert r.status_code == 200, r.text
    rollout = await plant.create([stage(line="line3", soak_seconds=0, min_inferences=0)])
    await plant.ok(rollout, "start")

    await plant.tick(T0 - timedelta(hours=1))  # 04:50 in Berlin: outside
    devices = await plant.devices(rollout)
    assert devices["cam-3-1"]["state"] == "waiting_window"
    assert devices["cam-3-1"]["next_window_at"] is not None
    assert (await plant.desired("cam-3-1"))[0] == "2.0.4"
    s = await plant.status(rollout)
    assert s["evaluation"]["blocking"][0] == "2 device(s) wait for a maintenance window"

    await plant.tick(T0)  # 05:50: inside
    devices = await plant.devices(rollout)
    assert {d["state"] for d in devices.values()} == {"assigned"}
    assert (await plant.desired("cam-3-1"))[0] == "2.1.0"


def test_windows_are_local_time_cross_midnight_and_follow_daylight_saving() -> None:
    night = MaintenanceWindow(days=["sun"], start="22:00", end="06:00", tz="Europe/Berlin")
    assert is_open([night], datetime(2026, 3, 2, 2, 0, tzinfo=UTC))  # Mon 03:00 local
    assert not is_open([night], datetime(2026, 3, 2, 6, 0, tzinfo=UTC))  # Mon 07:00 local
    changeover = MaintenanceWindow.model_validate(CHANGEOVER)
    # 2026-03-30 is the first Monday of summer time: 05:50 local is 03:50 UTC.
    assert is_open([changeover], datetime(2026, 3, 30, 3, 50, tzinfo=UTC))
    assert not is_open([changeover], datetime(2026, 3, 30, 4, 50, tzinfo=UTC))
    assert next_opening([changeover], datetime(2026, 3, 30, 4, 50, tzinfo=UTC)) == datetime(
        2026, 3, 31, 3, 45, tzinfo=UTC
    )


async def test_pause_resume_and_abort_always_work_and_are_audited(plant: Plant) -> None:
    draft = await plant.create([stage(line="line3")])
    r = await plant.cmd(draft, "resume")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["state"] == "draft"
    assert (await plant.ok(draft, "abort", "plan superseded"))["state"] == "aborted"
    assert (await plant.cmd(draft, "abort")).status_code == 409

    rollout = await plant.create([stage(line="line3"), stage("percent", percent=100)])
    await plant.ok(rollout, "start", "go")
    assert (await plant.cmd(rollout, "start")).status_code == 409
    assert (await plant.cmd(rollout, "approve-next-stage")).status_code == 409
    await plant.tick(T0)
    s = await plant.ok(rollout, "pause", "line 3 stopped for a die change")
    assert s["state"] == "paused"
    assert (await plant.cmd(rollout, "pause")).status_code == 409
    assert await plant.tick(T0 + timedelta(hours=2)) == {rollout: "paused"}
    assert (await plant.ok(rollout, "resume", "line 3 running again"))["state"] == "running"
    await plant.ok(rollout, "pause", "again")
    s = await plant.ok(rollout, "abort", "supplier recalled 2.1.0")
    assert s["state"] == "aborted"
    assert {d["state"] for d in s["devices"]} == {"rolled_back"}
    assert (await plant.desired("cam-3-1"))[0] == "2.0.4"
    r = await plant.client.get("/v1/rollouts/nope", headers=plant.ops())
    assert r.status_code == 404

    entries = [
        (e["action"], e["actor"], e["reason"])
        for e in await plant.audit()
        if e["subject"] == f"rollout:{rollout}"
    ]
    assert entries == [
        ("rollout.created", "ot-engineer", REASON),
        ("rollout.start", "ot-engineer", "go"),
        ("rollout.pause", "ot-engineer", "line 3 stopped for a die change"),
        # Paused, the evaluator still watches: the canary has not reported for two hours.
        ("rollout.devices_late", "service:edge-gateway", "no report on the candidate within 900 s"),
        ("rollout.resume", "ot-engineer", "line 3 running again"),
        ("rollout.pause", "ot-engineer", "again"),
        ("rollout.abort", "ot-engineer", "supplier recalled 2.1.0"),
    ]
    # A device cannot read rollouts; a responder can stop one but not start one.
    device = bearer(plant.mint(Role.DEVICE, device_id="cam-3-1"))
    assert (await plant.client.get(f"/v1/rollouts/{rollout}", headers=device)).status_code == 403
    third = await plant.create([stage(line="line4")])
    responder = bearer(plant.mint(Role.RESPONDER, sub="rita-responder"))
    assert (await plant.cmd(third, "start", headers=responder)).status_code == 403
    assert (await plant.cmd(third, "abort", headers=responder)).status_code == 200


async def test_the_next_stage_waits_for_a_person_to_approve_it(plant: Plant) -> None:
    rollout = await plant.create(
        [
            stage(count=1, soak_seconds=0, min_inferences=0),
            stage("percent", percent=100, soak_seconds=0, min_inferences=0, require_approval=True),
        ]
    )
    await plant.ok(rollout, "start")
    await plant.tick(T0)
    await plant.active(rollout, "cam-3-1")
    assert await plant.tick(T0 + timedelta(seconds=1)) == {rollout: "awaiting_approval"}
    assert await plant.tick(T0 + timedelta(hours=1)) == {rollout: "awaiting_approval"}
    assert (await plant.desired("cam-4-1"))[0] == "2.0.4"

    # Paused while waiting, a resume returns to waiting.
    await plant.ok(rollout, "pause", "shift handover")
    assert (await plant.ok(rollout, "resume", "handover done"))["state"] == "awaiting_approval"

    s = await plant.ok(rollout, "approve-next-stage", "canary reviewed with QA")
    assert (s["state"], s["stage_index"]) == ("running", 1)
    await plant.tick(T0 + timedelta(hours=1, seconds=1))
    for device_id in ("cam-3-2", "cam-4-1", "cam-4-2"):
        assert (await plant.desired(device_id))[0] == "2.1.0"
    await plant.active(rollout, "cam-3-2", "cam-4-1", "cam-4-2")
    assert await plant.tick(T0 + timedelta(hours=1, seconds=2)) == {rollout: "completed"}
    approvals = [e for e in await plant.audit() if e["action"] == "rollout.approve_next_stage"]
    [(actor, reason)] = [(e["actor"], e["reason"]) for e in approvals]
    assert actor == "ot-engineer"
    assert reason.startswith("canary reviewed with QA [flagged: the approver training of ")
    assert "could not be checked: the registry is unreachable" in reason


async def test_a_next_stage_needs_an_approver_trained_on_the_system(
    settings_factory: Any,
    service_client: Any,
    serve_http: Any,
    mint_token: Any,
    nats_server: Any,
    tmp_path: Any,
) -> None:
    # A real registry: the model line deploys tier-1 SYSTEM, and only alex holds approver
    # training on it; the default policy refuses what the register cannot vouch for.
    registry_app = create_registry(settings_factory(RegistrySettings))
    url = serve_http(registry_app)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        registry = RegistryClient(client=http, app=registry_app, mint=mint_token, tmp=tmp_path)
        await registry.create_system(tier=1, trained=("alex-approver",))
        await registry.create_model()
    settings = settings_factory(GatewaySettings, registry_url=url)
    async with open_plant(settings, service_client, mint_token, nats_server) as plant:
        rollout = await awaiting_approval(plant)

        r = await plant.cmd(rollout, "approve-next-stage", "canary reviewed with QA")
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "ot-engineer has no current approver training" in r.json()["detail"]
        assert (await plant.status(rollout))["state"] == "awaiting_approval"

        r = await plant.cmd(
            rollout, "approve-next-stage", "canary reviewed", headers=plant.ops("alex-approver")
        )
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["stage_index"]) == ("running", 1)
        approvals = [
            (e["actor"], e["reason"])
            for e in await plant.audit()
            if e["action"] == "rollout.approve_next_stage"
        ]
        assert approvals == [("alex-approver", "canary reviewed")]


async def test_a_next_stage_of_a_model_the_registry_does_not_know_is_a_conflict(
    settings_factory: Any,
    service_client: Any,
    serve_http: Any,
    mint_token: Any,
    nats_server: Any,
) -> None:
    # The registry answers, but has no model line for the rollout's model (404): retrying
    # changes nothing until the registry's records do, so it is a 409 and not a 503.
    url = serve_http(create_registry(settings_factory(RegistrySettings)))
    settings = settings_factory(GatewaySettings, registry_url=url)
    async with open_plant(settings, service_client, mint_token, nats_server) as plant:
        rollout = await awaiting_approval(plant)

        r = await plant.cmd(rollout, "approve-next-stage", "canary reviewed with QA")
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
        detail = r.json()["detail"]
        assert f"the registry has no /v1/models/{MODEL}" in detail
        assert detail.endswith(f"register the model line {MODEL} in the registry first")
        assert detail.count("could not be checked") == 1
        assert (await plant.status(rollout))["state"] == "awaiting_approval"


async def test_a_device_that_never_reports_is_late_and_blocks_nothing(plant: Plant) -> None:
    rollout = await plant.create(
        [
            stage(device_ids=["cam-3-1", "cam-3-2"], soak_seconds=0, min_inferences=0),
            stage("percent", percent=100, require_approval=True),
        ],
        device_timeout_seconds=300,
    )
    await plant.ok(rollout, "start")
    await plant.tick(T0)
    await plant.active(rollout, "cam-3-1")  # cam-3-2 is offline

    assert await plant.tick(T0 + timedelta(seconds=100)) == {rollout: "running"}
    s = await plant.status(rollout)
    assert s["evaluation"]["blocking"] == ["1 device(s) have not reported the install yet"]
    assert s["late_devices"] == []

    assert await plant.tick(T0 + timedelta(seconds=300)) == {rollout: "awaiting_approval"}
    s = await plant.status(rollout)
    assert s["late_devices"] == ["cam-3-2"]
    assert any(e["action"] == "devices_late" for e in s["history"])

    s = await plant.ok(rollout, "abort", "canary device offline; retry next week")
    assert s["state"] == "aborted"
    devices = {d["device_id"]: d for d in s["devices"]}
    assert devices["cam-3-2"]["state"] == "rolled_back"
    assert devices["cam-3-2"]["late"] is True
    # The offline device finds its way back in its desired state when it reconnects.
    assert (await plant.desired("cam-3-2"))[0] == "2.0.4"


async def test_plans_are_validated_and_overlapping_rollouts_refused(plant: Plant) -> None:
    bad = [
        {"kind": "canary", "line": "line3", "count": 2},
        {"kind": "percent"},
        {"kind": "shadow"},
    ]
    for s in bad:
        body = {"model": MODEL, "version": "2.1.0", "selector": {"plant": PLANT}, "stages": [s]}
        r = await plant.client.post(
            "/v1/rollouts", json={**body, "reason": "x"}, headers=plant.ops()
        )
        assert r.status_code == 422, (s, r.text)
    body = {"model": MODEL, "version": "9.9.9", "selector": {"plant": PLANT}, "reason": "x"}
    r = await plant.client.post(
        "/v1/rollouts", json={**body, "stages": [stage(line="line3")]}, headers=plant.ops()
    )
    assert r.status_code == 404
    first = await plant.create([stage(line="line3")])
    second = await plant.create([stage(line="line4")])
    await plant.ok(first, "start")
    r = await plant.cmd(second, "start")
    assert r.status_code == 409
    assert r.json()["rollout_id"] == first
