"""Routing rules and if-not-acknowledged escalation (NIST AI RMF MANAGE 2.2: AI incidents
need QA, OT and data-science triage, not the IT help desk).

A rule sends incidents of one type (at or above a severity) to a queue (``qa``, ``ot``,
``data_science``) with a named owner who must acknowledge within a time; otherwise the
incident escalates to the next level of the rule's chain, and so on. Several rules may match
one type (one per queue): the reference scenario routes an escape to QA and data science.
Rules are data, edited by admins, every change audited. :func:`escalate_due` is what the
periodic task runs; it takes ``now`` so tests drive it at chosen instants.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents.core import ACTOR, note, severity_rank, utc
from incident.incidents.errors import RuleExists, RuleNotFound
from incident.incidents.models import Incident, IncidentAssignment, RoutingRule
from incident.incidents.schemas import RoutingRuleCreate, RoutingRuleRead, RoutingRuleUpdate
from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.events import IncidentAssignedV1, Subjects
from linegate.outbox import enqueue

#: Where an incident no rule matches waits, unowned, for someone to pick it up.
UNROUTED_QUEUE = "triage"


def rule_read(rule: RoutingRule) -> RoutingRuleRead:
    return RoutingRuleRead.model_validate(rule, from_attributes=True)


async def list_rules(session: AsyncSession, *, include_inactive: bool = False) -> list[RoutingRule]:
    stmt = select(RoutingRule).order_by(col(RoutingRule.incident_type), col(RoutingRule.queue))
    if not include_inactive:
        stmt = stmt.where(col(RoutingRule.active).is_(True))
    return list((await session.exec(stmt)).all())


async def get_rule(session: AsyncSession, rule_id: str) -> RoutingRule:
    rule = await session.get(RoutingRule, rule_id)
    if rule is None:
        raise RuleNotFound(f"no routing rule {rule_id!r}")
    return rule


async def create_rule(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    body: RoutingRuleCreate,
    now: datetime,
) -> RoutingRule:
    clash = (
        await session.exec(
            select(RoutingRule).where(
                RoutingRule.incident_type == body.incident_type, RoutingRule.queue == body.queue
            )
        )
    ).first()
    if clash is not None:
        raise RuleExists(
            f"rule {clash.id!r} already routes {body.incident_type} to {body.queue}; update it",
            extra={"rule_id": clash.id},
        )
    rule = RoutingRule(
        id=f"rule-{uuid.uuid4().hex[:12]}",
        incident_type=body.incident_type,
        queue=body.queue,
        min_severity=body.min_severity,
        owner=body.owner,
        acknowledge_within_minutes=body.acknowledge_within_minutes,
        escalation=[level.model_dump() for level in body.escalation],
        updated_at=now,
        updated_by=principal.actor,
    )
    session.add(rule)
    await session.flush()
    await audit.append(
        session,
        actor=principal.actor,
        action="routing_rule.create",
        subject=f"routing_rule:{rule.id}",
        payload=body.model_dump(mode="json"),
        reason=body.reason,
        now=now,
    )
    return rule


async def update_rule(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    rule_id: str,
    body: RoutingRuleUpdate,
    now: datetime,
) -> RoutingRule:
    rule = await get_rule(session, rule_id)
    changes = body.model_dump(exclude_unset=True, exclude={"reason"}, mode="json")
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.revision += 1
    rule.updated_at, rule.updated_by = now, principal.actor
    session.add(rule)
    await session.flush()
    await audit.append(
        session,
        actor=principal.actor,
        action="routing_rule.update",
        subject=f"routing_rule:{rule.id}",
        payload={"revision": rule.revision, "changes": changes},
        reason=body.reason,
        now=now,
    )
    return rule


def _deadline(start: datetime, minutes: int | None) -> datetime | None:
    return None if minutes is None else utc(start) + timedelta(minutes=minutes)


async def route(
    session: AsyncSession, incident: Incident, now: datetime
) -> list[IncidentAssignment]:
    """Put a new incident into the queue of every rule that matches it."""
    rules = [
        r
        for r in (
            await session.exec(
                select(RoutingRule).where(
                    RoutingRule.incident_type == incident.incident_type,
                    col(RoutingRule.active).is_(True),
                )
            )
        ).all()
        if severity_rank(incident.severity) >= severity_rank(r.min_severity)
    ]
    assignments = [
        IncidentAssignment(
            incident_id=incident.id,
            rule_id=r.id,
            queue=r.queue,
            owner=r.owner,
            level=0,
            assigned_at=now,
            escalate_at=_deadline(now, r.acknowledge_within_minutes),
        )
        for r in rules
    ] or [IncidentAssignment(incident_id=incident.id, queue=UNROUTED_QUEUE, assigned_at=now)]
    session.add_all(assignments)
    await session.flush()
    for a in assignments:
        await announce(session, incident, a, now, reason="routed")
        detail = (
            f"routed to {a.queue}, owner {a.owner}, acknowledge by {a.escalate_at:%Y-%m-%d %H:%M}Z"
            if a.owner and a.escalate_at
            else f"routed to {a.queue}, owner {a.owner}"
            if a.owner
            else f"no routing rule for {incident.incident_type}: waiting unowned in {a.queue}"
        )
        await note(
            session,
            incident.id,
            at=now,
            kind="routed",
            actor=ACTOR,
            detail=detail,
            data={"queue": a.queue, "owner": a.owner, "rule_id": a.rule_id},
        )
    return assignments


async def announce(
    session: AsyncSession,
    incident: Incident,
    assignment: IncidentAssignment,
    now: datetime,
    *,
    reason: Literal["routed", "escalated"],
    previous: str | None = None,
) -> None:
    """Queue ``IncidentAssignedV1`` in the outbox with the assignment (same transaction): the
    plant's notification bridge delivers it to the owner."""
    await enqueue(
        session,
        Subjects.incident_assigned(assignment.queue),
        IncidentAssignedV1(
            actor=ACTOR,
            occurred_at=now,
            incident_id=incident.id,
            incident_type=incident.incident_type,
            severity=incident.severity,
            summary=incident.summary,
            queue=assignment.queue,
            owner=assignment.owner,
            level=assignment.level,
            previous_owner=previous,
            reason=reason,
            acknowledge_by=assignment.escalate_at,
            line=incident.line,
            model=incident.model,
            version=incident.version,
        ),
    )


