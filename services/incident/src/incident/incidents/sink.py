"""The :class:`~incident.signals.SignalSink` that opens incidents.

One cause, one incident: a signal whose ``dedup_key`` belongs to an open incident joins its
timeline (raising its severity when the new signal is worse); a snoozed key opens nothing and
only counts the suppressed signal; otherwise a new incident opens, is routed, gets the newest
runbook for its type, a maintenance ticket when it is a PdM alert, an audit entry, a
post-market log record and an ``IncidentOpenedV1`` on ``linegate.incident.opened`` through the
outbox, all in the caller's transaction.

Example::

    sink = IncidentSink(audit=ctx.audit, catalogue=catalogue, tickets=tickets)
    async with ctx.db.session() as session:
        outcome = await sink.open_or_join(session, signal)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import pdm, routing
from incident.incidents.core import ACTOR, note, record_postmarket, severity_rank, utc
from incident.incidents.models import Incident, IncidentSnooze
from incident.incidents.runbooks import Catalogue
from incident.signals import Signal
from linegate.audit import AuditLog
from linegate.events import IncidentOpenedV1, Subjects
from linegate.outbox import enqueue


@dataclass(frozen=True)
class Outcome:
    action: Literal["opened", "joined", "suppressed"]
    incident: Incident | None


def _evidence(signal: Signal) -> dict[str, Any]:
    return {str(k): v for k, v in signal.evidence.items()}


class IncidentSink:
    """Opens, joins or suppresses incidents for signals, inside the caller's session."""

    def __init__(self, *, audit: AuditLog, catalogue: Catalogue, tickets: pdm.TicketDesk) -> None:
        self.audit = audit
        self.catalogue = catalogue
        self.tickets = tickets

    async def raise_signal(self, session: AsyncSession, signal: Signal) -> None:
        await self.open_or_join(session, signal)

    async def open_or_join(
        self, session: AsyncSession, signal: Signal, *, external_ref: str | None = None
    ) -> Outcome:
        existing = await self._open_incident(session, signal.dedup_key)
        if existing is not None:
            return Outcome("joined", await self._join(session, existing, signal))
        snooze = await session.get(IncidentSnooze, signal.dedup_key, with_for_update=True)
        if snooze is not None and utc(snooze.until) > utc(signal.observed_at):
            await self._suppress(session, snooze, signal)
            return Outcome("suppressed", None)
        try:
            async with session.begin_nested():
                incident = self._new_incident(signal, external_ref)
                session.add(incident)
                await session.flush()
        except IntegrityError:
            # A concurrent signal with the same key opened it first: join that one.
            raced = await self._open_incident(session, signal.dedup_key)
            if raced is None:
                raise
            return Outcome("joined", await self._join(session, raced, signal))
        await self._opened(session, incident, signal)
        return Outcome("opened", incident)

    @staticmethod
    async def _open_incident(session: AsyncSession, dedup_key: str) -> Incident | None:
        # Locked: concurrent signals joining one incident must not lose each other's count.
        stmt = (
            select(Incident)
            .where(Incident.open_key == dedup_key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await session.exec(stmt)).first()

    def _new_incident(self, signal: Signal, external_ref: str | None) -> Incident:
        at = utc(signal.observed_at)
        tier = signal.evidence.get("risk_tier")
        book = self.catalogue.for_type(signal.incident_type)
        return Incident(
            id=f"inc-{uuid.uuid4().hex[:16]}",
            incident_type=signal.incident_type,
            severity=signal.severity,
            status="open",
            summary=signal.summary,
            source=signal.source,
            dedup_key=signal.dedup_key,
            open_key=signal.dedup_key,
            line=signal.line,
            station=signal.station,
            device_id=signal.device_id,
            model=signal.model,
            version=signal.version,
            rollout_id=signal.rollout_id,
            external_ref=external_ref,
            risk_tier=tier if type(tier) is int and 1 <= tier <= 3 else None,  # not a bool
            evidence=_evidence(signal),
            signal_count=1,
            opened_at=at,
            last_signal_at=at,
            runbook_id=book.id if book else None,
            runbook_version=book.version if book else None,
        )

    async def _opened(self, session: AsyncSession, incident: Incident, signal: Signal) -> None:
        at = utc(signal.observed_at)
        await note(
            session,
            incident.id,
            at=at,
            kind="opened",
            actor=signal.source,
            detail=f"{incident.severity} {incident.incident_type}: {incident.summary}",
            data={"dedup_key": signal.dedup_key, "evidence": _evidence(signal)},
        )
        await routing.route(session, incident, at)
        if incident.runbook_id is not None:
            await note(
                session,
                incident.id,
                at=at,
                kind="runbook",
                actor=ACTOR,
                detail=f"runbook {incident.runbook_id} version {incident.runbook_version}",
                data={"runbook_id": incident.runbook_id, "version": incident.runbook_version},
            )
        if incident.incident_type == "pdm_alert":
            await self.tickets.open_ticket(session, self.audit, incident, signal)
        payload = {
            "incident_id": incident.id,
            "incident_type": incident.incident_type,
            "severity": incident.severity,
            "dedup_key": incident.dedup_key,
            "source": signal.source,
            "summary": incident.summary,
            "evidence": _evidence(signal),
        }
        await self.audit.append(
            session,
            actor=signal.source,
            action="incident.open",
            subject=f"incident:{incident.id}",
            payload=payload,
            reason=incident.summary,
        )
        await record_postmarket(
            session,
            kind="incident.opened",
            occurred_at=at,
            payload=payload,
            incident_id=incident.id,
            model=incident.model,
            version=incident.version,
            device_id=incident.device_id,
            line=incident.line,
            station=incident.station,
        )
        await enqueue(
            session,
            Subjects.INCIDENT_OPENED,
            IncidentOpenedV1(
                actor=ACTOR,
                occurred_at=at,
                incident_id=incident.id,
                incident_type=incident.incident_type,
                severity=incident.severity,
                line=incident.line,
                model=incident.model,
                version=incident.version,
            ),
        )

    async def _join(self, session: AsyncSession, incident: Incident, signal: Signal) -> Incident:
        at = utc(signal.observed_at)
        incident.signal_count += 1
        incident.last_signal_at = max(utc(incident.last_signal_at), at)
        raised = severity_rank(signal.severity) > severity_rank(incident.severity)
        previous = incident.severity
        if raised:
            incident.severity = signal.severity
        session.add(incident)
        detail = f"signal from {signal.source}: {signal.summary}"
        if raised:
            detail += f" (severity raised from {previous} to {signal.severity})"
        await note(
            session,
            incident.id,
            at=at,
            kind="signal",
            actor=signal.source,
            detail=detail,
            data={"severity": signal.severity, "evidence": _evidence(signal)},
        )
        await self.audit.append(
            session,
            actor=signal.source,
            action="incident.signal",
            subject=f"incident:{incident.id}",
            payload={
                "dedup_key": signal.dedup_key,
                "severity": incident.severity,
                "signal_count": incident.signal_count,
                "evidence": _evidence(signal),
            },
            reason=signal.summary,
        )
        return incident

    async def _suppress(
        self, session: AsyncSession, snooze: IncidentSnooze, signal: Signal
    ) -> None:
        at = utc(signal.observed_at)
        snooze.suppressed += 1
        snooze.last_suppressed_at = at
        session.add(snooze)
        await self.audit.append(
            session,
            actor=signal.source,
            action="incident.signal_snoozed",
            subject=f"snooze:{signal.dedup_key}",
            payload={"dedup_key": signal.dedup_key, "suppressed": snooze.suppressed},
            reason=signal.summary,
        )
        await session.flush()
