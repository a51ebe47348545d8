"""A line of real device agents behind a gateway on a nats-server with per-device auth.

The flow is the production one: devices are registered through the gateway's API (which
creates their nkeys and shows each seed once), the nats-server authorisation config is
rendered from that inventory (``linegate.nats_auth``), and each device runs the real
``linegate agent`` (``agent.main``: desired-state watch, verified installs, the local inference
API with telemetry) as its own nkey user. Releases are real: ONNX models built by
``linegate.testing.onnx_models``, signed with OpenSSF model signing by a registry key, put into
the object store and described by TUF metadata the gateway signs; how the registry hands them
over is test_distribution's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest

from edge_gateway import distribution
from edge_gateway.app import create_app as create_gateway
from edge_gateway.models import Release
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.embedded import NatsServer, free_port
from linegate.modelsig import sign_model, verify_model
from linegate.nats_auth import render_server_config, write_server_config
from linegate.objstore import put_file
from linegate.signing import generate_private_key, private_key_pem, public_key_pem
from linegate.testing.fixtures import bearer
from linegate.testing.onnx_models import labelled_batch, write_model_dir
from linegate_cli import agent

MODEL = "weld-seam-inspector"
PLANT = "wolfsburg"
SERVICE_USER = "linegate"
SERVICE_PASSWORD = "s3rvice-password-for-line-tests"
LABELS = ("ok", "scratch", "dent")


async def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def image_of(label: str, seed: int = 0) -> list[Any]:
    """An 8x8 RGB image whose true class is ``label`` (see ``labelled_batch``)."""
    images, labels = labelled_batch(4, seed=seed)
    index = int(np.flatnonzero(labels == LABELS.index(label))[seed % 4])
    return images[index].tolist()  # type: ignore[no-any-return]


@dataclass
class Device:
    device_id: str
    line: str
    port: int
    state_dir: Path
    task: asyncio.Task[None] | None = None


@dataclass
class Line:
    client: httpx.AsyncClient
    app: Any
    mint: Any
    nats: NatsServer
    tmp: Path
    service: Any = None  # a full-access NATS connection (the test's view of the bus)
    devices: dict[str, Device] = field(default_factory=dict)

    @property
    def gw(self) -> distribution.Gateway:
        return self.app.state.gateway  # type: ignore[no-any-return]

    def ops(self, sub: str = "ot-engineer") -> dict[str, str]:
        return bearer(self.mint(Role.REGISTRY_APPROVE, sub=sub))

    # ------------------------------------------------------------------ releases

    async def release(
        self,
        version: str,
        security_version: int,
        *,
        bad_class: int | None = None,
        hold_back: str | None = None,
        keep: Path | None = None,
        weights: int = 0,
    ) -> None:
        """Build, sign, store and describe ``version`` (``bad_class``: it never predicts
        that class, so it disagrees with a good model on those parts). ``hold_back`` names a
        file left out of the object store (the test stores something else under its digest);
        ``keep`` receives a copy of the genuine files; ``weights`` adds a ``weights.bin`` of
        that many random bytes (a large artefact)."""
        src = self.tmp / "src" / version
        folder = write_model_dir(src / MODEL, version=version, bad_class=bad_class)
        if weights:
            block = os.urandom(1 << 20)
            with (folder / "weights.bin").open("wb") as f:
                for i in range(weights >> 20):
                    f.write(bytes([i & 0xFF]) + block[1:])
        signature = src / "model.sig"
        sign_model(folder, self.tmp / "registry.pem", signature)
        manifest = verify_model(folder, self.tmp / "registry.pub.pem", signature).manifest_sha256
        files = []
        if keep is not None:
            shutil.copytree(folder, keep)
        for path in [*sorted(folder.iterdir()), signature]:
            digest = distribution._sha256(path)
            if path.name != hold_back:
                await put_file(self.gw.nats.js, "models", digest, path)
            name = "model.sig" if path == signature else path.name
            files.append({"path": name, "length": path.stat().st_size, "sha256": digest})
        async with self.gw.db.session() as session:
            session.add(signed_release(self.gw, version, security_version, files, manifest))

    async def assign(self, version: str, **selector: Any) -> httpx.Response:
        body = {"model": MODEL, "version": version, "selector": selector, "reason": "test"}
        return await self.client.post("/v1/assignments", json=body, headers=self.ops())

    # ------------------------------------------------------------------ devices

    async def device_record(self, device_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/devices/{device_id}", headers=self.ops())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def runs(self, version: str, *device_ids: str) -> None:
        """Wait until every device reported running ``version`` (to the gateway)."""

        async def running() -> bool:
            for device_id in device_ids or self.devices:
                if (await self.device_record(device_id))["active_version"] != version:
                    return False
            return True

        await wait_for(running, f"{device_ids or list(self.devices)} to run {version}")

    def start_agent(self, device_id: str) -> None:
        d = self.devices[device_id]
        d.task = asyncio.create_task(
            agent.main(
                device_id=device_id,
                creds=self.tmp / f"{device_id}.nk",
                nats_url=self.nats.url,
                state_dir=d.state_dir,
                release_key_paths=[self.tmp / "gateway.pub.pem"],
                model_key_paths=[self.tmp / "registry.pub.pem"],
                line=d.line,
                serve_port=d.port,
            ),
            name=f"agent-{device_id}",
        )

    async def stop_agent(self, device_id: str) -> None:
        task = self.devices[device_id].task
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.devices[device_id].task = None

    async def infer(self, device_id: str, label: str, seed: int = 0) -> dict[str, Any]:
        d = self.devices[device_id]
        if d.task is not None and d.task.done():
            d.task.result()  # the agent stopped: show why
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}") as http:
            for _ in range(200):
                try:
                    r = await http.post(
                        "/v1/inference", json={"camera": "w3", "image": image_of(label, seed)}
                    )
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the inference API of {device_id} did not come up")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def desired_doc(self, device_id: str) -> bytes:
        kv = await self.service.jetstream().key_value("desired")
        return (await kv.get(device_id)).value  # type: ignore[no-any-return]

    def release_block(self, raw: bytes) -> dict[str, Any]:
        return json.loads(raw)["signed"]["x-linegate-release"]  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _no_periodic_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests drive the rollout evaluator with their own clock, and the roster refresh
    # directly (or turn it on where they test it).
    monkeypatch.setenv("LINEGATE_ROLLOUT_EVALUATION_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("LINEGATE_COMPETENCE_REFRESH_SECONDS", "0")


@contextlib.asynccontextmanager
async def line_of(
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
    **gateway_settings: Any,
) -> AsyncIterator[Line]:
    """Gateway (with ``gateway_settings``) + secured nats-server + two registered devices on
    line 3 (agents not started)."""
    registry_key = generate_private_key()
    (tmp_path / "registry.pem").write_bytes(private_key_pem(registry_key))
    (tmp_path / "registry.pub.pem").write_bytes(public_key_pem(registry_key.public_key()))
    secured = NatsServer(tmp_path / "secured-nats", config_file=tmp_path / "nats.conf")
    settings = settings_factory(
        GatewaySettings,
        nats_url=secured.url,
        nats_user=SERVICE_USER,
        nats_password=SERVICE_PASSWORD,
        **gateway_settings,
    )
    app = create_gateway(settings)
    async with service_client(app, wait_for_nats=False) as client:
        t = Line(client, app, mint_token, secured, tmp_path)
        admin = bearer(mint_token(Role.ADMIN))
        for device_id in ("cam-3-1", "cam-3-2"):
            body = {"id": device_id, "plant": PLANT, "line": "line3", "station": "W3"}
            r = await client.post("/v1/devices", json=body, headers=admin)
            assert r.status_code == 201, r.text
            (tmp_path / f"{device_id}.nk").write_text(r.json()["nkey_seed"] + "\n")
            t.devices[device_id] = Device(
                device_id, "line3", free_port(), tmp_path / "agents" / device_id
            )
        # The server config is rendered from the inventory, as the embedded stack does.
        r = await client.get("/v1/devices", headers=t.ops())
        write_server_config(
            tmp_path / "nats.conf",
            render_server_config(
                devices=[(d["id"], d["public_nkey"]) for d in r.json()],
                service_user=SERVICE_USER,
                service_password=SERVICE_PASSWORD,
                lines={d["id"]: d["line"] for d in r.json()},
            ),
        )
        secured.start()
        try:
            await app.state.ctx.nats.wait_connected(30)

            async def subscribed() -> bool:
                return len(app.state.subscriptions) == 5

            await wait_for(subscribed, "the gateway's consumers")
            keys = (await client.get("/v1/release-keys")).json()["keys"]
            (tmp_path / "gateway.pub.pem").write_text(keys[0])
            t.service = await nats.connect(
                secured.url, user=SERVICE_USER, password=SERVICE_PASSWORD
            )
            yield t
        finally:
            for device_id in t.devices:
                await t.stop_agent(device_id)
            if t.service is not None:
                await t.service.close()
            secured.stop()


@pytest.fixture
async def line(
    settings_factory: Any, service_client: Any, mint_token: Any, tmp_path: Path
) -> AsyncIterator[Line]:
    """Gateway + secured nats-server + two registered devices on line 3 (agents not started)."""
    async with line_of(settings_factory, service_client, mint_token, tmp_path) as t:
        yield t


def signed_release(
    gw: distribution.Gateway,
    version: str,
    security_version: int,
    files: list[dict[str, Any]],
    manifest: str,
) -> Release:
    """The gateway's row for ``version`` of MODEL (the first of ``files`` is the artefact),
    with its release metadata signed by the gateway, as distribution leaves it."""
    release = Release(
        id=uuid.uuid4().hex,
        model=MODEL,
        version=version,
        security_version=security_version,
        artefact_digest=files[0]["sha256"],
        manifest_digest=manifest,
        files=files,
        metadata_json="",
        expires_at=datetime.now(UTC),
        created_at=datetime.now(UTC),
    )
    release.metadata_json, release.expires_at = distribution._sign(gw, release, metadata_version=1)
    return release
