"""The local inference API the line calls (bind it to 127.0.0.1; it has no authentication)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Response
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    model_validator,
)

from linegate.errors import NotFound, Unprocessable, install_problem_handlers
from linegate.events import (
    InferenceDecision,
    InferenceRecordV1,
    InputStatsV1,
    OverrideV1,
    ShadowResultV1,
)
from linegate_cli.edge.inference.competence import CompetenceFile, check_override
from linegate_cli.edge.inference.runner import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    ActiveModel,
    Control,
    ControlFile,
    Decision,
    InvalidImage,
    ModelFailed,
    ModelRunner,
    NoActiveModel,
    Prediction,
    decide,
    input_stats,
)
from linegate_cli.edge.inference.telemetry import TelemetryBuffer

log = logging.getLogger("linegate.edge.inference")

DEFAULT_REASON_CODES = ("false_reject", "false_pass", "sensor_fault", "other")
#: Largest image accepted, in values (4 Mi floats = 16 MiB as float32).
MAX_IMAGE_VALUES = 1 << 22

Token = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]

Shape = Annotated[list[PositiveInt], Field(min_length=2, max_length=4)]


class InvalidInferenceInput(Unprocessable):
    title = "Image does not fit the model"


class UnknownReasonCode(Unprocessable):
    title = "Unknown reason code"


class RecordNotFound(NotFound):
    title = "Inference record not found"


# ------------------------------------------------------------------------------ schemas


class InferenceCreate(BaseModel):
    """One image: ``image`` as nested lists, or ``image_b64`` (raw float32, little-endian,
    C order) with its ``shape``; in the model's layout without the batch dimension."""

    model_config = ConfigDict(extra="forbid")
    camera: Token
    image: list[Any] | None = None
    image_b64: str | None = None
    shape: (
        Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=4)] | None
    ) = None

    @model_validator(mode="after")
    def _one_image(self) -> InferenceCreate:
        if (self.image is None) == (self.image_b64 is None):
            raise ValueError("give exactly one of image and image_b64")
        if (self.image_b64 is None) != (self.shape is None):
            raise ValueError("shape is required with image_b64, and only with it")
        return self


class InferenceRead(BaseModel):
    record_id: str
    decision: InferenceDecision
    label: str | None
    confidence: float | None
    model: str | None
    version: str | None
    reason: str | None = None
    threshold: float
    stats: InputStatsV1
    latency_ms: float
    #: The incident whose order decided (every part to manual inspection), if any.
    control_incident_id: str | None = None


class OverrideCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    record_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    decision: Literal["pass", "reject"]
    reason_code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    rationale: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=10, max_length=2000)
    ]
    operator: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class OverrideRead(BaseModel):
    override_id: str
    record_id: str
    decision: Literal["pass", "reject"]
    reason_code: str
    #: False (and status 202) when NATS is down: the override is queued on the device.
    published: bool
    #: Set when the operator holds no current override training for the system (NIST tier 2
    #: or 3: accepted, flagged); says why. On tier 1 such an override is refused (403).
    competence_flag: str | None = None


class StatusRead(BaseModel):
    device_id: str
    line: str
    model: str | None
    version: str | None
    #: Why no model serves (every decision is then manual_inspection).
    model_error: str | None = None
    labels: list[str]
    good_label: str | None
    threshold: float
    reason_codes: list[str]
    buffered: int
    dropped: int
    overrides_pending: int
    overrides_dropped: int
    batches_published: int


# ----------------------------------------------------------------------------- factory


