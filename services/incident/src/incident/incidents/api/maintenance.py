"""``/v1/maintenance-tickets``: PdM tickets, their context encrypted for the maintenance team."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlmodel import col, select

from incident.incidents.api.deps import IncidentsDep, NowDep, ReaderDep, ResponderDep
from incident.incidents.errors import TicketNotFound
from incident.incidents.models import MaintenanceTicket
from incident.incidents.schemas import TicketAcknowledge, TicketRead
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/v1/maintenance-tickets", tags=["maintenance"])


@router.get("")
async def list_tickets(
    session: SessionDep,
    _: ReaderDep,
    status_: Annotated[
        Literal["open", "acknowledged", "closed"] | None, Query(alias="status")
    ] = None,
    asset: str | None = None,
) -> list[TicketRead]:
    stmt = select(MaintenanceTicket).order_by(col(MaintenanceTicket.created_at).desc())
    if status_ is not None:
        stmt = stmt.where(MaintenanceTicket.status == status_)
    if asset is not None:
        stmt = stmt.where(MaintenanceTicket.asset == asset)
    return [TicketRead.model_validate(t, from_attributes=True) for t in (await session.exec(stmt))]


@router.get("/{ticket_id}")
async def get_ticket(ticket_id: str, session: SessionDep, _: ReaderDep) -> TicketRead:
    ticket = await session.get(MaintenanceTicket, ticket_id)
    if ticket is None:
        raise TicketNotFound(f"no maintenance ticket {ticket_id!r}")
    return TicketRead.model_validate(ticket, from_attributes=True)


@router.post("/{ticket_id}/acknowledge", summary="Take the ticket: stops its escalation")
async def acknowledge_ticket(
    ticket_id: str,
    body: TicketAcknowledge,
    session: SessionDep,
    principal: ResponderDep,
    ctx: ContextDep,
    incidents: IncidentsDep,
    now: NowDep,
) -> TicketRead:
    ticket = await incidents.tickets.acknowledge(
        session, ctx.audit, ticket_id, principal.actor, now, body.note
    )
    return TicketRead.model_validate(ticket, from_attributes=True)
