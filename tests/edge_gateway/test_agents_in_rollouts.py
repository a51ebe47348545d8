"""Real agents (per-device auth) in rollouts and against tampered artefacts: a device offline
during a canary is reported late, then converges when it reconnects; artefact bytes that are
not the signed ones never install."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_gateway import distribution
from edge_gateway.distribution import _sha256
from edge_gateway.rollouts import evaluator
from linegate.events import DeviceStatusV1
from linegate.nats_auth import connect_device
from linegate.objstore import put_file
from linegate.release_metadata import verify_release
from linegate.signing import load_public_key
from linegate_cli.agent import DeviceAgent
from tests.edge_gateway.conftest import MODEL, PLANT, Line, wait_for

T0 = datetime(2026, 3, 2, 4, 50, tzinfo=UTC)


async def test_a_device_offline_during_the_canary_is_reported_late_and_converges(
    line: Line,
) -> None:
    await line.release("2.0.4", 1)
    await line.release("2.1.0", 2)
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    for device_id in line.devices:
        line.start_agent(device_id)
    await line.runs("2.0.4")
    await line.stop_agent("cam-3-2")  # the night shift unplugged it

    body = {
        "model": MODEL,
        "version": "2.1.0",
        "selector": {"plant": PLANT},
        "stages": [{"kind": "canary", "line": "line3", "soak_seconds": 0}],
        "device_timeout_seconds": 600,
        "reason": "canary line 3",
    }
    rollout = (await line.client.post("/v1/rollouts", json=body, headers=line.ops())).json()["id"]
    r = await line.client.post(
        f"/v1/rollouts/{rollout}/start", json={"reason": "go"}, headers=line.ops()
    )
    assert r.status_code == 200, r.text
    await evaluator.evaluate(line.gw, now=T0)
    await line.runs("2.1.0", "cam-3-1")

    async def status() -> dict[str, Any]:
        r = await line.client.get(f"/v1/rollouts/{rollout}", headers=line.ops())
        return r.json()  # type: ignore[no-any-return]

    # Past the device timeout the offline device is listed, and holds nothing up.
    assert await evaluator.evaluate(line.gw, now=T0 + timedelta(seconds=600)) == {
        rollout: "completed"
    }
    s = await status()
    assert s["late_devices"] == ["cam-3-2"]
    devices = {d["device_id"]: d for d in s["devices"]}
    assert (devices["cam-3-1"]["state"], devices["cam-3-2"]["state"]) == ("active", "assigned")

    # It comes back, reads its desired state and converges; its report clears the lateness.
    line.start_agent("cam-3-2")
    await line.runs("2.1.0", "cam-3-2")

    async def caught_up() -> bool:
        d = {d["device_id"]: d for d in (await status())["devices"]}["cam-3-2"]
        return d["state"] == "active" and not d["late"]

    await wait_for(caught_up, "the rollout to record the late device's install")


async def test_artefact_bytes_other_than_the_signed_ones_are_refused(line: Line) -> None:
    """Another device's document, or an object under a file's signed digest that holds other
    bytes (a tampered store) or one byte more than signed: the agent refuses before installing
    and keeps what it runs."""
    await line.release("2.0.4", 1)
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    nc = await connect_device(line.nats.url, line.tmp / "cam-3-1.nk", device_id="cam-3-1")
    reports: list[DeviceStatusV1] = []

    async def report(status: DeviceStatusV1) -> None:
        reports.append(status)

    try:
        agent = DeviceAgent(
            "cam-3-1",
            line.tmp / "direct" / "cam-3-1",
            js=nc.jetstream(timeout=10),
            release_keys=[load_public_key((line.tmp / "gateway.pub.pem").read_bytes())],
            model_key_paths=[line.tmp / "registry.pub.pem"],
            report=report,
            download_timeout=10,
        )
        # Another device's document (validly signed) is not this device's desired state.
        assert await agent.apply(await line.desired_doc("cam-3-2")) is False
        assert "bound to device 'cam-3-2'" in (reports[-1].detail or "")
        assert await agent.apply(await line.desired_doc("cam-3-1")) is True

        # The object under a file's signed digest holds other bytes, or one byte too many.
        # (Files new in their release: an object already stored is never overwritten.)
        cases = (
            ("2.1.0", 2, 2, "model.onnx", lambda b: bytes([b[0] ^ 1]) + b[1:]),
            ("2.1.1", 3, None, "model_card.md", lambda b: b + b" "),
        )
        for version, security_version, bad_class, name, change in cases:
            genuine = line.tmp / f"genuine-{version}"
            await line.release(
                version, security_version, bad_class=bad_class, hold_back=name, keep=genuine
            )
            tampered = line.tmp / f"tampered-{version}"
            tampered.write_bytes(change((genuine / name).read_bytes()))
            await put_file(line.gw.nats.js, "models", _sha256(genuine / name), tampered)
            assert (await line.assign(version, device_ids=["cam-3-1"])).status_code == 200
            reports.clear()
            assert await agent.apply(await line.desired_doc("cam-3-1")) is False, version
            assert reports[-1].state == "refused"
            assert f"download of {name}" in (reports[-1].detail or ""), reports[-1].detail
            assert agent.state.active is not None
            assert agent.state.active.version == "2.0.4"
            assert (agent.current / "model.onnx").exists()
            assert not (agent.state_dir / "staging" / f"{MODEL}@{version}" / MODEL / name).exists()
    finally:
        await nc.close()


async def test_desired_state_is_re_signed_before_it_can_expire(line: Line) -> None:
    """Devices refuse expired metadata; the gateway re-signs every device's document on a
    schedule (here every 0.2 s instead of days), same revision, fresh expiry and signature."""
    await line.release("2.0.4", 1)
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    kv = await line.service.jetstream().key_value("desired")
    before = await kv.get("cam-3-1")
    assert line.gw.settings.metadata_refresh_seconds == (7 * 24 - 24) * 3600
    refresher = distribution.MetadataRefresher(line.gw, interval=0.2)
    refresher.start()
    try:

        async def re_signed() -> Any:
            entry = await kv.get("cam-3-1")
            return entry if entry.revision > before.revision else None

        after = await wait_for(re_signed, "the refresher to re-sign the desired state")
    finally:
        await refresher.stop()
    assert after.value != before.value
    key = [load_public_key((line.tmp / "gateway.pub.pem").read_bytes())]
    old, new = verify_release(before.value, key), verify_release(after.value, key)
    assert new.device == old.device  # the same desired state, revision included
    assert new.expires >= old.expires


async def test_nats_restarted_mid_download_the_install_resumes_and_the_digest_matches(
    line: Line,
) -> None:
    await line.release("2.0.4", 1, weights=96 << 20)
    assert (await line.assign("2.0.4", device_ids=["cam-3-1"])).status_code == 200
    doc = await line.desired_doc("cam-3-1")
    signed = json.loads(doc)["signed"]["targets"]["weights.bin"]
    nc = await connect_device(
        line.nats.url,
        line.tmp / "cam-3-1.nk",
        device_id="cam-3-1",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    reports: list[DeviceStatusV1] = []

    async def report(status: DeviceStatusV1) -> None:
        reports.append(status)

    try:
        agent = DeviceAgent(
            "cam-3-1",
            line.tmp / "direct" / "cam-3-1",
            js=nc.jetstream(timeout=10),
            release_keys=[load_public_key((line.tmp / "gateway.pub.pem").read_bytes())],
            model_key_paths=[line.tmp / "registry.pub.pem"],
            report=report,
            download_timeout=60,
        )
        install = asyncio.create_task(agent.apply(doc))
        partial = agent.state_dir / "staging" / f"{MODEL}@2.0.4" / MODEL / "weights.bin.partial"

        async def mid_download() -> bool:
            size = partial.stat().st_size if partial.exists() else 0
            return 0 < size < signed["length"]

        await wait_for(mid_download, "the download of weights.bin to be under way")
        line.nats.stop()
        line.nats.start()
        assert await install is True, [r.detail for r in reports if r.state == "refused"]
        installed = agent.current / "weights.bin"
        assert _sha256(installed) == signed["hashes"]["sha256"]
        assert installed.stat().st_size == signed["length"]
        assert [r.state for r in reports][-1] == "active"
    finally:
        await nc.close()
