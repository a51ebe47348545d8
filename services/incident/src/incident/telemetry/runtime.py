"""The telemetry side of a running incident service: ingest, consumer, monitors, metrics.

``app.py`` builds one :class:`Telemetry` at start-up (never at import) and keeps it as
``app.state.telemetry``; handlers reach it through :data:`incident.telemetry.deps.TelemetryDep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from incident.monitors.runner import MonitorRunner, UnattachedSink
from incident.monitors.tiers import RegistryTiers, TierSource
from incident.settings import IncidentSettings
from incident.signals import SignalSink
from incident.telemetry.consumer import TelemetryConsumer
from incident.telemetry.ingest import Outcome, TelemetryIngest
from incident.telemetry.shifts import ShiftCalendar
from linegate.events import Streams
from linegate.service import ServiceContext

log = logging.getLogger("incident.telemetry")

#: Forget seen event ids once the stream can no longer redeliver them (its max age + a day).
SEEN_RETENTION = (Streams.TELEMETRY.max_age or timedelta(days=7)) + timedelta(days=1)


class TelemetryMetrics:
    def __init__(self, ctx: ServiceContext) -> None:
        registry = ctx.metrics.registry
        self.messages = Counter(
            "incident_telemetry_messages",
            "Telemetry messages by outcome (accepted, duplicate, dead_letter)",
            ["outcome"],
            registry=registry,
        )
        self.records = Counter(
            "incident_telemetry_records",
            "Inference records, overrides and KPI samples counted",
            registry=registry,
        )
        self.dead_letters = Counter(
            "incident_telemetry_dead_letters",
            "Telemetry messages dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "incident_telemetry_device_dropped_records",
            "Records devices report they dropped (buffer full while NATS was down)",
            registry=registry,
        )

    def observe(self, o: Outcome) -> None:
        self.messages.labels("accepted").inc(o.events)
        self.messages.labels("duplicate").inc(o.duplicates)
        self.messages.labels("dead_letter").inc(len(o.dead_letters))
        self.records.inc(o.records)
        self.dropped.inc(o.dropped)
        for category, _ in o.dead_letters:
            self.dead_letters.labels(category).inc()


@dataclass
class Telemetry:
    settings: IncidentSettings
    shifts: ShiftCalendar
    ingest: TelemetryIngest
    runner: MonitorRunner
    consumer: TelemetryConsumer
    tiers: TierSource
    metrics: TelemetryMetrics
    _prune_task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        ctx: ServiceContext,
        settings: IncidentSettings,
        sink: Callable[[], SignalSink | None],
        *,
        tiers: TierSource | None = None,
    ) -> Telemetry:
        shifts = ShiftCalendar(settings.shift_starts, settings.shift_names, settings.shift_timezone)
        ingest = TelemetryIngest(ctx.db, shifts)
        fallback = UnattachedSink()
        tiers = tiers or RegistryTiers(settings)
        runner = MonitorRunner(
            ctx.db,
            ctx.audit,
            tiers,
            lambda: sink() or fallback,
            interval=settings.monitor_interval_seconds,
        )
        metrics = TelemetryMetrics(ctx)

        def on_outcome(o: Outcome) -> None:
            metrics.observe(o)
            runner.notify(o)

        consumer = TelemetryConsumer(
            ctx.nats,
            ingest,
            durable=settings.telemetry_consumer,
            batch=settings.telemetry_fetch_batch,
            ack_wait=settings.telemetry_ack_wait_seconds,
            on_outcome=on_outcome,
        )
        return cls(settings, shifts, ingest, runner, consumer, tiers, metrics)

    def start(self) -> None:
        self.consumer.start()
        if self.settings.monitor_interval_seconds > 0:
            self.runner.start()
        self._prune_task = asyncio.create_task(self._prune_forever(), name="telemetry-prune")

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.runner.stop()
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
        close = getattr(self.tiers, "close", None)
        if close is not None:
            await close()

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.ingest.prune_seen(SEEN_RETENTION)
                if pruned:
                    log.info("forgot %d seen telemetry ids", pruned)
            except Exception:
                log.exception("pruning seen telemetry ids failed")
            await asyncio.sleep(3600)
