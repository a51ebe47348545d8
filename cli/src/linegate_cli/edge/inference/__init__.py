"""The device's local inference API: fail-safe decisions on the installed model, with telemetry.

The line posts an image; :class:`ModelRunner` classifies it with the model the agent installed
(following the atomic ``current`` swap), :func:`decide` turns the prediction into ``pass``,
``reject`` or ``manual_inspection`` (never a pass below the confidence threshold or without a
verified model), and :class:`TelemetryBuffer` publishes the record, with cheap input statistics
(:func:`input_stats`) and no pixels, in batches on ``linegate.telemetry.<line>.<device_id>``.
Operators override a decision with a reason code and a rationale; the override is published
at once as :class:`~linegate.events.OverrideV1`, if the operator's training passes the signed
override roster (:mod:`linegate_cli.edge.inference.competence`).

Example (serve on loopback only; the API has no authentication)::

    import uvicorn

    nc = await connect_device(nats_url, creds, device_id="cam-3a")
    telemetry = TelemetryBuffer(jetstream_publisher(nc), line="line-3", device_id="cam-3a")
    app = create_inference_app(
        ModelRunner(state_dir), telemetry, device_id="cam-3a", line="line-3", threshold=None,
        reason_codes=DEFAULT_REASON_CODES,
    )
    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8470)).serve()
"""

from linegate_cli.edge.inference.api import (
    DEFAULT_REASON_CODES,
    InferenceCreate,
    InferenceRead,
    OverrideCreate,
    OverrideRead,
    StatusRead,
    create_inference_app,
)
from linegate_cli.edge.inference.competence import (
    CompetenceFile,
    Roster,
    UntrainedOperator,
    Verdict,
    check_override,
)
from linegate_cli.edge.inference.runner import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    ActiveModel,
    Control,
    ControlFile,
    Decision,
    InferenceError,
    InvalidImage,
    ModelFailed,
    ModelRunner,
    NoActiveModel,
    Prediction,
    decide,
    input_stats,
)
from linegate_cli.edge.inference.telemetry import (
    Publish,
    PublisherUnavailable,
    TelemetryBuffer,
    jetstream_publisher,
)

__all__ = [
    "DEFAULT_CONFIDENCE_THRESHOLD",
    "DEFAULT_REASON_CODES",
    "ActiveModel",
    "CompetenceFile",
    "Control",
    "ControlFile",
    "Decision",
    "InferenceCreate",
    "InferenceError",
    "InferenceRead",
    "InvalidImage",
    "ModelFailed",
    "ModelRunner",
    "NoActiveModel",
    "OverrideCreate",
    "OverrideRead",
    "Prediction",
    "Publish",
    "PublisherUnavailable",
    "Roster",
    "StatusRead",
    "TelemetryBuffer",
    "UntrainedOperator",
    "Verdict",
    "check_override",
    "create_inference_app",
    "decide",
    "input_stats",
    "jetstream_publisher",
]
