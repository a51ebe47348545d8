"""Probes of failure modes golden sets rarely hold, run on copies of the good-class images.

Synthetic defects (scratch, crack, porosity, occlusion) are painted with numpy and should make
the model stop calling an image good; lighting shifts multiply the intensity and should not
change its predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from registry.golden.dataset import GoldenSet
from registry.golden.model import OnnxClassifier
from registry.golden.policy import DEFECT_KINDS, EPS, DefectKind, DefectSpec
from registry.golden.report import DefectResult, LightingResult

# Channel counts that mark which axis of a 4-D image tensor holds the channels.
_CHANNEL_COUNTS = frozenset({1, 3, 4})
# Percentiles giving the "dark" and "bright" values defects are painted with: robust to a few
# outlier pixels, and right for [0, 1] floats and 0..255 data alike.
_DARK_PERCENTILE, _BRIGHT_PERCENTILE = 1.0, 99.0
# Percentiles are taken on at most this many values, so large golden sets stay cheap.
_RANGE_SAMPLE = 1_000_000


@dataclass(frozen=True)
class _ValueRange:
    dark: float  # low percentile: what defects darken to
    bright: float  # high percentile: what scratches brighten to
    low: float  # lighting shifts clip to [low, high], the data's full range
    high: float


def _value_range(inputs: NDArray[np.float32]) -> _ValueRange:
    flat = inputs.reshape(-1)
    sample = flat[:: max(1, flat.size // _RANGE_SAMPLE)]
    dark, bright = np.percentile(sample, [_DARK_PERCENTILE, _BRIGHT_PERCENTILE])
    return _ValueRange(float(dark), float(bright), float(inputs.min()), float(inputs.max()))


def _planes(batch: NDArray[np.float32]) -> NDArray[np.float32] | None:
    """A writable ``(N, C, H, W)`` view of an image batch, or None if it is not one."""
    if batch.ndim == 3:
        return batch[:, np.newaxis]
    if batch.ndim != 4:
        return None
    if batch.shape[1] in _CHANNEL_COUNTS and batch.shape[-1] not in _CHANNEL_COUNTS:
        return batch
    return np.moveaxis(batch, -1, 1)


_Mask = Callable[[np.random.Generator, int, int], NDArray[np.bool_]]


def _scratch(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """A thin straight line at a random angle through a point in the middle of the image."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.integers(h // 4, h - h // 4), rng.integers(w // 4, w - w // 4)
    angle = rng.uniform(0.0, math.pi)
    half_width = max(0.5, min(h, w) / 128)
    mask: NDArray[np.bool_] = (
        np.abs((xx - cx) * math.sin(angle) - (yy - cy) * math.cos(angle)) <= half_width
    )
    return mask


