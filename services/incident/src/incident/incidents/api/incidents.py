"""``/v1/incidents``: records, timeline, workflow, runbook steps, corrective actions, triage,
regulatory clocks, report drafts and the evidence freeze."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict

from incident.incidents import actions, clocks, reports, workflow
from incident.incidents import freeze as evidence
from incident.incidents.api.deps import IncidentsDep, NowDep, ReaderDep, ResponderDep
from incident.incidents.core import utc
from incident.incidents.errors import FreezeNotFound
from incident.incidents.schemas import (
    ActionCreate,
    ActionRead,
    ApprovalCreate,
    ClockRead,
    ClockSubmission,
    FreezeCreate,
    FreezeRead,
    FreezeRelease,
    IncidentRead,
    Reason,
    RunbookProgress,
    StatusChange,
    StepCompletion,
    TimelineEntry,
    TriageDecision,
)
from linegate.db import INTEGER_MAX
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


@router.get("")
async def list_incidents(
    session: SessionDep,
    _: ReaderDep,
    status_: Annotated[str | None, Query(alias="status", description="a status, or active")] = None,
    incident_type: Annotated[str | None, Query(alias="type")] = None,
    line: str | None = None,
    model: str | None = None,
    queue: Annotated[str | None, Query(description="qa, ot, data_science or triage")] = None,
    owner: Annotated[str | None, Query(description="the current owner in a queue")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[IncidentRead]:
    """Newest first; ``status=active`` for every incident not closed."""
    rows = await workflow.list_incidents(
        session,
        status=status_,
        incident_type=incident_type,
        line=line,
        model=model,
        queue=queue,
        owner=owner,
        limit=limit,
    )
    return [await workflow.incident_read(session, i) for i in rows]


@router.get("/overdue-reports", summary="Reports past their legal deadline, most overdue first")
async def list_overdue_reports(
    session: SessionDep,
    _: ReaderDep,
    now: NowDep,
    at: Annotated[datetime | None, Query(description="as of (default: now)")] = None,
) -> list[ClockRead]:
    when = utc(at) if at is not None else now
    return [clocks.clock_read(c, when) for c in await clocks.overdue(session, when)]


@router.get("/{incident_id}")
async def get_incident(incident_id: str, session: SessionDep, _: ReaderDep) -> IncidentRead:
    return await workflow.incident_read(session, await workflow.get_incident(session, incident_id))


@router.get("/{incident_id}/timeline")
async def get_timeline(incident_id: str, session: SessionDep, _: ReaderDep) -> list[TimelineEntry]:
    await workflow.get_incident(session, incident_id)
    return [
        TimelineEntry.model_validate(e, from_attributes=True)
        for e in await workflow.timeline(session, incident_id)
    ]


@router.post("/{incident_id}/status", summary="Move the incident through its workflow")
async def change_status(
    incident_id: str,
    body: StatusChange,
    session: SessionDep,
    principal: ResponderDep,
    ctx: ContextDep,
    now: NowDep,
) -> IncidentRead:
    incident = await workflow.change_status(session, ctx.audit, principal, incident_id, body, now)
    return await workflow.incident_read(session, incident)


@router.get("/{incident_id}/runbook")
async def get_runbook_progress(
    incident_id: str, session: SessionDep, _: ReaderDep, incidents: IncidentsDep
) -> RunbookProgress:
    incident = await workflow.get_incident(session, incident_id)
    return await workflow.progress(session, incidents.catalogue, incident)


@router.post("/{incident_id}/runbook/steps/{step_id}", summary="Pass a human gate of the runbook")
async def complete_step(
    incident_id: str,
    step_id: str,
    body: StepCompletion,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> RunbookProgress:
    incident = await workflow.complete_step(
        session,
        incidents.ctx.audit,
        incidents.catalogue,
        principal,
        incident_id,
        step_id,
        body,
        now,
    )
    return await workflow.progress(session, incidents.catalogue, incident)


# ------------------------------------------------------------------------------- actions


@router.get("/{incident_id}/actions")
async def list_actions(incident_id: str, session: SessionDep, _: ReaderDep) -> list[ActionRead]:
    await workflow.get_incident(session, incident_id)
    return [
        await actions.action_read(session, a)
        for a in await actions.list_actions(session, incident_id)
    ]


@router.post(
    "/{incident_id}/actions",
    status_code=status.HTTP_201_CREATED,
    summary="Propose a corrective action (it executes only once approved)",
)
async def propose_action(
    incident_id: str,
    body: ActionCreate,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> ActionRead:
    action = await actions.propose(
        session, incidents.ctx.audit, incidents.catalogue, principal, incident_id, body, now
    )
    return await actions.action_read(session, action)


@router.post(
    "/{incident_id}/actions/{action_id}/approvals",
    status_code=status.HTTP_201_CREATED,
    summary="Approve a corrective action; the last approval needed sends it to the gateway",
)
async def approve_action(
    incident_id: str,
    action_id: str,
    body: ApprovalCreate,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> ActionRead:
    """Refused (403) when the approver has no current responder training for the model's AI
    system on tier 1, accepted and flagged on tiers 2-3; see ``incident.incidents.competence``."""
    action = await actions.approve(
        session,
        incidents.ctx.audit,
        principal,
        incident_id,
        action_id,
        body,
        now,
        incidents.competence,
        incidents.signer,
    )
    return await actions.action_read(session, action)


@router.post("/{incident_id}/actions/{action_id}/cancel")
async def cancel_action(
    incident_id: str,
    action_id: str,
    body: CancelBody,
    session: SessionDep,
    principal: ResponderDep,
    ctx: ContextDep,
    now: NowDep,
) -> ActionRead:
    action = await actions.cancel(
        session, ctx.audit, principal, incident_id, action_id, body.reason, now
    )
    return await actions.action_read(session, action)


# -------------------------------------------------------------------- triage and clocks


@router.post("/{incident_id}/triage", summary="Decide the incident's regulatory standing")
async def triage(
    incident_id: str,
    body: TriageDecision,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> IncidentRead:
    incident = await clocks.triage(
        session,
        incidents.ctx.audit,
        principal,
        incident_id,
        body,
        now,
        incidents.catalogue,
        signer=incidents.signer,
    )
    return await workflow.incident_read(session, incident)


@router.get("/{incident_id}/clocks")
async def list_clocks(
    incident_id: str, session: SessionDep, _: ReaderDep, now: NowDep
) -> list[ClockRead]:
    await workflow.get_incident(session, incident_id)
    return [clocks.clock_read(c, now) for c in await clocks.clocks_of(session, incident_id)]


@router.post("/{incident_id}/clocks/{clock_id}/submission", summary="Record a submitted report")
async def submit_report(
    incident_id: str,
    clock_id: Annotated[int, Path(ge=1, le=INTEGER_MAX)],  # an INTEGER column
    body: ClockSubmission,
    session: SessionDep,
    principal: ResponderDep,
    ctx: ContextDep,
    now: NowDep,
) -> ClockRead:
    clock = await clocks.submit(session, ctx.audit, principal, incident_id, clock_id, body, now)
    return clocks.clock_read(clock, now)


@router.get(
    "/{incident_id}/reports/{kind}",
    summary="Pre-filled report draft (initial or final), JSON or Markdown",
    response_model=None,
)
async def report_draft(
    incident_id: str,
    kind: Literal["initial", "final"],
    session: SessionDep,
    _: ReaderDep,
    now: NowDep,
    format_: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
) -> Response | dict[str, object]:
    draft = await reports.draft(session, incident_id, kind, now)
    if format_ == "markdown":
        return Response(reports.markdown(draft), media_type="text/markdown; charset=utf-8")
    return draft


# --------------------------------------------------------------------------- evidence freeze


@router.get("/{incident_id}/freeze")
async def get_freeze(incident_id: str, session: SessionDep, _: ReaderDep) -> FreezeRead:
    await workflow.get_incident(session, incident_id)
    row = await evidence.active_freeze(session, incident_id)
    if row is None:
        raise FreezeNotFound(f"incident {incident_id} holds no freeze")
    return FreezeRead.model_validate(row, from_attributes=True)


@router.post("/{incident_id}/freeze", status_code=status.HTTP_201_CREATED)
async def freeze(
    incident_id: str,
    body: FreezeCreate,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> FreezeRead:
    incident = await workflow.get_incident(session, incident_id, lock=True)
    row = await evidence.freeze(
        session, incidents.ctx.audit, principal, incident, body.reason, now, incidents.signer
    )
    return FreezeRead.model_validate(row, from_attributes=True)


@router.post("/{incident_id}/freeze/release", summary="Release the frozen model version")
async def release_freeze(
    incident_id: str,
    body: FreezeRelease,
    session: SessionDep,
    principal: ResponderDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> FreezeRead:
    row = await evidence.release(
        session, incidents.ctx.audit, principal, incident_id, body.rationale, now, incidents.signer
    )
    return FreezeRead.model_validate(row, from_attributes=True)
