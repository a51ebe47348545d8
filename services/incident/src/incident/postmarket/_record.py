"""Writing to the post-market log, inside the caller's unit of work."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.postmarket.models import postmarket_event
from linegate.db import DriverStatement, core_connection


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


#: From this many rows an append to PostgreSQL is one ``COPY``: the driver's executemany
#: sends, and the server executes, each row as a statement of its own (the telemetry ingest
#: appends a row per device batch, a few hundred per fetch).
COPY_FROM_ROWS = 16
_COPIED = [c for c in postmarket_event.columns if c.name != "id"]
_COLUMNS = tuple(c.name for c in _COPIED)
#: Binary: the payload (tens of kB of JSON) goes as it is, not escaped for the text format.
_COPY = f"COPY {postmarket_event.name} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
#: What the binary rows carry: every column is a timestamptz or a string.
_TYPES = ["timestamptz" if isinstance(c.type, sa.DateTime) else "text" for c in _COPIED]
assert all(isinstance(c.type, sa.DateTime | sa.String) for c in _COPIED)


#: The append on the session connection's driver (see :class:`linegate.db.DriverStatement`):
#: SQLAlchemy's executemany builds and processes each row's parameters in Python, about as
#: long as SQLite's insert of a small row.
_INSERT = DriverStatement(postmarket_event.insert())


async def record_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append ``rows`` (built with :func:`row`) in one statement: an executemany of the
    driver's statement, or from :data:`COPY_FROM_ROWS` rows on PostgreSQL a ``COPY``."""
    if not rows:
        return
    connection = await core_connection(session)
    if len(rows) >= COPY_FROM_ROWS and connection.dialect.name == "postgresql":
        await _copy(session, rows)
        return
    await _INSERT.executemany(connection, rows)


async def _copy(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` by ``COPY`` on the session's connection, inside its transaction."""
    import psycopg  # the PostgreSQL driver (a dependency of linegate.db), only used here

    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = cast("psycopg.AsyncConnection[Any]", raw.driver_connection)
    try:
        async with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            for r in rows:
                await copy.write_row([r[c] for c in _COLUMNS])
    except psycopg.Error as e:
        # As SQLAlchemy would have raised it: callers tell a database failure (retry the
        # batch) from a bug by SQLAlchemy's DBAPIError.
        raise DBAPIError.instance(_COPY, None, e, psycopg.Error) from e


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
