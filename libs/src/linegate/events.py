"""Every NATS subject, stream and bucket name, the event payloads, and the connection helper.

Subjects are spelled only here. Payloads are versioned pydantic models (``...V1``); a breaking
change adds ``...V2`` beside the old one, never edits it. Publishing sets ``Nats-Msg-Id`` to the
event id so JetStream drops a retried duplicate.

Example::

    nats = NatsClient(settings)
    await nats.start()           # connects in the background, retrying until NATS is up
    await publish(nats.js, Subjects.ATTESTATION_VERIFIED, AttestationVerifiedV1(...))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import nats
from nats.aio.client import Client as NatsConnection
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # only annotations: the device agent does not load pydantic-settings for it
    from linegate.settings import LinegateSettings

log = logging.getLogger("linegate.events")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def subject_token(value: str) -> str:
    """``value`` if it is safe as one NATS subject token (no dots, wildcards or spaces)."""
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{value!r} is not a valid subject token ([A-Za-z0-9_-], 1-64 chars)")
    return value


class Subjects:
    """Every subject Linegate publishes or subscribes to."""

    ATTESTATION_VERIFIED = "linegate.attestation.verified"
    ATTESTATION_REJECTED = "linegate.attestation.rejected"
    SUPPLIER_SLA_BREACHED = "linegate.attestation.sla.breached"
    REGISTRY_RELEASED = "linegate.registry.released"
    REGISTRY_REVOKED = "linegate.registry.revoked"
    INCIDENT_OPENED = "linegate.incident.opened"
    INCIDENT_ACTION_ALL = "linegate.incident.action.>"
    #: The edge gateway's report on an incident action it carried out (or could not).
    INCIDENT_ACTION_RESULT = "linegate.incident.action_result"
    #: An incident froze (or released) a model version as evidence: no redeploy while frozen.
    INCIDENT_FREEZE = "linegate.incident.freeze"
    DEVICE_STATUS_ALL = "linegate.device.*.status"
    TELEMETRY_ALL = "linegate.telemetry.>"
    #: KPI samples of every line (five tokens, so never a device's four-token subject).
    KPI_ALL = "linegate.telemetry.*.mes.kpi"
    MAINTENANCE_ALL = "linegate.maintenance.>"

    @staticmethod
    def device_status(device_id: str) -> str:
        return f"linegate.device.{subject_token(device_id)}.status"

    @staticmethod
    def telemetry(line: str, device_id: str) -> str:
        return f"linegate.telemetry.{subject_token(line)}.{subject_token(device_id)}"

    @staticmethod
    def kpi(line: str) -> str:
        """Where the MES / line integration publishes ``KpiSampleV1`` for ``line``: inside the
        telemetry stream, but five tokens long, so no device (confined to
        ``linegate.telemetry.<line>.<its id>``) can publish there."""
        return f"linegate.telemetry.{subject_token(line)}.mes.kpi"

    @staticmethod
    def incident_action(kind: str) -> str:
        return f"linegate.incident.action.{subject_token(kind)}"

    @staticmethod
    def incident_assigned(queue: str) -> str:
        """Where an incident's assignment to an owner (routed or escalated) is announced, for
        the plant's notification bridge (mail, pager, chat) to deliver."""
        return f"linegate.incident.assigned.{subject_token(queue)}"

    @staticmethod
    def maintenance_ticket(level: str) -> str:
        """Where an encrypted maintenance ticket is delivered to its chain level (inside the
        incident stream, so no device can publish there)."""
        return f"linegate.incident.maintenance_ticket.{subject_token(level)}"

    @staticmethod
    def maintenance(asset: str) -> str:
        """Where a device reports that ``asset``'s anomaly score crossed its threshold."""
        return f"linegate.maintenance.{subject_token(asset)}"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age: timedelta | None = None


class Streams:
    """JetStream streams; each service ensures the ones it publishes to."""

    ATTESTATION = StreamSpec("LINEGATE_ATTESTATION", ("linegate.attestation.>",))
    REGISTRY = StreamSpec("LINEGATE_REGISTRY", ("linegate.registry.>",))
    DEVICE = StreamSpec(
        "LINEGATE_DEVICE", (Subjects.DEVICE_STATUS_ALL,), max_age=timedelta(days=30)
    )
    TELEMETRY = StreamSpec(
        "LINEGATE_TELEMETRY", (Subjects.TELEMETRY_ALL,), max_age=timedelta(days=7)
    )
    INCIDENT = StreamSpec("LINEGATE_INCIDENT", ("linegate.incident.>",))
    MAINTENANCE = StreamSpec(
        "LINEGATE_MAINTENANCE", (Subjects.MAINTENANCE_ALL,), max_age=timedelta(days=90)
    )

    ALL: ClassVar[tuple[StreamSpec, ...]] = (
        ATTESTATION,
        REGISTRY,
        DEVICE,
        TELEMETRY,
        INCIDENT,
        MAINTENANCE,
    )


