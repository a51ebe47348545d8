"""Settings for every Linegate process, read from ``LINEGATE_*`` environment variables.

Each service subclasses :class:`LinegateSettings` in its own ``settings.py`` and adds only its
own knobs; the names shared by all services (NATS, database, URLs, identity) are defined once,
here. Nothing is read at import time: call ``AttestationSettings()`` (or a sibling) when a
process starts.

Example::

    >>> s = LinegateSettings(data_dir="/tmp/lg")
    >>> s.nats_url
    'nats://127.0.0.1:14222'
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LINEGATE_"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class LinegateSettings(BaseSettings):
    """Settings every Linegate process shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    #: Name of the service these settings belong to (set by each subclass).
    service_name: ClassVar[str] = "linegate"
    #: Default port of the service (see ``shared/API.md``).
    default_port: ClassVar[int] = 0

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".linegate")

    nats_url: str = "nats://127.0.0.1:14222"
    #: NATS credentials file (``.creds``) or user/password config; production sets it.
    nats_creds: Path | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    #: JetStream replicas for the streams a service creates (3 on a NATS cluster).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)

    #: SQLAlchemy URL; ``None`` means a SQLite file per service in the data directory.
    database_url: str | None = None
    #: PostgreSQL only: each service owns the schema ``<prefix><service>``.
    database_schema_prefix: str = ""

    attestation_url: str = "http://127.0.0.1:8101"
    registry_url: str = "http://127.0.0.1:8102"
    gateway_url: str = "http://127.0.0.1:8103"
    incident_url: str = "http://127.0.0.1:8104"

    host: str = "127.0.0.1"
    port: int | None = None

    #: Token issuer (``iss``); defaults to the attestation service, which hosts the embedded one.
    auth_issuer: str | None = None
    auth_audience: str = "linegate"
    #: An external OIDC issuer's JWKS URL. Unset = the embedded issuer's key in the data dir.
    auth_jwks_url: str | None = None
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON

    #: Append a signed checkpoint to the audit log after this many entries.
    audit_checkpoint_every: int = Field(default=100, ge=1)
    #: Days audit log entries are kept at least (EU AI Act Art. 19(1), 26(6): six months).
    #: Outside development, values below 184 days are refused.
    audit_log_retention_days: int = Field(default=184, ge=1)
    #: Days technical documentation and evidence bundles are kept (Art. 18(1): ten years).
    #: Outside development, values below 3653 days are refused.
    documentation_retention_days: int = Field(default=3653, ge=1)
    #: Hours an outbox row is kept once JetStream has acknowledged it (the event is in its
    #: stream and the change in the audit log); 0 keeps sent rows for ever.
    outbox_retention_hours: float = Field(default=24.0, ge=0)

    @property
    def issuer(self) -> str:
        return self.auth_issuer or self.attestation_url

    @property
    def external_issuer(self) -> bool:
        """True when tokens come from an external OIDC issuer, not the embedded one."""
        return self.auth_jwks_url is not None

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def listen_port(self) -> int:
        return self.port if self.port is not None else self.default_port

    @model_validator(mode="after")
    def _refuse_short_retention(self) -> Self:
        # Kept here rather than imported from linegate.audit so settings import nothing heavy.
        floors = {
            "LINEGATE_AUDIT_LOG_RETENTION_DAYS": (self.audit_log_retention_days, 184),
            "LINEGATE_DOCUMENTATION_RETENTION_DAYS": (self.documentation_retention_days, 3653),
        }
        if self.environment is not Environment.DEVELOPMENT:
            short = [f"{k}={v} (at least {floor})" for k, (v, floor) in floors.items() if v < floor]
            if short:
                raise ValueError(
                    "retention below the EU AI Act minimum (Art. 18, 19: documentation ten "
                    "years, logs six months): " + "; ".join(short)
                )
        return self

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Self:
        if self.environment is Environment.PRODUCTION:
            missing = []
            if self.auth_jwks_url is None:
                missing.append("LINEGATE_AUTH_JWKS_URL (production validates an external issuer)")
            if self.auth_issuer is None:
                missing.append("LINEGATE_AUTH_ISSUER")
            if self.database_url is None or self.database_url.startswith("sqlite"):
                missing.append("LINEGATE_DATABASE_URL (PostgreSQL in production)")
            if missing:
                raise ValueError(
                    "production settings refuse development defaults: " + "; ".join(missing)
                )
        return self
