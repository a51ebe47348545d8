"""Request and response bodies of the incidents API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from incident.signals import IncidentType, Severity
from linegate.events import IncidentActionKind

Queue = Literal["qa", "ot", "data_science"]
Status = Literal["open", "acknowledged", "investigating", "mitigated", "closed"]
#: EU AI Act Art. 3(49): what makes an AI incident "serious".
SeriousCategory = Literal[
    "health",  # (a) death of a person, or serious harm to a person's health
    "critical_infrastructure",  # (b) serious and irreversible disruption of critical infrastructure
    "fundamental_rights",  # (c) infringement of obligations protecting fundamental rights
    "property_environment",  # (d) serious harm to property or the environment
]

# Owners are people, so someone is accountable (NIST AI RMF GOVERN 2.1), not a mailbox.
_GROUP_WORDS = re.compile(
    r"\b(team|group|department|dept|squad|committee|unit|board|office|staff|crew|queue|"
    r"everyone|all|ops|operations|support|it|qa|quality|maintenance|science|on-call|oncall|"
    r"engineering|production|management|admin|administrator)\b",
    re.IGNORECASE,
)


def _a_person(value: str) -> str:
    value = value.strip()
    if _GROUP_WORDS.search(value) or len(value.split()) < 2:
        raise ValueError("an owner must be a named person (given and family name), not a team")
    return value


Person = Annotated[str, Field(min_length=3, max_length=200), AfterValidator(_a_person)]
Reason = Annotated[str, Field(min_length=3, max_length=4000)]
Rationale = Annotated[str, Field(min_length=10, max_length=4000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Read(BaseModel):
    """A response body; times are UTC (SQLite hands them back naive)."""

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# ------------------------------------------------------------------------------ routing


class EscalationLevel(Strict):
    owner: Person
    #: None on the last level: it keeps the incident.
    acknowledge_within_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)


class RoutingRuleCreate(Strict):
    incident_type: IncidentType
    queue: Queue
    min_severity: Severity = "low"
    owner: Person
    acknowledge_within_minutes: int = Field(ge=1, le=7 * 24 * 60)
    escalation: list[EscalationLevel] = Field(default_factory=list, max_length=10)
    reason: Reason | None = None


class RoutingRuleUpdate(Strict):
    min_severity: Severity | None = None
    owner: Person | None = None
    acknowledge_within_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    escalation: list[EscalationLevel] | None = Field(default=None, max_length=10)
    active: bool | None = None
    reason: Reason


class RoutingRuleRead(Read):
    id: str
    incident_type: str
    queue: str
    min_severity: str
    owner: str
    acknowledge_within_minutes: int
    escalation: list[dict[str, Any]]
    active: bool
    revision: int
    updated_at: datetime
    updated_by: str


# ----------------------------------------------------------------------------- incidents


class AssignmentRead(Read):
    queue: str
    owner: str | None
    level: int
    assigned_at: datetime
    escalate_at: datetime | None
    rule_id: str | None


class IncidentRead(Read):
    id: str
    incident_type: str
    severity: str
    status: str
    summary: str
    source: str
    dedup_key: str
    line: str | None
    station: str | None
    device_id: str | None
    model: str | None
    version: str | None
    rollout_id: str | None
    external_ref: str | None
    risk_tier: int | None
    evidence: dict[str, Any]
    signal_count: int
    opened_at: datetime
    last_signal_at: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    closed_at: datetime | None
    runbook_id: str | None
    runbook_version: int | None
    serious: bool | None
    nis2_significant: bool | None
    aware_at: datetime | None
    triage: dict[str, Any] | None
    assignments: list[AssignmentRead] = Field(default_factory=list)


class TimelineEntry(Read):
    id: int
    at: datetime
    kind: str
    actor: str
    detail: str
    data: dict[str, Any]


class StatusChange(Strict):
    status: Status
    reason: Reason


class SnoozeCreate(Strict):
    dedup_key: str = Field(min_length=1, max_length=500)
    minutes: int = Field(ge=1, le=30 * 24 * 60)
    reason: Reason


class SnoozeRead(Read):
    dedup_key: str
    until: datetime
    reason: str
    created_by: str
    created_at: datetime
    suppressed: int
    last_suppressed_at: datetime | None


# ------------------------------------------------------------------- runbooks and actions


class StepCompletion(Strict):
    state: Literal["done", "skipped"] = "done"
    note: Reason


class StepRead(Read):
    id: str
    title: str
    kind: str
    action: str | None
    gate: str
    guidance: str
    state: str  # pending | done | skipped
    actor: str | None = None
    at: datetime | None = None
    note: str | None = None


class RunbookProgress(Read):
    runbook_id: str
    version: int
    title: str
    steps: list[StepRead]


class ActionCreate(Strict):
    action: IncidentActionKind
    #: The runbook step this carries out; its earlier human gates must be passed.
    step_id: str | None = None
    #: Defaults to the incident's line and model version.
    line: str | None = None
    device_ids: list[str] | None = Field(default=None, max_length=1000)
    target_version: str | None = Field(default=None, min_length=1, max_length=64)
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    rationale: Rationale


class ApprovalCreate(Strict):
    rationale: Rationale


class ApprovalRead(Read):
    approver: str
    rationale: str
    at: datetime
    #: The approver's responder training as the registry's competence register stated it at
    #: the approval: ``systems`` (AI system id -> training record id, or null when there was
    #: none) and ``flags`` (why it was accepted without current training); null for approvals
    #: recorded before the check existed.
    competence: dict[str, Any] | None = None


class ActionRead(Read):
    id: str
    incident_id: str
    action: str
    step_id: str | None
    params: dict[str, Any]
    rationale: str
    proposed_by: str
    proposed_at: datetime
    required_approvals: int
    state: str
    sent_at: datetime | None
    result_at: datetime | None
    result: dict[str, Any] | None
    approvals: list[ApprovalRead] = Field(default_factory=list)


# ------------------------------------------------------------------------ clocks, freeze


class TriageDecision(Strict):
    serious: bool
    categories: list[SeriousCategory] = Field(default_factory=list)
    #: Art. 73(4): a death shortens the deadline to 10 days.
    death: bool = False
    #: Art. 73(3): a widespread infringement shortens it to 2 days.
    widespread_infringement: bool = False
    nis2_significant: bool = False
    #: When the organisation became aware; the clocks run from here (default: now).
    aware_at: datetime | None = None
    rationale: Rationale
    #: Freeze the incident's model version as evidence (default: when anything is reportable).
    freeze_evidence: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TriageDecision:
        if self.serious and not self.categories:
            raise ValueError("a serious incident names at least one Art. 3(49) category")
        if not self.serious and (self.categories or self.death or self.widespread_infringement):
            raise ValueError("categories, death and widespread apply to serious incidents only")
        if self.death and "health" not in self.categories:
            raise ValueError("a death falls under the 'health' category (Art. 3(49)(a))")
        if self.widespread_infringement and "fundamental_rights" not in self.categories:
            raise ValueError("a widespread infringement is a 'fundamental_rights' case")
        return self


class ClockRead(Read):
    id: int
    incident_id: str
    regime: str
    report: str
    due_at: datetime
    basis: str
    submitted_at: datetime | None
    submitted_by: str | None
    reference: str | None
    overdue: bool


class ClockSubmission(Strict):
    reference: str = Field(min_length=1, max_length=500)
    submitted_at: datetime | None = None


class FreezeCreate(Strict):
    reason: Reason


class FreezeRelease(Strict):
    rationale: Rationale


class FreezeRead(Read):
    id: int
    incident_id: str
    model: str
    version: str
    reason: str
    frozen_by: str
    frozen_at: datetime
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None


class TicketRead(Read):
    id: str
    incident_id: str
    asset: str
    level: str
    status: str
    created_at: datetime
    escalate_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    #: The ticket's context as a JWE (compact), readable only with the team's private key.
    jwe: str | None
    recipient_kid: str | None
    delivery: str


class TicketAcknowledge(Strict):
    note: Reason | None = None
