"""The gateway keeps the embedded nats-server's authorisation in step with its device inventory:
a device registered through the API can log in (confined to its own subjects) without a restart,
anonymous clients cannot, and a gateway restart re-renders every registered device."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsConnection

from edge_gateway.app import create_app as create_gateway
from edge_gateway.nats_config import NatsConfigError, ServerConfigSync
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.db import Database
from linegate.embedded import NatsServer
from linegate.events import DeviceStatusV1, Subjects
from linegate.nats_auth import connect_device, render_server_config, write_server_config
from linegate.testing.fixtures import bearer

USER = "linegate"
PASSWORD = "service-password-for-config-tests"


@pytest.fixture
def secured_nats(tmp_path: Path) -> Any:
    directory = tmp_path / "nats-auth"
    config = directory / "nats-server.conf"
    write_server_config(
        config, render_server_config(devices=[], service_user=USER, service_password=PASSWORD)
    )
    server = NatsServer(
        tmp_path / "secured-nats", config_file=config, pid_file=directory / "nats-server.pid"
    ).start()
    try:
        yield server
    finally:
        server.stop()


def gateway_settings(settings_factory: Any, server: NatsServer) -> GatewaySettings:
    settings: GatewaySettings = settings_factory(
        GatewaySettings,
        nats_url=server.url,
        nats_user=USER,
        nats_password=PASSWORD,
        nats_auth_config=server.config_file,
        nats_server_pid_file=server.pid_file,
        rollout_evaluation_interval_seconds=0,
    )
    return settings


async def connect_as_device(url: str, creds: Path, device_id: str) -> Any:
    """Retry while the reload is on its way (the config is rewritten after the response)."""
    last: Exception | None = None
    for _ in range(100):
        try:
            return await connect_device(
                url, creds, device_id=device_id, allow_reconnect=False, connect_timeout=2
            )
        except Exception as e:  # noqa: BLE001  (authorisation violation until reloaded)
            last = e
            await asyncio.sleep(0.1)
    raise AssertionError(f"device {device_id} could not log in: {last!r}")


async def register(client: Any, mint_token: Any, device_id: str, tmp_path: Path) -> Path:
    r = await client.post(
        "/v1/devices",
        json={"id": device_id, "plant": "wolfsburg", "line": "line3", "station": "W3"},
        headers=bearer(mint_token(Role.ADMIN)),
    )
    assert r.status_code == 201, r.text
    creds = tmp_path / f"{device_id}.nk"
    creds.write_text(r.json()["nkey_seed"] + "\n")
    return creds


async def test_a_registered_device_logs_in_confined_and_anonymous_clients_cannot(
    secured_nats: NatsServer,
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
) -> None:
    anonymous = NatsConnection()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await anonymous.connect(secured_nats.url, allow_reconnect=False)
    await anonymous.close()  # nats-py leaves a refused connection's socket open

    app = create_gateway(gateway_settings(settings_factory, secured_nats))
    async with service_client(app) as client:  # the gateway itself logs in as the service user
        creds = await register(client, mint_token, "cam-3-1", tmp_path)
        device = await connect_as_device(secured_nats.url, creds, "cam-3-1")
        try:
            js = device.jetstream(timeout=10)
            online = DeviceStatusV1(device_id="cam-3-1", state="online", detail="test")
            ack = await js.publish(
                Subjects.device_status("cam-3-1"), online.model_dump_json().encode()
            )
            assert ack.stream == "LINEGATE_DEVICE"
            errors: list[Exception] = []

            async def on_error(e: Exception) -> None:
                errors.append(e)

            device._error_cb = on_error  # collect the server's permissions violation
            await device.publish(Subjects.device_status("cam-3-2"), b"{}")
            await device.flush(timeout=5)
            for _ in range(50):
                if errors:
                    break
                await asyncio.sleep(0.1)
            assert any("permissions violation" in str(e).lower() for e in errors), errors
        finally:
            await device.close()
        text = secured_nats.config_file.read_text() if secured_nats.config_file else ""
        assert "cam-3-1" in text


async def test_a_restarted_gateway_renders_every_registered_device(
    secured_nats: NatsServer,
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
) -> None:
    settings = gateway_settings(settings_factory, secured_nats)
    async with service_client(create_gateway(settings)) as client:
        creds = await register(client, mint_token, "cam-3-1", tmp_path)
        await (await connect_as_device(secured_nats.url, creds, "cam-3-1")).close()
    # Someone resets the file to services only (or the stack's first start wrote it).
    assert secured_nats.config_file is not None
    write_server_config(
        secured_nats.config_file,
        render_server_config(devices=[], service_user=USER, service_password=PASSWORD),
    )
    assert "cam-3-1" not in secured_nats.config_file.read_text()
    async with service_client(create_gateway(settings)):
        assert "cam-3-1" in secured_nats.config_file.read_text()
        device = await connect_as_device(secured_nats.url, creds, "cam-3-1")
        await device.close()


async def test_the_gateway_refuses_to_write_a_config_without_service_credentials(
    tmp_path: Path,
) -> None:
    settings = GatewaySettings(data_dir=tmp_path, nats_auth_config=tmp_path / "nats.conf")
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    try:
        with pytest.raises(NatsConfigError, match="lock the services out"):
            await ServerConfigSync(settings, db).sync()
    finally:
        await db.dispose()
    assert not (tmp_path / "nats.conf").exists()