def _crack(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """A jagged random walk of unit steps both ways from a point in the middle of the image."""
    mask = np.zeros((h, w), dtype=bool)
    start = np.array([rng.uniform(h / 4, 3 * h / 4), rng.uniform(w / 4, 3 * w / 4)])
    heading, steps = rng.uniform(0.0, 2 * math.pi), max(h, w) // 2 + 1
    for direction in (heading, heading + math.pi):
        angles = direction + rng.normal(0.0, 0.6, steps)
        path = start + np.cumsum(np.stack([np.sin(angles), np.cos(angles)], axis=1), axis=0)
        points = np.rint(np.vstack([start, path])).astype(int)
        inside = (points[:, 0] >= 0) & (points[:, 0] < h) & (points[:, 1] >= 0) & (points[:, 1] < w)
        mask[points[inside, 0], points[inside, 1]] = True
    return mask


def _porosity(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """Three to seven small round pores (radius 2-5% of the image, at least one pixel)."""
    count = int(rng.integers(3, 8))
    radius = np.maximum(0.5, rng.uniform(0.02, 0.05, count) * min(h, w))
    cy, cx = rng.integers(0, h, count), rng.integers(0, w, count)
    yy, xx = np.mgrid[0:h, 0:w]
    distance = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
    mask: NDArray[np.bool_] = (distance <= radius[:, None, None] ** 2).any(axis=0)
    return mask


def _occlusion(rng: np.random.Generator, h: int, w: int) -> NDArray[np.bool_]:
    """A rectangle covering 20-30% of the image, of random aspect ratio and position."""
    area, aspect = rng.uniform(0.2, 0.3) * h * w, rng.uniform(0.5, 2.0)
    height = min(h, max(1, round(math.sqrt(area * aspect))))
    width = min(w, max(1, round(area / height)))
    top, left = rng.integers(0, h - height + 1), rng.integers(0, w - width + 1)
    mask = np.zeros((h, w), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


_DEFECTS: Mapping[DefectKind, tuple[_Mask, bool]] = {  # kind -> (mask, painted bright?)
    "scratch": (_scratch, True),
    "crack": (_crack, False),
    "porosity": (_porosity, False),
    "occlusion": (_occlusion, False),
}


@dataclass(frozen=True)
class Probe:
    """The good images and what the probes need to perturb them and judge the result."""

    model: OnnxClassifier
    inputs: NDArray[np.float32]  # all golden inputs; only good rows are ever copied
    rows: NDArray[np.intp]  # indices of the good images
    predictions: NDArray[np.int64]  # the model's predictions on the unperturbed good images
    good_index: int
    good_name: str
    values: _ValueRange
    batch_size: int
    unmeasurable: str | None  # why the probes cannot run, if they cannot

    def batches(self) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
        """Fresh copies of the good images, batch by batch, with their predictions."""
        for start in range(0, len(self.rows), self.batch_size):
            stop = start + self.batch_size
            yield self.inputs[self.rows[start:stop]], self.predictions[start:stop]


def probe_defect(probe: Probe, spec: DefectSpec, seed: int) -> tuple[DefectResult, str | None]:
    """Paint one defect kind on copies of the good images; the result and a failure reason."""
    images = detected = 0
    if probe.unmeasurable is None:
        mask_of, bright = _DEFECTS[spec.kind]
        value = probe.values.bright if bright else probe.values.dark
        # One generator per kind, drawn image by image: results depend neither on the batch
        # size nor on which other kinds the policy lists.
        rng = np.random.default_rng([seed, DEFECT_KINDS.index(spec.kind)])
        for batch, _ in probe.batches():
            planes = _planes(batch)
            assert planes is not None  # unmeasurable says otherwise
            _, _, h, w = planes.shape
            for image in planes:
                image[:, mask_of(rng, h, w)] = value
            detected += int((probe.model.predict(batch) != probe.good_index).sum())
        images = len(probe.rows)
    rate = detected / images if images else 0.0
    passed = rate >= spec.min_detection - EPS and (images > 0 or spec.min_detection == 0)
    result = DefectResult(spec.kind, images, detected, rate, spec.min_detection, passed)
    if passed:
        return result, None
    if images == 0:
        return result, f"synthetic defect {spec.kind!r} could not be measured: {probe.unmeasurable}"
    return result, (
        f"synthetic defect {spec.kind!r} detection rate {rate:.3f} < min_detection "
        f"{spec.min_detection:.3f} ({detected} of {images} defective {probe.good_name!r} "
        f"images flagged)"
    )


def probe_lighting(
    probe: Probe, shift: float, limit: float | None
) -> tuple[LightingResult, str | None]:
    """Multiply the good images' intensity by shift; count changed predictions."""
    flipped = 0
    for batch, predictions in probe.batches():
        shifted = np.clip(batch * np.float32(shift), probe.values.low, probe.values.high)
        flipped += int((probe.model.predict(shifted) != predictions).sum())
    images = len(probe.rows)
    rate = flipped / images if images else 0.0
    passed = limit is None or (images > 0 and rate <= limit + EPS)
    result = LightingResult(shift, images, flipped, rate, passed)
    if passed:
        return result, None
    if images == 0:
        return result, (
            f"lighting shift x{shift:.2f} could not be measured: the golden set has no "
            f"{probe.good_name!r} images"
        )
    return result, (
        f"lighting shift x{shift:.2f} changed the prediction of {flipped} of {images} "
        f"{probe.good_name!r} images (flip rate {rate:.3f} > max {limit:.3f})"
    )


def prepare_probe(
    model: OnnxClassifier,
    golden: GoldenSet,
    predictions: NDArray[np.int64],
    good_index: int,
    batch_size: int,
) -> Probe:
    good_name = golden.label_names[good_index]
    rows = np.flatnonzero(golden.labels == good_index)
    unmeasurable = None
    if len(rows) == 0:
        unmeasurable = f"the golden set has no {good_name!r} images"
    elif _planes(golden.inputs) is None:
        unmeasurable = (
            f"golden inputs of shape {golden.inputs.shape} are not images (N, C, H, W) or "
            f"(N, H, W, C)"
        )
    return Probe(
        model=model,
        inputs=golden.inputs,
        rows=rows,
        predictions=predictions[rows],
        good_index=good_index,
        good_name=good_name,
        values=_value_range(golden.inputs),
        batch_size=batch_size,
        unmeasurable=unmeasurable,
    )
