"""Monitor thresholds (defaults by risk tier) and the API's request/response shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from incident._sql import UtcDateTime

Cadence = Literal["real-time", "hourly", "daily", "weekly", "monthly", "quarterly"]
CADENCE_BY_TIER: dict[int, Cadence] = {1: "real-time", 2: "daily", 3: "monthly"}
#: How much data one evaluation looks at, and how often a scheduled one runs; a real-time
#: monitor looks at the latest shift and runs on every new batch.
CADENCE_PERIOD: dict[str, timedelta] = {
    "real-time": timedelta(0),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=30),
    "quarterly": timedelta(days=91),
}


class Thresholds(BaseModel):
    """What makes each monitor fire; ``None`` turns that check off."""

    model_config = ConfigDict(extra="forbid")

    #: Records (or parts) a window needs before a monitor judges it.
    min_samples: int = Field(default=200, ge=1)
    #: Length of the automatic reference window from the first telemetry of the version.
    reference_hours: float = Field(default=24.0, gt=0)
    #: Confidence distribution against the reference window.
    psi: float | None = Field(default=0.2, gt=0)
    ks: float | None = Field(default=0.15, gt=0)
    wasserstein: float | None = Field(default=0.05, gt=0)
    #: Fall of mean confidence (absolute) that is a confidence collapse.
    confidence_drop: float | None = Field(default=0.1, gt=0)
    #: Input statistics per camera: shift of the mean in reference standard deviations.
    input_shift_sd: float | None = Field(default=1.0, gt=0)
    min_camera_samples: int = Field(default=100, ge=1)
    #: Change of the model's reject rate (absolute, either way).
    reject_rate_delta: float | None = Field(default=0.05, gt=0)
    #: Rise of the override rate (overrides / inferences, absolute) and the fewest overrides.
    override_rate_delta: float | None = Field(default=0.02, gt=0)
    min_overrides: int = Field(default=5, ge=1)
    #: Outcome monitor: escapes per part produced in a shift, against the reference shifts.
    escape_rate_min: float | None = Field(default=0.005, gt=0)
    escape_factor: float = Field(default=3.0, ge=1)
    min_escapes: int = Field(default=3, ge=1)
    min_produced: int = Field(default=100, ge=1)
    #: Rise of the scrap rate (scrap / produced, absolute) in a shift.
    scrap_rate_delta: float | None = Field(default=0.03, gt=0)
    #: Operator feedback reports in the current window that open an incident.
    feedback_count: int | None = Field(default=3, ge=1)


TIER_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {},
    2: {"psi": 0.25, "ks": 0.2, "wasserstein": 0.08, "min_samples": 500},
    3: {"psi": 0.3, "ks": 0.25, "wasserstein": 0.1, "min_samples": 1000, "feedback_count": 5},
}


def thresholds_for(tier: int, overrides: dict[str, Any]) -> Thresholds:
    return Thresholds.model_validate({**TIER_DEFAULTS.get(tier, {}), **overrides})


class MonitorStateRead(BaseModel):
    monitor: str
    status: Literal["ok", "firing", "insufficient_data", "reference_filling", "disabled"]
    detail: str
    values: dict[str, Any]
    dedup_key: str
    evaluated_at: UtcDateTime
    since: UtcDateTime
    fired_at: UtcDateTime | None
    fire_count: int


class MonitorGroupRead(BaseModel):
    model: str
    version: str
    line: str
    tier: int
    cadence: str
    tier_source: str = Field(description="registry, or why the configured default applies")
    tier_checked_at: UtcDateTime | None = Field(
        description="When the tier or its source last changed"
    )
    thresholds: Thresholds
    threshold_overrides: dict[str, Any]
    reference_from: UtcDateTime | None
    reference_to: UtcDateTime | None
    last_evaluated_at: UtcDateTime | None
    next_due_at: UtcDateTime | None
    updated_at: UtcDateTime
    updated_by: str
    states: list[MonitorStateRead]


class MonitorUpdate(BaseModel):
    """Change thresholds (merged over the current overrides; a null removes an override and
    restores the tier's default) and/or the reference window. ``reason`` is audited."""

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Any] = Field(default_factory=dict)
    reference_from: datetime | None = None
    reference_to: datetime | None = None
    clear_reference: bool = False
    reason: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _window(self) -> MonitorUpdate:
        if (self.reference_from is None) != (self.reference_to is None):
            raise ValueError("give both reference_from and reference_to, or neither")
        if self.reference_from and self.reference_to and self.reference_to <= self.reference_from:
            raise ValueError("reference_to must be after reference_from")
        return self
