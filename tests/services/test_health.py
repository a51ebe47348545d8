"""Every service starts on a real NATS and a real database and reports its health."""

import asyncio

import pytest

from attestation.app import create_app as create_attestation
from attestation.settings import AttestationSettings
from edge_gateway.app import create_app as create_gateway
from edge_gateway.settings import GatewaySettings
from incident.app import create_app as create_incident
from incident.settings import IncidentSettings
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings

SERVICES = [
    pytest.param(create_attestation, AttestationSettings, id="attestation"),
    pytest.param(create_registry, RegistrySettings, id="registry"),
    pytest.param(create_gateway, GatewaySettings, id="edge-gateway"),
    pytest.param(create_incident, IncidentSettings, id="incident"),
]


@pytest.mark.parametrize(("create_app", "settings_cls"), SERVICES)
async def test_service_is_healthy_ready_and_documented(
    create_app, settings_cls, settings_factory, service_client
):
    app = create_app(settings_factory(settings_cls))
    async with service_client(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "/readyz" in spec["paths"]
        metrics = await client.get("/metrics")
        assert 'linegate_http_requests_total{method="GET",route="/readyz"' in metrics.text


@pytest.mark.parametrize(("create_app", "settings_cls"), SERVICES)
async def test_readiness_follows_nats_down_and_back(
    create_app, settings_cls, settings_factory, service_client, nats_server
):
    app = create_app(settings_factory(settings_cls))
    async with service_client(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        nats_server.stop()
        for _ in range(100):
            response = await client.get("/readyz")
            if response.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["checks"]["nats"] == "unavailable"
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

        nats_server.start()
        for _ in range(200):
            response = await client.get("/readyz")
            if response.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 200


async def test_a_service_started_before_nats_becomes_ready_when_nats_comes_up(
    settings_factory, service_client, nats_server
):
    nats_server.stop()
    app = create_registry(settings_factory(RegistrySettings))
    async with service_client(app, wait_for_nats=False) as client:
        assert (await client.get("/readyz")).status_code == 503
        nats_server.start()
        await app.state.ctx.nats.wait_connected(15)
        assert (await client.get("/readyz")).status_code == 200


async def test_service_streams_exist_after_start(settings_factory, service_client):
    app = create_incident(settings_factory(IncidentSettings))
    async with service_client(app):
        info = await app.state.ctx.nats.js.stream_info("LINEGATE_INCIDENT")
        assert info.config.subjects == ["linegate.incident.>"]
