"""App factory: ``uvicorn registry.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import registry
from linegate.events import Streams
from linegate.service import create_service_app
from registry.settings import RegistrySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    return create_service_app(
        settings,
        title="Linegate registry",
        description=registry.__doc__ or "",
        migrations=MIGRATIONS,
        streams=(Streams.REGISTRY,),
    )
