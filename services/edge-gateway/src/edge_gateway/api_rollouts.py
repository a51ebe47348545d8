"""Routes of rollouts and maintenance calendars (logic in :mod:`edge_gateway.rollouts`)."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, status
from sqlmodel import col, select

from edge_gateway.competence import approver_standing
from edge_gateway.deps import GatewayDep, OperatorDep
from edge_gateway.models import MaintenanceCalendar, Rollout
from edge_gateway.rollouts import service
from edge_gateway.rollouts.errors import CalendarNotFound, RolloutNotFound
from edge_gateway.rollouts.schemas import (
    CalendarPut,
    CalendarRead,
    CommandBody,
    MaintenanceWindow,
    RolloutCreate,
    RolloutRead,
    RolloutState,
    RolloutStatus,
)
from edge_gateway.schemas import LINE_ID
from linegate.auth import Principal, Role, require
from linegate.service import SessionDep

router = APIRouter(tags=["rollouts"])

#: Reads rollouts and calendars (devices do not).
RolloutReaderDep = Annotated[
    Principal, Depends(require(Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER))
]
#: Stops a rollout: operators, and incident responders.
StopperDep = Annotated[Principal, Depends(require(Role.REGISTRY_APPROVE, Role.RESPONDER))]


def _wake(request: Request) -> None:
    evaluator = getattr(request.app.state, "rollout_evaluator", None)
    if evaluator is not None:
        evaluator.wake()


async def _status(gateway: GatewayDep, rollout_id: str) -> RolloutStatus:
    async with gateway.db.session() as session:
        rollout = await session.get(Rollout, rollout_id)
        if rollout is None:
            raise RolloutNotFound(f"no rollout {rollout_id!r}")
        return await service.status(session, rollout, datetime.now(UTC))


@router.post("/v1/rollouts", status_code=status.HTTP_201_CREATED)
async def create_rollout(
    body: RolloutCreate, principal: OperatorDep, session: SessionDep, gateway: GatewayDep
) -> RolloutRead:
    """Create a rollout plan (``draft``); ``start`` begins its first stage."""
    rollout = await service.create_rollout(
        session, gateway.audit, body, actor=principal.actor, now=datetime.now(UTC)
    )
    return RolloutRead.model_validate(rollout.model_dump())


@router.get("/v1/rollouts")
async def list_rollouts(
    _: RolloutReaderDep, session: SessionDep, state: Annotated[RolloutState | None, Query()] = None
) -> list[RolloutRead]:
    stmt = select(Rollout).order_by(col(Rollout.created_at).desc())
    if state is not None:
        stmt = stmt.where(Rollout.state == state)
    return [RolloutRead.model_validate(r.model_dump()) for r in (await session.exec(stmt)).all()]


@router.get("/v1/rollouts/{rollout_id}")
async def get_rollout(rollout_id: str, _: RolloutReaderDep, gateway: GatewayDep) -> RolloutStatus:
    """The plan, its state, the evaluator's last verdict and every device's place in it."""
    return await _status(gateway, rollout_id)


async def _command(
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
    rollout_id: str,
    action: service.Command,
    principal: Principal,
    body: CommandBody,
) -> RolloutStatus:
    reason = body.reason
    if action == "approve":
        # Art. 14: the person letting the model reach more lines needs current approver
        # training on its AI system; a tier 2-3 flag stays in the audited reason.
        async with gateway.db.session() as session:
            rollout = await session.get(Rollout, rollout_id)
        if rollout is None:
            raise RolloutNotFound(f"no rollout {rollout_id!r}")
        if rollout.state == "awaiting_approval":  # otherwise the command answers 409
            standing = await approver_standing(gateway, rollout.model, principal.subject)
            if standing.flags:
                reason = f"{reason} [flagged: {'; '.join(standing.flags)}]"
    await service.command(gateway, rollout_id, action, actor=principal.actor, reason=reason)
    background.add_task(_wake, request)
    return await _status(gateway, rollout_id)


@router.post("/v1/rollouts/{rollout_id}/start")
async def start_rollout(
    rollout_id: str,
    body: CommandBody,
    principal: OperatorDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    """Begin the first stage (installs follow inside maintenance windows)."""
    return await _command(gateway, request, background, rollout_id, "start", principal, body)


@router.post("/v1/rollouts/{rollout_id}/pause")
async def pause_rollout(
    rollout_id: str,
    body: CommandBody,
    principal: StopperDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    """No new installs and no stage advance; thresholds still abort."""
    return await _command(gateway, request, background, rollout_id, "pause", principal, body)


@router.post("/v1/rollouts/{rollout_id}/resume")
async def resume_rollout(
    rollout_id: str,
    body: CommandBody,
    principal: OperatorDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    return await _command(gateway, request, background, rollout_id, "resume", principal, body)


@router.post("/v1/rollouts/{rollout_id}/approve-next-stage")
async def approve_next_stage(
    rollout_id: str,
    body: CommandBody,
    principal: OperatorDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    """Let a rollout waiting for approval begin its next stage. The approver needs current
    ``approver`` training on the model's AI system in the registry's competence register:
    refused (403) on tier 1, flagged in the audit entry on tiers 2-3."""
    return await _command(gateway, request, background, rollout_id, "approve", principal, body)


@router.post("/v1/rollouts/{rollout_id}/abort")
async def abort_rollout(
    rollout_id: str,
    body: CommandBody,
    principal: StopperDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    """Stop now; the current stage's devices return to the release they had before."""
    return await _command(gateway, request, background, rollout_id, "abort", principal, body)


