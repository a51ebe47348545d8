"""Run :func:`validate_model`: golden-set metrics, baseline comparison and probes, one report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from registry.golden.dataset import GoldenSet, GoldenSetError
from registry.golden.defects import prepare_probe, probe_defect, probe_lighting
from registry.golden.model import OnnxClassifier
from registry.golden.policy import EPS, ValidationPolicy
from registry.golden.report import (
    BaselineComparison,
    ClassDelta,
    ClassMetrics,
    ValidationReport,
)


def validate_model(
    model_path: Path,
    golden: GoldenSet,
    *,
    policy: ValidationPolicy,
    baseline_model_path: Path | None = None,
    batch_size: int = 64,
) -> ValidationReport:
    """Validate the ONNX model at ``model_path`` against ``golden`` under ``policy``.

    The model's first input receives the golden inputs (cast to its dtype) ``batch_size`` rows
    at a time; its first output is either ``(batch, n_classes)`` scores (argmax is the
    prediction) or ``(batch,)`` integer labels. The report passes when no critical class
    regressed against the baseline beyond the tolerance, every recall floor is met, every
    defect kind is detected at least at its ``min_detection`` rate, and no lighting shift flips
    more good images than ``max_lighting_flip_rate``. Raises :class:`GoldenSetError` when the
    policy names unknown classes or a model does not fit the golden set.
    """
    if batch_size < 1:
        raise GoldenSetError(f"batch_size must be at least 1, got {batch_size}")
    names = golden.label_names
    good_index = policy.good_index(names)
    model = OnnxClassifier(model_path, "candidate model", golden)
    predictions = model.predict_all(golden.inputs, batch_size)
    accuracy, classes, confusion = _metrics(golden.labels, predictions, names)
    reasons: list[str] = []
    notes = [f"class {m.name!r}: {m.note}" for m in classes if m.note]

    baseline = None
    if baseline_model_path is not None:
        reference = OnnxClassifier(baseline_model_path, "baseline model", golden)
        baseline = _compare(
            accuracy, classes, golden, reference.predict_all(golden.inputs, batch_size)
        )
        reasons += _regressions(classes, baseline.classes, policy)
    elif policy.critical_classes:
        notes.append("no baseline model was given, so critical classes were not compared")
    reasons += _floors(classes, policy)

    probe = prepare_probe(model, golden, predictions, good_index, batch_size)
    if probe.values.bright <= probe.values.dark:
        notes.append("golden inputs have no value range, so synthetic defects are invisible")
    if probe.unmeasurable is not None and policy.defects:
        notes.append(f"synthetic defects were not measured: {probe.unmeasurable}")
    defects = [probe_defect(probe, spec, policy.seed) for spec in policy.defects]
    limit = policy.max_lighting_flip_rate
    lighting = [probe_lighting(probe, shift, limit) for shift in policy.lighting_shifts]
    reasons += [reason for _, reason in (*defects, *lighting) if reason is not None]

    return ValidationReport(
        passed=not reasons,
        reasons=tuple(reasons),
        samples=len(golden),
        accuracy=accuracy,
        classes=classes,
        confusion=confusion,
        good_class=probe.good_name,
        policy=policy,
        baseline=baseline,
        defects=tuple(result for result, _ in defects),
        lighting=tuple(result for result, _ in lighting),
        notes=tuple(notes),
    )


def _compare(
    accuracy: float,
    classes: tuple[ClassMetrics, ...],
    golden: GoldenSet,
    base_predictions: NDArray[np.int64],
) -> BaselineComparison:
    base_accuracy, base_classes, base_confusion = _metrics(
        golden.labels, base_predictions, golden.label_names
    )
    return BaselineComparison(
        accuracy=base_accuracy,
        classes=base_classes,
        confusion=base_confusion,
        accuracy_delta=accuracy - base_accuracy,
        deltas=tuple(
            ClassDelta(m.name, m.precision - b.precision, m.recall - b.recall)
            for m, b in zip(classes, base_classes, strict=True)
        ),
    )


def _metrics(
    labels: NDArray[np.int64], predictions: NDArray[np.int64], names: Sequence[str]
) -> tuple[float, tuple[ClassMetrics, ...], list[list[int]]]:
    k = len(names)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    support, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    classes = []
    for i, name in enumerate(names):
        notes = []
        if predicted[i] == 0:
            notes.append("never predicted; precision reported as 0.0")
        if support[i] == 0:
            notes.append("no golden samples; recall reported as 0.0")
        classes.append(
            ClassMetrics(
                name=name,
                support=int(support[i]),
                predicted=int(predicted[i]),
                precision=float(hits[i] / predicted[i]) if predicted[i] else 0.0,
                recall=float(hits[i] / support[i]) if support[i] else 0.0,
                note="; ".join(notes) or None,
            )
        )
    accuracy = float(hits.sum() / len(labels))
    return accuracy, tuple(classes), confusion.tolist()


def _regressions(
    current: Sequence[ClassMetrics], baseline: Sequence[ClassMetrics], policy: ValidationPolicy
) -> list[str]:
    reasons = []
    by_name = {m.name: (m, b) for m, b in zip(current, baseline, strict=True)}
    for name in policy.critical_classes:
        m, b = by_name[name]
        for metric, now, before in (
            ("recall", m.recall, b.recall),
            ("precision", m.precision, b.precision),
        ):
            if now < before - policy.tolerance - EPS:
                reasons.append(
                    f"critical class {name!r} {metric} {now:.3f} < baseline {before:.3f} "
                    f"- tolerance {policy.tolerance:.3f}"
                )
    return reasons


def _floors(current: Sequence[ClassMetrics], policy: ValidationPolicy) -> list[str]:
    reasons = []
    by_name = {m.name: m for m in current}
    for name, floor in policy.min_recall.items():
        m = by_name[name]
        if m.support == 0:
            reasons.append(f"class {name!r} has no golden samples, so its recall floor is unmet")
        elif m.recall < floor - EPS:
            reasons.append(f"class {name!r} recall {m.recall:.3f} < floor {floor:.3f}")
    return reasons
