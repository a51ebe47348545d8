"""A gateway database restored from an older backup, or recreated, on the same nats-server:
the gateway reads the revisions it published from the ``desired`` bucket and never issues one
at or below them, so the device agent's rollback check accepts the next document; a revision
the database holds above the published one is never lowered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select

from edge_gateway import distribution
from edge_gateway.app import create_app as create_gateway
from edge_gateway.models import DesiredState, Release
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.nats_auth import read_desired
from linegate.release_metadata import verify_release
from linegate.testing.fixtures import bearer
from linegate.testing.postgres import drop_schemas
from linegate_cli.agent import DeviceAgent
from tests.edge_gateway.conftest import MODEL, wait_for

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
    digest = "ab" * 32
    release = Release(
        id=uuid.uuid4().hex,
        model=MODEL,
        version="2.1.0",
        security_version=2,
        artefact_digest=digest,
        manifest_digest=digest,
        files=[{"path": "model.onnx", "length": 1, "sha256": digest}],
        metadata_json="",
        expires_at=datetime.now(UTC),
        created_at=datetime.now(UTC),
    )
    release.metadata_json, release.expires_at = distribution._sign(gw, release, metadata_version=1)
    return release


async def assign(client: httpx.AsyncClient, mint_token: Any, device_id: str, why: str) -> None:
    body = {"model": MODEL, "version": "2.1.0", "selector": {"device_ids": [device_id]}}
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
        assert (await published(gw, "cam-3-2"), await published(gw, "cam-3-1")) == (3, 7)
        assert await floor_audits(client, mint_token) == [
            (
                "device:cam-3-2",
                "the database holds revision 1 but revision 2 was published: restored or "
                "rebuilt; now 3",
            )
        ]

    # The database is lost and recreated; the nats-server (and its bucket) stays.
    if database_backend == "sqlite":
        for path in settings.data_dir.glob("edge_gateway.db*"):
            path.unlink()
    else:
        assert settings.database_url is not None
        drop_schemas(settings.database_url, [settings.database_schema_prefix + "edge_gateway"])

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
