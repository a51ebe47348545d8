"""Request bodies of the SLA endpoints."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ARTEFACT_KINDS = Literal["model", "dataset", "software", "device"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerformanceCommitment(Strict):
    metric: str = Field(
        min_length=1, max_length=100, description="e.g. recall, precision, latency_ms_p99"
    )
    model: str | None = Field(default=None, max_length=200)
    min: float | None = None
    max: float | None = None


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
        default_factory=list, max_length=100
    )


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
