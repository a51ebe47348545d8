"""Routes of the registry service; each module is one area, all thin over the domain code."""

from fastapi import APIRouter

from registry.api import competence, compliance, inventory, models

router = APIRouter()
for module in (compliance, inventory, models, competence):
    router.include_router(module.router)
