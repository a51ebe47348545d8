"""App factory: ``uvicorn incident.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import incident
from incident import incidents
from incident.feedback import api as feedback_api
from incident.monitors import api as monitors_api
from incident.monitors.tiers import RegistryTiers
from incident.postmarket import api as postmarket_api
from incident.settings import IncidentSettings
from incident.telemetry import api as telemetry_api
from incident.telemetry.runtime import Telemetry
from linegate.events import Streams
from linegate.service import ServiceContext, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IncidentSettings | None = None) -> FastAPI:
    settings = settings or IncidentSettings()
    app: FastAPI

    async def start_incidents(ctx: ServiceContext) -> None:
        # First: it sets app.state.signal_sink, which the monitors raise signals on.
        await incidents.start(app, ctx, settings)

    async def stop_incidents(ctx: ServiceContext) -> None:
        await incidents.stop(app)

    async def start_telemetry(ctx: ServiceContext) -> None:
        # The sink is looked up at each signal: whatever the incident module attached.
        app.state.telemetry = Telemetry.build(
            ctx,
            settings,
            lambda: getattr(app.state, "signal_sink", None),
            # One registry client (and its inventory cache) for tiers and competence checks.
            tiers=RegistryTiers(settings, app.state.incidents.competence.client),
        )
        app.state.telemetry.start()

    async def stop_telemetry(ctx: ServiceContext) -> None:
        await app.state.telemetry.stop()

    app = create_service_app(
        settings,
        title="Linegate incident",
        description=incident.__doc__ or "",
        routers=[
            *incidents.routers(),
            telemetry_api.router,
            monitors_api.router,
            feedback_api.router,
            postmarket_api.router,
        ],
        migrations=MIGRATIONS,
        # DEVICE and MAINTENANCE: refused devices and PdM alerts open incidents.
        # TELEMETRY: inference batches, overrides and KPI samples feed the monitors.
        streams=(Streams.INCIDENT, Streams.DEVICE, Streams.MAINTENANCE, Streams.TELEMETRY),
        on_startup=[start_incidents, start_telemetry],
        on_shutdown=[stop_telemetry, stop_incidents],
    )
    return app
