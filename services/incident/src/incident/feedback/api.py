"""``POST /v1/feedback``: a wrong output reported from the line, and the list of reports."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, BackgroundTasks, Query, status
from pydantic import BaseModel, ConfigDict, Field

from incident import postmarket
from incident._sql import UtcDateTime, fetch_all
from incident.feedback.models import operator_feedback
from incident.postmarket.models import postmarket_event
from incident.telemetry.deps import FeedbackDep, ReaderDep, TelemetryDep
from incident.telemetry.ingest import Outcome, WindowSums
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/v1/feedback", tags=["operator feedback"])

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
#: How far back a named record is looked for in the log (batches of the line or device).
RECENT_BATCHES = 10_000


class FeedbackCreate(BaseModel):
    """What was wrong with which output. Name the record when you can: the model version, the
    device and the time are then taken from the post-market log."""

    model_config = ConfigDict(extra="forbid")

    line: str = Field(pattern=NAME_PATTERN)
    station: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    camera: str | None = Field(default=None, max_length=64)
    record_id: str | None = Field(default=None, min_length=1, max_length=128)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    version: str | None = Field(default=None, min_length=1, max_length=100)
    occurred_at: datetime | None = Field(default=None, description="When the output was given")
    problem: Literal["false_reject", "false_pass", "wrong_label", "other"]
    expected_decision: Literal["pass", "reject"] | None = None
    comment: str = Field(min_length=1, max_length=4000, description="What the operator saw")


class FeedbackRead(BaseModel):
    id: str
    reported_at: UtcDateTime
    reported_by: str
    occurred_at: UtcDateTime
    line: str
    station: str | None
    device_id: str | None
    camera: str | None
    record_id: str | None
    model: str | None
    version: str | None
    problem: str
    expected_decision: str | None
    comment: str
    counted: bool = Field(description="Counted in the model version's monitor window")


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


async def _record_of(session: Any, body: FeedbackCreate) -> dict[str, Any] | None:
    """The named record's model version, device and time, from the device's batch in the
    post-market log (searched among the line's most recent ``RECENT_BATCHES`` batches)."""
    if body.record_id is None:
        return None
    c = postmarket_event.c
    recent = (
        sa.select(c.id)
        .where(c.kind == "inference_batch", c.line == body.line)
        .order_by(c.id.desc())
        .limit(RECENT_BATCHES)
    )
    if body.device_id is not None:
        recent = recent.where(c.device_id == body.device_id)
    q = (
        sa.select(c.device_id, c.payload)
        .where(
            c.id.in_(recent.scalar_subquery()),
            c.payload.contains(json.dumps(body.record_id), autoescape=True),
        )
        .order_by(c.id.desc())
        .limit(5)
    )
    for row in await fetch_all(session, q):
        for r in json.loads(row["payload"]).get("records", []):
            if r.get("record_id") == body.record_id:
                return {
                    "model": r.get("model"),
                    "version": r.get("version"),
                    "device_id": row["device_id"],
                    "occurred_at": datetime.fromisoformat(r["occurred_at"]),
                }
    return None


@router.post("", status_code=status.HTTP_201_CREATED, summary="Report a wrong output")
async def create_feedback(
    body: FeedbackCreate,
    session: SessionDep,
    principal: FeedbackDep,
    ctx: ContextDep,
    telemetry: TelemetryDep,
    background: BackgroundTasks,
) -> FeedbackRead:
    now = datetime.now(UTC)
    found = await _record_of(session, body)
    model = body.model or (found or {}).get("model")
    version = body.version or (found or {}).get("version")
    device_id = body.device_id or (found or {}).get("device_id")
    occurred: datetime = _utc(body.occurred_at or (found or {}).get("occurred_at") or now)
    row: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "reported_at": now,
        "reported_by": principal.actor,
        "occurred_at": occurred,
        "line": body.line,
        "station": body.station,
        "device_id": device_id,
        "camera": body.camera,
        "record_id": body.record_id,
        "model": model,
        "version": version,
        "problem": body.problem,
        "expected_decision": body.expected_decision,
        "comment": body.comment,
        "counted": model is not None and version is not None,
    }
    await session.exec(operator_feedback.insert(), params=[row])
    touched: set[tuple[str, str, str]] = set()
    if model is not None and version is not None:
        sums = WindowSums(telemetry.shifts)
        sums.add_feedback(model, version, body.line, occurred)
        await sums.flush(session, now)
        touched.add((model, version, body.line))
    read = FeedbackRead.model_validate(row)
    await postmarket.record(
        session,
        kind="feedback",
        occurred_at=occurred,
        payload=read.model_dump(mode="json"),
        model=model,
        version=version,
        device_id=device_id,
        line=body.line,
        station=body.station,
    )
    await ctx.audit.append(
        session,
        actor=principal.actor,
        action="feedback.create",
        subject=f"feedback:{row['id']}",
        payload=read.model_dump(mode="json"),
        reason=body.comment,
    )
    # The monitors look after the commit (a background task runs after the response).
    background.add_task(telemetry.runner.notify, Outcome(touched=touched))
    return read


@router.get("", summary="Reports of wrong outputs, newest first")
async def list_feedback(
    session: SessionDep,
    _: ReaderDep,
    line: str | None = None,
    model: str | None = None,
    version: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FeedbackRead]:
    f = operator_feedback.c
    q = sa.select(operator_feedback).order_by(f.reported_at.desc()).limit(limit)
    for col, value in ((f.line, line), (f.model, model), (f.version, version)):
        if value is not None:
            q = q.where(col == value)
    return [
        FeedbackRead.model_validate(
            {
                **r,
                "reported_at": _utc(r["reported_at"]),
                "occurred_at": _utc(r["occurred_at"]),
            }
        )
        for r in await fetch_all(session, q)
    ]
