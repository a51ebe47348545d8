"""What the incidents side holds while the service runs, started and stopped by the app.

:class:`Incidents` owns the signal sink (``app.state.signal_sink``, which the monitors use),
the recorded runbooks, the maintenance ticket desk, the NATS consumers and the periodic
escalation task. ``clock`` is what the API and the escalation task read as "now"; tests
may replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident.incidents import routing
from incident.incidents.actions import ActionSigner
from incident.incidents.competence import RegistryCompetence
from incident.incidents.consumers import Consumers
from incident.incidents.core import now_utc
from incident.incidents.pdm import MaintenanceChain, TicketDesk, TicketEncrypter
from incident.incidents.runbooks import Catalogue, sync_runbooks
from incident.incidents.sink import IncidentSink
from linegate.service import ServiceContext

log = logging.getLogger("incident.incidents")


@dataclass
class Incidents:
    ctx: ServiceContext
    sink: IncidentSink
    catalogue: Catalogue
    tickets: TicketDesk
    escalation_interval: float
    #: Asked at every approval of a corrective action; its registry client is shared with the
    #: monitors' tier source and closed at :meth:`stop`.
    competence: RegistryCompetence
    #: Signs the approved actions the gateway carries out (DSSE).
    signer: ActionSigner
    clock: Callable[[], datetime] = now_utc
    subscriptions: list[Any] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        ctx: ServiceContext,
        *,
        maintenance_key: str | None,
        maintenance_key_file: Any,
        escalation_interval: float,
        competence: RegistryCompetence,
        signer: ActionSigner,
    ) -> Incidents:
        async with ctx.db.session() as session:
            catalogue = await sync_runbooks(session, ctx.audit, now=now_utc())
        tickets = TicketDesk(
            MaintenanceChain.packaged(),
            TicketEncrypter.from_settings(maintenance_key, maintenance_key_file),
        )
        if tickets.encrypter is None:
            log.warning(
                "no maintenance public key (LINEGATE_MAINTENANCE_PUBLIC_KEY): "
                "maintenance tickets are withheld, never stored in the clear"
            )
        sink = IncidentSink(audit=ctx.audit, catalogue=catalogue, tickets=tickets)
        self = cls(
            ctx=ctx,
            sink=sink,
            catalogue=catalogue,
            tickets=tickets,
            escalation_interval=escalation_interval,
            competence=competence,
            signer=signer,
        )
        self._tasks.append(asyncio.create_task(self._subscribe(), name="incidents-subscribe"))
        if escalation_interval > 0:
            self._tasks.append(asyncio.create_task(self._escalate_forever(), name="escalation"))
        return self

    async def _subscribe(self) -> None:
        # NATS may come up after the service: subscribe once it does.
        await self.ctx.nats.wait_connected(timeout=365 * 24 * 3600)
        consumers = Consumers(
            db=self.ctx.db,
            nats=self.ctx.nats,
            audit=self.ctx.audit,
            sink=self.sink,
            wake=self.ctx.outbox.wake,
            clock=lambda: self.clock(),  # noqa: PLW0108 - late-bound: the clock may be replaced
        )
        self.subscriptions = await consumers.subscribe()

    async def escalate(self, now: datetime) -> dict[str, int]:
        """One escalation pass at ``now``: incidents, then maintenance tickets."""
        async with self.ctx.db.session() as session:
            incidents = await routing.escalate_due(session, self.ctx.audit, now)
            tickets = await self.tickets.escalate_due(session, self.ctx.audit, now)
        return {"incidents": len(incidents), "tickets": len(tickets)}

    async def _escalate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.escalation_interval)
            try:
                # The service's clock, as the API reads it (tests move it instead of sleeping).
                moved = await self.escalate(self.clock())
            except Exception:
                log.exception("escalation pass failed; retrying at the next interval")
                continue
            if any(moved.values()):
                # The owners' notices are in the outbox: send them now, not at its next poll.
                self.ctx.outbox.wake()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.competence.client.close()
