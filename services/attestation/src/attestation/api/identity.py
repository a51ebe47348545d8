"""Identity routes: the embedded OAuth2 token endpoint, JWKS and API clients."""

from typing import Annotated

from fastapi import APIRouter, Depends, status

from attestation import service
from attestation.deps import (
    ClientRepositoryDep,
    get_client_repository,
    get_issuer,
)
from attestation.schemas import (
    ClientCreate,
    ClientCreated,
)
from linegate.auth import Principal, Role, require, token_router
from linegate.service import ContextDep

router = APIRouter()
router.include_router(token_router(get_client_repository, get_issuer))

AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]


@router.post("/v1/clients", status_code=status.HTTP_201_CREATED, tags=["identity"])
async def create_client(
    body: ClientCreate, principal: AdminDep, clients: ClientRepositoryDep, ctx: ContextDep
) -> ClientCreated:
    """Register an OAuth2 API client for any role (the secret is shown once)."""
    return await service.register_client(body, actor=principal, clients=clients, audit=ctx.audit)