class Buckets:
    MODELS = "models"  # object store: artefacts named by sha256 digest
    DESIRED = "desired"  # KV: device id -> desired model version


# ---------------------------------------------------------------------------- payloads


def _now() -> datetime:
    return datetime.now(UTC)


class EventV1(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = Field(default_factory=_now)
    actor: str | None = None


class SubjectDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    digest: dict[str, str]


class AttestationVerifiedV1(EventV1):
    kind: Literal["attestation.verified.v1"] = "attestation.verified.v1"
    attestation_id: str
    supplier: str
    predicate_type: str | None
    subjects: list[SubjectDigest]
    expires_at: datetime | None = None
    #: False for an unsigned SBOM: stored, but never counted as signed evidence.
    verified: bool = True


class AttestationRejectedV1(EventV1):
    kind: Literal["attestation.rejected.v1"] = "attestation.rejected.v1"
    attestation_id: str
    supplier: str
    reasons: list[str]


class SlaBreachedV1(EventV1):
    kind: Literal["sla.breached.v1"] = "sla.breached.v1"
    supplier: str
    term: str
    since: datetime
    detail: str


class ModelReleasedV1(EventV1):
    kind: Literal["registry.released.v1"] = "registry.released.v1"
    model: str
    version: str
    artefact_digest: str
    security_version: int


class ModelRevokedV1(EventV1):
    kind: Literal["registry.revoked.v1"] = "registry.revoked.v1"
    model: str
    version: str
    reason: str


class DeviceStatusV1(EventV1):
    kind: Literal["device.status.v1"] = "device.status.v1"
    device_id: str
    #: ``shadow``: the candidate named by model/version runs beside the active model (its
    #: decisions are only compared); ``shadow_stopped``: it no longer does; ``control``: the
    #: device obeys a new incident order (``detail`` says which).
    state: Literal[
        "downloaded",
        "verified",
        "self_test",
        "active",
        "refused",
        "rolled_back",
        "online",
        "shadow",
        "shadow_stopped",
        "control",
    ]
    model: str | None = None
    version: str | None = None
    detail: str | None = None
    #: The revision of the device-bound desired state the device holds (0: none yet; ``None``:
    #: an agent that does not say). Devices refuse an older document, so the gateway issues
    #: only revisions above it, even after losing its database and the ``desired`` bucket.
    revision: int | None = Field(default=None, ge=0)


class IncidentOpenedV1(EventV1):
    kind: Literal["incident.opened.v1"] = "incident.opened.v1"
    incident_id: str
    incident_type: str
    severity: str
    line: str | None = None
    model: str | None = None
    version: str | None = None


class IncidentAssignedV1(EventV1):
    """An incident was put in ``queue`` for ``owner`` (``reason="routed"``, level 0) or moved
    up the rule's escalation chain because nobody acknowledged in time (``"escalated"``).
    Published on ``Subjects.incident_assigned(queue)``; ``acknowledge_by`` is when it escalates
    next (None: the end of the chain, or no time set)."""

    kind: Literal["incident.assigned.v1"] = "incident.assigned.v1"
    incident_id: str
    incident_type: str
    severity: str
    summary: str
    queue: str
    owner: str | None
    level: int
    previous_owner: str | None = None
    reason: Literal["routed", "escalated"]
    acknowledge_by: datetime | None = None
    line: str | None = None
    model: str | None = None
    version: str | None = None


class MaintenanceTicketV1(EventV1):
    """A maintenance ticket delivered to ``level`` of the maintenance chain: opened, or
    escalated because nobody acknowledged it in time. Its context travels only as ``jwe``
    (compact JWE encrypted for the maintenance team's key ``recipient_kid``); a ticket withheld
    for want of a key is never published."""

    kind: Literal["maintenance.ticket.v1"] = "maintenance.ticket.v1"
    ticket_id: str
    incident_id: str
    level: str
    reason: Literal["opened", "escalated"]
    acknowledge_by: datetime | None = None
    recipient_kid: str
    jwe: str


class MaintenanceAlertV1(EventV1):
    """An asset's smoothed anomaly score crossed its threshold on the device.

    Minimal by design: the figures that justify opening a maintenance incident, never the
    sensor windows that produced them (they stay on the device).
    """

    kind: Literal["maintenance.alert.v1"] = "maintenance.alert.v1"
    asset: str
    ewma: float
    threshold: float
    last_score: float
    #: Windows scored for this asset since the agent started (the EWMA's evidence base).
    windows: int
    #: sha256 of the anomaly model that scored them.
    model_digest: str


IncidentActionKind = Literal["rollback", "manual_inspection", "resume_automatic", "raise_threshold"]


class IncidentActionV1(EventV1):
    """A corrective action that an authorised human approved on an incident; the edge gateway
    carries it out. Published on ``Subjects.incident_action(action)``.

    ``rollback`` moves the devices of ``line`` (all lines when None) that run ``model``
    ``version`` to ``target_version`` with a signed rollback instruction; ``manual_inspection``
    makes those devices route every part to manual inspection until ``resume_automatic``;
    ``raise_threshold`` sets their confidence threshold to ``threshold``. ``actor`` is the
    approver who released the action; ``approved_by`` lists every approver.

    On the subject the action travels signed: the message is a DSSE envelope
    (``application/vnd.dsse.envelope.v1+json``) whose payload is this model's JSON, with
    ``payloadType`` :attr:`PAYLOAD_TYPE`, signed by the incident service's action key;
    ``occurred_at`` is when it was issued (signed). The edge gateway refuses anything else.
    """

    #: DSSE payloadType of a signed incident action.
    PAYLOAD_TYPE: ClassVar[str] = "application/vnd.linegate.incident-action+json"
    #: Where, in a keys directory, the incident service publishes the public key that its
    #: actions verify against (``<data dir>/keys/`` in the embedded stack: the gateway's default).
    PUBLIC_KEY_FILE: ClassVar[str] = "incident-action.pub.pem"

    kind: Literal["incident.action.v1"] = "incident.action.v1"
    action_id: str
    incident_id: str
    action: IncidentActionKind
    model: str
    version: str | None = None
    line: str | None = None
    device_ids: list[str] | None = None
    target_version: str | None = None
    threshold: float | None = None
    approved_by: list[str]
    rationale: str


class IncidentActionResultV1(EventV1):
    """The edge gateway's outcome for one ``IncidentActionV1``, on
    ``Subjects.INCIDENT_ACTION_RESULT``."""

    kind: Literal["incident.action_result.v1"] = "incident.action_result.v1"
    action_id: str
    incident_id: str
    outcome: Literal["done", "failed"]
    devices: list[str] = Field(default_factory=list)
    detail: str | None = None


class EvidenceFreezeV1(EventV1):
    """An incident froze ``model`` ``version`` as evidence (``frozen=True``): nothing may
    redeploy it until a responder releases the freeze (``frozen=False``).

    Travels signed like :class:`IncidentActionV1`: a DSSE envelope whose payload is this
    model's JSON, with ``payloadType`` :attr:`PAYLOAD_TYPE`, signed by the incident service's
    action key (the same key, its own payload type, so neither passes for the other);
    ``event_id`` is handled once, ``occurred_at`` is when it was issued.
    """

    #: DSSE payloadType of a signed evidence freeze or release.
    PAYLOAD_TYPE: ClassVar[str] = "application/vnd.linegate.evidence-freeze+json"

    kind: Literal["incident.freeze.v1"] = "incident.freeze.v1"
    incident_id: str
    model: str
    version: str
    frozen: bool
    reason: str


# ------------------------------------------------------------------------------ connection


class NatsClient:
    """One service's NATS connection: connects in the background and keeps reconnecting.

    A service starts (and answers ``/healthz``) while NATS is still down; ``/readyz`` reports
    :attr:`connected` so orchestration waits for it.
    """

    def __init__(self, settings: LinegateSettings, *, streams: tuple[StreamSpec, ...] = ()) -> None:
        self.settings = settings
        self.streams = streams
        self._nc: NatsConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> NatsConnection:
        if self._nc is None:
            raise RuntimeError("NATS is not connected yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                self._nc = await connect(self.settings, name=self.settings.service_name)
                for spec in self.streams:
                    await ensure_stream(
                        self._nc.jetstream(), spec, replicas=self.settings.nats_stream_replicas
                    )
                self._ready.set()
                log.info("connected to NATS", extra={"url": self.settings.nats_url})
                return
            except Exception as e:  # noqa: BLE001 - any failure means "try again later"
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                    self._nc = None
                log.warning(
                    "NATS not reachable yet, retrying", extra={"error": repr(e), "retry_in": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=5)
            except Exception:  # noqa: BLE001 - shutting down: a failed drain still closes
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._nc.close(), timeout=5)
        self._nc = None


async def connect(settings: LinegateSettings, *, name: str) -> NatsConnection:
    """A NATS connection that reconnects forever after it first succeeds."""

    async def on_error(e: Exception) -> None:
        log.warning("NATS error", extra={"error": repr(e)})

    async def on_disconnect() -> None:
        log.warning("NATS disconnected")

    async def on_reconnect() -> None:
        log.info("NATS reconnected")

    options: dict[str, Any] = {
        # A cluster is given as comma-separated URLs; the client fails over between them.
        "servers": [url.strip() for url in settings.nats_url.split(",") if url.strip()],
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    return await nats.connect(**options)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1) -> None:
    """Create ``spec`` or bring an existing stream's subjects and limits up to date."""
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=spec.max_age.total_seconds() if spec.max_age else None,
        duplicate_window=120.0,
    )
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            pass  # another replica created it between our two calls
    await js.update_stream(config)


async def publish(
    js: JetStreamContext, subject: str, event: EventV1, *, timeout: float = 5.0
) -> None:
    """Publish ``event`` to a stream and wait for the server's ack (dedup by event id)."""
    await js.publish(
        subject,
        event.model_dump_json().encode(),
        timeout=timeout,
        headers={"Nats-Msg-Id": event.event_id, "Linegate-Event": type(event).__name__},
    )


# ------------------------------------------------------------------- telemetry payloads
# Published by the device agent on ``Subjects.telemetry(line, device_id)``; consumed by the
# incident service. No pixels ever leave the device: a record is referred to by its id.

InferenceDecision = Literal["pass", "reject", "manual_inspection"]


class InputStatsV1(BaseModel):
    """Cheap statistics of one input image, so lighting drift or a dirty lens shows up as
    input drift per camera: ``brightness`` is the mean, ``contrast`` the standard deviation and
    ``sharpness`` the variance of a 4-neighbour Laplacian, all over the channel-mean image in
    the units the model is fed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    brightness: float
    contrast: float
    sharpness: float


class ShadowResultV1(BaseModel):
    """What a shadow candidate decided on the same input as the active model (rollout shadow
    stage). It never decides the part; ``agrees`` is False when its label or its decision
    differs from the active model's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    version: str
    decision: InferenceDecision
    label: str | None = None
    confidence: float | None = None
    agrees: bool
    latency_ms: float


class InferenceRecordV1(BaseModel):
    """One inference on the line: the decision and what it rested on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    record_id: str
    occurred_at: datetime
    camera: str
    decision: InferenceDecision
    #: Why the decision is not a plain pass (below threshold, no model, the defect seen).
    reason: str | None = None
    label: str | None = None
    confidence: float | None = None
    model: str | None = None
    version: str | None = None
    threshold: float
    stats: InputStatsV1
    latency_ms: float
    #: The shadow candidate's result on the same input, while the device runs one.
    shadow: ShadowResultV1 | None = None
    #: The incident whose order decided this record (e.g. every part to manual inspection).
    control_incident_id: str | None = None


class InferenceBatchV1(EventV1):
    kind: Literal["telemetry.inference_batch.v1"] = "telemetry.inference_batch.v1"
    line: str
    device_id: str
    records: list[InferenceRecordV1]
    #: Records the device dropped (oldest first) since the previous batch it published,
    #: because its bounded buffer filled while the publisher was down.
    dropped: int = 0


class OverrideV1(EventV1):
    """An operator overrode a decision on the device; ``actor`` is the operator."""

    kind: Literal["telemetry.override.v1"] = "telemetry.override.v1"
    line: str
    device_id: str
    record_id: str
    camera: str
    model: str | None = None
    version: str | None = None
    original_decision: InferenceDecision
    original_label: str | None = None
    decision: Literal["pass", "reject"]
    reason_code: str
    rationale: str
    #: Why the override was accepted without current override training (the device checks the
    #: operator against the signed roster of its desired state; tiers 2-3 flag, tier 1
    #: refuses); None when the operator was trained.
    competence_flag: str | None = None


class KpiSampleV1(EventV1):
    """Production figures of one line (or one station of it) over a window, published by the
    MES / line integration on ``Subjects.kpi(line)``.

    ``escapes`` are the parts of this window that failed later: downstream tests or the
    customer's incoming inspection. They are what the model's own confidence cannot show, so
    the incident service sets them against the model's pass rate per shift. Escapes found late
    for an earlier window come as another sample of that window with ``produced=0``: the
    samples of a window add up.
    """

    kind: Literal["telemetry.kpi_sample.v1"] = "telemetry.kpi_sample.v1"
    line: str
    #: The plant's shift label (e.g. ``night``), kept as given.
    shift: str | None = None
    station: str | None = None
    window_start: datetime
    window_end: datetime
    produced: int = Field(ge=0)
    scrap: int = Field(default=0, ge=0)
    rework: int = Field(default=0, ge=0)
    escapes: int = Field(default=0, ge=0)
    #: Overall equipment effectiveness of the window, 0..1.
    oee: float | None = Field(default=None, ge=0.0, le=1.0)
    #: The inspection model the line ran in the window, when the MES knows it.
    model: str | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KpiSampleV1:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.scrap + self.rework > self.produced:
            raise ValueError("scrap + rework exceed produced")
        return self