def create_inference_app(
    runner: ModelRunner,
    telemetry: TelemetryBuffer,
    *,
    device_id: str,
    line: str,
    threshold: float | None = None,
    reason_codes: Sequence[str] = DEFAULT_REASON_CODES,
    recent_records: int = 10_000,
    shadow: ModelRunner | None = None,
    control: ControlFile | None = None,
    competence: CompetenceFile | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The local API over ``runner`` and ``telemetry`` (whose flushing runs in the lifespan).

    ``threshold`` (agent configuration) replaces the model's ``confidence_threshold``; ``None``
    uses the model's (0.8 when preprocess.json sets none). Overrides name one of the last
    ``recent_records`` records and one of ``reason_codes``.

    ``control`` is the incident order the agent verified: its threshold replaces every other,
    and ``manual_inspection`` routes every part there. ``shadow`` runs the candidate the agent
    installed in shadow on the same image; its result is telemetry only (``record.shadow``),
    compared with what the active model decided before any incident order.

    ``competence`` is the override roster the agent verified
    (:mod:`linegate_cli.edge.inference.competence`): each override's operator is checked
    against it at ``clock()`` (default: now, UTC), refused (403) without current training on a
    tier 1 system and flagged on tiers 2-3. ``None`` checks nobody, and says so in the log:
    only for a device without a competence register.
    """
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not in (0, 1]")
    codes = tuple(reason_codes)
    if not codes:
        raise ValueError("at least one override reason code is needed")
    recent: OrderedDict[str, InferenceRecordV1] = OrderedDict()
    now = clock or (lambda: datetime.now(UTC))
    if competence is None:
        log.warning("operator overrides are not checked against a competence roster")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await telemetry.start()
        try:
            yield
        finally:
            await telemetry.close()

    app = FastAPI(title="Linegate device inference API", lifespan=lifespan)
    install_problem_handlers(app)

    threshold_for = functools.partial(_limit, threshold)

    @app.post("/v1/inference", response_model=InferenceRead)
    async def create_inference(body: InferenceCreate) -> InferenceRead:
        started = time.perf_counter()
        image = _decode(body)
        try:
            active, prediction, stats, failure = await asyncio.to_thread(_infer, runner, image)
        except InvalidImage as e:
            raise InvalidInferenceInput(str(e)) from e
        order = control.current() if control is not None else None
        # The prediction names the model that made it, even if the link moved meanwhile.
        limit = threshold_for(prediction or active, order)
        decision, shadow_result = await _judge(
            prediction, limit, failure, order, shadow, image, threshold_for
        )
        served = prediction or active
        record = InferenceRecordV1(
            record_id=uuid.uuid4().hex,
            occurred_at=datetime.now(UTC),
            camera=body.camera,
            decision=decision.outcome,
            reason=decision.reason,
            label=prediction.label if prediction else None,
            confidence=prediction.confidence if prediction else None,
            model=served.model if served else None,
            version=served.version if served else None,
            threshold=limit,
            stats=InputStatsV1(**stats),
            latency_ms=(time.perf_counter() - started) * 1000,
            shadow=shadow_result,
            control_incident_id=order.incident_id if order is not None else None,
        )
        recent[record.record_id] = record
        while len(recent) > recent_records:
            recent.popitem(last=False)
        telemetry.add(record)
        return InferenceRead.model_validate(record.model_dump())

    @app.post("/v1/overrides", status_code=201, response_model=OverrideRead)
    async def create_override(body: OverrideCreate, response: Response) -> OverrideRead:
        event, flag = _accept_override(
            body,
            recent,
            codes=codes,
            recent_records=recent_records,
            line=line,
            device_id=device_id,
            competence=competence,
            at=now(),
        )
        published = await telemetry.override(event)
        if not published:
            response.status_code = 202
        return OverrideRead(
            override_id=event.event_id,
            record_id=event.record_id,
            decision=body.decision,
            reason_code=body.reason_code,
            published=published,
            competence_flag=flag,
        )

    @app.get("/v1/status", response_model=StatusRead)
    async def read_status() -> StatusRead:
        active: ActiveModel | None = None
        error: str | None = None
        try:
            active = await asyncio.to_thread(runner.active)
        except NoActiveModel as e:
            error = str(e)
        return StatusRead(
            device_id=device_id,
            line=line,
            model=active.model if active else None,
            version=active.version if active else None,
            model_error=error,
            labels=list(active.labels) if active else [],
            good_label=active.good_label if active else None,
            threshold=threshold_for(active),
            reason_codes=list(codes),
            buffered=telemetry.buffered,
            dropped=telemetry.dropped_total,
            overrides_pending=telemetry.overrides_pending,
            overrides_dropped=telemetry.overrides_dropped,
            batches_published=telemetry.batches_published,
        )

    return app


def _accept_override(
    body: OverrideCreate,
    recent: OrderedDict[str, InferenceRecordV1],
    *,
    codes: Sequence[str],
    recent_records: int,
    line: str,
    device_id: str,
    competence: CompetenceFile | None,
    at: datetime,
) -> tuple[OverrideV1, str | None]:
    """The override event and its competence flag; raises the problem that refuses it."""
    if body.reason_code not in codes:
        raise UnknownReasonCode(
            f"reason code {body.reason_code!r} is not one of {list(codes)}",
            extra={"allowed": list(codes)},
        )
    record = recent.get(body.record_id)
    if record is None:
        raise RecordNotFound(
            f"no record {body.record_id!r} among the last {recent_records} on this device"
        )
    flag: str | None = None
    if competence is not None:
        verdict = check_override(competence.current(), body.operator, model=record.model, at=at)
        if verdict.refused:
            log.warning("override refused: %s", verdict.detail)
            raise verdict.error(body.operator)
        flag = verdict.flag
    event = OverrideV1(
        actor=body.operator,
        line=line,
        device_id=device_id,
        record_id=record.record_id,
        camera=record.camera,
        model=record.model,
        version=record.version,
        original_decision=record.decision,
        original_label=record.label,
        decision=body.decision,
        reason_code=body.reason_code,
        rationale=body.rationale,
        competence_flag=flag,
    )
    if flag is not None:
        log.warning("override %s flagged: %s", event.event_id, flag)
    return event, flag


def _limit(
    configured: float | None,
    served: ActiveModel | Prediction | None,
    order: Control | None = None,
) -> float:
    """The confidence threshold: an incident's order, else the agent's configuration, else
    the model's own."""
    if order is not None and order.threshold is not None:
        return order.threshold
    if configured is not None:
        return configured
    return served.threshold if served is not None else DEFAULT_CONFIDENCE_THRESHOLD


async def _judge(
    prediction: Prediction | None,
    limit: float,
    failure: str | None,
    order: Control | None,
    shadow: ModelRunner | None,
    image: NDArray[np.float32],
    threshold_for: Any,
) -> tuple[Decision, ShadowResultV1 | None]:
    """The decision on the part (the model's, unless an incident order overrides it) and the
    shadow candidate's result, compared with the model's own decision."""
    model_decision = decide(prediction, limit, no_model_reason=failure or "no model")
    shadow_result = (
        await _shadow_result(shadow, image, prediction, model_decision, order, threshold_for)
        if shadow is not None
        else None
    )
    return _obey(order, model_decision), shadow_result


def _obey(order: Control | None, decision: Decision) -> Decision:
    """``decision``, unless an incident ordered every part to manual inspection."""
    if order is None or order.mode != "manual_inspection":
        return decision
    return Decision(
        "manual_inspection",
        f"incident {order.incident_id} orders manual inspection of every part"
        + (f": {order.reason}" if order.reason else ""),
    )


async def _shadow_result(
    shadow: ModelRunner,
    image: NDArray[np.float32],
    active: Prediction | None,
    active_decision: Decision,
    order: Control | None,
    threshold_for: Any,
) -> ShadowResultV1 | None:
    """The shadow candidate on the same image (``None`` while the device runs none). A
    candidate that fails or cannot take the image disagrees: it could not have decided."""
    started = time.perf_counter()

    def run() -> tuple[ActiveModel, Prediction | None] | None:
        try:
            served = shadow.active()
        except NoActiveModel:
            return None
        try:
            return served, shadow.predict(image)
        except (NoActiveModel, ModelFailed, InvalidImage):
            return served, None

    outcome = await asyncio.to_thread(run)
    if outcome is None:
        return None
    served, prediction = outcome
    decision = decide(prediction, threshold_for(prediction or served, order))
    agrees = (
        prediction is not None
        and active is not None
        and prediction.label == active.label
        and decision.outcome == active_decision.outcome
    )
    return ShadowResultV1(
        model=served.model,
        version=served.version,
        decision=decision.outcome,
        label=prediction.label if prediction else None,
        confidence=prediction.confidence if prediction else None,
        agrees=agrees,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _infer(
    runner: ModelRunner, image: NDArray[np.float32]
) -> tuple[ActiveModel | None, Prediction | None, dict[str, float], str | None]:
    """Active model, prediction, input statistics and why there is no prediction. Only an
    image that does not fit the model raises; every other failure routes to manual inspection."""
    active: ActiveModel | None = None
    prediction: Prediction | None = None
    failure: str | None = None
    try:
        active = runner.active()
        prediction = runner.predict(image)
    except NoActiveModel as e:
        failure = str(e)
    except ModelFailed as e:
        failure = f"inference failed: {e}"
    stats = input_stats(image, active.layout if active else "NCHW")
    return active, prediction, stats, failure


def _decode(body: InferenceCreate) -> NDArray[np.float32]:
    if body.image_b64 is not None:
        assert body.shape is not None  # the schema requires it with image_b64
        count = math.prod(body.shape)
        if count > MAX_IMAGE_VALUES:
            raise InvalidInferenceInput(f"shape {body.shape} exceeds {MAX_IMAGE_VALUES} values")
        if len(body.image_b64) > 4 * math.ceil(count * 4 / 3) + 4:  # refuse before decoding
            raise InvalidInferenceInput(f"image_b64 is longer than shape {body.shape} needs")
        try:
            raw = base64.b64decode(body.image_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidInferenceInput(f"image_b64 is not base64: {e}") from e
        if len(raw) != 4 * count:
            raise InvalidInferenceInput(
                f"image_b64 holds {len(raw)} bytes; shape {body.shape} as float32 needs {4 * count}"
            )
        image = np.frombuffer(raw, dtype="<f4").reshape(body.shape).astype(np.float32)
    else:
        try:
            image = np.asarray(body.image, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise InvalidInferenceInput(f"image is not a rectangular array of numbers: {e}") from e
        if not 2 <= image.ndim <= 4 or image.size > MAX_IMAGE_VALUES:
            raise InvalidInferenceInput(
                f"image has shape {list(image.shape)}; expected 2 to 4 dimensions and at most "
                f"{MAX_IMAGE_VALUES} values"
            )
    if not np.all(np.isfinite(image)):
        raise InvalidInferenceInput("image holds NaN or infinite values")
    return image