@router.post("/v1/rollouts/{rollout_id}/rollback")
async def rollback_rollout(
    rollout_id: str,
    body: CommandBody,
    principal: StopperDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> RolloutStatus:
    """Every device the rollout moved returns to the release it had before."""
    return await _command(gateway, request, background, rollout_id, "rollback", principal, body)


# ------------------------------------------------------------------------------ calendars


def _calendar_read(c: MaintenanceCalendar) -> CalendarRead:
    return CalendarRead(
        plant=c.plant,
        line=c.line or None,
        windows=[MaintenanceWindow.model_validate(w) for w in c.windows],
        updated_at=c.updated_at,
        updated_by=c.updated_by,
    )


@router.get("/v1/maintenance-windows", tags=["maintenance windows"])
async def list_calendars(_: RolloutReaderDep, session: SessionDep) -> list[CalendarRead]:
    stmt = select(MaintenanceCalendar).order_by(
        col(MaintenanceCalendar.plant), col(MaintenanceCalendar.line)
    )
    return [_calendar_read(c) for c in (await session.exec(stmt)).all()]


async def _put_calendar(
    session: SessionDep,
    gateway: GatewayDep,
    principal: Principal,
    plant: str,
    line: str,
    body: CalendarPut,
) -> CalendarRead:
    now = datetime.now(UTC)
    windows = [w.model_dump(mode="json") for w in body.windows]
    cal = await session.get(MaintenanceCalendar, (plant, line)) or MaintenanceCalendar(
        plant=plant, line=line, updated_at=now, updated_by=principal.subject
    )
    cal.windows, cal.updated_at, cal.updated_by = windows, now, principal.subject
    session.add(cal)
    await gateway.audit.append(
        session,
        actor=principal.actor,
        action="maintenance_calendar.set",
        subject=f"calendar:{plant}/{line}",
        payload={"windows": windows},
        reason=body.reason,
    )
    return _calendar_read(cal)


async def _delete_calendar(
    session: SessionDep,
    gateway: GatewayDep,
    principal: Principal,
    plant: str,
    line: str,
    reason: str,
) -> None:
    cal = await session.get(MaintenanceCalendar, (plant, line))
    if cal is None:
        raise CalendarNotFound(f"no maintenance calendar for {plant}/{line or '*'}")
    await session.delete(cal)
    await gateway.audit.append(
        session,
        actor=principal.actor,
        action="maintenance_calendar.deleted",
        subject=f"calendar:{plant}/{line}",
        reason=reason,
    )


Plant = Annotated[str, Path(min_length=1, max_length=100)]
Line = Annotated[str, Path(pattern=LINE_ID)]
AuditReason = Annotated[str, Query(min_length=1, max_length=2000)]


@router.put("/v1/maintenance-windows/{plant}", tags=["maintenance windows"])
async def put_plant_calendar(
    plant: Plant,
    body: CalendarPut,
    principal: OperatorDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> CalendarRead:
    """Windows for every line of the plant that has no calendar of its own."""
    return await _put_calendar(session, gateway, principal, plant, "", body)


@router.put("/v1/maintenance-windows/{plant}/{line}", tags=["maintenance windows"])
async def put_line_calendar(
    plant: Plant,
    line: Line,
    body: CalendarPut,
    principal: OperatorDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> CalendarRead:
    return await _put_calendar(session, gateway, principal, plant, line, body)


@router.delete("/v1/maintenance-windows/{plant}", tags=["maintenance windows"], status_code=204)
async def delete_plant_calendar(
    plant: Plant,
    reason: AuditReason,
    principal: OperatorDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> None:
    """Without a calendar, the plant's devices install at any time."""
    await _delete_calendar(session, gateway, principal, plant, "", reason)


@router.delete(
    "/v1/maintenance-windows/{plant}/{line}", tags=["maintenance windows"], status_code=204
)
async def delete_line_calendar(
    plant: Plant,
    line: Line,
    reason: AuditReason,
    principal: OperatorDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> None:
    """The line falls back to its plant's calendar."""
    await _delete_calendar(session, gateway, principal, plant, line, reason)
