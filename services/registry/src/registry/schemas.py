"""Request and response bodies of the registry service."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from linegate.modelsig import SigningCertificate
from registry.models import EuCategory

SLUG = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SHA256 = r"^(sha256:)?[0-9a-f]{64}$"
# Semantic-version-like: 2.1.0, 2.1.0-rc.1, 2024.11.3
VERSION = r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$"
Cadence = Literal["real-time", "hourly", "daily", "weekly", "monthly", "quarterly"]
CADENCE_BY_TIER: dict[int, str] = {1: "real-time", 2: "daily", 3: "monthly"}

# An accountable owner is a person (NIST AI RMF GOVERN 6.1 / EU AI Act Art. 26(2)), not a group.
_GROUP_WORDS = re.compile(
    r"\b(team|group|department|dept|squad|committee|unit|board|office|staff|crew|"
    r"everyone|all|ops|operations|support|it|qa|quality|assurance|maintenance|science|"
    r"engineering|production|management|admin|administrator)\b",
    re.IGNORECASE,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Owner(Strict):
    """The named person accountable for an AI system."""

    name: str = Field(min_length=3, max_length=200)
    email: EmailStr
    role: str = Field(default="", max_length=200)

    @field_validator("name")
    @classmethod
    def _a_person(cls, value: str) -> str:
        value = value.strip()
        if _GROUP_WORDS.search(value) or len(value.split()) < 2:
            raise ValueError(
                "the accountable owner must be a named person (given and family name), "
                "not a team or a role"
            )
        return value


class _SystemFields(Strict):
    name: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=4000)
    intended_use: str = Field(min_length=1, max_length=4000)
    deployment_context: str = Field(min_length=1, max_length=4000)
    decision_influenced: str = Field(min_length=1, max_length=4000)
    consequence_if_wrong: str | None = Field(default=None, min_length=1, max_length=4000)
    eu_category: EuCategory | None = None
    eu_basis: str | None = Field(default=None, min_length=1, max_length=1000)
    eu_rationale: str | None = Field(default=None, min_length=1, max_length=4000)
    nist_tier: Literal[1, 2, 3] | None = None
    owner: Owner | None = None
    monitoring_cadence: Cadence | None = Field(
        default=None, description="Override of the cadence the tier implies; needs a reason"
    )
    monitoring_cadence_reason: str | None = Field(default=None, min_length=1, max_length=2000)
    provider: str = Field(
        default="linegate",
        min_length=1,
        max_length=200,
        description='"linegate" for systems Linegate deploys; else the vendor (MES, ERP, SaaS)',
    )
    product: str | None = Field(default=None, max_length=200)
    supplier_id: str | None = Field(default=None, max_length=63)
    lines: list[str] = Field(default_factory=list, max_length=200)
    status: Literal["active", "retired"] = "active"


def check_classification(s: _SystemFields | SystemRead) -> None:
    """Cross-field rules of the risk classification; raises ValueError naming the gap."""
    if s.eu_category is not None and not s.eu_rationale:
        raise ValueError("an EU AI Act category needs a written rationale (eu_rationale)")
    if s.eu_category == EuCategory.HIGH_RISK:
        basis = (s.eu_basis or "").strip()
        if not re.match(r"(?i)^annex\s+(i|iii)\b", basis):
            raise ValueError(
                "a high-risk system needs its legal basis in eu_basis, starting with "
                "'Annex I' (safety component under Union harmonisation legislation) or "
                "'Annex III' (listed use), e.g. 'Annex I: Regulation (EU) 2023/1230'"
            )
    cadence = getattr(s, "monitoring_cadence", None)
    override_reason = getattr(s, "monitoring_cadence_reason", None)
    if isinstance(s, _SystemFields) and cadence is not None and not override_reason:
        raise ValueError("overriding the monitoring cadence needs monitoring_cadence_reason")


class SystemCreate(_SystemFields):
    id: str = Field(pattern=SLUG)

    @model_validator(mode="after")
    def _classification(self) -> Self:
        check_classification(self)
        return self


class SystemUpdate(Strict):
    """Fields to change; omitted fields keep their value, explicit nulls clear them."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    purpose: str | None = Field(default=None, min_length=1, max_length=4000)
    intended_use: str | None = Field(default=None, min_length=1, max_length=4000)
    deployment_context: str | None = Field(default=None, min_length=1, max_length=4000)
    decision_influenced: str | None = Field(default=None, min_length=1, max_length=4000)
    consequence_if_wrong: str | None = Field(default=None, min_length=1, max_length=4000)
    eu_category: EuCategory | None = None
    eu_basis: str | None = Field(default=None, min_length=1, max_length=1000)
    eu_rationale: str | None = Field(default=None, min_length=1, max_length=4000)
    nist_tier: Literal[1, 2, 3] | None = None
    owner: Owner | None = None
    monitoring_cadence: Cadence | None = None
    monitoring_cadence_reason: str | None = Field(default=None, min_length=1, max_length=2000)
    provider: str | None = Field(default=None, min_length=1, max_length=200)
    product: str | None = Field(default=None, max_length=200)
    supplier_id: str | None = Field(default=None, max_length=63)
    lines: list[str] | None = Field(default=None, max_length=200)
    status: Literal["active", "retired"] | None = None
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept in the audit log)")


