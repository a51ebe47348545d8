"""Golden-set validation of a candidate model version before release (EU AI Act Art. 9 and 15).

:func:`validate_model` runs the candidate ONNX model with onnxruntime on a *golden set* (inputs
with their expected labels), computes accuracy, a confusion matrix and per-class precision and
recall, and, when the released version is given as a baseline, runs it on the same set and
checks that no *critical* class lost more recall or precision than the policy's tolerance. It
then probes failure modes the golden set rarely holds: synthetic defects (scratch, crack,
porosity, occlusion) painted with numpy onto copies of the good-class images, which the model
should no longer call good, and lighting shifts of the good images, which should not change
its predictions. Everything that failed is said in words in :attr:`ValidationReport.reasons`;
:meth:`ValidationReport.to_dict` is the JSON evidence kept with the model version.

Golden set format (:func:`load_golden_set`, written by :func:`save_golden_set`): a NumPy
``.npz`` archive, loaded with ``allow_pickle=False``, holding

- ``inputs``: float (stored as float32) or uint8, shape ``(N, ...)`` with ``N >= 1``, one model
  input per sample in the model's own layout and value range (nothing is rescaled), finite;
- ``labels``: integers, shape ``(N,)``, each in ``[0, number of classes)``, covering at least
  two classes;
- ``label_names`` (optional): unicode strings, shape ``(number of classes,)``, unique and
  non-empty, in the order of the model's class scores; defaults to ``class_0``, ``class_1``, ...

Synthetic defects and lighting shifts assume image tensors ``(N, C, H, W)`` or
``(N, H, W, C)`` (``(N, H, W)`` is one channel); with any other shape they are reported as not
measured. Errors in the data, the policy or the model raise :class:`GoldenSetError` with one
actionable sentence. Example::

    from pathlib import Path

    from linegate.testing.onnx_models import (
        build_classifier,
        build_regressing_classifier,
        labelled_batch,
    )
    from registry.golden import ValidationPolicy, load_golden_set, save_golden_set, validate_model

    images, labels = labelled_batch(20)
    save_golden_set(Path("golden.npz"), images, labels, ("ok", "scratch", "dent"))
    golden = load_golden_set(Path("golden.npz"))
    released = build_classifier(Path("released.onnx"))
    candidate = build_regressing_classifier(Path("candidate.onnx"), bad_class=1)
    report = validate_model(
        candidate,
        golden,
        policy=ValidationPolicy(critical_classes=("scratch",)),
        baseline_model_path=released,
    )
    assert not report.passed
    print(report.reasons[0])  # critical class 'scratch' recall 0.000 < baseline 1.000 - ...
"""

from registry.golden.dataset import GoldenSet, GoldenSetError, load_golden_set, save_golden_set
from registry.golden.policy import DEFECT_KINDS, DefectKind, DefectSpec, ValidationPolicy
from registry.golden.report import (
    BaselineComparison,
    ClassDelta,
    ClassMetrics,
    DefectResult,
    LightingResult,
    ValidationReport,
)
from registry.golden.runner import validate_model

__all__ = [
    "DEFECT_KINDS",
    "BaselineComparison",
    "ClassDelta",
    "ClassMetrics",
    "DefectKind",
    "DefectResult",
    "DefectSpec",
    "GoldenSet",
    "GoldenSetError",
    "LightingResult",
    "ValidationPolicy",
    "ValidationReport",
    "load_golden_set",
    "save_golden_set",
    "validate_model",
]
