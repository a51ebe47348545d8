"""FastAPI dependencies of the registry service."""

from typing import Annotated

from fastapi import Depends, Request

from linegate.auth import Principal, Role, require
from linegate.service import SessionDep
from registry.repository import RegistryRepository
from registry.versions import Registry


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def get_repository(session: SessionDep) -> RegistryRepository:
    return RegistryRepository(session)


RegistryDep = Annotated[Registry, Depends(get_registry)]
RepositoryDep = Annotated[RegistryRepository, Depends(get_repository)]

#: Maintains the inventory, model lines, golden sets; pushes and validates versions.
WriterDep = Annotated[Principal, Depends(require(Role.REGISTRY_APPROVE))]
#: Approves or rejects versions and releases them (never their own uploads).
ApproverDep = Annotated[Principal, Depends(require(Role.REGISTRY_APPROVE))]
#: Pulls the kill switch: approvers and incident responders.
RevokerDep = Annotated[Principal, Depends(require(Role.REGISTRY_APPROVE, Role.RESPONDER))]
#: Reads the inventory and the registry.
ReaderDep = Annotated[
    Principal,
    Depends(require(Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER, Role.PROCUREMENT)),
]
#: Reads released artefacts and signatures: readers and devices.
ArtefactReaderDep = Annotated[
    Principal,
    Depends(
        require(Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER, Role.PROCUREMENT, Role.DEVICE)
    ),
]