class SystemRead(BaseModel):
    id: str
    name: str
    purpose: str
    intended_use: str
    deployment_context: str
    decision_influenced: str
    consequence_if_wrong: str | None
    eu_category: EuCategory | None
    eu_basis: str | None
    eu_rationale: str | None
    nist_tier: int | None
    owner: dict[str, Any] | None
    monitoring_cadence: str | None
    monitoring_cadence_source: Literal["tier", "override", "unset"]
    monitoring_cadence_reason: str | None
    provider: str
    third_party: bool
    product: str | None
    supplier_id: str | None
    lines: list[str]
    status: str
    gaps: list[str] = Field(description="What the classification still lacks")
    models: list[str] = Field(default_factory=list)
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class InventoryReport(BaseModel):
    """Systems with gaps first (missing consequence or owner), then the rest."""

    total: int
    with_gaps: int
    by_eu_category: dict[str, int]
    by_nist_tier: dict[str, int]
    systems: list[SystemRead]


# ------------------------------------------------------------------------------- candidates


class CandidateCreate(Strict):
    source: str = Field(min_length=1, max_length=500)
    location: str = Field(default="", max_length=200)
    passage: str = Field(min_length=1, max_length=8000)
    vendor: str | None = Field(default=None, max_length=200)
    terms: list[str] = Field(default_factory=list, max_length=50)
    suggestion: dict[str, Any] = Field(default_factory=dict)


class CandidateDecision(Strict):
    decision: Literal["confirm", "dismiss"]
    reason: str = Field(min_length=1, max_length=2000)
    system_id: str | None = Field(
        default=None, pattern=SLUG, description="Inventory entry the confirmed feature belongs to"
    )

    @model_validator(mode="after")
    def _confirm_names_system(self) -> Self:
        if self.decision == "confirm" and self.system_id is None:
            raise ValueError("confirming a candidate needs the system_id it was recorded under")
        return self


class CandidateRead(BaseModel):
    id: str
    source: str
    location: str
    passage: str
    vendor: str | None
    terms: list[str]
    suggestion: dict[str, Any]
    status: str
    system_id: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    created_at: datetime
    created_by: str


# ------------------------------------------------------------------------------ model lines


class ModelLineCreate(Strict):
    name: str = Field(pattern=SLUG)
    system_id: str = Field(pattern=SLUG)
    critical_classes: list[str] = Field(default_factory=list, max_length=100)
    tolerance: float = Field(default=0.02, ge=0.0, le=1.0)
    good_class: str | None = Field(default=None, max_length=200)
    min_defect_detection: dict[Literal["scratch", "crack", "porosity", "occlusion"], float] = Field(
        default_factory=dict
    )
    max_lighting_flip_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("min_defect_detection")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"min_defect_detection[{kind}] must be in [0, 1]")
        return value


class ModelLineRead(BaseModel):
    name: str
    system_id: str
    critical_classes: list[str]
    tolerance: float
    good_class: str | None
    min_defect_detection: dict[str, float]
    max_lighting_flip_rate: float | None
    security_version: int = Field(description="Highest security_version of any version")
    created_at: datetime
    created_by: str


# --------------------------------------------------------------------------------- versions


class DatasetRef(Strict):
    name: str = Field(min_length=1, max_length=200)
    digest: str = Field(pattern=SHA256)
    attestation_ids: list[str] = Field(default_factory=list, max_length=50)


class CodeRevision(Strict):
    repository: str = Field(min_length=1, max_length=500)
    revision: str = Field(min_length=1, max_length=200)


class VersionMetadata(Strict):
    """The ``metadata`` part of a push: what Annex IV asks the technical file to hold."""

    version: str = Field(pattern=VERSION)
    security_version: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Anti-rollback counter; never lower than any earlier version's (default: "
        "the model line's current value)",
    )
    artefact_sha256: str | None = Field(
        default=None, pattern=SHA256, description="Declared digest of model.onnx; checked"
    )
    training_parameters: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    code_revision: CodeRevision | None = None
    datasets: list[DatasetRef] = Field(default_factory=list, max_length=100)
    metrics: dict[str, float] = Field(default_factory=dict)
    limitations: str = Field(default="", max_length=20_000)
    intended_use: str = Field(default="", max_length=20_000)
    predetermined_changes: str = Field(
        default="", max_length=20_000, description="Annex IV 2(f): changes planned in advance"
    )


class VersionRead(BaseModel):
    id: str
    model: str
    version: str
    security_version: int
    state: str
    artefact_digest: str
    manifest_digest: str
    size_bytes: int
    files: list[dict[str, Any]]
    onnx: dict[str, Any]
    metadata: dict[str, Any]
    signing_key_id: str
    uploader: str
    created_at: datetime
    validation_id: str | None
    validated_at: datetime | None
    approvals: list[ApprovalRead] = Field(default_factory=list)
    approvals_required: int
    approved_at: datetime | None
    released_at: datetime | None
    released_by: str | None
    release_evidence: dict[str, Any]
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None


