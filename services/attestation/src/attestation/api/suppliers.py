"""Supplier onboarding routes (procurement) and supplier self-service."""

from typing import Annotated

from fastapi import APIRouter, Depends, status

from attestation import service
from attestation.deps import (
    ClientRepositoryDep,
    ProcurementDep,
    ReaderDep,
    SupplierRepositoryDep,
    confine_to_tenant,
    tenant_of,
)
from attestation.schemas import (
    ClientCreated,
    IdentityCreate,
    IdentityRead,
    KeyCreate,
    KeyRead,
    KeyRevoke,
    SupplierClientCreate,
    SupplierCreate,
    SupplierRead,
)
from linegate.auth import Principal, Role, require
from linegate.service import ContextDep

router = APIRouter(tags=["suppliers"])


# ----------------------------------------------------------------------------- suppliers


@router.post("/v1/suppliers", status_code=status.HTTP_201_CREATED, tags=["suppliers"])
async def create_supplier(
    body: SupplierCreate,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    ctx: ContextDep,
) -> SupplierRead:
    """Onboard a supplier (procurement)."""
    supplier = await service.create_supplier(
        body, actor=principal, suppliers=suppliers, audit=ctx.audit
    )
    return SupplierRead.model_validate(supplier, from_attributes=True)


@router.get("/v1/suppliers", tags=["suppliers"])
async def list_suppliers(
    principal: ReaderDep, suppliers: SupplierRepositoryDep
) -> list[SupplierRead]:
    tenant = tenant_of(principal)
    rows = await suppliers.all()
    return [
        SupplierRead.model_validate(s, from_attributes=True) for s in rows if tenant in (None, s.id)
    ]


@router.get("/v1/suppliers/{supplier_id}", tags=["suppliers"])
async def get_supplier(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep
) -> SupplierRead:
    confine_to_tenant(principal, supplier_id)
    supplier = await service.require_supplier(suppliers, supplier_id)
    return SupplierRead.model_validate(supplier, from_attributes=True)


@router.post(
    "/v1/suppliers/{supplier_id}/keys", status_code=status.HTTP_201_CREATED, tags=["suppliers"]
)
async def add_supplier_key(
    supplier_id: str,
    body: KeyCreate,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    ctx: ContextDep,
) -> KeyRead:
    """Trust a public key (ECDSA P-256/P-384, Ed25519, RSA >= 2048 PEM) for this supplier."""
    key = await service.add_key(
        supplier_id, body, actor=principal, suppliers=suppliers, audit=ctx.audit
    )
    return KeyRead.model_validate(key, from_attributes=True)


@router.get("/v1/suppliers/{supplier_id}/keys", tags=["suppliers"])
async def list_supplier_keys(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep
) -> list[KeyRead]:
    confine_to_tenant(principal, supplier_id)
    await service.require_supplier(suppliers, supplier_id)
    return [
        KeyRead.model_validate(k, from_attributes=True) for k in await suppliers.keys(supplier_id)
    ]


@router.post("/v1/suppliers/{supplier_id}/keys/{key_id}/revoke", tags=["suppliers"])
async def revoke_supplier_key(
    supplier_id: str,
    key_id: str,
    body: KeyRevoke,
    principal: Annotated[Principal, Depends(require(Role.PROCUREMENT, Role.SUPPLIER))],
    suppliers: SupplierRepositoryDep,
    ctx: ContextDep,
) -> KeyRead:
    """Revoke a key (procurement, or the supplier itself for its own compromised key)."""
    confine_to_tenant(principal, supplier_id)
    key = await service.revoke_key(
        supplier_id, key_id, body.reason, actor=principal, suppliers=suppliers, audit=ctx.audit
    )
    return KeyRead.model_validate(key, from_attributes=True)


@router.post(
    "/v1/suppliers/{supplier_id}/identities",
    status_code=status.HTTP_201_CREATED,
    tags=["suppliers"],
)
async def add_supplier_identity(
    supplier_id: str,
    body: IdentityCreate,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    ctx: ContextDep,
) -> IdentityRead:
    """Trust a Sigstore identity (OIDC issuer + exact subject or subject pattern)."""
    identity = await service.add_identity(
        supplier_id, body, actor=principal, suppliers=suppliers, audit=ctx.audit
    )
    return IdentityRead.model_validate(identity, from_attributes=True)


@router.get("/v1/suppliers/{supplier_id}/identities", tags=["suppliers"])
async def list_supplier_identities(
    supplier_id: str, principal: ReaderDep, suppliers: SupplierRepositoryDep
) -> list[IdentityRead]:
    confine_to_tenant(principal, supplier_id)
    await service.require_supplier(suppliers, supplier_id)
    return [
        IdentityRead.model_validate(i, from_attributes=True)
        for i in await suppliers.identities(supplier_id)
    ]


@router.post(
    "/v1/suppliers/{supplier_id}/clients", status_code=status.HTTP_201_CREATED, tags=["suppliers"]
)
async def create_supplier_client(
    supplier_id: str,
    principal: ProcurementDep,
    suppliers: SupplierRepositoryDep,
    clients: ClientRepositoryDep,
    ctx: ContextDep,
    body: SupplierClientCreate | None = None,
) -> ClientCreated:
    """API credentials for the supplier's CI (client-credentials grant; secret shown once)."""
    description = body.description if body else ""
    return await service.register_supplier_client(
        supplier_id,
        description,
        actor=principal,
        suppliers=suppliers,
        clients=clients,
        audit=ctx.audit,
    )
