"""NATS consumers that turn other services' events into incidents, and the gateway's action
results into timeline entries.

- ``linegate.incident.opened`` from the edge gateway (a rollout stage crossed a KPI threshold
  and was aborted) -> a ``rollout_abort`` incident. This service publishes its own opened
  events on the same subject; they carry ``actor = service:incident`` and are skipped.
- ``linegate.device.<id>.status`` with state ``refused`` (signature, digest, metadata or
  update failure on the device) -> a ``security`` incident.
- ``linegate.maintenance.<asset>`` (``MaintenanceAlertV1``) -> a ``pdm_alert`` incident and
  its encrypted maintenance ticket.
- ``linegate.incident.action_result`` -> the action's outcome on the incident's timeline.

Durable JetStream consumers in queue groups, so replicas share the work and nothing is lost
while the service is down; each handled event id is recorded with its effect (an inbox), so a
redelivery after a lost ack changes nothing. A malformed message is logged and acknowledged
(redelivering it cannot help); any other failure is redelivered after a delay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import actions
from incident.incidents.core import ACTOR
from incident.incidents.models import InboxEntry
from incident.incidents.sink import IncidentSink, Outcome
from incident.signals import Severity, Signal
from linegate.audit import AuditLog
from linegate.db import Database
from linegate.events import (
    DeviceStatusV1,
    EventV1,
    IncidentActionResultV1,
    IncidentOpenedV1,
    MaintenanceAlertV1,
    NatsClient,
    Subjects,
)

log = logging.getLogger("incident.incidents.consumers")

E = TypeVar("E", bound=BaseModel)


class Malformed(Exception):
    """A message that no redelivery can make valid."""


def parse(model: type[E], data: dict[str, Any]) -> E:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Malformed(str(e)) from e


def _severity(value: str, default: Severity = "high") -> Severity:
    return value if value in get_args(Severity) else default  # type: ignore[return-value]


def _rollout_id(gateway_incident_id: str) -> str | None:
    # The gateway names rollout aborts "rollout-<rollout id>-stage<n>".
    if gateway_incident_id.startswith("rollout-") and "-stage" in gateway_incident_id:
        return gateway_incident_id[len("rollout-") : gateway_incident_id.rindex("-stage")]
    return None


def opened_signal(event: IncidentOpenedV1) -> Signal | None:
    """The signal for another service's opened incident; None for this service's own."""
    if event.actor == ACTOR:
        return None
    what = f"{event.model} {event.version}" if event.model else "a rollout"
    where = f" on {event.line}" if event.line else ""
    return Signal(
        incident_type="rollout_abort",
        severity=_severity(event.severity),
        dedup_key=f"external:{event.incident_id}",
        summary=f"{event.incident_type.replace('_', ' ')}: {what}{where} aborted by the gateway",
        source=f"nats:{event.actor or 'unknown'}",
        observed_at=event.occurred_at,
        line=event.line,
        model=event.model,
        version=event.version,
        rollout_id=_rollout_id(event.incident_id),
        evidence={"external_incident_id": event.incident_id, "kind": event.incident_type},
    )


def refusal_signal(subject: str, status: DeviceStatusV1) -> Signal | None:
    if status.state != "refused":
        return None
    device_id = subject.split(".")[2]
    if status.device_id != device_id:
        log.warning("device %s reported as %s; ignored", device_id, status.device_id)
        return None
    release = f"{status.model} {status.version}" if status.model else "a release"
    return Signal(
        incident_type="security",
        severity="high",
        dedup_key=f"security:refused:{device_id}:{status.model}:{status.version}",
        summary=f"device {device_id} refused {release}: {status.detail or 'no reason given'}",
        source=f"device:{device_id}",
        observed_at=status.occurred_at,
        device_id=device_id,
        model=status.model,
        version=status.version,
        evidence={"state": status.state, "detail": status.detail},
    )


def maintenance_signal(alert: MaintenanceAlertV1) -> Signal:
    ratio = alert.ewma / alert.threshold if alert.threshold else 1.0
    device_id = (
        alert.actor.split(":", 1)[1] if alert.actor and alert.actor.startswith("device:") else None
    )
    return Signal(
        incident_type="pdm_alert",
        severity="high" if ratio >= 2.0 else "medium",
        dedup_key=f"pdm:{alert.asset}",
        summary=f"{alert.asset}: anomaly EWMA {alert.ewma:.3f} over its threshold "
        f"{alert.threshold:.3f}",
        source=alert.actor or "nats:maintenance",
        observed_at=alert.occurred_at,
        device_id=device_id,
        station=alert.asset,
        evidence={
            "asset": alert.asset,
            "ewma": alert.ewma,
            "threshold": alert.threshold,
            "last_score": alert.last_score,
            "windows": alert.windows,
            "model_digest": alert.model_digest,
        },
    )


def decode(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise Malformed(f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise Malformed("not a JSON object")
    return data


class Consumers:
    def __init__(
        self,
        *,
        db: Database,
        nats: NatsClient,
        audit: AuditLog,
        sink: IncidentSink,
        wake: Callable[[], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.db, self.nats, self.audit, self.sink, self.wake = db, nats, audit, sink, wake
        self.clock = clock

    async def first_time(self, session: AsyncSession, subject: str, event: EventV1) -> bool:
        """Record ``event`` as handled; False when it was handled before (a redelivery)."""
        if await session.get(InboxEntry, event.event_id) is not None:
            log.info("event %s on %s was handled before; skipped", event.event_id, subject)
            return False
        session.add(InboxEntry(event_id=event.event_id, subject=subject, received_at=self.clock()))
        await session.flush()
        return True

    async def signal(
        self,
        subject: str,
        event: EventV1,
        signal: Signal | None,
        external_ref: str | None = None,
    ) -> Outcome | None:
        if signal is None:
            return None
        async with self.db.session() as session:
            if not await self.first_time(session, subject, event):
                return None
            outcome = await self.sink.open_or_join(session, signal, external_ref=external_ref)
        self.wake()  # publish the opened event now, not at the next outbox poll
        return outcome

    async def on_opened(self, subject: str, data: dict[str, Any]) -> None:
        event = parse(IncidentOpenedV1, data)
        await self.signal(subject, event, opened_signal(event), external_ref=event.incident_id)

    async def on_device_status(self, subject: str, data: dict[str, Any]) -> None:
        status = parse(DeviceStatusV1, data)
        await self.signal(subject, status, refusal_signal(subject, status))

    async def on_maintenance(self, subject: str, data: dict[str, Any]) -> None:
        alert = parse(MaintenanceAlertV1, data)
        await self.signal(subject, alert, maintenance_signal(alert))

    async def on_action_result(self, subject: str, data: dict[str, Any]) -> None:
        result = parse(IncidentActionResultV1, data)
        async with self.db.session() as session:
            if await self.first_time(session, subject, result):
                await actions.record_result(session, self.audit, result, self.clock())

    async def subscribe(self) -> list[Any]:
        js = self.nats.js
        specs: list[tuple[str, str, Callable[[str, dict[str, Any]], Awaitable[None]]]] = [
            (Subjects.INCIDENT_OPENED, "incident-opened", self.on_opened),
            (Subjects.DEVICE_STATUS_ALL, "incident-device-status", self.on_device_status),
            (Subjects.MAINTENANCE_ALL, "incident-maintenance", self.on_maintenance),
            (Subjects.INCIDENT_ACTION_RESULT, "incident-action-result", self.on_action_result),
        ]
        subs = []
        for subject, queue, handler in specs:

            async def cb(msg: Any, handler: Any = handler) -> None:
                try:
                    await handler(msg.subject, decode(msg.data))
                except Malformed as e:
                    log.warning("malformed message on %s dropped: %s", msg.subject, e)
                    await msg.ack()
                    return
                except Exception:
                    log.exception("handling %s failed; redelivering", msg.subject)
                    await msg.nak(delay=5)
                    return
                await msg.ack()

            subs.append(await js.subscribe(subject, queue=queue, cb=cb, manual_ack=True))
        return subs
