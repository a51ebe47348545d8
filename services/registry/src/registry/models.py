"""Tables owned by the registry service.

The AI inventory (:class:`AiSystem`, :class:`InventoryCandidate`) lists every AI system the plant
runs; a :class:`ModelLine` is one model Linegate deploys for a system, and each upload of it is a
:class:`ModelVersion` whose files live in content-addressed storage (:class:`Blob`). Golden sets,
validation runs and approvals hang off the version; the release gate reads them all.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

TZ = sa.DateTime(timezone=True)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=False), **kw)


class EuCategory(StrEnum):
    """EU AI Act risk category of an AI system."""

    PROHIBITED = "prohibited"  # Art. 5
    HIGH_RISK = "high_risk"  # Art. 6: Annex I safety component or Annex III use
    LIMITED = "limited"  # Art. 50 transparency obligations
    MINIMAL = "minimal"


class VersionState(StrEnum):
    DRAFT = "draft"
    VALIDATED = "validated"
    APPROVED = "approved"
    RELEASED = "released"
    REVOKED = "revoked"
    REJECTED = "rejected"


class AiSystem(SQLModel, table=True):
    """One AI system in the plant's inventory (NIST AI RMF MAP 1.1 / 2.2, GOVERN 6.1)."""

    __tablename__ = "ai_system"

    id: str = Field(primary_key=True)
    name: str
    purpose: str
    intended_use: str
    deployment_context: str
    decision_influenced: str
    consequence_if_wrong: str | None = None
    eu_category: str | None = None
    #: Annex I (Union harmonisation legislation) or Annex III point the high-risk class rests on.
    eu_basis: str | None = None
    eu_rationale: str | None = None
    nist_tier: int | None = None
    owner_name: str | None = None
    owner_email: str | None = None
    cadence_override: str | None = None
    cadence_override_reason: str | None = None
    #: "linegate" for systems Linegate deploys; otherwise the vendor (MES/ERP AI, SaaS, ...).
    provider: str
    product: str | None = None
    supplier_id: str | None = None
    lines: list[str] = _json(default_factory=list)
    status: str = "active"
    created_at: datetime = Field(sa_type=TZ)
    created_by: str
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str


class InventoryCandidate(SQLModel, table=True):
    """A passage of vendor release notes that may describe an AI feature: confirm or dismiss."""

    __tablename__ = "inventory_candidate"

    id: str = Field(primary_key=True)
    source: str
    location: str
    passage: str
    vendor: str | None = None
    terms: list[str] = _json(default_factory=list)
    suggestion: dict[str, Any] = _json(default_factory=dict)
    status: str = "open"  # open | confirmed | dismissed
    system_id: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = Field(default=None, sa_type=TZ)
    decision_reason: str | None = None
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class ModelLine(SQLModel, table=True):
    """A model Linegate deploys for an inventory system; versions share its security counter."""

    __tablename__ = "model_line"

    name: str = Field(primary_key=True)
    system_id: str = Field(foreign_key="ai_system.id", index=True)
    #: Golden-set policy: classes that may not regress, and how far.
    critical_classes: list[str] = _json(default_factory=list)
    tolerance: float = 0.02
    good_class: str | None = None
    min_defect_detection: dict[str, float] = _json(default_factory=dict)
    max_lighting_flip_rate: float | None = None
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class Blob(SQLModel, table=True):
    """A file in content-addressed storage, named by its SHA-256."""

    __tablename__ = "blob"

    digest: str = Field(primary_key=True)  # hex
    size: int = Field(sa_type=sa.BigInteger)
    created_at: datetime = Field(sa_type=TZ)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    __table_args__ = (sa.UniqueConstraint("model_name", "version"),)

    id: str = Field(primary_key=True)
    model_name: str = Field(foreign_key="model_line.name", index=True)
    version: str
    security_version: int
    state: str = Field(index=True)
    #: [{"path", "sha256", "size"}] of the signed artefact folder.
    files: list[dict[str, Any]] = _json(default_factory=list)
    artefact_digest: str = Field(index=True)  # sha256 hex of model.onnx
    manifest_digest: str  # the model-signing statement's subject digest
    size_bytes: int = Field(sa_type=sa.BigInteger)
    onnx: dict[str, Any] = _json(default_factory=dict)
    meta: dict[str, Any] = _json(default_factory=dict)
    signature_digest: str
    signing_key_id: str
    uploader: str
    created_at: datetime = Field(sa_type=TZ)
    validation_id: str | None = None
    validated_at: datetime | None = Field(default=None, sa_type=TZ)
    approved_at: datetime | None = Field(default=None, sa_type=TZ)
    released_at: datetime | None = Field(default=None, sa_type=TZ)
    released_by: str | None = None
    release_evidence: dict[str, Any] = _json(default_factory=dict)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    revoked_by: str | None = None
    revoke_reason: str | None = None


class GoldenSet(SQLModel, table=True):
    """Inputs and expected labels a model line is validated on (an .npz blob)."""

    __tablename__ = "golden_set"

    id: str = Field(primary_key=True)
    model_name: str = Field(foreign_key="model_line.name", index=True)
    digest: str
    samples: int
    label_names: list[str] = _json(default_factory=list)
    description: str = ""
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class ValidationRun(SQLModel, table=True):
    """One golden-set run of a candidate version; the report is signed (DSSE) by the registry."""

    __tablename__ = "validation_run"

    id: str = Field(primary_key=True)
    version_id: str = Field(foreign_key="model_version.id", index=True)
    golden_set_id: str = Field(foreign_key="golden_set.id")
    baseline_version_id: str | None = None
    passed: bool
    report: dict[str, Any] = _json(default_factory=dict)
    envelope: dict[str, Any] = _json(default_factory=dict)
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class Approval(SQLModel, table=True):
    """A human decision on a validated version (EU AI Act Art. 14), with its rationale."""

    __tablename__ = "approval"
    __table_args__ = (sa.UniqueConstraint("version_id", "approver"),)

    id: str = Field(primary_key=True)
    version_id: str = Field(foreign_key="model_version.id", index=True)
    approver: str
    decision: str  # approve | reject
    rationale: str
    created_at: datetime = Field(sa_type=TZ)
    #: The competence record that made the approver eligible (None: none was current).
    competence_record_id: str | None = None
    #: What an auditor should look at (e.g. no current training on a tier 2-3 system).
    flags: list[str] = _json(default_factory=list)


class CompetenceRole(StrEnum):
    """What a person is trained to do on a system (NIS2 Art. 21(2)(g), EU AI Act Art. 4, 14)."""

    APPROVER = "approver"  # decides on model versions at the release gate
    OVERRIDE = "override"  # overrides a model's decision on the line
    RESPONDER = "responder"  # handles AI incidents


class CompetenceRecord(SQLModel, table=True):
    """One person's training for one role on one AI system, valid until a date."""

    __tablename__ = "competence_record"

    id: str = Field(primary_key=True)
    person: str = Field(index=True)  # the token subject the person signs in as
    role: str = Field(index=True)
    system_id: str = Field(foreign_key="ai_system.id", index=True)
    course: str
    evidence: str = ""  # certificate number, LMS record, ...
    trained_at: datetime = Field(sa_type=TZ)
    valid_until: datetime = Field(sa_type=TZ)
    recorded_by: str
    recorded_at: datetime = Field(sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    revoked_by: str | None = None
    revoke_reason: str | None = None
