"""Registry release -> gateway distribution (object store + signed TUF metadata + desired state)
-> device agent (verify, download, self-test, swap), on real NATS, real services, real keys."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from edge_gateway.app import create_app as create_gateway
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.events import DeviceStatusV1
from linegate.nats_auth import read_desired
from linegate.release_metadata import ReleaseFile, sign_release
from linegate.signing import generate_private_key, load_private_key, load_public_key
from linegate.testing.fixtures import bearer
from linegate_cli.agent import DeviceAgent, run
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings
from tests.registry.conftest import RegistryClient

MODEL = "weld-seam-inspector"


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class Chain:
    def __init__(
        self, registry: RegistryClient, gateway: Any, app: Any, mint: Any, nc: Any, tmp: Path
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self.app = app
        self.mint = mint
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.tmp = tmp
        self.reports: list[DeviceStatusV1] = []

    def ops(self) -> dict[str, str]:
        return bearer(self.mint(Role.REGISTRY_APPROVE, sub="ot-engineer"))

    async def release(self, version: str, **push: Any) -> None:
        await self.registry.to_validated(version, **push)
        r = await self.registry.decide(version, "alex-approver")
        assert r.json()["state"] == "approved", r.text
        r = await self.registry.release(version)
        assert r.status_code == 200, r.text

        async def distributed() -> bool:
            r = await self.gateway.get("/v1/releases", headers=self.ops())
            return any(x["version"] == version for x in r.json())

        await wait_for(distributed, f"distribution of {version}")

    async def register(self, device_id: str, line: str = "line3") -> dict[str, Any]:
        body = {"id": device_id, "plant": "wolfsburg", "line": line, "station": "W3"}
        r = await self.gateway.post("/v1/devices", json=body, headers=bearer(self.mint(Role.ADMIN)))
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def assign(self, version: str, **selector: Any) -> Any:
        body = {"model": MODEL, "version": version, "selector": selector, "reason": "canary line 3"}
        return await self.gateway.post("/v1/assignments", json=body, headers=self.ops())

    async def agent(self, device_id: str) -> DeviceAgent:
        keys = (await self.gateway.get("/v1/release-keys")).json()["keys"]
        model_key = self.tmp / "registry.pub.pem"
        model_key.write_text(
            (await self.registry.client.get("/v1/signing-keys")).json()["keys"][0]["public_key_pem"]
        )

        async def report(status: DeviceStatusV1) -> None:
            self.reports.append(status)

        return DeviceAgent(
            device_id,
            self.tmp / "devices" / device_id,
            js=self.js,
            release_keys=[load_public_key(k.encode()) for k in keys],
            model_key_paths=[model_key],
            report=report,
            download_timeout=10,
        )

    async def desired(self, device_id: str) -> bytes:
        entry = await read_desired(self.js, device_id)
        assert entry is not None
        assert entry.value
        return entry.value

    def states(self) -> list[str]:
        return [r.state for r in self.reports]


@contextlib.asynccontextmanager
async def chain_of(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
    nats_server: Any,
    **registry_settings: Any,
) -> AsyncIterator[Chain]:
    """A real registry (over HTTP, with ``registry_settings``) and gateway on one NATS."""
    registry_app = create_registry(settings_factory(RegistrySettings, **registry_settings))
    registry_url = serve_http(registry_app)
    gateway_app = create_gateway(settings_factory(GatewaySettings, registry_url=registry_url))
    async with (
        service_client(gateway_app) as gateway,
        httpx.AsyncClient(base_url=registry_url) as http,
    ):
        registry = RegistryClient(client=http, app=registry_app, mint=mint_token, tmp=tmp_path)
        await registry.create_system(tier=2)
        await registry.create_model()
        assert (await registry.add_golden_set()).status_code == 201
        nc = await nats.connect(nats_server.url)
        try:
            yield Chain(registry, gateway, gateway_app, mint_token, nc, tmp_path)
        finally:
            await nc.close()


@pytest.fixture
async def chain(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
    nats_server: Any,
) -> AsyncIterator[Chain]:
    async with chain_of(
        settings_factory, serve_http, service_client, mint_token, tmp_path, nats_server
    ) as c:
        yield c


async def test_a_release_reaches_a_device_that_verifies_and_swaps(chain: Chain) -> None:
    await chain.release("2.0.4", security_version=1)
    device = await chain.register("cam-3-1")
    assert device["nkey_seed"].startswith("SU")
    assert device["public_nkey"].startswith("U")
    r = await chain.assign("2.0.4", line="line3")
    assert r.status_code == 200, r.text
    assert r.json()["devices"] == ["cam-3-1"]

    agent = await chain.agent("cam-3-1")
    assert await agent.apply(await chain.desired("cam-3-1")) is True
    assert chain.states() == ["downloaded", "verified", "self_test", "active"]
    installed = (agent.current / "model.onnx").read_bytes()
    v = await chain.registry.version("2.0.4")
    assert hashlib.sha256(installed).hexdigest() == v["artefact_digest"]
    assert agent.state.active is not None
    assert agent.state.active.version == "2.0.4"

    # The same desired state again changes nothing.
    assert await agent.apply(await chain.desired("cam-3-1")) is True
    assert chain.states()[-1] == "active"


async def test_tampered_unsigned_expired_and_mixed_metadata_is_refused(chain: Chain) -> None:
    await chain.release("2.0.4", security_version=1)
    await chain.release("2.1.0", security_version=2)
    await chain.register("cam-3-1")
    await chain.assign("2.0.4", device_ids=["cam-3-1"])
    agent = await chain.agent("cam-3-1")
    good = await chain.desired("cam-3-1")

    tampered = good.replace(b'"security_version":1', b'"security_version":9')
    assert tampered != good
    foreign = generate_private_key()
    doc = json.loads(good)
    release = doc["signed"]["x-linegate-release"]
    files = [
        ReleaseFile(p, t["length"], t["hashes"]["sha256"])
        for p, t in doc["signed"]["targets"].items()
    ]
    key = load_private_key((chain.tmp / "data" / "keys" / "release-metadata.pem").read_bytes())

    def signed(k: Any = key, **kw: Any) -> bytes:
        args = {
            "model": release["model"],
            "version": release["version"],
            "security_version": 1,
            "manifest_sha256": release["manifest_sha256"],
            "files": files,
            "expires": datetime.now(UTC) + timedelta(days=1),
            **kw,
        }
        return sign_release(k, **args)

    # The model-signing bundle of 2.1.0 beside the model of 2.0.4: mix-and-match.
    v210 = json.loads(
        (
            await chain.gateway.get(f"/v1/releases/{MODEL}/2.1.0/metadata", headers=chain.ops())
        ).content
    )
    sig210 = v210["signed"]["targets"]["model.sig"]
    mixed = [
        f
        if f.path != "model.sig"
        else ReleaseFile("model.sig", sig210["length"], sig210["hashes"]["sha256"])
        for f in files
    ]

    cases = {
        "tampered": (tampered, "signature"),
        "foreign key": (signed(foreign), "does not trust"),
        "expired": (signed(expires=datetime.now(UTC) - timedelta(minutes=1)), "expired"),
        "mix-and-match": (signed(files=mixed), "model signature"),
    }
    for name, (raw, needle) in cases.items():
        chain.reports.clear()
        assert await agent.apply(raw) is False, name
        assert chain.states()[-1] == "refused", name
        assert needle in (chain.reports[-1].detail or ""), (name, chain.reports[-1].detail)
        assert agent.state.active is None, name
    assert await agent.apply(good) is True


async def test_anti_rollback_and_revocation_move_devices_back(chain: Chain) -> None:
    await chain.release("2.0.4", security_version=1)
    await chain.release("2.1.0", security_version=2)
    await chain.register("cam-3-1")
    agent = await chain.agent("cam-3-1")
    await chain.assign("2.0.4", device_ids=["cam-3-1"])
    old = await chain.desired("cam-3-1")
    await chain.assign("2.1.0", device_ids=["cam-3-1"])
    new = await chain.desired("cam-3-1")
    assert await agent.apply(new) is True

    # Replaying the older release is a rollback attack: refused.
    assert await agent.apply(old) is False
    assert "rollback" in (chain.reports[-1].detail or "")

    # A revocation in the registry moves the device back, with a signed rollback instruction.
    r = await chain.registry.client.post(
        f"/v1/models/{MODEL}/versions/2.1.0/revoke",
        json={"reason": "escapes at incoming inspection"},
        headers=chain.registry.auth(Role.RESPONDER, sub="rita-responder"),
    )
    assert r.status_code == 200, r.text

    async def moved_back() -> bytes | None:
        value = await chain.desired("cam-3-1")
        return value if b'"rollback"' in value else None

    rollback = await wait_for(moved_back, "the revocation to reach the desired state")
    assert await agent.apply(rollback) is True
    assert chain.states()[-1] == "rolled_back"
    assert agent.state.active is not None
    assert agent.state.active.version == "2.0.4"
    # The revoked release cannot come back by replay, and the gateway refuses to assign it.
    assert await agent.apply(new) is False
    assert (await chain.assign("2.1.0", device_ids=["cam-3-1"])).status_code == 409


async def test_an_offline_device_converges_when_it_comes_back(chain: Chain) -> None:
    await chain.release("2.0.4", security_version=1)
    await chain.register("cam-3-2")
    await chain.assign("2.0.4", device_ids=["cam-3-2"])  # the device is offline meanwhile
    agent = await chain.agent("cam-3-2")
    task = asyncio.create_task(run(agent, chain.nc))
    try:

        async def active() -> bool:
            return "active" in chain.states()

        await wait_for(active, "the agent to install its desired release")
        await chain.release("2.1.0", security_version=2)
        await chain.assign("2.1.0", device_ids=["cam-3-2"])

        async def updated() -> bool:
            return agent.state.active is not None and agent.state.active.version == "2.1.0"

        await wait_for(updated, "the agent to follow a new desired release")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def reported() -> bool:
        r = await chain.gateway.get("/v1/devices/cam-3-2", headers=chain.ops())
        return r.json()["active_version"] == "2.1.0"

    # The device reports reach the gateway only when they are published: here the test agent
    # reports in-process, so publish one the way the real agent does.
    from linegate_cli.agent import status_publisher

    await status_publisher(chain.js, "cam-3-2")(
        DeviceStatusV1(device_id="cam-3-2", state="active", model=MODEL, version="2.1.0")
    )
    await wait_for(reported, "the gateway to record the device's report")


@pytest.mark.parametrize(
    ("model", "version"),
    [
        # A query spliced into the registry URL would have fetched the model line instead.
        (f"{MODEL}%3Fx=", "1.0.0"),
        ("weld%23seam", "1.0.0"),  # a fragment
        ("weld%14seam", "1.0.0"),  # a control character httpx refuses in a URL
        ("%2E%2E", "1.0.0"),  # a dot segment that would climb out of /v1/models
        (MODEL, "%2E%2E"),
        (MODEL, "1.0.0%20%E2%9C%93"),
    ],
)
async def test_distributing_a_name_the_registry_does_not_have_is_a_4xx(
    chain: Chain, model: str, version: str
) -> None:
    """Names from the gateway's path reach the registry as one segment each, exactly as given:
    an unknown one is refused with problem+json, never a 500 or a request for another path."""
    await chain.release("1.0.0")
    r = await chain.gateway.post(f"/v1/releases/{model}/{version}/distribute", headers=chain.ops())
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "the registry has no /v1/models/" in r.json()["detail"]
