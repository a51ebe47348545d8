"""Predictive maintenance at the edge: score sensor windows, smooth per asset, alert once.

- :class:`AnomalyScorer` runs an ONNX anomaly model on one sensor window, float32
  ``(1, window, channels)`` in, one score out (higher is more anomalous).
- :class:`EwmaAggregator` keeps an exponentially weighted moving average of the scores of each
  asset, and raises an alarm when it reaches ``threshold`` (after ``min_samples`` windows) that
  holds until the average falls below ``clear_threshold`` (hysteresis, so a score hovering at
  the threshold does not flap).
- :class:`MaintenanceMonitor` ties them together and publishes one
  :class:`~linegate.events.MaintenanceAlertV1` per alarm, with the figures that justify it and
  nothing else: the sensor data stays on the device. Below the threshold nothing is sent.

The alert on ``linegate.maintenance.<asset>`` is the first step of the incident service's
maintenance chain. Example::

    monitor = MaintenanceMonitor(
        AnomalyScorer(Path("pump-anomaly.onnx")),
        EwmaAggregator(alpha=0.2, threshold=0.5, clear_threshold=0.3, min_samples=5),
        nats_publisher(nc.jetstream()),
    )
    for window in sensor_windows("pump-7"):
        await monitor.observe("pump-7", window)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linegate.events import MaintenanceAlertV1, Subjects, publish

log = logging.getLogger("linegate.edge.pdm")

Publish = Callable[[MaintenanceAlertV1], Awaitable[None]]


class PdmError(ValueError):
    """A window, score or setting the monitor cannot use; the message says why."""


class AnomalyScorer:
    """An ONNX anomaly model: one sensor window in, one anomaly score out."""

    def __init__(
        self, model_path: Path, *, input_name: str | None = None, output_name: str | None = None
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        self.model_path = Path(model_path)
        self.digest = "sha256:" + hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(self.model_path), options, providers=["CPUExecutionProvider"]
        )
        spec = self._session.get_inputs()[0]
        self.input_name: str = input_name or spec.name
        self.output_name: str = output_name or self._session.get_outputs()[0].name
        self._shape: list[Any] = list(spec.shape)

    def score(self, window: NDArray[Any]) -> float:
        """The model's score for one ``(window, channels)`` or ``(1, window, channels)`` array."""
        x = np.asarray(window, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] != 1:
            raise PdmError(f"expected a (window, channels) array, got shape {np.shape(window)}")
        for axis, (want, got) in enumerate(zip(self._shape[1:], x.shape[1:], strict=False), 1):
            if isinstance(want, int) and want > 0 and want != got:
                raise PdmError(f"the model takes {self._shape} windows; axis {axis} is {got}")
        result = np.asarray(self._session.run([self.output_name], {self.input_name: x})[0])
        if result.size != 1:
            raise PdmError(f"the model returned {result.size} scores for one window, not 1")
        value = float(result.reshape(()))
        if not math.isfinite(value):
            raise PdmError(f"the model returned a non-finite score ({value})")
        return value


@dataclass(frozen=True)
class AssetScore:
    """One asset after one update of :class:`EwmaAggregator`."""

    asset: str
    score: float
    ewma: float
    windows: int
    alarmed: bool
    #: This update raised the alarm (the one time an alert is due).
    crossed: bool = False
    #: This update cleared the alarm (the next crossing alerts again).
    cleared: bool = False


@dataclass
class _AssetState:
    ewma: float
    windows: int
    alarmed: bool = False


class EwmaAggregator:
    """Per-asset EWMA of anomaly scores with a raise threshold and a lower clear threshold.

    ``ewma = alpha * score + (1 - alpha) * ewma``, seeded with the first score. The alarm is
    raised when ``ewma >= threshold`` once ``min_samples`` windows have been seen, and cleared
    when ``ewma < clear_threshold`` (default: ``threshold``, i.e. no hysteresis band).
    """

    def __init__(
        self,
        *,
        alpha: float,
        threshold: float,
        clear_threshold: float | None = None,
        min_samples: int = 1,
    ) -> None:
        clear = threshold if clear_threshold is None else clear_threshold
        if not 0.0 < alpha <= 1.0:
            raise PdmError(f"alpha must be in (0, 1], got {alpha}")
        if not (math.isfinite(threshold) and math.isfinite(clear)) or clear > threshold:
            raise PdmError(f"need finite clear_threshold <= threshold, got {clear} > {threshold}")
        if min_samples < 1:
            raise PdmError(f"min_samples must be at least 1, got {min_samples}")
        self.alpha = alpha
        self.threshold = threshold
        self.clear_threshold = clear
        self.min_samples = min_samples
        self._assets: dict[str, _AssetState] = {}

    def update(self, asset: str, score: float) -> AssetScore:
        """Fold ``score`` into ``asset``'s average and report whether the alarm changed."""
        if not math.isfinite(score):
            raise PdmError(f"score {score} for {asset!r} is not finite; the average is unchanged")
        state = self._assets.get(asset)
        if state is None:
            state = self._assets[asset] = _AssetState(ewma=score, windows=1)
        else:
            state.ewma = self.alpha * score + (1.0 - self.alpha) * state.ewma
            state.windows += 1
        crossed = cleared = False
        if not state.alarmed and state.windows >= self.min_samples and state.ewma >= self.threshold:
            state.alarmed = crossed = True
        elif state.alarmed and state.ewma < self.clear_threshold:
            state.alarmed, cleared = False, True
        return AssetScore(asset, score, state.ewma, state.windows, state.alarmed, crossed, cleared)

    def rearm(self, asset: str) -> None:
        """Forget a raised alarm whose alert could not be sent, so the next window retries it."""
        if asset in self._assets:
            self._assets[asset].alarmed = False

    def alarmed(self, asset: str) -> bool:
        state = self._assets.get(asset)
        return state is not None and state.alarmed


class MaintenanceMonitor:
    """Scores each window, aggregates per asset, and publishes one alert per crossing."""

    def __init__(
        self,
        scorer: AnomalyScorer,
        aggregator: EwmaAggregator,
        publish: Publish,
        *,
        actor: str | None = None,
    ) -> None:
        self.scorer = scorer
        self.aggregator = aggregator
        self._publish = publish
        self.actor = actor

    async def observe(self, asset: str, window: NDArray[Any]) -> MaintenanceAlertV1 | None:
        """Score ``window`` for ``asset``; the alert if this window crossed the threshold.

        The model runs in a worker thread so the agent's event loop keeps serving NATS. If
        publishing fails the alarm is re-armed and the error raised: the next window retries.
        """
        Subjects.maintenance(asset)  # refuse an asset that cannot be a subject before scoring
        score = await asyncio.to_thread(self.scorer.score, window)
        update = self.aggregator.update(asset, score)
        if update.cleared:
            log.info("maintenance alarm cleared", extra={"asset": asset, "ewma": update.ewma})
        if not update.crossed:
            return None
        alert = MaintenanceAlertV1(
            actor=self.actor,
            asset=asset,
            ewma=update.ewma,
            threshold=self.aggregator.threshold,
            last_score=update.score,
            windows=update.windows,
            model_digest=self.scorer.digest,
        )
        try:
            await self._publish(alert)
        except BaseException:
            self.aggregator.rearm(asset)
            raise
        return alert


def nats_publisher(js: Any, *, timeout: float = 5.0) -> Publish:
    """Publish alerts to JetStream on ``linegate.maintenance.<asset>`` (stream MAINTENANCE)."""

    async def send(alert: MaintenanceAlertV1) -> None:
        await publish(js, Subjects.maintenance(alert.asset), alert, timeout=timeout)

    return send
