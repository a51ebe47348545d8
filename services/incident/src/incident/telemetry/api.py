"""Telemetry routes: dead letters and the aggregated windows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel

from incident._sql import ID_MAX, UtcDateTime, fetch_all
from incident.telemetry.deps import ReaderDep
from incident.telemetry.models import HIST, telemetry_dead_letter, telemetry_window
from linegate.service import SessionDep

router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"])


class DeadLetterRead(BaseModel):
    id: int
    received_at: UtcDateTime
    subject: str
    stream_seq: int | None
    reason: str
    data: str
    truncated: bool


class DeadLetterPage(BaseModel):
    items: list[DeadLetterRead]
    next_cursor: str | None


@router.get("/dead-letters", summary="Telemetry refused, with the reason (oldest first)")
async def list_dead_letters(
    session: SessionDep,
    _: ReaderDep,
    cursor: Annotated[
        int | None, Query(ge=0, le=ID_MAX, description="next_cursor of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    dl = telemetry_dead_letter.c
    q = sa.select(telemetry_dead_letter).order_by(dl.id).limit(limit + 1)
    if cursor is not None:
        q = q.where(dl.id > cursor)
    rows = [DeadLetterRead.model_validate(dict(r)) for r in await fetch_all(session, q)]
    more = len(rows) > limit
    rows = rows[:limit]
    return DeadLetterPage(items=rows, next_cursor=str(rows[-1].id) if more and rows else None)


@router.get("/windows", summary="Per-shift windows of a model version on a line")
async def list_windows(
    session: SessionDep,
    _: ReaderDep,
    model: str,
    version: str,
    line: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    tw = telemetry_window.c
    q = (
        sa.select(telemetry_window)
        .where(tw.model == model, tw.version == version, tw.line == line)
        .order_by(tw.bucket_start.desc())
        .limit(limit)
    )
    out = []
    for r in await fetch_all(session, q):
        m = dict(r)
        for k in ("bucket_start", "bucket_end", "updated_at"):
            t: datetime = m[k]
            m[k] = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        hist = [m.pop(h) for h in HIST]
        n = m["n"]
        m["confidence_histogram"] = hist
        m["reject_rate"] = m["rejects"] / n if n else None
        m["override_rate"] = m["overrides"] / n if n else None
        m["confidence_mean"] = m["conf_sum"] / m["conf_n"] if m["conf_n"] else None
        out.append(m)
    return out
