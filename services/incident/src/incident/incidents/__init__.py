"""Incidents: the signal sink, routing and escalation, runbooks, human-approved corrective
actions, regulatory clocks and report drafts, the evidence freeze, and PdM maintenance tickets.

The app calls :func:`start` at start-up (before anything raises signals: it sets
``app.state.signal_sink``) and :func:`stop` at shutdown, and mounts :func:`routers`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from incident.incidents.actions import ActionSigner
from incident.incidents.competence import RegistryCompetence
from incident.incidents.runtime import Incidents
from incident.registry_client import RegistryClient
from incident.settings import IncidentSettings
from linegate.service import ServiceContext


def routers() -> list[APIRouter]:
    from incident.incidents.api import routers as all_routers

    return list(all_routers)


async def start(app: FastAPI, ctx: ServiceContext, settings: IncidentSettings) -> Incidents:
    runtime = await Incidents.start(
        ctx,
        maintenance_key=settings.maintenance_public_key,
        maintenance_key_file=settings.maintenance_public_key_file,
        escalation_interval=settings.escalation_interval_seconds,
        competence=RegistryCompetence(
            RegistryClient(settings), unverifiable=settings.competence_unverifiable
        ),
        signer=ActionSigner.from_settings(settings),
    )
    app.state.incidents = runtime
    app.state.signal_sink = runtime.sink
    return runtime


async def stop(app: FastAPI) -> None:
    runtime: Incidents | None = getattr(app.state, "incidents", None)
    if runtime is not None:
        await runtime.stop()


__all__ = ["Incidents", "routers", "start", "stop"]
