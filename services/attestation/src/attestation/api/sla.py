"""SLA routes: terms, contracted artefacts, notices and scorecards (procurement's view)."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from attestation import sla
from attestation.deps import ProcurementDep, ReaderDep, SupplierRepositoryDep, confine_to_tenant
from attestation.repository import SlaRepository
from attestation.schemas_sla import (
    ArtefactCreate,
    NoticeCreate,
    NoticeResponse,
    ScorecardRead,
    SlaTerms,
)
from attestation.service import require_supplier
from linegate.auth import Principal, Role, require
from linegate.service import ContextDep, SessionDep

router = APIRouter(tags=["sla"])


async def get_sla_repository(session: SessionDep) -> SlaRepository:
    return SlaRepository(session)


SlaRepositoryDep = Annotated[SlaRepository, Depends(get_sla_repository)]
ArtefactRegistrarDep = Annotated[
    Principal, Depends(require(Role.PROCUREMENT, Role.REGISTRY_APPROVE))
]
SupplierSelfDep = Annotated[Principal, Depends(require(Role.SUPPLIER))]


@router.put("/v1/suppliers/{supplier_id}/sla")
async def put_sla(
    supplier_id: str,
    terms: SlaTerms,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    slas: SlaRepositoryDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """Set the supplier's SLA terms (replaces the previous terms; audited)."""
    row = await sla.put_sla(
        supplier_id, terms, actor=principal, suppliers=suppliers, slas=slas, audit=ctx.audit
    )
    return row.model_dump(mode="json")


@router.get("/v1/suppliers/{supplier_id}/sla")
async def get_sla(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep, slas: SlaRepositoryDep
) -> dict[str, Any] | None:
    confine_to_tenant(principal, supplier_id)
    await require_supplier(suppliers, supplier_id)
    row = await slas.sla(supplier_id)
    return row.model_dump(mode="json") if row else None


@router.post("/v1/suppliers/{supplier_id}/artefacts", status_code=status.HTTP_201_CREATED)
async def add_artefact(
    supplier_id: str,
    body: ArtefactCreate,
    principal: ArtefactRegistrarDep,
    suppliers: SupplierRepositoryDep,
    slas: SlaRepositoryDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """Contract an artefact (model, dataset, ...) the supplier must keep covered by evidence."""
    row = await sla.add_artefact(
        supplier_id, body, actor=principal, suppliers=suppliers, slas=slas, audit=ctx.audit
    )
    return row.model_dump(mode="json")


@router.get("/v1/suppliers/{supplier_id}/artefacts")
async def list_artefacts(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep, slas: SlaRepositoryDep
) -> list[dict[str, Any]]:
    confine_to_tenant(principal, supplier_id)
    await require_supplier(suppliers, supplier_id)
    return [a.model_dump(mode="json") for a in await slas.artefacts(supplier_id)]


@router.post("/v1/suppliers/{supplier_id}/notices", status_code=status.HTTP_201_CREATED)
async def send_notice(
    supplier_id: str,
    body: NoticeCreate,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    slas: SlaRepositoryDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """Record a vulnerability or incident notice sent to the supplier; the response clock starts."""
    row = await sla.send_notice(
        supplier_id, body, actor=principal, suppliers=suppliers, slas=slas, audit=ctx.audit
    )
    return row.model_dump(mode="json")


@router.get("/v1/suppliers/{supplier_id}/notices")
async def list_notices(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep, slas: SlaRepositoryDep
) -> list[dict[str, Any]]:
    confine_to_tenant(principal, supplier_id)
    await require_supplier(suppliers, supplier_id)
    return [n.model_dump(mode="json") for n in await slas.notices(supplier_id)]


@router.post("/v1/suppliers/{supplier_id}/notices/{notice_id}/response")
async def respond_notice(
    supplier_id: str,
    notice_id: str,
    body: NoticeResponse,
    principal: SupplierSelfDep,
    slas: SlaRepositoryDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """The supplier answers a notice (its own only)."""
    confine_to_tenant(principal, supplier_id)
    row = await sla.respond_notice(
        supplier_id, notice_id, body, actor=principal, slas=slas, audit=ctx.audit
    )
    return row.model_dump(mode="json")


@router.get("/v1/suppliers/{supplier_id}/scorecard", response_model=ScorecardRead)
async def get_scorecard(
    supplier_id: str,
    principal: ReaderDep,
    suppliers: SupplierRepositoryDep,
    slas: SlaRepositoryDep,
    expiring_within_days: Annotated[int, Query(ge=0, le=3650)] = 30,
) -> dict[str, Any]:
    """Coverage of contracted artefacts by verified evidence, what expires soon, breaches, and
    each performance commitment (`performance`): `met`, `not_met` or `no_evidence`, judged on
    the newest metric from this supplier's verified, unexpired CycloneDX ML-BOM model cards
    and Linegate SLA evidence (`term: model-performance`), with the measured value, the
    attestation it came from and since when the status holds. A commitment not met or without
    evidence is a breach (`performance-not-met`, `performance-no-evidence`)."""
    confine_to_tenant(principal, supplier_id)
    await require_supplier(suppliers, supplier_id)
    card = await sla.scorecard(
        supplier_id, slas, expiring_within=timedelta(days=expiring_within_days)
    )
    return card.as_dict()


@router.get("/v1/scorecards", response_model=list[ScorecardRead])
async def list_scorecards(
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    slas: SlaRepositoryDep,
    expiring_within_days: Annotated[int, Query(ge=0, le=3650)] = 30,
) -> list[dict[str, Any]]:
    """Every supplier's scorecard (as `GET /v1/suppliers/{id}/scorecard`), the ones most behind
    first: most breaches, then lowest coverage."""
    cards = [
        (
            await sla.scorecard(s.id, slas, expiring_within=timedelta(days=expiring_within_days))
        ).as_dict()
        for s in await suppliers.all()
    ]
    return sorted(cards, key=lambda c: (-len(c["breaches"]), c["coverage"], c["supplier"]))
