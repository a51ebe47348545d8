"""App factory: ``uvicorn edge_gateway.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import edge_gateway
from edge_gateway.settings import GatewaySettings
from linegate.events import Streams
from linegate.service import create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    return create_service_app(
        settings,
        title="Linegate edge gateway",
        description=edge_gateway.__doc__ or "",
        migrations=MIGRATIONS,
        streams=(Streams.DEVICE,),
    )
