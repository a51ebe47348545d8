"""Request and response bodies of the edge gateway."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEVICE_ID = r"^[A-Za-z0-9_-]{1,64}$"
LINE_ID = r"^[A-Za-z0-9_-]{1,64}$"  # used as a NATS subject token


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(Strict):
    id: str = Field(pattern=DEVICE_ID)
    plant: str = Field(min_length=1, max_length=100)
    line: str = Field(pattern=LINE_ID, description="Line id, a NATS subject token (e.g. line3)")
    station: str = Field(min_length=1, max_length=100)
    hardware: str = Field(default="", max_length=200)
    execution_providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"], max_length=20
    )
    tags: list[str] = Field(default_factory=list, max_length=50)


class DeviceRead(BaseModel):
    id: str
    plant: str
    line: str
    station: str
    hardware: str
    execution_providers: list[str]
    tags: list[str]
    public_nkey: str
    last_state: str | None
    last_detail: str | None
    last_seen: datetime | None
    active_model: str | None
    active_version: str | None
    #: The highest desired-state revision the device reported holding (None: never said).
    reported_revision: int | None = None
    desired: dict[str, Any] | None = None
    created_at: datetime


class DeviceCreated(DeviceRead):
    """Returned once: the nkey seed is not stored and cannot be shown again."""

    nkey_seed: str
    nats_url: str


class FreezeHoldRead(BaseModel):
    """One incident's hold on a frozen version: why, when and by whom it froze it."""

    incident_id: str
    reason: str
    frozen_at: datetime
    frozen_by: str


class FrozenVersionRead(BaseModel):
    """A model version incidents froze as evidence (``EvidenceFreezeV1``): no assignment or
    rollout deploys it until every incident in ``holds`` released it. ``incident_id``,
    ``reason``, ``frozen_at`` and ``frozen_by`` are those of the oldest hold."""

    model: str
    version: str
    incident_id: str
    reason: str
    frozen_at: datetime
    frozen_by: str
    #: Every incident holding it, oldest first.
    holds: list[FreezeHoldRead]


class ReleaseRead(BaseModel):
    id: str
    model: str
    version: str
    security_version: int
    artefact_digest: str
    manifest_digest: str
    files: list[dict[str, Any]]
    metadata_version: int
    expires_at: datetime
    state: str
    revoked_reason: str | None
    created_at: datetime


class Selector(Strict):
    """Which devices: all given criteria must match (an empty selector matches none)."""

    device_ids: list[str] = Field(default_factory=list, max_length=10_000)
    plant: str | None = None
    line: str | None = None
    station: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=20)


class AssignRequest(Strict):
    model: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=64)
    selector: Selector
    reason: str = Field(min_length=1, max_length=2000)


class AssignResult(BaseModel):
    model: str
    version: str
    devices: list[str]
