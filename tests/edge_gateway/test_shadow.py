"""Shadow stages with real agents on a nats-server with per-device auth: the candidate runs
beside the active model on the same inputs, the active model decides, disagreements are
telemetry, and the gateway judges the disagreement rate per stage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_gateway.rollouts import evaluator
from linegate.events import InferenceBatchV1, Subjects
from tests.edge_gateway.conftest import MODEL, PLANT, Line, wait_for

T0 = datetime(2026, 3, 2, 4, 50, tzinfo=UTC)


async def create_rollout(line: Line, version: str, stages: list[dict[str, Any]]) -> str:
    body = {
        "model": MODEL,
        "version": version,
        "selector": {"plant": PLANT},
        "stages": stages,
        "reason": f"{version}: shadow on line 3 first",
    }
    r = await line.client.post("/v1/rollouts", json=body, headers=line.ops())
    assert r.status_code == 201, r.text
    rollout = str(r.json()["id"])
    r = await line.client.post(
        f"/v1/rollouts/{rollout}/start", json={"reason": "shadow line 3"}, headers=line.ops()
    )
    assert r.status_code == 200, r.text
    return rollout


async def status(line: Line, rollout: str) -> dict[str, Any]:
    r = await line.client.get(f"/v1/rollouts/{rollout}", headers=line.ops())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def devices_in(line: Line, rollout: str, state: str) -> None:
    async def reached() -> bool:
        return all(d["state"] == state for d in (await status(line, rollout))["devices"])

    await wait_for(reached, f"every device of {rollout} to be {state}")


async def shadow_counted(line: Line, rollout: str, n: int) -> None:
    async def counted() -> bool:
        devices = (await status(line, rollout))["devices"]
        return all(d["shadow_inferences"] >= n for d in devices)

    await wait_for(counted, f"{n} shadow inferences per device")


SHADOW = {
    "kind": "shadow",
    "line": "line3",
    "soak_seconds": 0,
    "min_inferences": 200,
    "thresholds": {"kpi_min_inferences": 50, "max_shadow_disagreement_rate": 0.1},
}


async def test_a_disagreeing_shadow_never_decides_is_measured_and_aborts_the_stage(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.2.0", 3, bad_class=1)  # never says "scratch"
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    for device_id in line.devices:
        line.start_agent(device_id)
    await line.runs("2.0.4")
    telemetry = await line.service.subscribe("linegate.telemetry.line3.cam-3-1")
    incidents = await line.service.subscribe(Subjects.INCIDENT_OPENED)

    rollout = await create_rollout(line, "2.2.0", [SHADOW, {"kind": "canary", "line": "line3"}])
    await evaluator.evaluate(line.gw, now=T0)
    shadow = line.release_block(await line.desired_doc("cam-3-1"))["device"]["shadow"]
    assert shadow is not None
    assert line.release_block(shadow.encode())["version"] == "2.2.0"
    await devices_in(line, rollout, "active")  # both report: running 2.2.0 in shadow
    for d in line.devices.values():
        assert (d.state_dir / "shadow").resolve().parent.name == f"{MODEL}@2.2.0"
        assert (d.state_dir / "current").resolve().parent.name == f"{MODEL}@2.0.4"

    # 100 parts per device, 20 of them scratched: the shadow misses every scratch.
    for device_id in line.devices:
        for i in range(100):
            label = "scratch" if i < 20 else "ok"
            r = await line.infer(device_id, label, seed=i)
            # The active model decides, the shadow's opinion never reaches the line.
            assert (r["version"], r["label"]) == ("2.0.4", label)
            assert r["decision"] == ("reject" if label == "scratch" else "pass")
    records = []
    while len(records) < 100:  # batches of 100, or what the 5 s flush found
        batch = InferenceBatchV1.model_validate(json.loads((await telemetry.next_msg(30)).data))
        records += batch.records
    assert all(r.shadow is not None and r.shadow.version == "2.2.0" for r in records)
    assert [r.shadow.agrees for r in records if r.shadow] == [False] * 20 + [True] * 80
    assert all(r.shadow.label != "scratch" for r in records[:20] if r.shadow)
    await shadow_counted(line, rollout, 100)

    assert await evaluator.evaluate(line.gw, now=T0 + timedelta(seconds=60)) == {rollout: "aborted"}
    s = await status(line, rollout)
    assert s["evaluation"]["kpis"]["shadow_disagreement_rate"] == 0.2
    assert s["evaluation"]["breaches"] == ["shadow disagreement 0.2000 (40 of 200 inputs) > 0.1"]
    assert {d["state"] for d in s["devices"]} == {"rolled_back"}
    event = json.loads((await incidents.next_msg(30)).data)
    assert (event["incident_id"], event["version"]) == (s["incident_id"], "2.2.0")

    # The devices stop shadowing (signed, like everything else) and keep 2.0.4.
    async def stopped() -> bool:
        return all(not (d.state_dir / "shadow").exists() for d in line.devices.values())

    await wait_for(stopped, "the agents to drop the shadow")
    assert line.release_block(await line.desired_doc("cam-3-2"))["device"]["shadow"] is None
    r = await line.infer("cam-3-1", "scratch")
    assert (r["version"], r["decision"]) == ("2.0.4", "reject")


async def test_an_agreeing_shadow_completes_and_the_canary_installs_it_on_the_same_devices(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    for device_id in line.devices:
        line.start_agent(device_id)
    await line.runs("2.0.4")
    canary = {"kind": "canary", "line": "line3", "soak_seconds": 0, "min_inferences": 0}
    rollout = await create_rollout(line, "2.1.0", [{**SHADOW, "min_inferences": 100}, canary])
    await evaluator.evaluate(line.gw, now=T0)
    await devices_in(line, rollout, "active")
    for device_id in line.devices:
        for i in range(50):
            await line.infer(device_id, ("ok", "scratch", "dent")[i % 3], seed=i)
    await shadow_counted(line, rollout, 50)  # the partial batches flush within 5 s

    s = await status(line, rollout)
    assert await evaluator.evaluate(line.gw, now=T0 + timedelta(seconds=1)) == {
        rollout: "stage 1 started"
    }, s["evaluation"]
    done = [e for e in (await status(line, rollout))["history"] if e["action"] == "stage_started"]
    assert done[-1]["kpis"]["shadow_disagreement_rate"] == 0.0
    # The shadow stage's devices are chosen again by the canary, which installs 2.1.0.
    await evaluator.evaluate(line.gw, now=T0 + timedelta(seconds=2))
    await line.runs("2.1.0")
    for device_id, d in line.devices.items():
        block = line.release_block(await line.desired_doc(device_id))
        assert (block["version"], block["device"]["shadow"]) == ("2.1.0", None)
        assert not (d.state_dir / "shadow").exists()
    await devices_in(line, rollout, "active")
    assert await evaluator.evaluate(line.gw, now=T0 + timedelta(seconds=3)) == {
        rollout: "completed"
    }
