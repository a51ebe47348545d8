"""Settings of the edge-gateway service (``LINEGATE_*`` environment variables)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from linegate.events import IncidentActionV1
from linegate.settings import LinegateSettings


class GatewaySettings(LinegateSettings):
    service_name: ClassVar[str] = "edge_gateway"
    default_port: ClassVar[int] = 8103

    #: EC key that signs release metadata (TUF targets) for devices; created on first start.
    release_signing_key: Path | None = None
    #: Release metadata expires after this long unless re-signed (devices refuse expired
    #: metadata: a frozen mirror cannot keep them on an old release forever).
    release_metadata_ttl_hours: int = Field(default=7 * 24, ge=1)
    #: Re-sign metadata this long before it expires.
    release_metadata_refresh_hours: int = Field(default=24, ge=1)
    #: OAuth2 client (auditor role) for reading released artefacts from the registry; unset in
    #: the embedded stack, where the gateway mints its own token.
    registry_client_id: str | None = None
    registry_client_secret: SecretStr | None = None
    #: Object store chunk size and the number of chunks in flight when uploading.
    object_chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    object_put_window: int = Field(default=64, ge=1)

    #: nats-server config file the gateway keeps in step with the device inventory (service
    #: user + one confined nkey user per device; :mod:`edge_gateway.nats_config`). Set by the
    #: embedded stack; unset where NATS accounts/JWTs are managed elsewhere.
    nats_auth_config: Path | None = None
    #: Pid file of that nats-server, signalled (SIGHUP) to reload the config after a change.
    nats_server_pid_file: Path | None = None

    #: Seconds between reads of the override rosters (the registry's competence register) for
    #: the models devices run; a roster that changed re-issues those devices' desired state.
    #: 0 turns the periodic refresh off (tests drive it directly).
    competence_refresh_seconds: float = Field(default=60.0, ge=0)
    #: When the registry cannot say whether the person approving a rollout's next stage holds
    #: current ``approver`` training for the model's AI system: ``refuse`` (503, nothing
    #: changes) or accept with a ``flag`` in the audit entry.
    competence_unverifiable: Literal["refuse", "flag"] = "refuse"

    #: PEM public key of the incident service: the only key whose signed incident actions
    #: and evidence freezes (DSSE, :mod:`edge_gateway.incidents`) the gateway obeys. Unset:
    #: the key the incident service publishes in the shared keys directory
    #: (``<data dir>/keys/incident-action.pub.pem``, as in ``linegate up``; compose.yaml
    #: points it at a volume the gateway mounts read-only). Read once at start (a change of
    #: the file takes a restart); while it is missing every action and freeze is refused.
    incident_action_key: Path | None = None
    #: A signed incident action (or evidence-freeze release) issued longer ago than this is
    #: refused as stale (replay protection beside the action id, which is carried out once).
    incident_action_max_age_seconds: float = Field(default=3600.0, gt=0)
    #: An action claimed (recorded ``in_progress`` before it is carried out) and not finished
    #: after this long is settled as failed and reported, at the gateway's start or when its
    #: message is redelivered: the gateway stopped while carrying it out.
    incident_action_claim_timeout_seconds: float = Field(default=300.0, gt=0)

    #: Seconds between rollout evaluator passes; 0 turns the periodic evaluator off (tests
    #: drive it directly).
    rollout_evaluation_interval_seconds: float = Field(default=10.0, ge=0)

    @property
    def metadata_refresh_seconds(self) -> float:
        """How often every device's desired state is re-signed: often enough that a document
        always has ``release_metadata_refresh_hours`` left (at least an hour apart)."""
        hours = max(1, self.release_metadata_ttl_hours - self.release_metadata_refresh_hours)
        return hours * 3600.0

    @property
    def release_key_path(self) -> Path:
        return self.release_signing_key or self.keys_dir / "release-metadata.pem"

    @property
    def incident_action_key_path(self) -> Path:
        return self.incident_action_key or self.keys_dir / IncidentActionV1.PUBLIC_KEY_FILE

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "edge_gateway" / "staging"
