"""Post-market log routes: query with keyset pagination, export as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from incident._sql import ID_MAX, UtcDateTime, fetch_all
from incident.postmarket.models import postmarket_event
from incident.telemetry.deps import ReaderDep
from linegate.errors import Unprocessable
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/v1/postmarket", tags=["post-market log"])

COLUMNS = (
    "id",
    "kind",
    "occurred_at",
    "recorded_at",
    "event_id",
    "incident_id",
    "model",
    "version",
    "device_id",
    "line",
    "station",
    "record_id",
)
EXPORT_PAGE = 1000


@dataclass
class Filters:
    """Query parameters every log route takes (all optional, combined with AND)."""

    incident_id: str | None = None
    model: str | None = None
    version: str | None = None
    device_id: Annotated[str | None, Query(description="equipment: the device")] = None
    station: Annotated[str | None, Query(description="equipment: the station")] = None
    line: str | None = None
    kind: str | None = None
    record_id: str | None = None
    since: Annotated[datetime | None, Query(description="occurred_at >= since")] = None
    until: Annotated[datetime | None, Query(description="occurred_at < until")] = None

    def where(self) -> list[Any]:
        c = postmarket_event.c
        out: list[Any] = []
        for name in ("incident_id", "model", "version", "device_id", "station", "line", "kind"):
            value = getattr(self, name)
            if value is not None:
                out.append(c[name] == value)
        if self.record_id is not None:
            out.append(c.record_id == self.record_id)
        # Stored in UTC (SQLite keeps no offset): compare in UTC whatever the caller's offset.
        if self.since is not None:
            out.append(c.occurred_at >= _utc(self.since))
        if self.until is not None:
            out.append(c.occurred_at < _utc(self.until))
        if self.since and self.until and self.until <= self.since:
            raise Unprocessable("until must be after since")
        return out


FiltersDep = Annotated[Filters, Depends()]


class LogEntry(BaseModel):
    id: int
    kind: str
    occurred_at: UtcDateTime
    recorded_at: UtcDateTime
    event_id: str | None
    incident_id: str | None
    model: str | None
    version: str | None
    device_id: str | None
    line: str | None
    station: str | None
    record_id: str | None
    payload: dict[str, Any]


class LogPage(BaseModel):
    items: list[LogEntry]
    next_cursor: str | None


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        cursor = int(value)
    except ValueError:
        cursor = -1
    if not 0 <= cursor <= ID_MAX:
        raise Unprocessable(f"cursor {value!r} is not one this API returned")
    return cursor


async def _page(session: Any, where: list[Any], after: int | None, limit: int) -> list[Any]:
    c = postmarket_event.c
    q = sa.select(postmarket_event).where(*where).order_by(c.id).limit(limit)
    if after is not None:
        q = q.where(c.id > after)
    return await fetch_all(session, q)


@router.get("/events", summary="Query the log by incident, model version, equipment, line, time")
async def list_events(
    session: SessionDep,
    _: ReaderDep,
    filters: FiltersDep,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LogPage:
    rows = await _page(session, filters.where(), _cursor(cursor), limit + 1)
    items = [
        LogEntry.model_validate(
            {
                **r,
                "occurred_at": _utc(r["occurred_at"]),
                "recorded_at": _utc(r["recorded_at"]),
                "payload": json.loads(r["payload"]),
            }
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return LogPage(items=items, next_cursor=str(items[-1].id) if more else None)


def _utc(t: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; every time in the log is UTC.
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime | None) -> str:
    u = _utc(t)
    return "" if u is None else u.isoformat()


@router.get(
    "/export",
    summary="Export the matching log as CSV or JSON lines (streamed, oldest first)",
    response_class=StreamingResponse,
)
async def export_events(
    ctx: ContextDep,
    _: ReaderDep,
    filters: FiltersDep,
    format: Literal["csv", "jsonl"] = "jsonl",
) -> StreamingResponse:
    where = filters.where()

    async def pages() -> AsyncIterator[list[Any]]:
        after: int | None = None
        while True:
            # One short transaction per page: a long export never holds the writers back.
            async with ctx.db.session() as session:
                rows = await _page(session, where, after, EXPORT_PAGE)
            if not rows:
                return
            yield rows
            after = int(rows[-1]["id"])

    async def jsonl() -> AsyncIterator[bytes]:
        async for rows in pages():
            out = []
            for r in rows:
                m = r
                head = {k: (_iso(m[k]) or None) if k.endswith("_at") else m[k] for k in COLUMNS}
                out.append(json.dumps(head)[:-1] + ',"payload":' + m["payload"] + "}\n")
            yield "".join(out).encode()

    async def csv_rows() -> AsyncIterator[bytes]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([*COLUMNS, "payload"])
        yield buf.getvalue().encode()
        async for rows in pages():
            buf = io.StringIO()
            writer = csv.writer(buf)
            for r in rows:
                m = r
                writer.writerow(
                    [_iso(m[k]) if k.endswith("_at") else m[k] for k in COLUMNS] + [m["payload"]]
                )
            yield buf.getvalue().encode()

    if format == "csv":
        return StreamingResponse(
            csv_rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="postmarket.csv"'},
        )
    return StreamingResponse(
        jsonl(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="postmarket.jsonl"'},
    )
