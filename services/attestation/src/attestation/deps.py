"""FastAPI dependencies of the attestation service.

Most are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in a
worker thread, and on an upload those round trips cost more than the rest of its dependencies.
``get_issuer`` stays plain: the portal calls it directly.
"""

from typing import Annotated

from fastapi import Depends, Request

from attestation.errors import SupplierNotFound
from attestation.ingest import Ingestor
from attestation.repository import AttestationRepository, ClientRepository, SupplierRepository
from attestation.settings import AttestationSettings
from attestation.sigstore_bundle import SigstoreVerifier
from linegate.auth import Principal, Role, TokenIssuer, require
from linegate.errors import ServiceUnavailable
from linegate.service import SessionDep


async def get_client_repository(session: SessionDep) -> ClientRepository:
    return ClientRepository(session)


async def get_supplier_repository(session: SessionDep) -> SupplierRepository:
    return SupplierRepository(session)


async def get_attestation_repository(session: SessionDep) -> AttestationRepository:
    return AttestationRepository(session)


def get_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer | None = request.app.state.token_issuer
    if issuer is None:
        raise ServiceUnavailable(
            "this deployment uses an external token issuer; request tokens there"
        )
    return issuer


async def get_sigstore(request: Request) -> SigstoreVerifier:
    verifier: SigstoreVerifier = request.app.state.sigstore
    return verifier


async def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingestor
    return ingestor


async def get_settings(request: Request) -> AttestationSettings:
    settings: AttestationSettings = request.app.state.ctx.settings
    return settings


ClientRepositoryDep = Annotated[ClientRepository, Depends(get_client_repository)]
SupplierRepositoryDep = Annotated[SupplierRepository, Depends(get_supplier_repository)]
AttestationRepositoryDep = Annotated[AttestationRepository, Depends(get_attestation_repository)]
IssuerDep = Annotated[TokenIssuer, Depends(get_issuer)]
SigstoreDep = Annotated[SigstoreVerifier, Depends(get_sigstore)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SettingsDep = Annotated[AttestationSettings, Depends(get_settings)]

#: Onboards suppliers and manages their trust material.
ProcurementDep = Annotated[Principal, Depends(require(Role.PROCUREMENT))]
#: Uploads attestations for its own tenant.
SupplierDep = Annotated[Principal, Depends(require(Role.SUPPLIER))]
#: Reads attestations: suppliers (own only, enforced in queries) and the roles that see all.
ReaderDep = Annotated[
    Principal,
    Depends(require(Role.SUPPLIER, Role.PROCUREMENT, Role.REGISTRY_APPROVE, Role.AUDITOR)),
]


def tenant_of(principal: Principal) -> str | None:
    """The tenant every query is confined to: a supplier's own id, or None for the roles
    that see all suppliers. A principal holding both is confined (least privilege)."""
    if Role.SUPPLIER in principal.roles:
        return principal.tenant
    return None


def confine_to_tenant(principal: Principal, supplier_id: str) -> None:
    """Refuse a supplier acting on another supplier's records: 404, not 403, because to a
    supplier another supplier's records do not exist."""
    if Role.SUPPLIER in principal.roles and principal.tenant != supplier_id:
        raise SupplierNotFound(f"no supplier {supplier_id!r}")
