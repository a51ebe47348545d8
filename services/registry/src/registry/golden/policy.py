"""What a candidate model must satisfy: :class:`ValidationPolicy` and its :class:`DefectSpec`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from registry.golden.dataset import GoldenSetError

DefectKind = Literal["scratch", "crack", "porosity", "occlusion"]
DEFECT_KINDS: tuple[DefectKind, ...] = get_args(DefectKind)

# A drop exactly equal to the tolerance (or a rate exactly at its limit) passes; this absorbs
# the float error of e.g. 0.9 < 1.0 - 0.1.
EPS = 1e-9


def _check_rate(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise GoldenSetError(f"{what} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class DefectSpec:
    """One synthetic defect to probe, and the share of defective copies the model must flag."""

    kind: DefectKind
    min_detection: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DEFECT_KINDS:
            raise GoldenSetError(
                f"unknown defect kind {self.kind!r}; choose from {', '.join(DEFECT_KINDS)}"
            )
        _check_rate(f"min_detection of defect {self.kind!r}", self.min_detection)


@dataclass(frozen=True)
class ValidationPolicy:
    """What a candidate must satisfy to pass; class names refer to the golden set's labels.

    ``critical_classes`` are only compared when :func:`validate_model` is given a baseline.
    ``tolerance`` is the largest allowed drop, baseline minus candidate, of recall and of
    precision of each critical class. ``min_recall`` sets absolute floors. ``good_class`` is
    the "no defect" class (default: the first label name); synthetic defects and lighting
    shifts are applied to its images. ``seed`` fixes the synthetic defects.
    """

    critical_classes: tuple[str, ...] = ()
    tolerance: float = 0.02
    min_recall: Mapping[str, float] = field(default_factory=dict)
    good_class: str | None = None
    defects: tuple[DefectSpec, ...] = tuple(DefectSpec(kind) for kind in DEFECT_KINDS)
    lighting_shifts: tuple[float, ...] = (0.7, 1.3)
    max_lighting_flip_rate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_rate("tolerance", self.tolerance)
        for name, floor in self.min_recall.items():
            _check_rate(f"min_recall of {name!r}", floor)
        kinds = [spec.kind for spec in self.defects]
        if len(set(kinds)) != len(kinds):
            raise GoldenSetError(f"defects lists a kind twice ({kinds}); give each kind once")
        for shift in self.lighting_shifts:
            if not (math.isfinite(shift) and shift > 0):
                raise GoldenSetError(f"lighting shift {shift} must be a positive factor")
        if self.max_lighting_flip_rate is not None:
            _check_rate("max_lighting_flip_rate", self.max_lighting_flip_rate)

    def good_index(self, label_names: Sequence[str]) -> int:
        """Check every class the policy names against ``label_names``; return the good class."""
        named = [
            ("critical_classes", self.critical_classes),
            ("min_recall", tuple(self.min_recall)),
            ("good_class", () if self.good_class is None else (self.good_class,)),
        ]
        for option, names in named:
            for name in names:
                if name not in label_names:
                    raise GoldenSetError(
                        f"policy {option} names class {name!r}, which the golden set does not "
                        f"have; its classes are {', '.join(map(repr, label_names))}"
                    )
        return 0 if self.good_class is None else list(label_names).index(self.good_class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "critical_classes": list(self.critical_classes),
            "tolerance": self.tolerance,
            "min_recall": dict(sorted(self.min_recall.items())),
            "good_class": self.good_class,
            "defects": [{"kind": s.kind, "min_detection": s.min_detection} for s in self.defects],
            "lighting_shifts": list(self.lighting_shifts),
            "max_lighting_flip_rate": self.max_lighting_flip_rate,
            "seed": self.seed,
        }
