"""The background evaluator: runs real-time monitors right after the telemetry that moved
them, and scheduled (daily, monthly, ...) monitors when they fall due.

The ingest calls :meth:`MonitorRunner.notify` after each committed batch; the runner wakes,
waits at most ``interval`` seconds so a burst of batches is judged once, and evaluates the
groups it touched. At start it catches up on every group whose windows changed since its last
evaluation (telemetry that arrived while the service was down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from incident.monitors import service
from incident.monitors.evaluate import Verdict
from incident.monitors.schemas import CADENCE_PERIOD
from incident.monitors.tiers import TierSource
from incident.signals import Signal, SignalSink
from incident.telemetry.ingest import Outcome
from linegate.audit import AuditLog
from linegate.db import Database

log = logging.getLogger("incident.monitors")
GroupKey = tuple[str, str, str]


class UnattachedSink:
    """The sink used when no incident module is attached: nothing opens, so say it loudly."""

    async def raise_signal(self, session: AsyncSession, signal: Signal) -> None:
        log.error(
            "NO INCIDENT MODULE ATTACHED: signal %s (%s, %s) was not turned into an incident: %s",
            signal.dedup_key,
            signal.incident_type,
            signal.severity,
            signal.summary,
        )


class MonitorRunner:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        tiers: TierSource,
        sink: Callable[[], SignalSink],
        *,
        interval: float = 0.25,
        poll: float = 30.0,
    ) -> None:
        self.db = db
        self.audit = audit
        self.tiers = tiers
        self.sink = sink
        self.interval = interval
        self.poll = poll
        self._dirty: set[GroupKey] = set()
        self._kpi: set[tuple[str, datetime]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Evaluations since start (tests and the benchmark wait on it).
        self.passes = 0
        self._stopping = False

    def notify(self, outcome: Outcome) -> None:
        if outcome.touched or outcome.kpi_keys:
            self._dirty |= outcome.touched
            self._kpi |= outcome.kpi_keys
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-monitors")

    async def stop(self) -> None:
        # The flag as well as the cancel: 3.11's wait_for can swallow a cancellation.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with self.db.session() as session:
                self._dirty |= await service.stale_groups(session)
        except Exception:
            log.exception("monitor catch-up failed")
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("monitor pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self, now: datetime | None = None) -> dict[GroupKey, list[Verdict]]:
        """Evaluate what is dirty or due; returns the verdicts per group evaluated."""
        now = now or datetime.now(UTC)
        dirty, kpi = self._dirty, self._kpi
        self._dirty, self._kpi = set(), set()
        async with self.db.session() as session:
            if kpi:
                dirty |= await service.groups_on(session, kpi)
            due = await service.due_groups(session, now)
        out: dict[GroupKey, list[Verdict]] = {}
        for key in sorted(dirty | due):
            try:
                verdicts = await self.evaluate(key, now=now, due=key in due)
            except Exception:
                # Keep it for the next pass (e.g. the sink's transaction failed).
                self._dirty.add(key)
                raise
            if verdicts is not None:
                out[key] = verdicts
        self.passes += 1
        return out

    async def evaluate(
        self, key: GroupKey, *, now: datetime | None = None, due: bool = False, force: bool = False
    ) -> list[Verdict] | None:
        """Evaluate ``key`` if its cadence says so now (always with ``force``)."""
        now = now or datetime.now(UTC)
        info = await self.tiers.tier(key[0], key[2])  # HTTP: outside the transaction
        async with self.db.session() as session:
            cfg = await service.ensure_config(session, key, info, now)
            period = CADENCE_PERIOD.get(str(cfg["cadence"]), timedelta(0))
            if period and not (due or force):
                if cfg["next_due_at"] is None:
                    await service.schedule(session, key, now + period)
                return None
            return await service.evaluate_group(
                session, cfg, sink=self.sink(), audit=self.audit, now=now
            )
