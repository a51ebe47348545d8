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
    reason: str
    updated_at: datetime = Field(sa_type=TZ)
    updated_by: str
