"""``linegate agent`` end to end in-process: it connects as the device, reports itself online,
and serves the local inference API, which fails safe while no model is installed."""

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from linegate.embedded import free_port
from linegate.events import Streams, ensure_stream
from linegate.nats_auth import new_device_identity, write_creds
from linegate.signing import generate_private_key, public_key_pem
from linegate_cli import agent


async def test_agent_reports_online_and_serves_fail_safe_inference(
    nats_server: Any, tmp_path: Path
) -> None:
    identity = new_device_identity("cam-3-1")
    creds = tmp_path / "cam-3-1.nk"
    write_creds(creds, identity)
    release_key = tmp_path / "gateway.pub.pem"
    release_key.write_bytes(public_key_pem(generate_private_key().public_key()))
    watcher = await nats.connect(nats_server.url)
    # The gateway creates the device stream; without it every report would wait for its ack.
    await ensure_stream(watcher.jetstream(), Streams.DEVICE)
    status = await watcher.subscribe("linegate.device.cam-3-1.status")
    port = free_port()
    task = asyncio.create_task(
        agent.main(
            device_id="cam-3-1",
            creds=creds,
            nats_url=nats_server.url,
            state_dir=tmp_path / "state",
            release_key_paths=[release_key],
            model_key_paths=[release_key],
            line="line3",
            serve_port=port,
        )
    )
    try:
        online = json.loads((await status.next_msg(timeout=30)).data)
        assert online["state"] == "online"
        assert online["revision"] == 0  # the desired-state revision it holds: none yet
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    r = await http.get("/v1/status")
                    break
                if task.done():
                    task.result()  # the agent stopped: show why
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the inference API did not come up")
            assert r.status_code == 200
            r = await http.post("/v1/inference", json={"camera": "w3", "image": [[[0.5]]]})
            assert r.status_code == 200, r.text
            assert r.json()["decision"] == "manual_inspection"
    finally:
        task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await watcher.close()
    # Cancelled, the agent closed its listening socket: the port can be listened on again
    # (SO_REUSEADDR tolerates closed connections in TIME_WAIT, never a live listener).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_the_agent_command_passes_the_model_identity_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model-identity`` reaches the agent (which refuses other signers, as
    tests/edge_gateway/test_certificate_release.py shows with real certificate signatures);
    only the command-line wiring is under test, so the agent's run is replaced."""
    from typer.testing import CliRunner

    from linegate_cli.main import app

    started: list[dict[str, Any]] = []

    async def record(**kwargs: Any) -> None:
        started.append(kwargs)

    monkeypatch.setattr(agent, "main", record)
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_key_pem(generate_private_key().public_key()))
    base = ["agent", "--device-id", "cam-3-1", "--creds", str(pem), "--release-key", str(pem)]
    base += ["--model-key", str(pem), "--nats-url", "nats://127.0.0.1:1"]
    for extra, identity in (([], None), (["--model-identity", "signer@plant"], "signer@plant")):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 0, result.output
        assert started.pop()["model_identity"] == identity
