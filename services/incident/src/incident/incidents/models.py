"""Tables of the incidents side: incidents and their timeline, routing, snoozes, runbooks,
corrective actions and their approvals, regulatory clocks, evidence freezes, maintenance
tickets. Migration ``0003_incidents`` creates them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

TZ = sa.DateTime(timezone=True)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=False), **kw)


def _json_or_null(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=True), **kw)


class Incident(SQLModel, table=True):
    """One AI incident: a cause, what it touches (model version, device, line, rollout), who
    owns it, where it is in its workflow and, once triaged, its regulatory standing."""

    __tablename__ = "incident"

    id: str = Field(primary_key=True)
    incident_type: str = Field(index=True)
    severity: str
    status: str = Field(index=True)
    summary: str
    source: str
    dedup_key: str = Field(index=True)
    #: ``dedup_key`` while the incident is open, NULL once closed: a unique column, so two
    #: signals racing on one key cannot open two incidents.
    open_key: str | None = Field(default=None, unique=True)
    line: str | None = Field(default=None, index=True)
    station: str | None = None
    device_id: str | None = Field(default=None, index=True)
    model: str | None = Field(default=None, index=True)
    version: str | None = None
    rollout_id: str | None = None
    #: The id another service gave the same incident (the gateway's rollout-abort id).
    external_ref: str | None = Field(default=None, index=True)
    #: NIST consequence tier of the AI system when known (1 = highest).
    risk_tier: int | None = None
    evidence: dict[str, Any] = _json(default_factory=dict)
    signal_count: int = 1
    opened_at: datetime = Field(sa_type=TZ)
    last_signal_at: datetime = Field(sa_type=TZ)
    acknowledged_at: datetime | None = Field(default=None, sa_type=TZ)
    mitigated_at: datetime | None = Field(default=None, sa_type=TZ)
    closed_at: datetime | None = Field(default=None, sa_type=TZ)
    runbook_id: str | None = None
    runbook_version: int | None = None
    #: Triage: None until decided.
    serious: bool | None = None
    nis2_significant: bool | None = None
    aware_at: datetime | None = Field(default=None, sa_type=TZ)
    triage: dict[str, Any] | None = _json_or_null(default=None)


class IncidentEvent(SQLModel, table=True):
    """One entry of an incident's timeline (append-only)."""

    __tablename__ = "incident_event"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    at: datetime = Field(sa_type=TZ)
    kind: str
    actor: str
    detail: str
    data: dict[str, Any] = _json(default_factory=dict)


class RoutingRule(SQLModel, table=True):
    """Incidents of ``incident_type`` (at ``min_severity`` or above) go to ``queue``, owned by a
    named person; unacknowledged, they escalate through ``escalation`` level by level."""

    __tablename__ = "routing_rule"
    __table_args__ = (sa.UniqueConstraint("incident_type", "queue"),)

    id: str = Field(primary_key=True)
    incident_type: str = Field(index=True)
    queue: str
    min_severity: str = "low"
    owner: str
    acknowledge_within_minutes: int
    #: [{"owner": "...", "acknowledge_within_minutes": N}, ...]: the next levels, in order.
    escalation: list[dict[str, Any]] = _json(default_factory=list)
    active: bool = True
    revision: int = 1
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str


class IncidentAssignment(SQLModel, table=True):
    """An incident in one queue: its current owner and escalation level."""

    __tablename__ = "incident_assignment"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    rule_id: str | None = None
    queue: str
    owner: str | None = None
    level: int = 0
    assigned_at: datetime = Field(sa_type=TZ)
    #: When the current owner's time to acknowledge runs out; NULL: nothing more to escalate.
    escalate_at: datetime | None = Field(default=None, sa_type=TZ, index=True)


class IncidentSnooze(SQLModel, table=True):
    """While ``until`` has not passed, signals with ``dedup_key`` open no new incident."""

    __tablename__ = "incident_snooze"

    dedup_key: str = Field(primary_key=True)
    until: datetime = Field(sa_type=TZ)
    reason: str
    created_by: str
    created_at: datetime = Field(sa_type=TZ)
    suppressed: int = 0
    last_suppressed_at: datetime | None = Field(default=None, sa_type=TZ)


