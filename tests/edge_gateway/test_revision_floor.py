"""A gateway database restored from an older backup, or recreated, on the same nats-server:
the gateway reads the revisions it published from the ``desired`` bucket and never issues one
at or below them, so the device agent's rollback check accepts the next document; a revision
the database holds above the published one is never lowered. When the bucket is lost with the
database, the revisions real agents report holding do the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
from sqlmodel import select

from edge_gateway import distribution
from edge_gateway.app import create_app as create_gateway
from edge_gateway.models import DesiredState, Release
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.events import Buckets, DeviceStatusV1, Streams
from linegate.modelsig import sign_model, verify_model
from linegate.nats_auth import read_desired
from linegate.objstore import put_file
from linegate.release_metadata import verify_release
from linegate.signing import generate_private_key, private_key_pem, public_key_pem
from linegate.testing.fixtures import bearer
from linegate.testing.onnx_models import write_model_dir
from linegate.testing.postgres import drop_schemas
from linegate_cli.agent import DeviceAgent, status_publisher
from tests.edge_gateway.conftest import MODEL, signed_release, wait_for

DEVICES = ("cam-3-1", "cam-3-2")

Gateway = tuple[httpx.AsyncClient, distribution.Gateway]


def life_of(
    settings: GatewaySettings, service_client: Any, mint_token: Any
) -> Callable[[], AbstractAsyncContextManager[Gateway]]:
    """One run of the gateway on ``settings``: devices registered, 2.1.0 in its database."""

    @asynccontextmanager
    async def run() -> AsyncIterator[Gateway]:
        app = create_gateway(settings)
        async with service_client(app) as client:
            gw: distribution.Gateway = app.state.gateway
            await wait_for(lambda: _loaded(gw), "the published revisions to be read")

            async def started() -> bool:
                # The last start-up step: the start-up re-publication of every desired state
                # is over, so it cannot overwrite a document the test makes the gateway issue.
                return app.state.metadata_refresher._task is not None

            await wait_for(started, "the gateway's start-up to finish")
            admin = bearer(mint_token(Role.ADMIN))
            for device_id in DEVICES:
                body = {"id": device_id, "plant": "wolfsburg", "line": "line3", "station": "W3"}
                r = await client.post("/v1/devices", json=body, headers=admin)
                assert r.status_code in (201, 409), r.text  # 409: the database kept it
            async with gw.db.session() as session:
                if await distribution._release(session, MODEL, "2.1.0") is None:
                    session.add(_release(gw))
            yield client, gw

    return run


async def _loaded(gw: distribution.Gateway) -> bool:
    return gw.revision_floor.loaded


def _release(gw: distribution.Gateway) -> Release:
    """2.1.0 as the database knows it (its files are not in the object store)."""
    digest = "ab" * 32
    files = [{"path": "model.onnx", "length": 1, "sha256": digest}]
    return signed_release(gw, "2.1.0", 2, files, digest)


async def assign(
    client: httpx.AsyncClient, mint_token: Any, device_id: str, why: str, version: str = "2.1.0"
) -> None:
    body = {"model": MODEL, "version": version, "selector": {"device_ids": [device_id]}}
    r = await client.post(
        "/v1/assignments",
        json={**body, "reason": why},
        headers=bearer(mint_token(Role.REGISTRY_APPROVE, sub="ot-engineer")),
    )
    assert r.status_code == 200, r.text


async def floor_audits(client: httpx.AsyncClient, mint_token: Any) -> list[tuple[str, str]]:
    r = await client.get(
        "/v1/audit/entries", params={"limit": 1000}, headers=bearer(mint_token(Role.AUDITOR))
    )
    return [
        (e["subject"], e["reason"])
        for e in r.json()
        if e["action"] == "device.desired.revision_floor"
    ]


async def stored(gw: distribution.Gateway) -> dict[str, int]:
    async with gw.db.session() as session:
        return {d.device_id: d.revision for d in (await session.exec(select(DesiredState)))}


async def published(gw: distribution.Gateway, device_id: str) -> int:
    entry = await read_desired(gw.nats.js, device_id)
    assert entry is not None
    assert entry.value
    release = verify_release(entry.value, [gw.release_key().public_key()])
    assert release.device is not None
    return int(release.device["revision"])


async def test_revisions_stay_above_the_published_ones_after_a_restore_or_a_rebuild(
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    database_backend: str,
    tmp_path: Path,
) -> None:
    settings = settings_factory(GatewaySettings)
    life = life_of(settings, service_client, mint_token)
    async with life() as (client, gw):
        for n in range(3):
            await assign(client, mint_token, "cam-3-1", f"change {n}")
        for n in range(2):
            await assign(client, mint_token, "cam-3-2", f"change {n}")
        assert await stored(gw) == {"cam-3-1": 3, "cam-3-2": 2}
        key = gw.release_key().public_key()
        # An older backup comes back for cam-3-2; cam-3-1's row is ahead of the bucket.
        async with gw.db.session() as session:
            for device_id, revision in (("cam-3-2", 1), ("cam-3-1", 7)):
                desired = await session.get(DesiredState, device_id)
                assert desired is not None
                desired.revision = revision
                session.add(desired)

    async with life() as (client, gw):
        assert await stored(gw) == {"cam-3-1": 7, "cam-3-2": 3}  # raised, never lowered

        async def republished() -> bool:  # at start, after the floor was read
            return (await published(gw, "cam-3-2"), await published(gw, "cam-3-1")) == (3, 7)

        await wait_for(republished, "the raised revisions to be re-published")
        assert await floor_audits(client, mint_token) == [
            (
                "device:cam-3-2",
                "the database holds revision 1 but revision 2 was published: restored or "
                "rebuilt; now 3",
            )
        ]

    # The database is lost and recreated; the nats-server (and its bucket) stays.
    lose_database(settings, database_backend)

    async with life() as (client, gw):
        assert await stored(gw) == {}
        await assign(client, mint_token, "cam-3-2", "the line is set up again")
        await assign(client, mint_token, "cam-3-1", "the line is set up again")
        assert await stored(gw) == {"cam-3-1": 8, "cam-3-2": 4}
        assert await floor_audits(client, mint_token) == [
            (
                "device:cam-3-2",
                "the database holds revision 0 but revision 3 was published: "
                "restored or rebuilt; now 4",
            ),
            (
                "device:cam-3-1",
                "the database holds revision 0 but revision 7 was published: "
                "restored or rebuilt; now 8",
            ),
        ]
        doc = (await read_desired(gw.nats.js, "cam-3-2")).value  # type: ignore[union-attr]

        # The device agent that applied revision 3 takes revision 4, and would refuse 3.
        agent = DeviceAgent(
            "cam-3-2",
            tmp_path / "agent",
            js=gw.nats.js,
            release_keys=[key],
            model_key_paths=[],
            report=_ignore,
        )
        agent.state.revision = 3
        release = verify_release(doc, agent.release_keys)
        assert release.device is not None
        assert release.device["revision"] == 4
        assert agent._binding_refusal(release) is None
        agent.state.revision = 5
        assert "older than the applied 5" in (agent._binding_refusal(release) or "")


async def _ignore(_: Any) -> None:
    return None


def lose_database(settings: GatewaySettings, database_backend: str) -> None:
    if database_backend == "sqlite":
        for path in settings.data_dir.glob("edge_gateway.db*"):
            path.unlink()
    else:
        assert settings.database_url is not None
        drop_schemas(settings.database_url, [settings.database_schema_prefix + "edge_gateway"])


async def real_release(gw: distribution.Gateway, tmp: Path, version: str, sv: int) -> None:
    """``version``: a real ONNX model signed by the registry key in ``tmp``, its files in the
    object store, its release metadata signed by the gateway (as distribution leaves it)."""
    folder = write_model_dir(tmp / "src" / version / MODEL, version=version)
    signature = tmp / "src" / version / "model.sig"
    sign_model(folder, tmp / "registry.pem", signature)
    manifest = verify_model(folder, tmp / "registry.pub.pem", signature).manifest_sha256
    files: list[dict[str, Any]] = []
    for path in [*sorted(folder.iterdir()), signature]:
        digest = distribution._sha256(path)
        await put_file(gw.nats.js, Buckets.MODELS, digest, path)
        files.append({"path": path.name, "length": path.stat().st_size, "sha256": digest})
    async with gw.db.session() as session:
        session.add(signed_release(gw, version, sv, files, manifest))


async def test_revisions_stay_above_what_devices_hold_when_the_bucket_is_lost_too(
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    database_backend: str,
    nats_server: Any,
    tmp_path: Path,
) -> None:
    registry_key = generate_private_key()
    (tmp_path / "registry.pem").write_bytes(private_key_pem(registry_key))
    (tmp_path / "registry.pub.pem").write_bytes(public_key_pem(registry_key.public_key()))
    settings = settings_factory(GatewaySettings)
    life = life_of(settings, service_client, mint_token)
    devices = await nats.connect(nats_server.url)  # the agents' connection
    js = devices.jetstream(timeout=10)

    def agent_of(gw: distribution.Gateway, device_id: str) -> DeviceAgent:
        return DeviceAgent(
            device_id,
            tmp_path / "agents" / device_id,
            js=js,
            release_keys=[gw.release_key().public_key()],
            model_key_paths=[tmp_path / "registry.pub.pem"],
            report=status_publisher(js, device_id),  # to the gateway, over NATS
            download_timeout=10,
        )

    async def doc(device_id: str) -> bytes:
        entry = await read_desired(js, device_id)
        assert entry is not None
        assert entry.value
        return entry.value

    async def record(client: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
        r = await client.get(f"/v1/devices/{device_id}", headers=bearer(mint_token(Role.AUDITOR)))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def reported(client: httpx.AsyncClient, device_id: str, **wanted: Any) -> None:
        async def seen() -> bool:
            rec = await record(client, device_id)
            return all(rec[k] == v for k, v in wanted.items())

        await wait_for(seen, f"{device_id}'s report {wanted}")

    try:
        async with life() as (client, gw):
            await real_release(gw, tmp_path, "2.0.4", 1)
            for n in range(3):
                await assign(client, mint_token, "cam-3-1", f"change {n}", "2.0.4")
            for n in range(2):
                await assign(client, mint_token, "cam-3-2", f"change {n}", "2.0.4")
            for device_id, revision in (("cam-3-1", 3), ("cam-3-2", 2)):
                agent = agent_of(gw, device_id)
                assert await agent.apply(await doc(device_id))
                assert agent.state.revision == revision
                # Its last report ("active") handled: the gateway recorded what it holds.
                await reported(client, device_id, last_state="active", reported_revision=revision)

            async def settled() -> bool:  # no report of this life is redelivered to the next
                info = await js.consumer_info(Streams.DEVICE.name, "edge-gateway-status")
                return bool(info.num_ack_pending == 0 and info.num_pending == 0)

            await wait_for(settled, "the gateway to acknowledge every report")

        # The database and the desired bucket are lost; the devices keep what they hold.
        lose_database(settings, database_backend)
        await js.delete_key_value(Buckets.DESIRED)

        async with life() as (client, gw):
            assert await stored(gw) == {}
            assert gw.revision_floor.published == {}  # nothing left to read it from
            await real_release(gw, tmp_path, "2.2.0", 3)

            # cam-3-2 gets revision 1 before it reported: it refuses it, saying it holds 2,
            # and the gateway re-issues its desired state above that.
            cam2 = agent_of(gw, "cam-3-2")
            await assign(client, mint_token, "cam-3-2", "the line is set up again", "2.2.0")
            assert await published(gw, "cam-3-2") == 1
            assert not await cam2.apply(await doc("cam-3-2"))

            async def reissued() -> bool:
                return await published(gw, "cam-3-2") == 3

            await wait_for(reissued, "cam-3-2's desired state re-issued above revision 2")
            assert await cam2.apply(await doc("cam-3-2"))
            assert cam2.state.active is not None
            assert (cam2.state.active.version, cam2.state.revision) == ("2.2.0", 3)

            # cam-3-1 reports (as the agent does when it starts) before anything is assigned.
            # A report of a revision no gateway signed is ignored (handled in order: the
            # genuine one after it shows it was read).
            cam1 = agent_of(gw, "cam-3-1")
            bogus = DeviceStatusV1(device_id="cam-3-1", state="online", revision=2**31)
            await status_publisher(js, "cam-3-1")(bogus)
            await cam1.report("online", None, "agent started")
            await reported(client, "cam-3-1", last_detail="agent started", reported_revision=3)
            await assign(client, mint_token, "cam-3-1", "the line is set up again", "2.2.0")
            assert await stored(gw) == {"cam-3-1": 4, "cam-3-2": 3}
            assert await cam1.apply(await doc("cam-3-1"))
            assert cam1.state.active is not None
            assert (cam1.state.active.version, cam1.state.revision) == ("2.2.0", 4)
            await reported(client, "cam-3-1", last_state="active", reported_revision=4)

            # Claiming more again, right after a raise, is not acted on: no re-issue, no audit.
            again = DeviceStatusV1(device_id="cam-3-1", state="online", revision=9)
            await status_publisher(js, "cam-3-1")(again)
            await cam1.report("online", None, "still here")
            await reported(client, "cam-3-1", last_detail="still here", reported_revision=4)
            assert await stored(gw) == {"cam-3-1": 4, "cam-3-2": 3}

            lost = "the database and the desired bucket were lost or restored"
            assert await floor_audits(client, mint_token) == [
                (
                    "device:cam-3-2",
                    "device reported holding revision 2 but the database holds 1 and 0 was "
                    f"the highest published: {lost}; now 3",
                ),
                (
                    "device:cam-3-1",
                    "device reported holding revision 3 but the database holds 0 and 0 was "
                    f"the highest published: {lost}; the next one issued is 4",
                ),
            ]
    finally:
        await devices.close()


async def test_a_stale_publish_never_overwrites_a_newer_desired_state(
    settings_factory: Any, service_client: Any, mint_token: Any
) -> None:
    # A re-publish that read the database before a change committed writes what it read
    # after the change was published: the bucket must keep the newer document.
    settings = settings_factory(GatewaySettings)
    async with life_of(settings, service_client, mint_token)() as (client, gw):
        await assign(client, mint_token, "cam-3-1", "first")
        kv = await distribution.desired_bucket(gw)
        first = await kv.get("cam-3-1")
        await assign(client, mint_token, "cam-3-1", "second")
        assert await published(gw, "cam-3-1") == 2

        older = first.value.decode()
        assert not await distribution._put_unless_newer(gw, kv, "cam-3-1", 1, older)
        assert await published(gw, "cam-3-1") == 2
        # The same revision re-signed (a fresh expiry) is written.
        again = (await kv.get("cam-3-1")).value.decode()
        assert await distribution._put_unless_newer(gw, kv, "cam-3-1", 2, again)

        # A document the gateway did not sign cannot hold it back, whatever it claims.
        forged = {"signed": {"x-linegate-release": {"device": {"id": "cam-3-1", "revision": 99}}}}
        await kv.put("cam-3-1", json.dumps(forged).encode())
        await distribution.publish_desired(gw, ["cam-3-1"])
        assert await published(gw, "cam-3-1") == 2
        # Nor can an empty value, and a deleted key is created again.
        for spoil in (kv.put("cam-3-1", b""), kv.delete("cam-3-1")):
            await spoil
            await distribution.publish_desired(gw, ["cam-3-1"])
            assert await published(gw, "cam-3-1") == 2