async def assignments_of(session: AsyncSession, incident_id: str) -> list[IncidentAssignment]:
    stmt = (
        select(IncidentAssignment)
        .where(IncidentAssignment.incident_id == incident_id)
        .order_by(col(IncidentAssignment.id))
    )
    return list((await session.exec(stmt)).all())


async def stop_escalation(session: AsyncSession, incident_id: str) -> None:
    for a in await assignments_of(session, incident_id):
        if a.escalate_at is not None:
            a.escalate_at = None
            session.add(a)
    await session.flush()


async def escalate_due(
    session: AsyncSession, audit: AuditLog, now: datetime
) -> list[dict[str, Any]]:
    """Escalate every assignment whose owner did not acknowledge in time; returns what moved."""
    stmt = (
        select(IncidentAssignment, Incident)
        .join(Incident, col(Incident.id) == col(IncidentAssignment.incident_id))
        .where(
            col(IncidentAssignment.escalate_at).is_not(None),
            col(IncidentAssignment.escalate_at) <= now,
            Incident.status == "open",
        )
        .order_by(col(IncidentAssignment.escalate_at))
        # Replicas run this pass too: each assignment is escalated by one of them.
        .with_for_update(skip_locked=True, of=IncidentAssignment)
    )
    moved: list[dict[str, Any]] = []
    for assignment, incident in (await session.exec(stmt)).all():
        rule = await session.get(RoutingRule, assignment.rule_id) if assignment.rule_id else None
        levels = rule.escalation if rule is not None else []
        previous = assignment.owner
        if assignment.level >= len(levels):
            assignment.escalate_at = None  # the chain is exhausted: the last owner keeps it
            session.add(assignment)
            continue
        level = levels[assignment.level]
        assignment.level += 1
        assignment.owner = str(level["owner"])
        assignment.assigned_at = now
        assignment.escalate_at = _deadline(now, level.get("acknowledge_within_minutes"))
        session.add(assignment)
        change = {
            "incident_id": incident.id,
            "queue": assignment.queue,
            "level": assignment.level,
            "from": previous,
            "to": assignment.owner,
        }
        await announce(session, incident, assignment, now, reason="escalated", previous=previous)
        await note(
            session,
            incident.id,
            at=now,
            kind="escalated",
            actor=ACTOR,
            detail=(
                f"not acknowledged in time: {assignment.queue} escalated to level "
                f"{assignment.level}, {assignment.owner} (was {previous})"
            ),
            data=change,
        )
        await audit.append(
            session,
            actor=ACTOR,
            action="incident.escalate",
            subject=f"incident:{incident.id}",
            payload=change,
            reason="not acknowledged within the routing rule's time",
            now=now,
        )
        moved.append(change)
    await session.flush()
    return moved