class RunbookVersion(SQLModel, table=True):
    """A runbook version as first loaded: later edits of the same version are refused."""

    __tablename__ = "runbook_version"

    runbook_id: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    digest: str
    content: dict[str, Any] = _json(default_factory=dict)
    recorded_at: datetime = Field(sa_type=TZ)


class RunbookStepRecord(SQLModel, table=True):
    """A human completed (or skipped) a runbook step on an incident."""

    __tablename__ = "incident_runbook_step"

    incident_id: str = Field(foreign_key="incident.id", primary_key=True)
    step_id: str = Field(primary_key=True)
    state: str  # done | skipped
    actor: str
    at: datetime = Field(sa_type=TZ)
    note: str


class IncidentAction(SQLModel, table=True):
    """A proposed corrective action; it reaches the gateway only once approved."""

    __tablename__ = "incident_action"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    action: str
    step_id: str | None = None
    params: dict[str, Any] = _json(default_factory=dict)
    rationale: str
    proposed_by: str
    proposed_at: datetime = Field(sa_type=TZ)
    required_approvals: int
    #: pending_approval | sent | done | failed | cancelled
    state: str = Field(index=True)
    sent_at: datetime | None = Field(default=None, sa_type=TZ)
    result_at: datetime | None = Field(default=None, sa_type=TZ)
    result: dict[str, Any] | None = _json_or_null(default=None)


class ActionApproval(SQLModel, table=True):
    __tablename__ = "incident_action_approval"
    __table_args__ = (sa.UniqueConstraint("action_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="incident_action.id", index=True)
    approver: str
    rationale: str
    at: datetime = Field(sa_type=TZ)
    #: What the competence register said at the approval (``incident.incidents.competence``):
    #: systems checked with their training record ids, and any flags. NULL before 0005.
    competence: dict[str, Any] | None = _json_or_null(default=None)


class RegulatoryClock(SQLModel, table=True):
    """One legal reporting deadline of a triaged incident."""

    __tablename__ = "incident_clock"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    regime: str  # eu_ai_act_art73 | nis2_art23
    report: str  # initial | early_warning | notification | final
    due_at: datetime = Field(sa_type=TZ, index=True)
    basis: str
    submitted_at: datetime | None = Field(default=None, sa_type=TZ)
    submitted_by: str | None = None
    reference: str | None = None


class EvidenceFreeze(SQLModel, table=True):
    """An incident holds ``model`` ``version`` as evidence until a responder releases it."""

    __tablename__ = "incident_freeze"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    model: str
    version: str
    reason: str
    frozen_by: str
    frozen_at: datetime = Field(sa_type=TZ)
    released_by: str | None = None
    released_at: datetime | None = Field(default=None, sa_type=TZ)
    release_reason: str | None = None


class MaintenanceTicket(SQLModel, table=True):
    """A maintenance job from a PdM alert. Its context is only in ``jwe``, encrypted for the
    maintenance team; the plain columns are what routing needs."""

    __tablename__ = "maintenance_ticket"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", index=True)
    asset: str = Field(index=True)
    level: str
    level_index: int
    status: str  # open | acknowledged | closed
    created_at: datetime = Field(sa_type=TZ)
    escalate_at: datetime | None = Field(default=None, sa_type=TZ, index=True)
    acknowledged_at: datetime | None = Field(default=None, sa_type=TZ)
    acknowledged_by: str | None = None
    jwe: str | None = Field(default=None, sa_type=sa.Text)
    recipient_kid: str | None = None
    delivery: str


class InboxEntry(SQLModel, table=True):
    """An event a consumer has handled, recorded in the same transaction as its effect, so a
    redelivered copy (an ack lost after the commit) changes nothing."""

    __tablename__ = "incident_inbox"

    event_id: str = Field(primary_key=True)
    subject: str
    received_at: datetime = Field(sa_type=TZ)
