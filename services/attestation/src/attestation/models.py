"""Tables owned by the attestation service."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

TZ = sa.DateTime(timezone=True)


class OAuthClient(SQLModel, table=True):
    """An API client of the embedded OAuth2 issuer (client-credentials grant)."""

    __tablename__ = "oauth_client"

    client_id: str = Field(primary_key=True)
    secret_hash: str
    #: Space-separated roles (OAuth2 scopes) the client may request.
    roles: str
    tenant: str | None = Field(default=None, index=True)
    device_id: str | None = None
    description: str = ""
    active: bool = True
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class Supplier(SQLModel, table=True):
    __tablename__ = "supplier"

    id: str = Field(primary_key=True)
    name: str
    contacts: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    created_at: datetime = Field(sa_type=TZ)
    created_by: str


class SupplierKey(SQLModel, table=True):
    """A public key a supplier signs DSSE envelopes with; rotated by validity windows."""

    __tablename__ = "supplier_key"

    key_id: str = Field(primary_key=True)  # sha256 of the DER SubjectPublicKeyInfo
    supplier_id: str = Field(foreign_key="supplier.id", index=True)
    public_key_pem: str
    algorithm: str
    not_before: datetime = Field(sa_type=TZ)
    not_after: datetime | None = Field(default=None, sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    revocation_reason: str | None = None
    created_at: datetime = Field(sa_type=TZ)


class SupplierIdentity(SQLModel, table=True):
    """A Sigstore (OIDC issuer, subject) the supplier may sign bundles as."""

    __tablename__ = "supplier_identity"

    id: str = Field(primary_key=True)
    supplier_id: str = Field(foreign_key="supplier.id", index=True)
    issuer: str
    subject: str | None = None
    subject_pattern: str | None = None
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    created_at: datetime = Field(sa_type=TZ)


class Blob(SQLModel, table=True):
    """Exact bytes uploaded, by digest (shared by identical uploads)."""

    __tablename__ = "attestation_blob"

    digest: str = Field(primary_key=True)  # sha256:<hex>
    size: int
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))


class Attestation(SQLModel, table=True):
    """One upload and its outcome, accepted or rejected."""

    __tablename__ = "attestation"
    __table_args__ = (
        sa.UniqueConstraint("supplier_id", "raw_digest", name="uq_attestation_supplier_raw"),
    )

    id: str = Field(primary_key=True)
    #: Looked up through uq_attestation_supplier_raw, whose leading column it is (no index of
    #: its own: migration 0006).
    supplier_id: str = Field(foreign_key="supplier.id")
    #: verified | unsigned (SBOM stored as evidence-to-be, not signed) | rejected
    status: str = Field(index=True)
    verified: bool
    content_type: str
    envelope: str  # dsse | sigstore-bundle | cyclonedx | spdx
    raw_digest: str  # always looked up with its supplier: uq_attestation_supplier_raw
    raw_size: int
    predicate_type: str | None = Field(default=None, index=True)
    predicate_kind: str | None = None
    recognised: bool = True
    signer: str | None = None  # key id, or Sigstore identity (issuer + SAN)
    subjects: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    issued_at: datetime | None = Field(default=None, sa_type=TZ)
    expires_at: datetime | None = Field(default=None, sa_type=TZ, index=True)
    created_at: datetime = Field(sa_type=TZ, index=True)
    uploaded_by: str


class AttestationSubject(SQLModel, table=True):
    """(attestation, digest) pairs, so "what covers sha256:..." is an index lookup."""

    __tablename__ = "attestation_subject"

    attestation_id: str = Field(foreign_key="attestation.id", primary_key=True)
    algorithm: str = Field(primary_key=True)
    digest: str = Field(primary_key=True, index=True)
    name: str


class SupplierSla(SQLModel, table=True):
    """Terms procurement agreed with a supplier."""

    __tablename__ = "supplier_sla"

    supplier_id: str = Field(foreign_key="supplier.id", primary_key=True)
    #: artefact kind -> required evidence; each entry lists acceptable predicate kinds
    #: ("cyclonedx|spdx-3" = either), e.g. {"model": ["slsa-provenance-v1", "cyclonedx|spdx-3"]}
    required_evidence: dict[str, list[str]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    max_attestation_age_days: int = 90
    vulnerability_response_days: int = 5
    incident_response_days: int = 2
    performance_commitments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str


class SupplierArtefact(SQLModel, table=True):
    """A deliverable the supplier must keep covered by evidence (a model, dataset, ...)."""

    __tablename__ = "supplier_artefact"
    __table_args__ = (
        sa.UniqueConstraint("supplier_id", "digest", name="uq_supplier_artefact_digest"),
    )

    id: str = Field(primary_key=True)
    supplier_id: str = Field(foreign_key="supplier.id", index=True)
    name: str
    kind: str
    digest: str  # sha256:<hex>
    registered_at: datetime = Field(sa_type=TZ)
    registered_by: str


class SupplierNotice(SQLModel, table=True):
    """A vulnerability or incident notice sent to a supplier, and its response."""

    __tablename__ = "supplier_notice"

    id: str = Field(primary_key=True)
    supplier_id: str = Field(foreign_key="supplier.id", index=True)
    kind: str  # vulnerability | incident
    reference: str
    summary: str
    sent_at: datetime = Field(sa_type=TZ)
    sent_by: str
    responded_at: datetime | None = Field(default=None, sa_type=TZ)
    response: str | None = None


class SlaBreach(SQLModel, table=True):
    """A breached SLA term, open until the evaluator sees it met again."""

    __tablename__ = "sla_breach"

    id: str = Field(primary_key=True)
    supplier_id: str = Field(foreign_key="supplier.id", index=True)
    term: str
    key: str  # what the term is about: artefact digest + evidence, or notice id
    since: datetime = Field(sa_type=TZ)
    detail: str
    opened_at: datetime = Field(sa_type=TZ)
    resolved_at: datetime | None = Field(default=None, sa_type=TZ, index=True)


class TrustVersion(SQLModel, table=True):
    """One counter bumped in the same transaction as every change to trust material
    (suppliers, keys, Sigstore identities, SLA maximum age). Ingest verifies against an
    in-memory copy of that material and, in the transaction that records the outcome, checks
    the counter: a copy older than the counter is reloaded and the upload verified again, so
    a revocation takes effect for every upload committed after it, in every process."""

    __tablename__ = "attestation_trust_version"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
