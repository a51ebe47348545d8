"""Why the device rejected a part: occlusion saliency, or the rule that fired.

:func:`occlusion_saliency` hides one cell of a coarse grid at a time and measures how much the
target class's probability drops; the cells whose occlusion costs the most are where the model
looked. Its cost is bounded and known before it runs: exactly ``grid_h * grid_w + 1`` model
evaluations (one per cell plus the unoccluded baseline), all batched into one onnxruntime run
(``max_batch`` splits them into ``ceil((cells + 1) / max_batch)`` runs to bound memory, which is
otherwise ``cells + 1`` copies of the input). The figures measured are returned in
:class:`SaliencyMeta`, so the record says what its explanation cost.

A reject that came from a deterministic check rather than the model carries a
:class:`RuleExplanation` instead. Both store themselves with ``as_dict()`` in the inference
record (:class:`linegate_cli.edge.privacy.EvidenceStore`) and leave the device with it.

Example::

    saliency, meta = occlusion_saliency(Path("model.onnx"), image, target_class=1, grid=(8, 8))
    explanation = SaliencyExplanation(saliency, meta)
    store.record(image, camera="cam-1", decision="reject", explanation=explanation)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class SaliencyError(ValueError):
    """The model or the image cannot be explained as asked; the message says what to change."""


class _Session(Protocol):
    def get_inputs(self) -> list[Any]: ...

    def get_outputs(self) -> list[Any]: ...

    def run(self, output_names: list[str] | None, feeds: dict[str, Any]) -> list[Any]: ...


@dataclass(frozen=True)
class SaliencyMeta:
    """What one explanation cost and what it was measured against."""

    grid: tuple[int, int]
    target_class: int
    #: Images the model scored: ``grid_h * grid_w + 1`` (plus padding for a fixed batch size).
    evaluations: int
    #: onnxruntime ``run`` calls (1 unless ``max_batch`` or a fixed model batch splits them).
    runs: int
    elapsed_ms: float
    baseline_score: float
    fill: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "grid": list(self.grid),
            "target_class": self.target_class,
            "evaluations": self.evaluations,
            "runs": self.runs,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "baseline_score": self.baseline_score,
            "fill": list(self.fill),
        }


@dataclass(frozen=True)
class SaliencyExplanation:
    """An occlusion saliency map (``grid_h x grid_w``, drop in target probability per cell)."""

    saliency: NDArray[np.float32]
    meta: SaliencyMeta
    method: str = field(default="occlusion", init=False)

    @property
    def hottest_cell(self) -> tuple[int, int]:
        """``(row, col)`` of the grid cell whose occlusion lowered the score the most."""
        row, col = np.unravel_index(int(np.argmax(self.saliency)), self.saliency.shape)
        return int(row), int(col)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "saliency": [[round(float(v), 6) for v in row] for row in self.saliency],
            "hottest_cell": list(self.hottest_cell),
            **self.meta.as_dict(),
        }


@dataclass(frozen=True)
class RuleExplanation:
    """A reject decided by a deterministic check: which rule fired and on what."""

    rule: str
    detail: str
    method: str = field(default="rule", init=False)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rule": self.rule, "detail": self.detail}


def load_session(model_path: Path | str) -> _Session:
    """An onnxruntime CPU session for ``model_path`` (warnings off: devices log what matters)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session: _Session = ort.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"]
    )
    return session


def _cell_edges(size: int, cells: int) -> NDArray[np.intp]:
    edges: NDArray[np.intp] = np.linspace(0, size, cells + 1).round().astype(np.intp)
    return edges


def occlusion_saliency(
    model: _Session | Path | str,
    image: NDArray[Any],
    *,
    target_class: int,
    grid: tuple[int, int] = (8, 8),
    fill: float | Sequence[float] | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    max_batch: int | None = None,
) -> tuple[NDArray[np.float32], SaliencyMeta]:
    """Occlusion saliency of ``image`` for ``target_class``: ``(map, meta)``.

    ``image`` is ``CHW`` or ``1xCxHxW`` and is fed to the model as ``NCHW`` float32. Each cell
    of a ``grid = (rows, cols)`` partition of the image is set to ``fill`` in every channel
    (default: the image's per-channel mean, which removes local detail without adding an edge
    the model could react to); ``map[i, j]`` is the baseline score minus the score with cell
    ``(i, j)`` hidden, so positive cells supported the decision. The output read is
    ``output_name`` (default: the model's first) as ``(batch, classes)``, ``(batch, 1)`` or
    ``(batch,)``. Cost: ``rows * cols + 1`` evaluations in one run (see the module docstring).
    """
    started = time.perf_counter()
    session = model if not isinstance(model, Path | str) else load_session(model)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise SaliencyError(f"expected a CHW or 1xCxHxW image, got shape {np.shape(image)}")
    channels, height, width = x.shape
    rows, cols = grid
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise SaliencyError(f"a {rows}x{cols} grid does not fit a {height}x{width} image")
    if fill is None:
        values = x.mean(axis=(1, 2))
    else:
        values = np.broadcast_to(np.asarray(fill, dtype=np.float32), (channels,))

    cells = rows * cols
    batch = np.repeat(x[None], cells + 1, axis=0)  # index 0 stays the unoccluded baseline
    ys, xs = _cell_edges(height, rows), _cell_edges(width, cols)
    for i in range(rows):
        for j in range(cols):
            batch[1 + i * cols + j, :, ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = values[:, None, None]

    inputs = {spec.name: spec for spec in session.get_inputs()}
    name = input_name or next(iter(inputs))
    if name not in inputs:
        raise SaliencyError(f"the model has no input {name!r}; it has {sorted(inputs)}")
    fixed = inputs[name].shape[0] if inputs[name].shape else None
    chunk = cells + 1 if max_batch is None else max_batch
    if isinstance(fixed, int) and fixed > 0:
        chunk = fixed  # a model exported with a fixed batch size takes exactly that many
    if chunk < 1:
        raise SaliencyError("max_batch must be at least 1")
    outputs = [output_name] if output_name else [session.get_outputs()[0].name]

    scores: list[NDArray[np.float32]] = []
    runs = 0
    evaluations = 0
    for start in range(0, cells + 1, chunk):
        part = batch[start : start + chunk]
        real = len(part)
        if real < chunk and isinstance(fixed, int) and fixed > 0:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
        result = np.asarray(session.run(outputs, {name: part})[0], dtype=np.float32)
        scores.append(_target_scores(result, target_class)[:real])
        runs += 1
        evaluations += len(part)
    score = np.concatenate(scores)
    saliency = (score[0] - score[1:]).reshape(rows, cols).astype(np.float32)
    meta = SaliencyMeta(
        grid=(rows, cols),
        target_class=target_class,
        evaluations=evaluations,
        runs=runs,
        elapsed_ms=(time.perf_counter() - started) * 1000,
        baseline_score=float(score[0]),
        fill=tuple(float(v) for v in values),
    )
    return saliency, meta


def _target_scores(result: NDArray[np.float32], target_class: int) -> NDArray[np.float32]:
    if result.ndim == 1 or (result.ndim == 2 and result.shape[1] == 1):
        if target_class != 0:
            raise SaliencyError(f"the model outputs one score; target_class {target_class} != 0")
        return result.reshape(-1)
    if result.ndim != 2:
        raise SaliencyError(f"expected (batch, classes) scores, got shape {result.shape}")
    if not 0 <= target_class < result.shape[1]:
        raise SaliencyError(f"target_class {target_class} is not in [0, {result.shape[1]})")
    return result[:, target_class]