class ApprovalCreate(Strict):
    decision: Literal["approve", "reject"]
    rationale: str = Field(max_length=10_000)


class ApprovalRead(BaseModel):
    id: str
    approver: str
    decision: str
    rationale: str
    created_at: datetime
    competence_record_id: str | None = None
    flags: list[str] = Field(default_factory=list)


class RevokeRequest(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class ReleaseRequest(Strict):
    note: str = Field(default="", max_length=2000)


class GoldenSetRead(BaseModel):
    id: str
    model: str
    digest: str
    samples: int
    label_names: list[str]
    description: str
    created_at: datetime
    created_by: str


class ValidationRead(BaseModel):
    id: str
    version_id: str
    golden_set_id: str
    baseline_version_id: str | None
    passed: bool
    report: dict[str, Any]
    envelope: dict[str, Any]
    created_at: datetime
    created_by: str


class VerifyResult(BaseModel):
    verified: bool
    reason: str | None = None
    manifest_digest: str | None = None
    key_id: str | None = None
    files: list[dict[str, str]] = Field(default_factory=list)
    #: The signing certificate, for certificate and Sigstore signatures.
    certificate: SigningCertificate | None = None


class SigningKey(BaseModel):
    """What model release signatures verify against, and, with certificate or Sigstore
    signing, whom a verifier should expect as the signer."""

    key_id: str = Field(description="Hex SHA-256 of the public key's DER SubjectPublicKeyInfo")
    algorithm: str = Field(description="e.g. ecdsa-p256-sha256")
    public_key_pem: str = Field(
        description="The registry's public key (PEM): key-signed versions verify with it "
        "(`linegate model verify --public-key`, `model_signing verify key --public_key`)"
    )
    method: str = Field(
        default="key",
        description="How the registry signs now (LINEGATE_MODEL_SIGNING_METHOD): `key`, "
        "`certificate` or `sigstore`",
    )
    certificate_pem: str | None = Field(
        default=None, description="Certificate signing: the leaf signing certificate (PEM)"
    )
    certificate_chain_pem: str | None = Field(
        default=None,
        description="Certificate signing: the pinned chain (PEM: intermediates and root CA) "
        "that `linegate model verify --certificate-chain` and `model_signing verify "
        "certificate --certificate_chain` take",
    )
    verify_method: Literal["key", "certificate", "sigstore"] = Field(
        default="key",
        description="The `model_signing verify` subcommand that checks what the registry signs "
        "now. A version keeps the kind it was signed with: versions signed before a change of "
        "method still verify with `public_key_pem` (key) or the chain (certificate)",
    )
    certificate: SigningCertificate | None = Field(
        default=None,
        description="Certificate signing: the signing certificate described (subject, subject "
        "alternative names, issuer, serial, not_before / not_after, sha256_fingerprint of the "
        "DER certificate as `model_signing verify certificate --log_fingerprints` prints it, "
        "key_id, and `chain`: its issuers in the configured chain, by name, up to the root)",
    )
    identity: str | None = Field(
        default=None,
        description="Whom to expect as the signer, beyond the CA the chain proves: with "
        "certificate signing the certificate's first subject alternative name (else its "
        "subject), which `linegate model verify --certificate-chain ... --identity` pins; with "
        "Sigstore the signer identity (`--identity`)",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="Sigstore signing: the OIDC issuer of the identity (`--oidc-issuer`)",
    )


class SigningKeys(BaseModel):
    """``GET /v1/signing-keys``."""

    keys: list[SigningKey]


# ------------------------------------------------------------------------------ competence

CompetenceRoleName = Literal["approver", "override", "responder"]


class CompetenceCreate(Strict):
    person: str = Field(
        min_length=1, max_length=200, description="The subject the person's tokens carry"
    )
    role: CompetenceRoleName
    system_id: str = Field(pattern=SLUG)
    course: str = Field(min_length=1, max_length=500)
    evidence: str = Field(default="", max_length=2000, description="Certificate or LMS record")
    trained_at: datetime | None = Field(default=None, description="Default: now")
    valid_until: datetime

    @model_validator(mode="after")
    def _dates(self) -> Self:
        for name in ("trained_at", "valid_until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone (e.g. a trailing Z)")
        if self.trained_at is not None and self.valid_until <= self.trained_at:
            raise ValueError("valid_until must be after trained_at")
        return self


class CompetenceRead(BaseModel):
    id: str
    person: str
    role: str
    system_id: str
    course: str
    evidence: str
    trained_at: datetime
    valid_until: datetime
    recorded_by: str
    recorded_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    current: bool


class CompetenceRevoke(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class CompetenceCheck(BaseModel):
    person: str
    system_id: str
    role: str
    current: bool
    record_id: str | None
    valid_until: datetime | None
    nist_tier: int | None
    #: What the release gate does without current training: refuse (tier 1) or flag (2-3).
    without_training: Literal["refuse", "flag"]


VersionRead.model_rebuild()
