"""Fixtures and helpers for the incidents side: the incident app on real NATS and a real
database, a raw NATS connection playing the gateway and the devices, the maintenance team's
real key pair, and a clock the tests set (``desk.now``) instead of sleeping."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from nats.js.errors import NotFoundError
from sqlalchemy import func
from sqlmodel import col, select

from incident.app import create_app
from incident.incidents.runtime import Incidents
from incident.settings import IncidentSettings
from incident.signals import Signal
from linegate.auth import Role
from linegate.embedded import free_port
from linegate.events import Streams
from linegate.outbox import OutboxMessage
from linegate.testing.fixtures import bearer

#: A Monday night shift on line 3.
T0 = datetime(2026, 11, 2, 22, 15, tzinfo=UTC)
MODEL = "weld-seam-inspector"


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class MaintenanceKeys:
    public_pem: str
    private: ECKey


@pytest.fixture
def maintenance_keys() -> MaintenanceKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return MaintenanceKeys(public_pem, ECKey.import_key(private_pem))


@dataclass
class Desk:
    client: Any
    app: Any
    mint: Any
    nc: Any
    now: datetime = T0
    seen: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> Incidents:
        runtime: Incidents = self.app.state.incidents
        return runtime

    @property
    def js(self) -> Any:
        return self.nc.jetstream(timeout=10)

    def auth(self, *roles: Role, sub: str = "rita-responder") -> dict[str, str]:
        return bearer(self.mint(*(roles or (Role.RESPONDER,)), sub=sub))

    def admin(self) -> dict[str, str]:
        return self.auth(Role.ADMIN, sub="ada-admin")

    def signal(self, **kw: Any) -> Signal:
        values: dict[str, Any] = {
            "incident_type": "defect_escape",
            "severity": "high",
            "dedup_key": f"outcome:{MODEL}:2.1.0:line3",
            "summary": "escapes 4.1% on night shift while model pass rate stays 97%",
            "source": "monitor:outcome",
            "observed_at": self.now,
            "line": "line3",
            "model": MODEL,
            "version": "2.1.0",
            "evidence": {"escape_rate": 0.041, "baseline": 0.004},
        }
        values.update(kw)
        return Signal(**values)

    async def raise_signal(self, **kw: Any) -> Any:
        """Raise a signal through the app's sink, as a monitor does; the outcome."""
        ctx = self.app.state.ctx
        async with ctx.db.session() as session:
            outcome = await self.runtime.sink.open_or_join(session, self.signal(**kw))
        ctx.outbox.wake()
        return outcome

    async def flush_outbox(self) -> None:
        """Publish every queued event and wait until none is pending (flushed after the woken
        relay's own flush, which this one waits for)."""
        ctx = self.app.state.ctx

        async def drained() -> bool:
            await ctx.outbox.flush()
            async with ctx.db.session() as session:
                stmt = select(func.count()).where(col(OutboxMessage.sent_at).is_(None))
                return bool((await session.exec(stmt)).one() == 0)

        await wait_for(drained, "the outbox to drain")

    async def incident(self, incident_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/incidents/{incident_id}", headers=self.auth())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(f"/v1/incidents/{incident_id}/timeline", headers=self.auth())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def incidents(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/incidents", params=params, headers=self.auth())
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def audit_actions(self) -> list[str]:
        r = await self.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=self.auth(Role.AUDITOR)
        )
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json()]

    async def last_on(self, subject: str) -> dict[str, Any] | None:
        """The newest message JetStream holds on ``subject`` (after flushing the outbox); of a
        DSSE envelope (signed incident actions), its payload."""
        await self.flush_outbox()
        try:
            msg = await self.js.get_last_msg(Streams.INCIDENT.name, subject)
        except NotFoundError:
            return None
        data = json.loads(msg.data)
        if "payloadType" in data:
            data = json.loads(base64.b64decode(data["payload"]))
        return data  # type: ignore[no-any-return]

    async def publish(self, subject: str, event: Any) -> None:
        await self.js.publish(subject, event.model_dump_json().encode())

    async def status(self, incident_id: str, to: str, reason: str = "seen on the line") -> Any:
        return await self.client.post(
            f"/v1/incidents/{incident_id}/status",
            json={"status": to, "reason": reason},
            headers=self.auth(),
        )

    async def rule(self, **kw: Any) -> dict[str, Any]:
        body = {
            "incident_type": "defect_escape",
            "queue": "qa",
            "owner": "Maria Keller",
            "acknowledge_within_minutes": 15,
            "escalation": [
                {"owner": "Jonas Weber", "acknowledge_within_minutes": 30},
                {"owner": "Petra Schulz"},
            ],
            "reason": "QA owns escapes on line 3",
            **kw,
        }
        r = await self.client.post("/v1/routing-rules", json=body, headers=self.admin())
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def later(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


@asynccontextmanager
async def open_desk(
    settings: IncidentSettings, service_client: Any, mint_token: Any, nats_url: str
) -> AsyncIterator[Desk]:
    """The incident app on ``settings``, started, with its consumers subscribed."""
    app = create_app(settings)
    nc = await nats.connect(nats_url)
    try:
        async with service_client(app) as client:
            d = Desk(client=client, app=app, mint=mint_token, nc=nc)
            app.state.incidents.clock = lambda: d.now
            # Subscribed once the consumers are in place, so tests may publish at once.
            await wait_for(lambda: _true(len(app.state.incidents.subscriptions) == 4), "consumers")
            yield d
            # Stop with nothing in flight: every queued event published, the relay idle.
            await d.flush_outbox()
    finally:
        await nc.close()


@pytest.fixture
async def desk(
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    nats_server: Any,
    maintenance_keys: MaintenanceKeys,
) -> AsyncIterator[Desk]:
    settings = desk_settings(settings_factory, maintenance_keys, escalation_interval_seconds=0)
    async with open_desk(settings, service_client, mint_token, nats_server.url) as d:
        yield d


def desk_settings(
    settings_factory: Any, maintenance_keys: MaintenanceKeys, **overrides: Any
) -> IncidentSettings:
    """The desk's incident service settings (``escalation_interval_seconds=0``: no loop)."""
    values: dict[str, Any] = {
        "maintenance_public_key": maintenance_keys.public_pem,
        # Nothing listens there: approvals of corrective actions are accepted and flagged as
        # unchecked (test_action_competence.py runs them against a real registry).
        "registry_url": f"http://127.0.0.1:{free_port()}",
        "competence_unverifiable": "flag",
        **overrides,
    }
    settings: IncidentSettings = settings_factory(IncidentSettings, **values)
    return settings


async def _true(value: bool) -> bool:
    return value
