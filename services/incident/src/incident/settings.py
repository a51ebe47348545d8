"""Settings of the incident service (``LINEGATE_*`` environment variables)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from linegate.events import IncidentActionV1
from linegate.settings import LinegateSettings


class IncidentSettings(LinegateSettings):
    service_name: ClassVar[str] = "incident"
    default_port: ClassVar[int] = 8104

    # -- telemetry ingest and monitors (incident.telemetry, incident.monitors) --------------
    #: Durable pull consumer on the telemetry stream; every replica fetches from it, so they
    #: share the messages (JetStream's queue group for pull consumers).
    telemetry_consumer: str = "incident-telemetry"
    #: Messages fetched, processed in one transaction and acked together, when they hold the
    #: device agent's default of 100 records; smaller messages are fetched up to four times as
    #: many at once (see ``incident.telemetry.consumer``).
    telemetry_fetch_batch: int = Field(default=256, ge=1, le=10_000)
    #: Redelivery after this long without an ack (a replica died mid-batch).
    telemetry_ack_wait_seconds: float = Field(default=30.0, gt=0)
    #: Run SQLite calls on the event loop's thread rather than aiosqlite's (see
    #: ``linegate.db``): the ingest's statements then cost no thread switches and its writes
    #: no contention for the GIL with the next fetch being parsed (measured: about 0.7 us of
    #: CPU less per ingested record of 100-record batches). Right for one process per database
    #: file, the embedded default; set it false when several processes share the file
    #: (``uvicorn --workers``): a write waiting for another process's lock would block the loop.
    database_sqlite_inline: bool = True
    #: Shifts are the aggregation windows: local start times and their names.
    shift_starts: tuple[str, ...] = ("06:00", "14:00", "22:00")
    shift_names: tuple[str, ...] = ("early", "late", "night")
    shift_timezone: str = "UTC"
    #: Risk tier assumed when the registry is unreachable or does not list the model
    #: (1, the strictest, unless configured otherwise); the monitor state says so.
    monitor_default_tier: Literal[1, 2, 3] = 1
    #: Shortest spacing of real-time (tier 1) evaluations after new telemetry; 0 stops the
    #: background evaluator (tests drive it).
    monitor_interval_seconds: float = Field(default=0.25, ge=0)
    #: How long a risk tier read from the registry is trusted before it is read again.
    monitor_tier_refresh_seconds: float = Field(default=300.0, ge=0)
    #: OAuth2 client (auditor role) for reading the registry's inventory; unset in the
    #: embedded stack, where the service mints its own token.
    registry_client_id: str | None = None
    registry_client_secret: SecretStr | None = None

    # -- incidents (incident.incidents) ------------------------------------------------------
    #: Seconds between escalation passes over unacknowledged incidents and maintenance
    #: tickets; 0 turns the periodic task off (tests drive it with an explicit clock).
    escalation_interval_seconds: float = Field(default=30.0, ge=0)
    #: The maintenance team's public key (PEM or JWK JSON, EC/OKP/RSA) that maintenance
    #: tickets are encrypted for (JWE); or a file holding it. Without one, tickets are
    #: withheld rather than stored in the clear.
    maintenance_public_key: str | None = None
    maintenance_public_key_file: Path | None = None
    #: When the registry cannot say whether an approver of a corrective action holds current
    #: responder training (unreachable, or no inventory entry lists the model): ``refuse`` the
    #: approval (503, nothing recorded) or accept it with a ``flag`` on the approval.
    competence_unverifiable: Literal["refuse", "flag"] = "refuse"
    #: EC key that signs every approved corrective action and every evidence freeze sent to
    #: the edge gateway (DSSE envelopes); created on first start. Default
    #: ``<data dir>/keys/incident-action.pem``; in compose.yaml a volume only this service
    #: mounts, so no other container can read it.
    incident_action_signing_key: Path | None = None
    #: Where its public key is written for the gateway to pin (default
    #: ``<data dir>/keys/incident-action.pub.pem``, the gateway's default
    #: ``LINEGATE_INCIDENT_ACTION_KEY``).
    incident_action_public_key: Path | None = None

    @property
    def action_key_path(self) -> Path:
        return self.incident_action_signing_key or self.keys_dir / "incident-action.pem"

    @property
    def action_public_key_path(self) -> Path:
        return self.incident_action_public_key or self.keys_dir / IncidentActionV1.PUBLIC_KEY_FILE
