"""Shared pieces of the incidents side: time helpers, severities, the timeline, the
post-market hook and the runtime object the API and consumers share."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from incident import postmarket
from incident.incidents.models import IncidentEvent

log = logging.getLogger("incident.incidents")

#: How the incident service names itself as an actor (audit log, events it publishes).
ACTOR = "service:incident"

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("open", "acknowledged", "investigating", "mitigated", "closed")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def utc(t: datetime) -> datetime:
    """``t`` as an aware UTC datetime (SQLite hands datetimes back naive)."""
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def utc_or_none(t: datetime | None) -> datetime | None:
    return None if t is None else utc(t)


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def note(
    session: AsyncSession,
    incident_id: str,
    *,
    at: datetime,
    kind: str,
    actor: str,
    detail: str,
    data: dict[str, Any] | None = None,
) -> IncidentEvent:
    """Append one entry to an incident's timeline."""
    event = IncidentEvent(
        incident_id=incident_id, at=utc(at), kind=kind, actor=actor, detail=detail, data=data or {}
    )
    session.add(event)
    await session.flush()
    return event


async def record_postmarket(
    session: AsyncSession,
    *,
    kind: str,
    occurred_at: datetime,
    payload: dict[str, Any],
    incident_id: str | None = None,
    model: str | None = None,
    version: str | None = None,
    device_id: str | None = None,
    line: str | None = None,
    station: str | None = None,
) -> None:
    """Record an incident event in the post-market monitoring log (EU AI Act Art. 72), in
    the caller's transaction, so the log can be queried by incident and equipment."""
    await postmarket.record(
        session,
        kind=kind,
        occurred_at=utc(occurred_at),
        payload=payload,
        incident_id=incident_id,
        model=model,
        version=version,
        device_id=device_id,
        line=line,
        station=station,
    )
