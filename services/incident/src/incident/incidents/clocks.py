"""Regulatory clocks, triage and the evidence freeze.

A triage decision says whether an incident is a *serious incident* (EU AI Act Art. 3(49):
(a) death or serious harm to health, (b) serious and irreversible disruption of critical
infrastructure, (c) infringement of obligations protecting fundamental rights, (d) serious
harm to property or the environment) and/or a *significant incident* under NIS2 Art. 23(3).
The deadlines run from the moment the organisation became aware:

- EU AI Act Art. 73(2): report within 15 days; Art. 73(4): 10 days after a death;
  Art. 73(3): 2 days for a widespread infringement or a case under Art. 3(49)(b). The
  shortest applicable deadline is the one that binds.
- NIS2 Art. 23(4): early warning within 24 hours, incident notification within 72 hours,
  final report within one month after the notification was submitted (until it is, one month
  after the notification's own deadline).

:func:`deadlines` is pure; the rest stores clocks, lists overdue ones and freezes evidence:
a reportable decision freezes the implicated model version as evidence (``freeze``).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import freeze as evidence
from incident.incidents import workflow
from incident.incidents.actions import ActionSigner
from incident.incidents.core import note, record_postmarket, utc
from incident.incidents.errors import ClockNotFound, ClockState, MissingContext
from incident.incidents.models import Incident, RegulatoryClock, RunbookStepRecord
from incident.incidents.runbooks import Catalogue
from incident.incidents.schemas import ClockRead, ClockSubmission, TriageDecision
from linegate.audit import AuditLog
from linegate.auth import Principal

AI_ACT = "eu_ai_act_art73"
NIS2 = "nis2_art23"


@dataclass(frozen=True)
class Deadline:
    regime: str
    report: str
    due_at: datetime
    basis: str


def add_months(t: datetime, months: int) -> datetime:
    """``t`` plus calendar months, the day clamped to the target month's length."""
    month0 = t.month - 1 + months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def ai_act_deadline(decision: TriageDecision, aware_at: datetime) -> Deadline | None:
    if not decision.serious:
        return None
    options = [(15, "Art. 73(2): not later than 15 days after becoming aware")]
    if decision.death:
        options.append((10, "Art. 73(4): not later than 10 days after becoming aware of a death"))
    if "critical_infrastructure" in decision.categories:
        options.append(
            (2, "Art. 73(3): not later than 2 days: critical infrastructure (Art. 3(49)(b))")
        )
    if decision.widespread_infringement:
        options.append((2, "Art. 73(3): not later than 2 days: widespread infringement"))
    days, basis = min(options, key=lambda o: o[0])
    return Deadline(AI_ACT, "initial", aware_at + timedelta(days=days), "EU AI Act " + basis)


def nis2_final_due(notification_due: datetime, submitted_at: datetime | None) -> datetime:
    return add_months(submitted_at or notification_due, 1)


def deadlines(decision: TriageDecision, aware_at: datetime) -> list[Deadline]:
    """Every reporting deadline the decision implies, earliest first."""
    aware_at = utc(aware_at)
    out = [d for d in (ai_act_deadline(decision, aware_at),) if d is not None]
    if decision.nis2_significant:
        notification = aware_at + timedelta(hours=72)
        out += [
            Deadline(
                NIS2,
                "early_warning",
                aware_at + timedelta(hours=24),
                "NIS2 Art. 23(4)(a): early warning within 24 hours of becoming aware",
            ),
            Deadline(
                NIS2,
                "notification",
                notification,
                "NIS2 Art. 23(4)(b): incident notification within 72 hours of becoming aware",
            ),
            Deadline(
                NIS2,
                "final",
                nis2_final_due(notification, None),
                "NIS2 Art. 23(4)(d): final report within one month after the incident "
                "notification (re-computed when it is submitted)",
            ),
        ]
    return sorted(out, key=lambda d: d.due_at)


def clock_read(clock: RegulatoryClock, at: datetime) -> ClockRead:
    read = ClockRead.model_validate({**clock.model_dump(), "overdue": False})
    read.overdue = clock.submitted_at is None and utc(clock.due_at) < at
    return read


async def clocks_of(session: AsyncSession, incident_id: str) -> list[RegulatoryClock]:
    stmt = (
        select(RegulatoryClock)
        .where(RegulatoryClock.incident_id == incident_id)
        .order_by(col(RegulatoryClock.due_at))
    )
    return list((await session.exec(stmt)).all())


async def overdue(session: AsyncSession, at: datetime) -> list[RegulatoryClock]:
    """Every unsubmitted report whose deadline passed before ``at``, most overdue first."""
    stmt = (
        select(RegulatoryClock)
        .where(col(RegulatoryClock.submitted_at).is_(None), col(RegulatoryClock.due_at) < at)
        .order_by(col(RegulatoryClock.due_at))
    )
    return list((await session.exec(stmt)).all())


