"""Request bodies of the SLA endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attestation.sla_performance import commitment_key

ARTEFACT_KINDS = Literal["model", "dataset", "software", "device"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerformanceCommitment(Strict):
    """A model performance commitment, scored on the supplier's signed evidence (README, "SLAs
    and scorecards"): CycloneDX ML-BOM performance metrics and Linegate SLA evidence."""

    metric: str = Field(
        min_length=1,
        max_length=100,
        description="e.g. recall, precision, latency_ms_p99; matched against the CycloneDX "
        "performance metric `type` and the SLA evidence `metric`, ignoring case, spaces, "
        "'-' and '_'",
    )
    model: str | None = Field(
        default=None,
        max_length=200,
        description="the model it binds: a CycloneDX model component's name (or name@version), "
        "an SLA evidence scope.model/product or a statement subject's name; none = any of the "
        "supplier's models",
    )
    slice: str | None = Field(
        default=None,
        max_length=200,
        description="the data slice the metric is measured on; none = unsliced measurements only",
    )
    min: float | None = Field(default=None, allow_inf_nan=False, description="lowest value met")
    max: float | None = Field(default=None, allow_inf_nan=False, description="highest value met")

    @model_validator(mode="after")
    def _bounded(self) -> PerformanceCommitment:
        if self.min is None and self.max is None:
            raise ValueError("a performance commitment needs a min, a max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self


class SlaTerms(Strict):
    required_evidence: dict[ARTEFACT_KINDS, list[str]] = Field(
        default_factory=dict,
        description='artefact kind -> evidence kinds; "a|b" accepts either ("cyclonedx|spdx-3")',
        examples=[
            {"model": ["slsa-provenance-v1", "cyclonedx|spdx-3", "linegate-dataset-provenance"]}
        ],
    )
    max_attestation_age_days: int = Field(default=90, ge=1, le=3650)
    vulnerability_response_days: int = Field(default=5, ge=0, le=365)
    incident_response_days: int = Field(default=2, ge=0, le=365)
    performance_commitments: list[PerformanceCommitment] = Field(
        default_factory=list,
        max_length=100,
        description="each (metric, model, slice) at most once",
    )

    @model_validator(mode="after")
    def _distinct_commitments(self) -> SlaTerms:
        seen: set[str] = set()
        for c in self.performance_commitments:
            key = commitment_key(c.metric, c.model, c.slice)
            if key in seen:
                raise ValueError(f"performance commitment {key!r} is given twice")
            seen.add(key)
        return self


class ArtefactCreate(Strict):
    name: str = Field(min_length=1, max_length=300)
    kind: ARTEFACT_KINDS
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class NoticeCreate(Strict):
    kind: Literal["vulnerability", "incident"]
    reference: str = Field(
        min_length=1, max_length=200, description="e.g. a CVE id or incident number"
    )
    summary: str = Field(default="", max_length=5000)
    sent_at: datetime | None = None


class NoticeResponse(Strict):
    response: str = Field(min_length=1, max_length=10000)


# ------------------------------------------------------------------ scorecard responses


class FindingRead(BaseModel):
    term: str = Field(
        description="evidence-missing, evidence-expired, vulnerability-response, "
        "incident-response, performance-not-met or performance-no-evidence"
    )
    key: str = Field(
        description="what it is about: artefact digest#evidence, a notice id, or a "
        "performance commitment's metric|model|slice"
    )
    since: str = Field(description="when the breach started (RFC 3339)")
    detail: str


class ExpiringRead(BaseModel):
    key: str
    attestation: str
    expires_at: str = Field(description="RFC 3339")


class EvidenceStateRead(BaseModel):
    evidence: str
    state: Literal["covered", "expiring", "expired", "missing"]
    attestation: str | None = None


class ArtefactScoreRead(BaseModel):
    name: str
    kind: str
    digest: str
    evidence: list[EvidenceStateRead]


class UnscorableRead(BaseModel):
    attestation: str
    model: str | None = None
    value: Any = Field(description="the value as the attestation reports it")
    reason: str | None = Field(description="why it cannot be scored, e.g. not a plain number")


class PerformanceScoreRead(BaseModel):
    """One performance commitment, judged on the newest verified, unexpired evidence."""

    key: str = Field(description="metric|model|slice, normalised; the key of its breach")
    metric: str
    model: str | None
    slice: str | None
    min: float | None
    max: float | None
    status: Literal["met", "not_met", "no_evidence"]
    since: str = Field(
        description="RFC 3339: since when the status holds: the oldest of the unbroken run of "
        "newest evidence with this status; for no_evidence, when the last evidence expired or "
        "the terms were set"
    )
    reason: str = Field(description="why, in words (the breach detail when not met)")
    measured: float | None = Field(description="the deciding measured value")
    unit: str | None = Field(description="its unit, when the evidence states one")
    measured_model: str | None = Field(description="the model the deciding measurement is about")
    attestation: str | None = Field(description="the attestation that provided it")
    measured_at: str | None = Field(description="when that measurement holds (RFC 3339)")
    unscorable: list[UnscorableRead] = Field(
        description="matching measurements that could not be scored (at most 5), and why"
    )


class ScorecardRead(BaseModel):
    supplier: str
    has_sla: bool
    coverage: float = Field(description="covered / required (1.0 when nothing is required)")
    required: int = Field(description="contracted artefacts x required evidence kinds")
    covered: int
    breaches: list[FindingRead] = Field(description="every current breach, oldest first")
    expiring: list[ExpiringRead]
    artefacts: list[ArtefactScoreRead]
    performance: list[PerformanceScoreRead] = Field(
        description="each performance commitment of the SLA: met, not_met or no_evidence"
    )
