"""``/v1/routing-rules``, ``/v1/snoozes`` and ``/v1/runbooks``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from incident.incidents import routing, workflow
from incident.incidents.api.deps import AdminDep, IncidentsDep, NowDep, ReaderDep, ResponderDep
from incident.incidents.errors import RunbookNotFound
from incident.incidents.runbooks import Runbook
from incident.incidents.schemas import (
    RoutingRuleCreate,
    RoutingRuleRead,
    RoutingRuleUpdate,
    SnoozeCreate,
    SnoozeRead,
)
from linegate.service import ContextDep, SessionDep

router = APIRouter()


# ------------------------------------------------------------------------- routing rules


@router.get("/v1/routing-rules", tags=["routing"])
async def list_routing_rules(
    session: SessionDep, _: ReaderDep, include_inactive: bool = False
) -> list[RoutingRuleRead]:
    rules = await routing.list_rules(session, include_inactive=include_inactive)
    return [routing.rule_read(r) for r in rules]


@router.post("/v1/routing-rules", tags=["routing"], status_code=status.HTTP_201_CREATED)
async def create_routing_rule(
    body: RoutingRuleCreate, session: SessionDep, principal: AdminDep, ctx: ContextDep, now: NowDep
) -> RoutingRuleRead:
    return routing.rule_read(await routing.create_rule(session, ctx.audit, principal, body, now))


@router.get("/v1/routing-rules/{rule_id}", tags=["routing"])
async def get_routing_rule(rule_id: str, session: SessionDep, _: ReaderDep) -> RoutingRuleRead:
    return routing.rule_read(await routing.get_rule(session, rule_id))


@router.patch("/v1/routing-rules/{rule_id}", tags=["routing"])
async def update_routing_rule(
    rule_id: str,
    body: RoutingRuleUpdate,
    session: SessionDep,
    principal: AdminDep,
    ctx: ContextDep,
    now: NowDep,
) -> RoutingRuleRead:
    rule = await routing.update_rule(session, ctx.audit, principal, rule_id, body, now)
    return routing.rule_read(rule)


# ------------------------------------------------------------------------------- snoozes


@router.get("/v1/snoozes", tags=["incidents"], summary="Active snoozes")
async def list_snoozes(session: SessionDep, _: ReaderDep, now: NowDep) -> list[SnoozeRead]:
    return [
        SnoozeRead.model_validate(s, from_attributes=True)
        for s in await workflow.list_snoozes(session, now)
    ]


@router.post(
    "/v1/snoozes",
    tags=["incidents"],
    status_code=status.HTTP_201_CREATED,
    summary="Open no new incident for a dedup key until the snooze expires",
)
async def create_snooze(
    body: SnoozeCreate, session: SessionDep, principal: ResponderDep, ctx: ContextDep, now: NowDep
) -> SnoozeRead:
    row = await workflow.snooze(session, ctx.audit, principal, body, now)
    return SnoozeRead.model_validate(row, from_attributes=True)


@router.delete(
    "/v1/snoozes/{dedup_key:path}", tags=["incidents"], status_code=status.HTTP_204_NO_CONTENT
)
async def delete_snooze(
    dedup_key: str,
    session: SessionDep,
    principal: ResponderDep,
    ctx: ContextDep,
    now: NowDep,
    reason: Annotated[str, Query(min_length=3, max_length=4000)],
) -> None:
    await workflow.unsnooze(session, ctx.audit, principal, dedup_key, reason, now)


# ------------------------------------------------------------------------------ runbooks


def _book(book: Runbook | None, what: str) -> dict[str, Any]:
    if book is None:
        raise RunbookNotFound(f"no runbook {what}")
    return book.model_dump(mode="json")


@router.get("/v1/runbooks", tags=["runbooks"], summary="The newest version of every runbook")
async def list_runbooks(_: ReaderDep, incidents: IncidentsDep) -> list[dict[str, Any]]:
    return [b.model_dump(mode="json") for b in incidents.catalogue.latest()]


@router.get("/v1/runbooks/{runbook_id}", tags=["runbooks"])
async def get_runbook(runbook_id: str, _: ReaderDep, incidents: IncidentsDep) -> dict[str, Any]:
    return _book(incidents.catalogue.get(runbook_id), repr(runbook_id))


@router.get("/v1/runbooks/{runbook_id}/versions", tags=["runbooks"])
async def list_runbook_versions(
    runbook_id: str, _: ReaderDep, incidents: IncidentsDep
) -> list[dict[str, Any]]:
    history = incidents.catalogue.history(runbook_id)
    if not history:
        raise RunbookNotFound(f"no runbook {runbook_id!r}")
    return [b.model_dump(mode="json") for b in history]


@router.get("/v1/runbooks/{runbook_id}/versions/{version}", tags=["runbooks"])
async def get_runbook_version(
    runbook_id: str, version: int, _: ReaderDep, incidents: IncidentsDep
) -> dict[str, Any]:
    return _book(incidents.catalogue.get(runbook_id, version), f"{runbook_id!r} version {version}")
