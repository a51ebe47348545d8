"""The outcome of :func:`registry.golden.validate_model`, as dataclasses with ``to_dict``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.golden.policy import DefectKind, ValidationPolicy


@dataclass(frozen=True)
class ClassMetrics:
    """Precision and recall of one class; ``note`` says when one of them is undefined."""

    name: str
    support: int  # golden samples of this class
    predicted: int  # samples the model assigned to this class
    precision: float  # 0.0 when the class is never predicted
    recall: float  # 0.0 when the class has no samples
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "support": self.support,
            "predicted": self.predicted,
            "precision": self.precision,
            "recall": self.recall,
            "note": self.note,
        }


@dataclass(frozen=True)
class ClassDelta:
    """Candidate minus baseline, per class (negative = the candidate got worse)."""

    name: str
    precision: float
    recall: float


@dataclass(frozen=True)
class BaselineComparison:
    """The baseline's metrics on the same golden set, and the candidate's deltas against them."""

    accuracy: float
    classes: tuple[ClassMetrics, ...]
    confusion: list[list[int]]
    accuracy_delta: float
    deltas: tuple[ClassDelta, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "accuracy_delta": self.accuracy_delta,
            "classes": [m.to_dict() for m in self.classes],
            "confusion": self.confusion,
            "deltas": [
                {"name": d.name, "precision": d.precision, "recall": d.recall} for d in self.deltas
            ],
        }


@dataclass(frozen=True)
class DefectResult:
    """How many defective copies of good images the model flagged as not good."""

    kind: DefectKind
    images: int
    detected: int
    detection_rate: float
    min_detection: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "images": self.images,
            "detected": self.detected,
            "detection_rate": self.detection_rate,
            "min_detection": self.min_detection,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class LightingResult:
    """How many good images changed prediction when their intensity was multiplied by shift."""

    shift: float
    images: int
    flipped: int
    flip_rate: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "images": self.images,
            "flipped": self.flipped,
            "flip_rate": self.flip_rate,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of :func:`validate_model`: ``passed`` is true exactly when ``reasons`` is empty.

    ``confusion[i][j]`` counts golden samples of class ``i`` predicted as class ``j``.
    ``notes`` hold facts worth reading that are not failures.
    """

    passed: bool
    reasons: tuple[str, ...]
    samples: int
    accuracy: float
    classes: tuple[ClassMetrics, ...]
    confusion: list[list[int]]
    good_class: str
    policy: ValidationPolicy
    baseline: BaselineComparison | None = None
    defects: tuple[DefectResult, ...] = ()
    lighting: tuple[LightingResult, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with a stable key order."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "samples": self.samples,
            "accuracy": self.accuracy,
            "good_class": self.good_class,
            "classes": [m.to_dict() for m in self.classes],
            "confusion": self.confusion,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "defects": [d.to_dict() for d in self.defects],
            "lighting": [r.to_dict() for r in self.lighting],
            "policy": self.policy.to_dict(),
        }
