"""Tables owned by the edge gateway: the device inventory, distributed releases, and each
device's desired state (mirrored into the NATS KV bucket ``desired``)."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

TZ = sa.DateTime(timezone=True)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=False), **kw)


class Device(SQLModel, table=True):
    """A line device: where it stands and what it can run. Its NATS identity is an nkey whose
    public half is kept here; the seed is handed out once, at registration."""

    __tablename__ = "device"

    id: str = Field(primary_key=True)
    plant: str
    line: str = Field(index=True)
    station: str
    hardware: str = ""
    execution_providers: list[str] = _json(default_factory=list)
    tags: list[str] = _json(default_factory=list)
    public_nkey: str
    #: Last report on ``linegate.device.<id>.status``.
    last_state: str | None = None
    last_detail: str | None = None
    last_seen: datetime | None = Field(default=None, sa_type=TZ)
    active_model: str | None = None
    active_version: str | None = None
    #: The highest desired-state revision the device reported holding (``None``: it never
    #: said, e.g. an older agent); the gateway issues it only revisions above
    #: (:func:`edge_gateway.revision_floor.record_reported_revision`).
    reported_revision: int | None = None
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class Release(SQLModel, table=True):
    """A released model version copied into the object store, with signed release metadata
    (TUF targets) that devices verify before installing it."""

    __tablename__ = "release"
    __table_args__ = (sa.UniqueConstraint("model", "version"),)

    id: str = Field(primary_key=True)
    model: str = Field(index=True)
    version: str
    security_version: int
    artefact_digest: str
    manifest_digest: str
    files: list[dict[str, Any]] = _json(default_factory=list)
    metadata_version: int = 1
    metadata_json: str = Field(sa_type=sa.Text)
    expires_at: datetime = Field(sa_type=TZ)
    state: str = "distributed"  # distributed | revoked
    revoked_reason: str | None = None
    created_at: datetime = Field(sa_type=TZ)


class DesiredState(SQLModel, table=True):
    """What a device should run; the KV bucket ``desired`` holds the same, signed."""

    __tablename__ = "desired_state"

    device_id: str = Field(primary_key=True, foreign_key="device.id")
    release_id: str = Field(foreign_key="release.id", index=True)
    #: Set when the assignment installs a lower security_version (revocation or rollback).
    rollback: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: A candidate the device runs beside its release without letting it decide (shadow stage).
    shadow_release_id: str | None = Field(default=None, foreign_key="release.id")
    #: What an approved incident action ordered (manual inspection, a threshold); kept across
    #: release changes until another action changes it.
    control: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: Bumped on every change; signed into the document, devices refuse an older one.
    revision: int = 0
    reason: str
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str


class CompetenceRoster(SQLModel, table=True):
    """The override roster of a model's AI system, as last read from the registry's
    competence register; signed into the desired state of every device that runs the model."""

    __tablename__ = "competence_roster"

    model: str = Field(primary_key=True)
    system_id: str
    nist_tier: int | None = None
    #: ``[{"person", "trained_at", "valid_until"}]``: unrevoked ``override`` training that has
    #: not ended (times ``YYYY-MM-DDTHH:MM:SSZ``), sorted.
    override: list[dict[str, Any]] = _json(default_factory=list)
    #: When the registry last answered with this roster (the signed ``as_of``).
    fetched_at: datetime = Field(sa_type=TZ)
    #: When the roster last changed.
    updated_at: datetime = Field(sa_type=TZ)


# ------------------------------------------------------------------------------ rollouts
# Staged rollouts (edge_gateway.rollouts): the plan, each device's place in it, the inference
# outcomes telemetry reports per device and version, and the plants' maintenance windows.


class Rollout(SQLModel, table=True):
    """A staged rollout of one release to the devices its selector matches."""

    __tablename__ = "rollout"

    id: str = Field(primary_key=True)
    model: str = Field(index=True)
    version: str
    release_id: str = Field(foreign_key="release.id")
    selector: dict[str, Any] = _json(default_factory=dict)
    #: Validated stage specs (``rollouts.schemas.Stage``), in order.
    stages: list[dict[str, Any]] = _json(default_factory=list)
    device_timeout_seconds: int
    reason: str = Field(sa_type=sa.Text)
    #: draft | running | paused | awaiting_approval | completed | aborted | rolled_back
    state: str = Field(default="draft", index=True)
    #: The state ``resume`` returns to (running or awaiting_approval).
    resume_state: str | None = None
    stage_index: int = -1
    stage_started_at: datetime | None = Field(default=None, sa_type=TZ)
    #: The evaluator's last verdict on the current stage: KPIs, what blocks it, breaches.
    evaluation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: Commands and transitions, newest last (the audit log holds the same, chained).
    history: list[dict[str, Any]] = _json(default_factory=list)
    abort_reason: str | None = Field(default=None, sa_type=sa.Text)
    incident_id: str | None = None
    created_at: datetime = Field(sa_type=TZ)
    created_by: str
    updated_at: datetime = Field(sa_type=TZ)


class RolloutDevice(SQLModel, table=True):
    """One device's place in a rollout, and the candidate's inference outcomes on it."""

    __tablename__ = "rollout_device"

    rollout_id: str = Field(primary_key=True, foreign_key="rollout.id")
    device_id: str = Field(primary_key=True, foreign_key="device.id", index=True)
    stage: int
    #: waiting_window | assigned | installing | active | failed | skipped | cancelled |
    #: rolled_back
    state: str
    #: The device's desired release before the rollout assigned the candidate.
    previous_release_id: str | None = Field(default=None, foreign_key="release.id")
    assigned_at: datetime | None = Field(default=None, sa_type=TZ)
    #: Set when the device did not report within the rollout's device timeout.
    late_since: datetime | None = Field(default=None, sa_type=TZ)
    reported_at: datetime | None = Field(default=None, sa_type=TZ)
    last_report: str | None = Field(default=None, sa_type=sa.Text)
    selftest_failed: bool = False
    rollback_error: str | None = Field(default=None, sa_type=sa.Text)
    inferences: int = 0
    rejects: int = 0
    manual: int = 0
    confidence_sum: float = 0.0
    confidence_n: int = 0
    #: Inferences the candidate ran in shadow on this device, and how many it disagreed on.
    shadow_inferences: int = 0
    shadow_disagreements: int = 0


class DeviceKpi(SQLModel, table=True):
    """Inference outcomes per device and model version from telemetry: the baseline a
    rollout compares its candidate against."""

    __tablename__ = "device_kpi"

    device_id: str = Field(primary_key=True, foreign_key="device.id")
    model: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    inferences: int = 0
    rejects: int = 0
    manual: int = 0
    confidence_sum: float = 0.0
    confidence_n: int = 0
    first_at: datetime = Field(sa_type=TZ)
    last_at: datetime = Field(sa_type=TZ)


class MaintenanceCalendar(SQLModel, table=True):
    """Weekly windows in which devices of a plant (``line == ""``) or a line may install."""

    __tablename__ = "maintenance_calendar"

    plant: str = Field(primary_key=True)
    line: str = Field(default="", primary_key=True)
    windows: list[dict[str, Any]] = _json(default_factory=list)
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str


class FreezeHold(SQLModel, table=True):
    """One incident's hold on a model version it froze as evidence (EU AI Act Art. 73).

    The version is frozen while at least one incident holds it: no rollout or assignment
    deploys it. Each incident's release removes only its own hold, so a version implicated in
    several incidents stays frozen until every one of them released it.
    """

    __tablename__ = "freeze_hold"

    model: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    incident_id: str = Field(primary_key=True)
    reason: str = Field(sa_type=sa.Text)
    frozen_at: datetime = Field(sa_type=TZ)
    frozen_by: str


class IncidentAction(SQLModel, table=True):
    """An incident action the gateway carried out (or could not): carried out once.

    The row is inserted ``in_progress`` (committed) before the action is carried out, so a
    second delivery cannot also carry it out, then settled. Handled evidence freezes are
    recorded here too (``action_id`` ``freeze:<event id>``), so each is applied once.
    """

    __tablename__ = "gateway_action"

    action_id: str = Field(primary_key=True)
    incident_id: str = Field(index=True)
    action: str
    model: str
    version: str | None = None
    outcome: str  # in_progress | done | failed | refused; freezes: applied | ignored
    devices: list[str] = _json(default_factory=list)
    detail: str | None = Field(default=None, sa_type=sa.Text)
    received_at: datetime = Field(sa_type=TZ)
