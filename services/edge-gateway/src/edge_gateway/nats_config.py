"""Keep a nats-server's authorisation in step with the device inventory (embedded stack).

With ``LINEGATE_NATS_AUTH_CONFIG`` set, the gateway owns that nats-server config file: one
full-access service user (``LINEGATE_NATS_USER`` / ``LINEGATE_NATS_PASSWORD``, which the
services log in with) and one nkey user per registered device, confined by
:func:`linegate.nats_auth.device_permissions` to its own subjects. The file is rewritten from
the database at start-up and after every device registration, and the server is told to
reload it (``SIGHUP`` to the pid in ``LINEGATE_NATS_SERVER_PID_FILE``), so a device can log in
as soon as its registration is committed and never sees another device's subjects.

In production, devices are NATS users of an operator/account JWT hierarchy instead (see
:mod:`linegate.nats_auth`, *Production*); leave the setting unset there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from sqlmodel import col, select

from edge_gateway.models import Device
from edge_gateway.settings import GatewaySettings
from linegate.db import Database
from linegate.nats_auth import render_server_config, write_server_config

log = logging.getLogger("edge_gateway.nats_config")


class NatsConfigError(Exception):
    """The server config cannot be written: a setting is missing or the server is gone."""


class ServerConfigSync:
    """Renders the config from the device table and asks the server to reload it."""

    def __init__(self, settings: GatewaySettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        # Two registrations racing must not let the older rendering overwrite the newer one.
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.nats_auth_config is not None

    async def sync(self) -> bool:
        """Rewrite the config from the committed devices; True when it changed (and the
        server was asked to reload it)."""
        path = self.settings.nats_auth_config
        if path is None:
            return False
        user, password = self.settings.nats_user, self.settings.nats_password
        if not user or not password:
            raise NatsConfigError(
                "LINEGATE_NATS_AUTH_CONFIG is set but LINEGATE_NATS_USER / LINEGATE_NATS_PASSWORD "
                "are not: the rendered config would lock the services out of NATS"
            )
        async with self._lock:
            async with self.db.session() as session:
                devices = (await session.exec(select(Device).order_by(col(Device.id)))).all()
            text = render_server_config(
                devices=[(d.id, d.public_nkey) for d in devices],
                service_user=user,
                service_password=password,
                lines={d.id: d.line for d in devices},
            )
            if path.exists() and path.read_text() == text:
                return False
            write_server_config(path, text)
            self._reload()
            log.info("nats-server authorisation rewritten for %d devices", len(devices))
            return True

    def _reload(self) -> None:
        pid_file = self.settings.nats_server_pid_file
        if pid_file is None:
            log.warning(
                "nats-server config %s rewritten, but LINEGATE_NATS_SERVER_PID_FILE is unset: "
                "reload the server yourself (nats-server --signal reload)",
                self.settings.nats_auth_config,
            )
            return
        pid = _read_pid(pid_file)
        try:
            os.kill(pid, signal.SIGHUP)  # nats-server reloads its config on SIGHUP
        except ProcessLookupError as e:
            raise NatsConfigError(f"nats-server pid {pid} (from {pid_file}) is not running") from e


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise NatsConfigError(f"cannot read the nats-server pid from {path}: {e}") from e
