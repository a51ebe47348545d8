"""App factory: ``uvicorn edge_gateway.app:create_app --factory``."""

import asyncio
import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI

import edge_gateway
from edge_gateway import (
    api,
    api_rollouts,
    competence,
    consumers,
    distribution,
    incidents,
    rollouts,
)
from edge_gateway.nats_config import ServerConfigSync
from edge_gateway.registry_client import RegistryClient
from edge_gateway.settings import GatewaySettings
from linegate.events import Streams
from linegate.service import ServiceContext, create_service_app
from linegate.signing import load_or_create_private_key

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("edge_gateway")


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app: FastAPI

    async def connect_when_ready(gw: distribution.Gateway) -> None:
        # NATS may come up after the service: subscribe and repair the KV bucket once it does.
        await gw.nats.wait_connected(timeout=365 * 24 * 3600)
        app.state.subscriptions = await consumers.subscribe(gw)
        app.state.subscriptions.append(await rollouts.kpis.subscribe(gw))
        app.state.subscriptions += await incidents.subscribe(gw)
        # Before anything issues a revision: a restored or recreated database must not
        # restart below what devices already hold (they would refuse every new document).
        try:
            await distribution.raise_revision_floor(gw)
        except Exception:
            log.exception("reading the published revisions failed; each change retries it")
        # Rosters changed while the gateway was down reach devices with the repair below.
        try:
            await competence.refresh_rosters(gw)
        except Exception:
            log.exception("reading the override rosters failed; the periodic refresh retries")
        await distribution.publish_desired(gw)
        app.state.metadata_refresher.start()
        app.state.competence_refresher.start()

    async def start_gateway(ctx: ServiceContext) -> None:
        load_or_create_private_key(settings.release_key_path)
        app.state.nats_config = ServerConfigSync(settings, ctx.db)
        # Devices registered while the gateway was down (or an edited file): render from the
        # database before anything else, so every registered device can log in.
        await app.state.nats_config.sync()
        gw = distribution.Gateway(
            settings=settings,
            db=ctx.db,
            audit=ctx.audit,
            nats=ctx.nats,
            registry=RegistryClient(settings),
            outbox_wake=ctx.outbox.wake,
        )
        app.state.gateway = gw
        app.state.subscriptions = []
        app.state.metadata_refresher = distribution.MetadataRefresher(
            gw, interval=settings.metadata_refresh_seconds
        )
        app.state.competence_refresher = competence.CompetenceRefresher(
            gw, interval=settings.competence_refresh_seconds
        )
        app.state.connect_task = asyncio.create_task(connect_when_ready(gw), name="gw-connect")
        app.state.rollout_evaluator = rollouts.evaluator.RolloutEvaluator(
            gw,
            interval=settings.rollout_evaluation_interval_seconds,
            after_pass=ctx.outbox.wake,  # publish an abort's incident event at once
        )
        app.state.rollout_evaluator.start()

    async def stop_gateway(ctx: ServiceContext) -> None:
        await app.state.rollout_evaluator.stop()
        await app.state.metadata_refresher.stop()
        await app.state.competence_refresher.stop()
        app.state.connect_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app.state.connect_task
        for sub in app.state.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await app.state.gateway.registry.close()

    app = create_service_app(
        settings,
        title="Linegate edge gateway",
        description=edge_gateway.__doc__ or "",
        routers=[api.router, api_rollouts.router],
        migrations=MIGRATIONS,
        # INCIDENT: a rollout abort opens an incident (linegate.incident.opened); incident
        # actions, freezes and the gateway's action results travel there too.
        streams=(Streams.DEVICE, Streams.REGISTRY, Streams.TELEMETRY, Streams.INCIDENT),
        on_startup=[start_gateway],
        on_shutdown=[stop_gateway],
    )
    return app
