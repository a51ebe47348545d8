"""Predictive maintenance on the device: silence below the threshold, one alert per crossing."""

import asyncio
import json
from pathlib import Path

import nats
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from linegate.events import MaintenanceAlertV1, Streams, Subjects, ensure_stream
from linegate_cli.edge.pdm import (
    AnomalyScorer,
    EwmaAggregator,
    MaintenanceMonitor,
    PdmError,
    nats_publisher,
)

WINDOW, CHANNELS = 64, 4
THRESHOLD, CLEAR = 0.5, 0.25


def build_anomaly_model(path: Path) -> Path:
    """Mean absolute deviation of a (1, window, channels) window from a learned mean (zeros)."""
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["window", "mean"], ["deviation"]),
            helper.make_node("Abs", ["deviation"], ["distance"]),
            helper.make_node("ReduceMean", ["distance"], ["score"], axes=[1, 2], keepdims=0),
        ],
        "mad_anomaly",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", WINDOW, CHANNELS])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "mean")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return path


class Sensor:
    """Vibration windows around zero; ``drift`` shifts them (a bearing starting to go)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def window(self, drift: float = 0.0) -> np.ndarray:
        noise = self.rng.normal(0.0, 0.1, (WINDOW, CHANNELS))
        return (noise + drift).astype(np.float32)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return AnomalyScorer(build_anomaly_model(tmp_path_factory.mktemp("pdm") / "mad.onnx"))


def test_the_scorer_runs_the_onnx_model_on_one_window(scorer):
    sensor = Sensor()
    assert scorer.score(sensor.window()) == pytest.approx(0.08, abs=0.02)
    assert scorer.score(sensor.window(drift=1.0)[None]) == pytest.approx(1.0, abs=0.05)
    assert scorer.digest.startswith("sha256:")
    with pytest.raises(PdmError, match="axis 2"):
        scorer.score(np.zeros((WINDOW, CHANNELS + 1), np.float32))


def test_ewma_raises_once_and_clears_below_the_clear_threshold():
    ewma = EwmaAggregator(alpha=0.5, threshold=1.0, clear_threshold=0.5, min_samples=2)
    first = ewma.update("pump", 4.0)
    assert first.ewma == 4.0
    assert not first.crossed  # one window is not enough evidence
    assert ewma.update("pump", 4.0).crossed
    assert not ewma.update("pump", 4.0).crossed  # still alarmed: no second alert
    states = [ewma.update("pump", 0.0) for _ in range(3)]  # 2.0, 1.0, 0.5: not below 0.5 yet
    assert [s.cleared for s in states] == [False, False, False]
    assert ewma.update("pump", 0.0).cleared  # 0.25
    assert not ewma.alarmed("pump")
    assert not ewma.update("fan", 0.1).alarmed  # assets are independent
    with pytest.raises(PdmError):
        EwmaAggregator(alpha=0.5, threshold=1.0, clear_threshold=2.0)
    with pytest.raises(PdmError):
        ewma.update("pump", float("nan"))


async def test_publishes_nothing_when_normal_one_alert_per_drift_over_real_nats(
    scorer, nats_server
):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, Streams.MAINTENANCE)
        received: list[tuple[str, dict]] = []

        async def collect(msg):
            received.append((msg.subject, json.loads(msg.data)))

        await nc.subscribe(Subjects.MAINTENANCE_ALL, cb=collect)
        monitor = MaintenanceMonitor(
            scorer,
            EwmaAggregator(alpha=0.3, threshold=THRESHOLD, clear_threshold=CLEAR, min_samples=5),
            nats_publisher(js),
            actor="device-7",
        )
        sensor = Sensor()

        async def feed(n: int, drift: float = 0.0) -> list[MaintenanceAlertV1]:
            alerts = [await monitor.observe("pump-7", sensor.window(drift)) for _ in range(n)]
            return [a for a in alerts if a is not None]

        async def stored() -> int:
            await nc.flush()
            return (await js.stream_info(Streams.MAINTENANCE.name)).state.messages

        assert await feed(60) == []  # normal running
        assert await feed(30, drift=0.15) == []  # a little worse, still under the threshold
        assert await stored() == 0

        drift = await feed(25, drift=1.0)
        assert len(drift) == 1
        assert await stored() == 1

        assert await feed(30) == []  # recovery clears the alarm silently
        assert await stored() == 1
        again = await feed(25, drift=1.2)
        assert len(again) == 1
        assert await stored() == 2

        for _ in range(50):
            if len(received) == 2:
                break
            await asyncio.sleep(0.02)
        assert [subject for subject, _ in received] == [Subjects.maintenance("pump-7")] * 2
        alert = received[0][1]
        # Minimal context: the figures behind the alert, no sensor data.
        assert set(alert) == {
            "event_id",
            "occurred_at",
            "actor",
            "kind",
            "asset",
            "ewma",
            "threshold",
            "last_score",
            "windows",
            "model_digest",
        }
        assert alert["kind"] == "maintenance.alert.v1"
        assert alert["asset"] == "pump-7"
        assert alert["threshold"] == THRESHOLD
        assert alert["ewma"] >= THRESHOLD
        assert alert["model_digest"] == scorer.digest
        assert 90 < alert["windows"] <= 115
        assert not any(isinstance(v, list | dict) for v in alert.values())
        assert MaintenanceAlertV1.model_validate(alert) == drift[0]
    finally:
        await nc.drain()


async def test_a_failed_publish_is_retried_on_the_next_window(scorer):
    sent: list[MaintenanceAlertV1] = []
    failures = [ConnectionError("NATS down")]

    async def flaky(alert: MaintenanceAlertV1) -> None:
        if failures:
            raise failures.pop()
        sent.append(alert)

    monitor = MaintenanceMonitor(scorer, EwmaAggregator(alpha=1.0, threshold=THRESHOLD), flaky)
    window = Sensor().window(drift=1.0)
    with pytest.raises(ConnectionError):
        await monitor.observe("pump-7", window)
    assert await monitor.observe("pump-7", window) is not None
    assert await monitor.observe("pump-7", window) is None
    assert len(sent) == 1
    with pytest.raises(ValueError, match="subject token"):
        await monitor.observe("pump.7", window)