async def triage(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    decision: TriageDecision,
    now: datetime,
    catalogue: Catalogue | None = None,
    *,
    signer: ActionSigner,
) -> Incident:
    """Record (or revise) the decision; unsubmitted clocks are re-computed, submitted kept.
    The runbook's decision steps count as done once a decision is recorded."""
    incident = await workflow.get_incident(session, incident_id, lock=True)
    aware_at = utc(decision.aware_at or incident.aware_at or now)
    if aware_at > now:
        raise MissingContext("the awareness time lies in the future")
    incident.serious, incident.nis2_significant = decision.serious, decision.nis2_significant
    incident.aware_at = aware_at
    incident.triage = {
        **decision.model_dump(mode="json", exclude={"aware_at"}),
        "aware_at": aware_at.isoformat(),
        "by": principal.actor,
        "at": now.isoformat(),
    }
    session.add(incident)
    existing = await clocks_of(session, incident.id)
    submitted = {(c.regime, c.report) for c in existing if c.submitted_at is not None}
    for c in existing:
        if c.submitted_at is None:
            await session.delete(c)
    new = [d for d in deadlines(decision, aware_at) if (d.regime, d.report) not in submitted]
    session.add_all(
        RegulatoryClock(
            incident_id=incident.id,
            regime=d.regime,
            report=d.report,
            due_at=d.due_at,
            basis=d.basis,
        )
        for d in new
    )
    verdict = (
        ", ".join(
            p
            for p in (
                f"serious incident ({', '.join(decision.categories)})" if decision.serious else "",
                "significant NIS2 incident" if decision.nis2_significant else "",
            )
            if p
        )
        or "not reportable"
    )
    await note(
        session,
        incident.id,
        at=now,
        kind="triage",
        actor=principal.actor,
        detail=f"triaged as {verdict}: {decision.rationale}",
        data={
            "deadlines": [
                {"regime": d.regime, "report": d.report, "due_at": d.due_at.isoformat()}
                for d in new
            ]
        },
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.triage",
        subject=f"incident:{incident.id}",
        payload=incident.triage,
        reason=decision.rationale,
        now=now,
    )
    await record_postmarket(
        session,
        kind="incident.triage",
        occurred_at=now,
        payload=incident.triage,
        incident_id=incident.id,
        model=incident.model,
        version=incident.version,
        device_id=incident.device_id,
        line=incident.line,
        station=incident.station,
    )
    if catalogue is not None and incident.runbook_id is not None:
        await _decision_steps_done(session, catalogue, incident, principal, verdict, now)
    reportable = decision.serious or decision.nis2_significant
    wants_freeze = decision.freeze_evidence if decision.freeze_evidence is not None else reportable
    if wants_freeze and await evidence.active_freeze(session, incident.id) is None:
        if incident.model is None or incident.version is None:
            if decision.freeze_evidence:
                raise MissingContext("the incident names no model version to freeze")
        else:
            await evidence.freeze(
                session, audit, principal, incident, f"triage: {verdict}", now, signer
            )
    await session.flush()
    return incident


async def _decision_steps_done(
    session: AsyncSession,
    catalogue: Catalogue,
    incident: Incident,
    principal: Principal,
    verdict: str,
    now: datetime,
) -> None:
    book = workflow.runbook_of(catalogue, incident)
    recorded = await workflow.step_records(session, incident.id)
    for step in book.steps:
        if step.kind == "decision" and step.id not in recorded:
            session.add(
                RunbookStepRecord(
                    incident_id=incident.id,
                    step_id=step.id,
                    state="done",
                    actor=principal.actor,
                    at=now,
                    note=f"triage recorded: {verdict}",
                )
            )


async def submit(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    clock_id: int,
    body: ClockSubmission,
    now: datetime,
) -> RegulatoryClock:
    clock = await session.get(RegulatoryClock, clock_id)
    if clock is None or clock.incident_id != incident_id:
        raise ClockNotFound(f"incident {incident_id} has no reporting clock {clock_id}")
    if clock.submitted_at is not None:
        raise ClockState(f"report {clock.report} was already submitted")
    submitted_at = utc(body.submitted_at or now)
    if submitted_at > now:
        raise MissingContext("a report cannot have been submitted in the future")
    clock.submitted_at, clock.submitted_by, clock.reference = (
        submitted_at,
        principal.actor,
        body.reference,
    )
    session.add(clock)
    if clock.regime == NIS2 and clock.report == "notification":
        for c in await clocks_of(session, incident_id):
            if c.regime == NIS2 and c.report == "final" and c.submitted_at is None:
                c.due_at = nis2_final_due(utc(clock.due_at), submitted_at)
                session.add(c)
    await note(
        session,
        incident_id,
        at=now,
        kind="report_submitted",
        actor=principal.actor,
        detail=f"{clock.regime} {clock.report} report submitted ({body.reference})",
        data={"clock_id": clock.id, "late": submitted_at > utc(clock.due_at)},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.report_submitted",
        subject=f"incident:{incident_id}",
        payload={"clock_id": clock.id, "regime": clock.regime, "report": clock.report},
        reason=body.reference,
        now=now,
    )
    await session.flush()
    return clock
