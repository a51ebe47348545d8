"""FastAPI dependencies of the attestation service."""

from typing import Annotated

from fastapi import Depends, Request

from attestation.repository import ClientRepository
from linegate.auth import TokenIssuer
from linegate.errors import ServiceUnavailable
from linegate.service import SessionDep


def get_client_repository(session: SessionDep) -> ClientRepository:
    return ClientRepository(session)


def get_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer | None = request.app.state.token_issuer
    if issuer is None:
        raise ServiceUnavailable(
            "this deployment uses an external token issuer; request tokens there"
        )
    return issuer


ClientRepositoryDep = Annotated[ClientRepository, Depends(get_client_repository)]
IssuerDep = Annotated[TokenIssuer, Depends(get_issuer)]
