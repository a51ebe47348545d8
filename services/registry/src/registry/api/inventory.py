"""AI inventory routes: systems, the gap report, and candidates found in vendor release notes."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from linegate.service import ContextDep
from registry import inventory
from registry.deps import ReaderDep, RepositoryDep, WriterDep
from registry.errors import SystemNotFound
from registry.schemas import (
    CandidateCreate,
    CandidateDecision,
    CandidateRead,
    InventoryReport,
    SystemCreate,
    SystemRead,
    SystemUpdate,
)

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])


@router.post("/systems", status_code=status.HTTP_201_CREATED)
async def create_system(
    body: SystemCreate, principal: WriterDep, repo: RepositoryDep, ctx: ContextDep
) -> SystemRead:
    """Add an AI system (deployed by Linegate or a third party's) to the inventory."""
    system = await inventory.create_system(repo, ctx.audit, principal, body)
    return await inventory.system_read(repo, system)


@router.get("/systems")
async def list_systems(_: ReaderDep, repo: RepositoryDep) -> list[SystemRead]:
    return [await inventory.system_read(repo, s) for s in await repo.systems()]


@router.get("/report")
async def inventory_report(_: ReaderDep, repo: RepositoryDep) -> InventoryReport:
    """Every active system, those missing a consequence answer or an owner first."""
    return await inventory.report(repo)


@router.get("/systems/{system_id}")
async def get_system(system_id: str, _: ReaderDep, repo: RepositoryDep) -> SystemRead:
    system = await repo.system(system_id)
    if system is None:
        raise SystemNotFound(f"no AI system {system_id!r} in the inventory")
    return await inventory.system_read(repo, system)


@router.patch("/systems/{system_id}")
async def update_system(
    system_id: str, body: SystemUpdate, principal: WriterDep, repo: RepositoryDep, ctx: ContextDep
) -> SystemRead:
    system = await inventory.update_system(repo, ctx.audit, principal, system_id, body)
    return await inventory.system_read(repo, system)


@router.post("/candidates", status_code=status.HTTP_201_CREATED)
async def add_candidate(
    body: CandidateCreate, principal: WriterDep, repo: RepositoryDep, ctx: ContextDep
) -> CandidateRead:
    """Record a passage (e.g. from ``linegate inventory scan-notes``) for a person to decide."""
    candidate = await inventory.add_candidate(repo, ctx.audit, principal, body)
    return inventory.candidate_read(candidate)


@router.get("/candidates")
async def list_candidates(
    _: ReaderDep,
    repo: RepositoryDep,
    status_: Annotated[
        Literal["open", "confirmed", "dismissed"] | None, Query(alias="status")
    ] = None,
) -> list[CandidateRead]:
    return [inventory.candidate_read(c) for c in await repo.candidates(status_)]


@router.post("/candidates/{candidate_id}/decision")
async def decide_candidate(
    candidate_id: str,
    body: CandidateDecision,
    principal: WriterDep,
    repo: RepositoryDep,
    ctx: ContextDep,
) -> CandidateRead:
    """Confirm a candidate (naming the inventory entry it belongs to) or dismiss it, with why."""
    candidate = await inventory.decide_candidate(repo, ctx.audit, principal, candidate_id, body)
    return inventory.candidate_read(candidate)
