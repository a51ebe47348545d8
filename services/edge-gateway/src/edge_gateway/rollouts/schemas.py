"""Request and response bodies of rollouts and maintenance calendars."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, TypeAdapter, field_validator, model_validator

from edge_gateway.schemas import DEVICE_ID, LINE_ID, Selector, Strict

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
Reason = Annotated[str, Field(min_length=1, max_length=2000)]

# ------------------------------------------------------------------------------ calendar


class MaintenanceWindow(Strict):
    """A weekly window, in the plant's local time. ``days`` are the days the window starts
    on; an ``end`` at or before ``start`` ends the next day (a night changeover)."""

    days: list[Day] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=HHMM, examples=["05:45"])
    end: str = Field(pattern=HHMM, examples=["06:15"])
    tz: str = Field(default="UTC", examples=["Europe/Berlin"], description="IANA time zone")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}") from e
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("a window needs start != end")
        return self

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class CalendarPut(Strict):
    windows: list[MaintenanceWindow] = Field(min_length=1, max_length=50)
    reason: Reason


class CalendarRead(BaseModel):
    plant: str
    line: str | None = Field(description="None: the plant's calendar, for lines without one")
    windows: list[MaintenanceWindow]
    updated_at: datetime
    updated_by: str


# ------------------------------------------------------------------------------ plan


class Thresholds(Strict):
    """Crossing any of these aborts the rollout and rolls the stage back (``None``: off)."""

    max_failed_devices_pct: float | None = Field(
        default=20.0, ge=0, le=100, description="Devices refusing the candidate, % of the stage"
    )
    max_selftest_failures: int | None = Field(default=0, ge=0)
    max_reject_rate_delta: float | None = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Reject rate of the candidate minus that of the previous version "
        "(same devices, else same lines): the scrap-rate KPI",
    )
    max_confidence_drop: float | None = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Mean confidence of the previous version minus the candidate's",
    )
    max_shadow_disagreement_rate: float | None = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Shadow stage: share of inputs on which the candidate's label or decision "
        "differed from the active model's",
    )
    kpi_min_inferences: int = Field(
        default=50,
        ge=1,
        description="Quality KPIs are judged once the candidate and the baseline each have "
        "this many inferences (a rate over a handful is noise)",
    )


class StageBase(Strict):
    soak_seconds: int = Field(
        default=3600, ge=0, description="Minimum time after the stage's last install"
    )
    min_inferences: int = Field(default=0, ge=0, description="Candidate inferences on the stage")
    require_approval: bool = Field(
        default=False, description="A person approves before this stage begins"
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)


class DeviceChoice(StageBase):
    """One line, named devices, or the first ``count`` devices of the target."""

    line: str | None = Field(default=None, pattern=LINE_ID)
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID)]] = Field(
        default_factory=list, max_length=10_000
    )
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_choice(self) -> Self:
        given = [self.line is not None, bool(self.device_ids), self.count is not None]
        if sum(given) != 1:
            kind = getattr(self, "kind", "")
            raise ValueError(f"a {kind} stage names exactly one of line, device_ids or count")
        return self


class CanaryStage(DeviceChoice):
    """The candidate decides on one line, named devices, or the first ``count`` devices."""

    kind: Literal["canary"] = "canary"


class ShadowStage(DeviceChoice):
    """The chosen devices run the candidate beside their model on the same inputs; their
    model still decides every part; where the two disagree is telemetry, and the stage aborts
    above ``thresholds.max_shadow_disagreement_rate``. ``min_inferences`` counts the inputs the
    candidate ran on in shadow. When the stage completes the devices stop shadowing; a later
    stage may choose them again."""

    kind: Literal["shadow"] = "shadow"


class PercentStage(StageBase):
    """Brings the rollout to ``percent`` of the target devices (cumulative)."""

    kind: Literal["percent"] = "percent"
    percent: float = Field(gt=0, le=100)


AnyStage = CanaryStage | PercentStage | ShadowStage
Stage = Annotated[AnyStage, Field(discriminator="kind")]
STAGE = TypeAdapter[AnyStage](Stage)


class RolloutCreate(Strict):
    model: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=64)
    selector: Selector
    stages: list[Stage] = Field(min_length=1, max_length=20)
    device_timeout_seconds: int = Field(
        default=900,
        ge=1,
        description="A device that has not reported on the candidate this long after its "
        "install is listed as late and no longer holds the stage up",
    )
    reason: Reason

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        s = self.selector
        if not (s.device_ids or s.plant or s.line or s.station or s.tags):
            raise ValueError("the selector matches no device: name devices, a plant, line, ...")
        percents = [st.percent for st in self.stages if isinstance(st, PercentStage)]
        if percents != sorted(percents):
            raise ValueError("percent stages must not decrease")
        return self


class CommandBody(Strict):
    reason: Reason


# ------------------------------------------------------------------------------ status

RolloutState = Literal[
    "draft", "running", "paused", "awaiting_approval", "completed", "aborted", "rolled_back"
]
#: States in which a rollout holds its devices and the evaluator watches its thresholds.
ACTIVE_STATES = frozenset({"running", "paused", "awaiting_approval"})
#: Device states in which the device's desired state is (or is about to be) the candidate.
ASSIGNED_STATES = frozenset({"assigned", "installing", "active", "failed"})


class RolloutDeviceRead(BaseModel):
    device_id: str
    line: str
    stage: int
    state: str
    late: bool = Field(description="No report on the candidate within the device timeout")
    late_since: datetime | None
    previous_version: str | None
    assigned_at: datetime | None
    reported_at: datetime | None
    last_report: str | None
    next_window_at: datetime | None = Field(
        default=None, description="For a device waiting for a maintenance window"
    )
    inferences: int
    reject_rate: float | None
    confidence_mean: float | None
    shadow_inferences: int = 0
    shadow_disagreement_rate: float | None = None
    rollback_error: str | None


class RolloutRead(BaseModel):
    id: str
    model: str
    version: str
    selector: dict[str, Any]
    stages: list[Stage]
    device_timeout_seconds: int
    reason: str
    state: RolloutState
    stage_index: int = Field(description="-1 before start")
    stage_started_at: datetime | None
    evaluation: dict[str, Any] | None
    history: list[dict[str, Any]]
    abort_reason: str | None
    incident_id: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime


class RolloutStatus(RolloutRead):
    devices: list[RolloutDeviceRead]
    late_devices: list[str]
