"""FastAPI dependencies of the edge gateway."""

from typing import Annotated

from fastapi import Depends, Request

from edge_gateway.distribution import Gateway
from linegate.auth import Principal, Role, require


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
#: Registers devices and hands out their credentials.
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
#: Distributes releases and sets desired state.
OperatorDep = Annotated[Principal, Depends(require(Role.REGISTRY_APPROVE))]
ReaderDep = Annotated[
    Principal,
    Depends(require(Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER, Role.DEVICE)),
]
