"""Writing to the post-market log, inside the caller's unit of work."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from incident.postmarket.models import postmarket_event


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def dumps(payload: Mapping[str, Any]) -> str:
    """The JSON stored for a payload (datetimes and other values as their ``str``)."""
    return json.dumps(payload, default=str, separators=(",", ":"), sort_keys=True)


def row(
    *,
    kind: str,
    occurred_at: datetime,
    payload: Mapping[str, Any] | str,
    recorded_at: datetime | None = None,
    event_id: str | None = None,
    incident_id: str | None = None,
    model: str | None = None,
    version: str | None = None,
    device_id: str | None = None,
    line: str | None = None,
    station: str | None = None,
    record_id: str | None = None,
) -> dict[str, Any]:
    """One log row as :func:`record_many` takes it; ``payload`` may be JSON text already."""
    return {
        "kind": kind,
        "occurred_at": _utc(occurred_at),
        "recorded_at": recorded_at or datetime.now(UTC),
        "event_id": event_id,
        "incident_id": incident_id,
        "model": model,
        "version": version,
        "device_id": device_id,
        "line": line,
        "station": station,
        "record_id": record_id,
        "payload": payload if isinstance(payload, str) else dumps(payload),
    }


async def record_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append ``rows`` (built with :func:`row`) in one executemany."""
    if rows:
        await session.exec(postmarket_event.insert(), params=list(rows))


async def record(
    session: AsyncSession,
    *,
    kind: str,
    occurred_at: datetime,
    payload: Mapping[str, Any],
    incident_id: str | None = None,
    model: str | None = None,
    version: str | None = None,
    device_id: str | None = None,
    line: str | None = None,
    station: str | None = None,
) -> None:
    """Append one event to the post-market log in ``session``'s transaction.

    ``kind`` names the event (``inference``, ``override``, ``kpi_sample``, ``feedback``,
    ``incident.opened``, ...); the other keyword arguments are what the log is queried by.
    """
    await record_many(
        session,
        [
            row(
                kind=kind,
                occurred_at=occurred_at,
                payload=payload,
                incident_id=incident_id,
                model=model,
                version=version,
                device_id=device_id,
                line=line,
                station=station,
            )
        ],
    )
