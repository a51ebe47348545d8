"""App factory: ``uvicorn incident.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import incident
from incident.settings import IncidentSettings
from linegate.events import Streams
from linegate.service import create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IncidentSettings | None = None) -> FastAPI:
    settings = settings or IncidentSettings()
    return create_service_app(
        settings,
        title="Linegate incident",
        description=incident.__doc__ or "",
        migrations=MIGRATIONS,
        streams=(Streams.INCIDENT,),
    )
