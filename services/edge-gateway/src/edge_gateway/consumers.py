"""NATS consumers of the edge gateway: registry release/revocation events and device reports.

Durable JetStream consumers in a queue group, so replicas share the work and nothing is lost
while the gateway is down. A handler that fails is redelivered after a delay.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from edge_gateway import competence, distribution, rollouts
from edge_gateway.distribution import Gateway
from edge_gateway.models import Device
from linegate.events import DeviceStatusV1, Subjects

log = logging.getLogger("edge_gateway.consumers")
ACTOR = "service:edge-gateway"


async def on_registry_event(gw: Gateway, data: dict[str, Any]) -> None:
    kind = data.get("kind")
    if kind == "registry.released.v1":
        await distribution.distribute(gw, data["model"], data["version"], actor=ACTOR)
        # Before any device is assigned the release: its first document carries the roster.
        await competence.refresh_rosters(gw, [data["model"]])
    elif kind == "registry.revoked.v1":
        moved = await distribution.revoke(
            gw, data["model"], data["version"], data["reason"], actor=ACTOR
        )
        log.info("revoked %s %s; moved %d devices back", data["model"], data["version"], len(moved))


async def on_device_status(gw: Gateway, subject: str, data: dict[str, Any]) -> None:
    status = DeviceStatusV1.model_validate(data)
    # The subject is what the server let the device publish on; trust it over the payload.
    device_id = subject.split(".")[2]
    if status.device_id != device_id:
        log.warning("device %s reported as %s; ignored", device_id, status.device_id)
        return
    if status.revision:
        # Read before the transaction below (a no-op once read, normally at start).
        await distribution.ensure_revision_floor(gw)
    republish = False
    async with gw.db.session() as session:
        device = await session.get(Device, device_id)
        if device is None:
            return
        if status.revision is not None:  # older agents do not say
            republish = await distribution.record_reported_revision(
                gw, session, device, status.revision, actor=ACTOR
            )
        device.last_state, device.last_detail = status.state, status.detail
        device.last_seen = datetime.now(UTC)
        if status.state in ("active", "rolled_back"):  # both: it now runs that release
            device.active_model, device.active_version = status.model, status.version
        session.add(device)
        await rollouts.evaluator.record_device_status(session, device_id, status)
        if status.state in {"active", "refused", "rolled_back"}:
            await gw.audit.append(
                session,
                actor=f"device:{device_id}",
                action=f"device.{status.state}",
                subject=f"device:{device_id}",
                payload=status.model_dump(mode="json"),
                reason=status.detail,
            )
    if republish:  # re-issued above what the device holds: now it converges
        await distribution.publish_desired(gw, [device_id])


def _json_object(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004  (malformed, like bad JSON)
    return data


async def _drop(msg: Any, what: str, error: Exception) -> None:
    """Terminate a message no retry can fix (not JSON, not the versioned event model)."""
    log.warning("malformed %s on %s dropped: %s", what, msg.subject, error)
    await msg.term()


async def subscribe(gw: Gateway) -> list[Any]:
    js = gw.nats.js

    async def registry_cb(msg: Any) -> None:
        try:
            data = _json_object(msg.data)
        except ValueError as e:
            await _drop(msg, "registry event", e)
            return
        try:
            await on_registry_event(gw, data)
            await msg.ack()
        except Exception:
            log.exception("registry event failed; redelivering")
            await msg.nak(delay=5)

    async def status_cb(msg: Any) -> None:
        try:
            data = json.loads(msg.data)
            DeviceStatusV1.model_validate(data)
        except ValueError as e:  # JSONDecodeError and pydantic's ValidationError
            # Devices (or a reply-subject trick, see linegate.nats_auth) can put any bytes
            # here: a payload that can never be valid is dropped, not redelivered forever.
            await _drop(msg, "device status", e)
            return
        try:
            await on_device_status(gw, msg.subject, data)
            await msg.ack()
        except Exception:
            log.exception("device status failed; redelivering")
            await msg.nak(delay=5)

    return [
        await js.subscribe(
            "linegate.registry.>",
            # nats-py names the durable consumer after the queue group; replicas share it.
            queue="edge-gateway-registry",
            cb=registry_cb,
            manual_ack=True,
        ),
        await js.subscribe(
            Subjects.DEVICE_STATUS_ALL,
            queue="edge-gateway-status",
            cb=status_cb,
            manual_ack=True,
        ),
    ]
