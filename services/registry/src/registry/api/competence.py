"""Competence register routes: record, list, check and revoke training (audited)."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from linegate.service import ContextDep
from registry import competence
from registry.deps import ReaderDep, RepositoryDep, WriterDep
from registry.schemas import (
    CompetenceCheck,
    CompetenceCreate,
    CompetenceRead,
    CompetenceRevoke,
    CompetenceRoleName,
)

router = APIRouter(prefix="/v1/competence", tags=["competence"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def record_training(
    body: CompetenceCreate, principal: WriterDep, repo: RepositoryDep, ctx: ContextDep
) -> CompetenceRead:
    """Record that a person is trained for a role on a system until a date (never your own)."""
    return competence.to_read(await competence.record(repo, ctx.audit, principal, body))


@router.get("")
async def list_training(
    _: ReaderDep,
    repo: RepositoryDep,
    person: Annotated[str | None, Query(max_length=200)] = None,
    system_id: Annotated[str | None, Query(max_length=63)] = None,
    role: Annotated[CompetenceRoleName | None, Query()] = None,
) -> list[CompetenceRead]:
    rows = await repo.competence_records(person=person, system_id=system_id, role=role)
    return [competence.to_read(r) for r in rows]


@router.get("/check")
async def check_training(
    _: ReaderDep,
    repo: RepositoryDep,
    person: Annotated[str, Query(min_length=1, max_length=200)],
    system_id: Annotated[str, Query(min_length=1, max_length=63)],
    role: Annotated[CompetenceRoleName, Query()],
) -> CompetenceCheck:
    """Whether the person holds current training for the role on the system, and what
    happens without it (refused on tier 1, flagged on tiers 2-3)."""
    return await competence.check(repo, system_id, person, role)


@router.post("/{record_id}/revoke")
async def revoke_training(
    record_id: str,
    body: CompetenceRevoke,
    principal: WriterDep,
    repo: RepositoryDep,
    ctx: ContextDep,
) -> CompetenceRead:
    return competence.to_read(
        await competence.revoke(repo, ctx.audit, principal, record_id, body.reason)
    )
