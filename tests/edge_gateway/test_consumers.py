"""The gateway's JetStream consumers drop payloads no retry can fix instead of redelivering
them forever (a device can put any bytes on its own status subject), and still process the
valid events behind them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import nats

from edge_gateway.app import create_app as create_gateway
from edge_gateway.models import Device
from edge_gateway.settings import GatewaySettings
from linegate.events import DeviceStatusV1, Subjects


async def test_malformed_device_reports_are_dropped_and_valid_ones_still_land(
    settings_factory: Any, service_client: Any, nats_server: Any
) -> None:
    app = create_gateway(settings_factory(GatewaySettings, rollout_evaluation_interval_seconds=0))
    async with service_client(app):
        gw = app.state.gateway
        async with gw.db.session() as session:
            session.add(
                Device(
                    id="cam-3-1",
                    plant="wolfsburg",
                    line="line3",
                    station="W3",
                    public_nkey="U" + "A" * 55,
                    created_at=datetime.now(UTC),
                    created_by="test",
                )
            )
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream(timeout=10)
            # Wait for the gateway's durable consumer before publishing.
            for _ in range(100):
                try:
                    await js.consumer_info("LINEGATE_DEVICE", "edge-gateway-status")
                    break
                except Exception:  # noqa: BLE001  (not created yet)
                    await asyncio.sleep(0.1)
            subject = Subjects.device_status("cam-3-1")
            for poison in (b"not json", b"[1, 2]", b'{"device_id": "cam-3-1"}'):
                await js.publish(subject, poison)
            good = DeviceStatusV1(device_id="cam-3-1", state="online", detail="after the junk")
            await js.publish(subject, good.model_dump_json().encode())

            async def last_state() -> str | None:
                async with gw.db.session() as session:
                    device = await session.get(Device, "cam-3-1")
                    return device.last_state if device else None

            for _ in range(300):
                info = await js.consumer_info("LINEGATE_DEVICE", "edge-gateway-status")
                if await last_state() == "online" and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.1)
            assert await last_state() == "online"
            assert info.num_ack_pending == 0, info  # nothing waits for a redelivery
            assert info.num_redelivered == 0, info
            assert info.delivered.stream_seq == 4
        finally:
            await nc.close()
