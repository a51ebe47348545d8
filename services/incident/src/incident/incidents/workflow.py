"""The incident workflow: status changes with reasons, snoozes, runbook steps, reads.

Status moves forward: open -> acknowledged -> investigating -> mitigated -> closed; any open
status may be closed (a false alarm is closed with its reason), a mitigated incident may go
back to investigating when the mitigation did not hold. Acknowledging stops escalation.
Closing frees the dedup key, so the same cause later opens a new incident, and closes its
maintenance tickets; an incident with a corrective action still awaiting approval or the
gateway's result cannot close.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import routing
from incident.incidents.core import note, record_postmarket, utc
from incident.incidents.errors import (
    IncidentNotFound,
    InvalidTransition,
    MissingContext,
    SnoozeNotFound,
)
from incident.incidents.models import (
    Incident,
    IncidentAction,
    IncidentAssignment,
    IncidentEvent,
    IncidentSnooze,
    MaintenanceTicket,
    RunbookStepRecord,
)
from incident.incidents.runbooks import Catalogue, Runbook
from incident.incidents.schemas import (
    AssignmentRead,
    IncidentRead,
    RunbookProgress,
    SnoozeCreate,
    StatusChange,
    StepCompletion,
    StepRead,
)
from linegate.audit import AuditLog
from linegate.auth import Principal

TRANSITIONS: dict[str, set[str]] = {
    "open": {"acknowledged", "closed"},
    "acknowledged": {"investigating", "closed"},
    "investigating": {"mitigated", "closed"},
    "mitigated": {"investigating", "closed"},
    "closed": set(),
}
UNFINISHED_ACTIONS = ("pending_approval", "sent")


async def get_incident(session: AsyncSession, incident_id: str, *, lock: bool = False) -> Incident:
    stmt = select(Incident).where(Incident.id == incident_id)
    if lock:
        stmt = stmt.with_for_update()
    incident = (await session.exec(stmt)).first()
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id!r}")
    return incident


async def incident_read(session: AsyncSession, incident: Incident) -> IncidentRead:
    read = IncidentRead.model_validate(incident, from_attributes=True)
    read.assignments = [
        AssignmentRead.model_validate(a, from_attributes=True)
        for a in await routing.assignments_of(session, incident.id)
    ]
    return read


async def list_incidents(
    session: AsyncSession,
    *,
    status: str | None = None,
    incident_type: str | None = None,
    line: str | None = None,
    model: str | None = None,
    queue: str | None = None,
    owner: str | None = None,
    limit: int = 100,
) -> list[Incident]:
    stmt = select(Incident).order_by(col(Incident.opened_at).desc()).limit(limit)
    if queue is not None or owner is not None:
        assigned = select(IncidentAssignment.incident_id)
        if queue is not None:
            assigned = assigned.where(IncidentAssignment.queue == queue)
        if owner is not None:
            assigned = assigned.where(IncidentAssignment.owner == owner)
        stmt = stmt.where(col(Incident.id).in_(assigned))
    if status == "active":
        stmt = stmt.where(Incident.status != "closed")
    elif status is not None:
        stmt = stmt.where(Incident.status == status)
    if incident_type is not None:
        stmt = stmt.where(Incident.incident_type == incident_type)
    if line is not None:
        stmt = stmt.where(Incident.line == line)
    if model is not None:
        stmt = stmt.where(Incident.model == model)
    return list((await session.exec(stmt)).all())


async def timeline(session: AsyncSession, incident_id: str) -> list[IncidentEvent]:
    stmt = (
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(col(IncidentEvent.at), col(IncidentEvent.id))
    )
    return list((await session.exec(stmt)).all())


async def change_status(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    body: StatusChange,
    now: datetime,
) -> Incident:
    incident = await get_incident(session, incident_id, lock=True)
    previous = incident.status
    if body.status not in TRANSITIONS[previous]:
        raise InvalidTransition(
            f"an incident that is {previous} cannot become {body.status}",
            extra={"allowed": sorted(TRANSITIONS[previous])},
        )
    if body.status == "closed":
        unfinished = (
            await session.exec(
                select(IncidentAction.id).where(
                    IncidentAction.incident_id == incident.id,
                    col(IncidentAction.state).in_(UNFINISHED_ACTIONS),
                )
            )
        ).all()
        if unfinished:
            raise InvalidTransition(
                "corrective actions are still awaiting approval or the gateway's result",
                extra={"actions": list(unfinished)},
            )
        incident.closed_at, incident.open_key = now, None
        for ticket in (
            await session.exec(
                select(MaintenanceTicket).where(
                    MaintenanceTicket.incident_id == incident.id,
                    MaintenanceTicket.status != "closed",
                )
            )
        ).all():
            ticket.status, ticket.escalate_at = "closed", None
            session.add(ticket)
    if body.status == "acknowledged":
        incident.acknowledged_at = now
        await routing.stop_escalation(session, incident.id)
    if body.status == "mitigated":
        incident.mitigated_at = now
    incident.status = body.status
    session.add(incident)
    await note(
        session,
        incident.id,
        at=now,
        kind="status",
        actor=principal.actor,
        detail=f"{previous} -> {body.status}: {body.reason}",
        data={"from": previous, "to": body.status},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action=f"incident.{body.status}",
        subject=f"incident:{incident.id}",
        payload={"from": previous, "to": body.status},
        reason=body.reason,
        now=now,
    )
    await record_postmarket(
        session,
        kind=f"incident.{body.status}",
        occurred_at=now,
        payload={"from": previous, "to": body.status, "reason": body.reason},
        incident_id=incident.id,
        model=incident.model,
        version=incident.version,
        device_id=incident.device_id,
        line=incident.line,
        station=incident.station,
    )
    return incident


# ------------------------------------------------------------------------------- snoozes


async def snooze(
    session: AsyncSession, audit: AuditLog, principal: Principal, body: SnoozeCreate, now: datetime
) -> IncidentSnooze:
    row = await session.get(IncidentSnooze, body.dedup_key)
    until = now + timedelta(minutes=body.minutes)
    if row is None:
        row = IncidentSnooze(
            dedup_key=body.dedup_key,
            until=until,
            reason=body.reason,
            created_by=principal.actor,
            created_at=now,
        )
    else:
        row.until, row.reason, row.created_by, row.created_at = (
            until,
            body.reason,
            principal.actor,
            now,
        )
    session.add(row)
    await session.flush()
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.snooze",
        subject=f"snooze:{body.dedup_key}",
        payload={"dedup_key": body.dedup_key, "until": until.isoformat()},
        reason=body.reason,
        now=now,
    )
    return row


async def list_snoozes(session: AsyncSession, now: datetime) -> list[IncidentSnooze]:
    rows = (await session.exec(select(IncidentSnooze).order_by(col(IncidentSnooze.until)))).all()
    return [r for r in rows if utc(r.until) > now]


async def unsnooze(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    dedup_key: str,
    reason: str,
    now: datetime,
) -> None:
    row = await session.get(IncidentSnooze, dedup_key)
    if row is None or utc(row.until) <= now:
        raise SnoozeNotFound(f"no active snooze for {dedup_key!r}")
    await session.delete(row)
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.unsnooze",
        subject=f"snooze:{dedup_key}",
        payload={"dedup_key": dedup_key},
        reason=reason,
        now=now,
    )


# ------------------------------------------------------------------------------ runbooks


def runbook_of(catalogue: Catalogue, incident: Incident) -> Runbook:
    if incident.runbook_id is None or incident.runbook_version is None:
        raise MissingContext(f"incident {incident.id} has no runbook")
    book = catalogue.get(incident.runbook_id, incident.runbook_version)
    if book is None:
        raise MissingContext(
            f"runbook {incident.runbook_id} version {incident.runbook_version} is not recorded"
        )
    return book


async def step_records(session: AsyncSession, incident_id: str) -> dict[str, RunbookStepRecord]:
    stmt = select(RunbookStepRecord).where(RunbookStepRecord.incident_id == incident_id)
    return {r.step_id: r for r in (await session.exec(stmt)).all()}


async def progress(
    session: AsyncSession, catalogue: Catalogue, incident: Incident
) -> RunbookProgress:
    book = runbook_of(catalogue, incident)
    done = await step_records(session, incident.id)
    steps = []
    for s in book.steps:
        r = done.get(s.id)
        steps.append(
            StepRead(
                **s.model_dump(),
                state=r.state if r else "pending",
                actor=r.actor if r else None,
                at=r.at if r else None,
                note=r.note if r else None,
            )
        )
    return RunbookProgress(runbook_id=book.id, version=book.version, title=book.title, steps=steps)


async def complete_step(
    session: AsyncSession,
    audit: AuditLog,
    catalogue: Catalogue,
    principal: Principal,
    incident_id: str,
    step_id: str,
    body: StepCompletion,
    now: datetime,
) -> Incident:
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status == "closed":
        raise InvalidTransition(f"incident {incident_id} is closed")
    book = runbook_of(catalogue, incident)
    step = book.step(step_id)
    if step is None:
        raise MissingContext(f"runbook {book.id} v{book.version} has no step {step_id!r}")
    if step.kind == "action":
        raise InvalidTransition(
            f"step {step_id} is a corrective action: propose it and have it approved"
        )
    if step_id in await step_records(session, incident.id):
        raise InvalidTransition(f"step {step_id} is already recorded")
    session.add(
        RunbookStepRecord(
            incident_id=incident.id,
            step_id=step_id,
            state=body.state,
            actor=principal.actor,
            at=now,
            note=body.note,
        )
    )
    await note(
        session,
        incident.id,
        at=now,
        kind="runbook_step",
        actor=principal.actor,
        detail=f"{step.title}: {body.state} ({body.note})",
        data={"step_id": step_id, "state": body.state},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action=f"incident.runbook_step.{body.state}",
        subject=f"incident:{incident.id}",
        payload={"runbook": f"{book.id}@{book.version}", "step_id": step_id},
        reason=body.note,
        now=now,
    )
    return incident
