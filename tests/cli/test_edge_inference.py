"""The device's local inference API on real onnxruntime models and a real nats-server.

Models are the tiny classifiers of ``linegate.testing.onnx_models`` installed the way the agent
installs them: ``slots/<model>@<version>/<model>``, a ``current`` symlink swapped by rename and
``state.json``. Telemetry is read back from ``linegate.telemetry.>``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout

from linegate.embedded import NatsServer
from linegate.events import (
    InferenceBatchV1,
    InferenceRecordV1,
    InputStatsV1,
    OverrideV1,
    Streams,
    ensure_stream,
)
from linegate.testing.onnx_models import DEFAULT_LABELS, labelled_batch, write_model_dir
from linegate_cli.agent import AgentState, Installed
from linegate_cli.edge.inference import (
    ModelRunner,
    Prediction,
    TelemetryBuffer,
    create_inference_app,
    decide,
    input_stats,
    jetstream_publisher,
)

MODEL = "weld-seam-inspector"
LINE, DEVICE = "line-3", "cam-3a"
IMAGES, _ = labelled_batch(1, seed=3)  # one image per class: ok, scratch, dent
GOOD, DEFECT = IMAGES[0], IMAGES[1]


def ambiguous_image() -> np.ndarray:
    """Channels 0 (ok) and 1 (scratch) raised alike: the model splits ~50/50 between them."""
    image = np.full((3, 8, 8), 0.5, dtype=np.float32)
    image[0] += 0.5
    image[1] += 0.5
    return image


def install(
    state_dir: Path,
    version: str,
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    preprocess: dict[str, Any] | None = None,
    broken: bool = False,
) -> Path:
    """Install ``version`` as the agent does: slot folder, link swapped by rename, state.json."""
    slot = state_dir / "slots" / f"{MODEL}@{version}"
    folder = write_model_dir(slot / MODEL, name=MODEL, version=version, labels=labels)
    if preprocess:
        path = folder / "preprocess.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **preprocess}))
    if broken:
        (folder / "model.onnx").write_bytes(b"not an onnx model")
    link_tmp = state_dir / "current.tmp"
    link_tmp.symlink_to(folder, target_is_directory=True)
    link_tmp.replace(state_dir / "current")
    state = AgentState.load(state_dir / "state.json")
    state.previous, state.active = (
        state.active,
        Installed(
            model=MODEL,
            version=version,
            security_version=len(state.history) + 1,
            slot=slot.name,
            installed_at=datetime.now(UTC).isoformat(),
        ),
    )
    state.history.append(version)
    state.save(state_dir / "state.json")
    return folder


async def _quiet(_: Exception) -> None:
    """The publisher-down test stops the server; nats-py would log each reconnect attempt."""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    path.mkdir()
    return path


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await nats.connect(
        nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, error_cb=_quiet
    )
    await ensure_stream(conn.jetstream(), Streams.TELEMETRY)
    yield conn
    await conn.close()


@pytest.fixture
async def telemetry_sub(nc: Client) -> Subscription:
    sub = await nc.subscribe("linegate.telemetry.>")
    await nc.flush()
    return sub


Serve = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, TelemetryBuffer]]]


@pytest.fixture
def serve(state_dir: Path, nc: Client) -> Serve:
    """``async with serve(batch_size=..., threshold=...) as (client, telemetry)``."""

    @asynccontextmanager
    async def run(
        *,
        batch_size: int = 100,
        max_buffered: int = 1_000,
        flush_interval: float = 60.0,
        threshold: float | None = None,
        good_label: str | None = None,
    ) -> AsyncIterator[tuple[httpx.AsyncClient, TelemetryBuffer]]:
        telemetry = TelemetryBuffer(
            jetstream_publisher(nc, timeout=2.0),
            line=LINE,
            device_id=DEVICE,
            batch_size=batch_size,
            max_buffered=max_buffered,
            flush_interval=flush_interval,
        )
        app = create_inference_app(
            ModelRunner(state_dir, good_label=good_label),
            telemetry,
            device_id=DEVICE,
            line=LINE,
            threshold=threshold,
            reason_codes=("false_reject", "false_pass", "sensor_fault", "other"),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://device") as client:
                yield client, telemetry

    return run


async def infer(client: httpx.AsyncClient, image: np.ndarray, camera: str = "cam-1") -> Any:
    response = await client.post("/v1/inference", json={"camera": camera, "image": image.tolist()})
    assert response.status_code == 200, response.text
    return response.json()


async def next_event(sub: Subscription, timeout: float = 5.0) -> dict[str, Any]:
    msg = await sub.next_msg(timeout=timeout)
    return json.loads(msg.data)


# ---------------------------------------------------------------------------- decisions


async def test_confident_good_image_passes(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.1.0")
    async with serve() as (client, _):
        body = await infer(client, GOOD)
        status = (await client.get("/v1/status")).json()
    assert body["decision"] == "pass"
    assert body["label"] == "ok"
    assert body["confidence"] >= 0.95
    assert (body["model"], body["version"], body["threshold"]) == (MODEL, "2.1.0", 0.8)
    assert body["reason"] is None
    assert set(body["stats"]) == {"brightness", "contrast", "sharpness"}
    assert status["model"] == MODEL
    assert status["version"] == "2.1.0"
    assert status["threshold"] == 0.8
    assert status["buffered"] == 1
    assert status["dropped"] == 0


async def test_confident_defect_is_rejected(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.1.0")
    async with serve() as (client, _):
        body = await infer(client, DEFECT)
    assert body["decision"] == "reject"
    assert body["label"] == "scratch"
    assert "scratch" in body["reason"]


async def test_ambiguous_image_goes_to_manual_inspection(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.1.0")
    async with serve() as (client, _):
        body = await infer(client, ambiguous_image())
    assert body["decision"] == "manual_inspection"
    assert body["confidence"] < 0.8
    assert "below the threshold" in body["reason"]


@pytest.mark.parametrize("installed", ["nothing", "broken model"])
async def test_without_a_loadable_model_nothing_passes(
    state_dir: Path, serve: Serve, installed: str
) -> None:
    if installed == "broken model":
        install(state_dir, "2.1.0", broken=True)
    async with serve() as (client, _):
        bodies = [await infer(client, image) for image in (GOOD, GOOD, DEFECT)]
        status = (await client.get("/v1/status")).json()
    assert {b["decision"] for b in bodies} == {"manual_inspection"}
    assert all(b["label"] is None and b["reason"] for b in bodies)
    assert status["model"] is None
    assert status["model_error"]


async def test_threshold_from_preprocess_json_and_from_agent_config(
    state_dir: Path, serve: Serve
) -> None:
    install(state_dir, "2.1.0", preprocess={"confidence_threshold": 0.999})
    async with serve() as (client, _):
        strict = await infer(client, GOOD)
    async with serve(threshold=0.5) as (client, _):
        relaxed = await infer(client, GOOD)
    assert (strict["decision"], strict["threshold"]) == ("manual_inspection", 0.999)
    assert (relaxed["decision"], relaxed["threshold"]) == ("pass", 0.5)


async def test_configured_good_label(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.1.0", labels=("crack", "good", "porosity"))
    async with serve(good_label="good") as (client, _):
        first, second = await infer(client, IMAGES[0]), await infer(client, IMAGES[1])
    assert (first["label"], first["decision"]) == ("crack", "reject")
    assert (second["label"], second["decision"]) == ("good", "pass")


async def test_swapped_model_serves_the_next_request(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.0.4")
    async with serve() as (client, _):
        before = await infer(client, DEFECT)
        install(state_dir, "2.1.0", labels=("ok", "porosity", "crack"))
        after = await infer(client, DEFECT)
        status = (await client.get("/v1/status")).json()
    assert (before["version"], before["label"]) == ("2.0.4", "scratch")
    assert (after["version"], after["label"]) == ("2.1.0", "porosity")
    assert (status["version"], status["labels"]) == ("2.1.0", ["ok", "porosity", "crack"])


def test_version_from_the_slot_name_when_state_json_lags(state_dir: Path) -> None:
    """The agent renames the link before it writes state.json: the slot name still tells."""
    install(state_dir, "2.0.4")
    folder = write_model_dir(state_dir / "slots" / f"{MODEL}@2.1.0" / MODEL)
    link_tmp = state_dir / "current.tmp"
    link_tmp.symlink_to(folder, target_is_directory=True)
    link_tmp.replace(state_dir / "current")
    prediction = ModelRunner(state_dir).predict(GOOD)
    assert (prediction.model, prediction.version) == (MODEL, "2.1.0")


# ------------------------------------------------------------------------------- inputs


async def test_input_checks(state_dir: Path, serve: Serve) -> None:
    install(state_dir, "2.1.0")
    raw = base64.b64encode(GOOD.astype("<f4").tobytes()).decode()
    async with serve() as (client, _):
        as_b64 = await client.post(
            "/v1/inference", json={"camera": "cam-1", "image_b64": raw, "shape": [3, 8, 8]}
        )
        batched = await client.post(
            "/v1/inference", json={"camera": "cam-1", "image": GOOD[None].tolist()}
        )
        bad = [
            await client.post("/v1/inference", json=body)
            for body in (
                {"camera": "cam-1", "image": np.zeros((3, 4, 4)).tolist()},  # wrong shape
                {"camera": "cam-1", "image": [[1.0, 2.0], [3.0]]},  # ragged
                {"camera": "cam-1", "image_b64": raw, "shape": [3, 8, 9]},  # wrong length
                {"camera": "cam-1", "image_b64": raw},  # no shape
                {"camera": "cam 1", "image": GOOD.tolist()},  # camera id
                {"camera": "cam-1", "image": GOOD.tolist(), "image_b64": raw},
            )
        ]
    assert as_b64.status_code == 200
    assert as_b64.json()["decision"] == "pass"
    assert batched.json()["decision"] == "pass"
    assert [r.status_code for r in bad] == [422] * len(bad)
    assert all(r.headers["content-type"] == "application/problem+json" for r in bad)
    assert "does not fit model input 3x8x8" in bad[0].json()["detail"]


def test_input_stats_track_brightness_contrast_and_sharpness() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 32), dtype=np.float32)
    stats = input_stats(image)
    dark = input_stats(image * 0.3)
    blurred = image.copy()
    blurred[:, 1:-1, 1:-1] = (
        image[:, :-2, 1:-1] + image[:, 2:, 1:-1] + image[:, 1:-1, :-2] + image[:, 1:-1, 2:]
    ) / 4
    assert dark["brightness"] == pytest.approx(0.3 * stats["brightness"], rel=1e-5)
    assert dark["contrast"] == pytest.approx(0.3 * stats["contrast"], rel=1e-5)
    assert input_stats(blurred)["sharpness"] < stats["sharpness"] / 2
    assert input_stats(image.transpose(1, 2, 0), "NHWC") == pytest.approx(stats)
    assert input_stats(np.ones((2, 2)))["sharpness"] == 0.0


def test_decide_never_passes_without_a_confident_good_prediction() -> None:
    def prediction(label: str, confidence: float) -> Prediction:
        return Prediction(label, confidence, {}, MODEL, "1", good_label="ok", threshold=0.8)

    assert decide(prediction("ok", 0.8), 0.8).outcome == "pass"
    assert decide(prediction("dent", 0.95), 0.8).outcome == "reject"
    for case in (prediction("ok", 0.79), prediction("ok", float("nan")), None):
        decision = decide(case, 0.8)
        assert decision.outcome == "manual_inspection"
        assert decision.reason


# ---------------------------------------------------------------------------- telemetry


async def test_darkened_image_shows_in_the_telemetry_batch(
    state_dir: Path, serve: Serve, telemetry_sub: Subscription
) -> None:
    install(state_dir, "2.1.0")
    async with serve(batch_size=2) as (client, _):
        normal = await infer(client, GOOD, camera="cam-3")
        dark = await infer(client, GOOD * 0.3, camera="cam-3")
        msg = await telemetry_sub.next_msg(timeout=5)
    assert msg.subject == f"linegate.telemetry.{LINE}.{DEVICE}"
    assert b"image" not in msg.data  # references only, never pixels
    batch = InferenceBatchV1.model_validate_json(msg.data)
    assert (batch.line, batch.device_id, batch.dropped) == (LINE, DEVICE, 0)
    first, second = batch.records
    assert (first.record_id, second.record_id) == (normal["record_id"], dark["record_id"])
    assert {first.camera, second.camera} == {"cam-3"}
    assert second.stats.brightness == pytest.approx(0.3 * first.stats.brightness, rel=1e-4)
    assert second.stats.brightness < first.stats.brightness
    assert first.stats.model_dump() == normal["stats"]
    assert (first.decision, first.label, first.model, first.version) == (
        "pass",
        "ok",
        MODEL,
        "2.1.0",
    )
    assert first.latency_ms > 0


async def test_batch_is_published_after_n_records(
    state_dir: Path, serve: Serve, telemetry_sub: Subscription
) -> None:
    install(state_dir, "2.1.0")
    async with serve(batch_size=3) as (client, telemetry):
        ids = [(await infer(client, image))["record_id"] for image in IMAGES[:2]]
        with pytest.raises(NatsTimeout):
            await telemetry_sub.next_msg(timeout=0.3)  # two records: still buffered
        ids.append((await infer(client, IMAGES[2]))["record_id"])
        batch = InferenceBatchV1.model_validate(await next_event(telemetry_sub))
        await _until(lambda: telemetry.buffered == 0)  # released once JetStream acks
    assert [r.record_id for r in batch.records] == ids
    assert [r.decision for r in batch.records] == ["pass", "reject", "reject"]


async def test_override_needs_a_known_reason_code_and_a_rationale(
    state_dir: Path, serve: Serve
) -> None:
    install(state_dir, "2.1.0")
    async with serve() as (client, _):
        record_id = (await infer(client, ambiguous_image()))["record_id"]
        valid = {
            "record_id": record_id,
            "decision": "pass",
            "reason_code": "false_reject",
            "rationale": "Seam re-inspected under the loupe: no porosity.",
            "operator": "j.meyer",
        }
        invalid = [
            {k: v for k, v in valid.items() if k != "rationale"},
            {**valid, "rationale": "   ok     "},
            {**valid, "reason_code": "looked fine"},
            {**valid, "decision": "manual_inspection"},
        ]
        responses = [await client.post("/v1/overrides", json=body) for body in invalid]
        unknown = await client.post("/v1/overrides", json={**valid, "record_id": "f" * 32})
    assert [r.status_code for r in responses] == [422] * len(invalid)
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses)
    assert responses[2].json()["allowed"] == ["false_reject", "false_pass", "sensor_fault", "other"]
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_valid_override_is_published_at_once(
    state_dir: Path, serve: Serve, telemetry_sub: Subscription
) -> None:
    install(state_dir, "2.1.0")
    async with serve(batch_size=100) as (client, _):
        record = await infer(client, ambiguous_image(), camera="cam-7")
        response = await client.post(
            "/v1/overrides",
            json={
                "record_id": record["record_id"],
                "decision": "pass",
                "reason_code": "false_reject",
                "rationale": "Seam re-inspected under the loupe: no porosity.",
                "operator": "j.meyer",
            },
        )
        event = OverrideV1.model_validate(await next_event(telemetry_sub))
    assert response.status_code == 201, response.text
    assert response.json()["published"] is True
    assert event.event_id == response.json()["override_id"]
    assert (event.record_id, event.camera, event.actor) == (record["record_id"], "cam-7", "j.meyer")
    assert (event.original_decision, event.decision) == ("manual_inspection", "pass")
    assert (event.reason_code, event.model, event.version) == ("false_reject", MODEL, "2.1.0")
    assert event.rationale.startswith("Seam re-inspected")


async def test_publisher_down_keeps_memory_bounded_and_reports_drops(
    state_dir: Path, serve: Serve, nc: Client, nats_server: NatsServer
) -> None:
    install(state_dir, "2.1.0")
    async with serve(batch_size=2, max_buffered=4) as (client, telemetry):
        nats_server.stop()
        await _until(lambda: not nc.is_connected)
        ids = [(await infer(client, IMAGES[i % 3]))["record_id"] for i in range(10)]
        await asyncio.sleep(0)  # let the background drains fail
        override = await client.post(
            "/v1/overrides",
            json={
                "record_id": ids[-1],
                "decision": "reject",
                "reason_code": "false_pass",
                "rationale": "Crack visible at the seam end under side light.",
                "operator": "a.kaya",
            },
        )
        status = (await client.get("/v1/status")).json()

        nats_server.start()
        await _until(lambda: nc.is_connected)
        deadline = time.monotonic() + 5
        while not await telemetry.flush():  # JetStream may need a moment after a restart
            assert time.monotonic() < deadline, "telemetry was not published after the restart"
            await asyncio.sleep(0.1)
        final = (await client.get("/v1/status")).json()

    assert (override.status_code, override.json()["published"]) == (202, False)
    assert (status["buffered"], status["dropped"], status["overrides_pending"]) == (4, 6, 1)
    assert (final["buffered"], final["overrides_pending"], final["dropped"]) == (0, 0, 6)

    js = nc.jetstream()
    stored = (await js.stream_info(Streams.TELEMETRY.name)).state.messages
    sub = await js.subscribe("linegate.telemetry.>", ordered_consumer=True)
    events = [await next_event(sub) for _ in range(stored)]
    batches = [InferenceBatchV1.model_validate(e) for e in events if "records" in e]
    overrides = [OverrideV1.model_validate(e) for e in events if "records" not in e]
    assert [r.record_id for b in batches for r in b.records] == ids[-4:]  # newest kept
    assert sum(b.dropped for b in batches) == 6  # every lost record is accounted for
    assert [o.record_id for o in overrides] == [ids[-1]]
    await sub.unsubscribe()


async def test_drops_are_reported_even_when_no_record_follows() -> None:
    """A drop right after a batch was sealed leaves no open batch to carry it: the next flush
    publishes a batch with no records and the count."""
    sent: list[InferenceBatchV1] = []
    up = False

    async def publish(subject: str, event: Any) -> None:
        if not up:
            raise ConnectionError("down")
        sent.append(event)

    telemetry = TelemetryBuffer(publish, line=LINE, device_id=DEVICE, batch_size=2, max_buffered=5)
    template = InferenceRecordV1(
        record_id="0",
        occurred_at=datetime.now(UTC),
        camera="cam-1",
        decision="pass",
        threshold=0.8,
        stats=InputStatsV1(brightness=0.5, contrast=0.1, sharpness=0.01),
        latency_ms=1.0,
    )
    for i in range(6):
        telemetry.add(template.model_copy(update={"record_id": str(i)}))
    assert not await telemetry.flush()
    assert (telemetry.buffered, telemetry.dropped_total) == (4, 2)
    up = True
    assert await telemetry.flush()
    assert [([r.record_id for r in b.records], b.dropped) for b in sent] == [
        (["2", "3"], 0),
        (["4", "5"], 0),
        ([], 2),
    ]


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
