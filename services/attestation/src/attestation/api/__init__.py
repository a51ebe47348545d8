"""Routes of the attestation service; each module is one area, all thin over the service."""

from fastapi import APIRouter

from attestation.api import attestations, identity, sla, suppliers

router = APIRouter()
for module in (identity, suppliers, attestations, sla):
    router.include_router(module.router)
