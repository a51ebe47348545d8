"""Scoring a supplier's model performance commitments against its signed evidence.

A commitment (``SlaTerms.performance_commitments``: metric, optional model and slice, min and/or
max) is judged on measurements read from the supplier's *verified, unexpired* attestations:

- CycloneDX ML-BOM: ``modelCard.quantitativeAnalysis.performanceMetrics`` of each
  ``machine-learning-model`` component (``type`` is the metric, ``value`` the measured value,
  ``slice`` the slice). CycloneDX values are strings; one that is not a plain finite number
  ("0.991" is, "99 %" and "high" are not) is not scorable, and the scorecard says so.
- Linegate SLA evidence with ``term: "model-performance"``: each measurement (``metric``,
  ``measured``, optional ``slice``). The predicate's own ``committed`` and ``met`` say what the
  supplier believes it promised; the scorecard judges ``measured`` against the SLA's terms.

Names are compared ignoring case, with runs of spaces, ``-`` and ``_`` equal ("False reject
rate" = "false-reject-rate"). A commitment's ``model`` matches a measurement about:

- a CycloneDX model component whose ``name``, ``name@version``, ``group/name`` or
  ``group/name@version`` it equals;
- SLA evidence whose ``scope.model`` or ``scope.product`` (alone or ``@scope.modelVersion``), or
  one of the statement's subject names, it equals.

Without a ``model`` any of the supplier's models counts. A commitment without a ``slice``
matches only unsliced measurements; one with a slice only that slice.

The newest evidence wins: measurements are ordered by when they hold (the CycloneDX
attestation's timestamp; the end of an SLA evidence period, or its upload if earlier), newest
first. When the newest attestation holds several matching measurements (a commitment without a
model, a BOM with two models), the commitment is met only if every one of them meets it. The
status holds *since* the oldest attestation of the unbroken run of newest attestations that
gave the same status; "no evidence" holds since the last matching evidence expired, or since
the terms were set when there never was any.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from attestation.models import Attestation
from attestation.predicates import KIND_CYCLONEDX, KIND_SLA_EVIDENCE
from attestation.verification import aware_utc

Status = Literal["met", "not_met", "no_evidence"]

MODEL_PERFORMANCE_TERM: Final = "model-performance"
# Enough to say why; a BOM with hundreds of unscorable metrics would otherwise flood the card.
MAX_UNSCORABLE: Final = 5

_SEPARATORS: Final = re.compile(r"[\s_-]+")


@functools.lru_cache(maxsize=4096)  # the same few metric, model and slice names, over and over
def normalise(name: str) -> str:
    """The form names are compared in: case-folded, runs of spaces, '-' and '_' as one '-'."""
    return _SEPARATORS.sub("-", name.strip().casefold()).strip("-")


def commitment_key(metric: str, model: str | None, slice_: str | None) -> str:
    """What identifies a commitment within one SLA (and its breach): metric, model, slice."""
    return "|".join((normalise(metric), normalise(model or "") or "*", normalise(slice_ or "")))


@dataclass(frozen=True)
class Measurement:
    """One measured value of a metric, as one attestation reports it."""

    attestation: Attestation
    at: datetime
    metric: str
    reported: Any
    value: float | None
    problem: str | None
    models: frozenset[str]
    model: str | None
    slice: str | None
    unit: str | None = None

    @property
    def order(self) -> tuple[datetime, datetime, str]:
        return (self.at, aware_utc(self.attestation.created_at), self.attestation.id)


def measurements(attestation: Attestation) -> list[Measurement]:
    """The performance measurements an attestation's stored summary holds."""
    if attestation.predicate_kind == KIND_CYCLONEDX:
        return list(_cyclonedx_measurements(attestation))
    if attestation.predicate_kind == KIND_SLA_EVIDENCE:
        return list(_sla_evidence_measurements(attestation))
    return []


def _when(attestation: Attestation) -> datetime:
    return aware_utc(attestation.issued_at or attestation.created_at)


def _cyclonedx_measurements(attestation: Attestation) -> Iterator[Measurement]:
    at = _when(attestation)
    for model in _dicts(attestation.summary.get("models")):
        name, version, group = (_text(model.get(k)) for k in ("name", "version", "group"))
        names = _model_names(name, version, group)
        card = model.get("modelCard")
        analysis = card.get("quantitativeAnalysis") if isinstance(card, dict) else None
        metrics = analysis.get("performanceMetrics") if isinstance(analysis, dict) else None
        for metric in _dicts(metrics):
            metric_type = _text(metric.get("type"))
            if metric_type is None:
                continue
            value, problem = _number(metric.get("value"))
            yield Measurement(
                attestation=attestation,
                at=at,
                metric=metric_type,
                reported=metric.get("value"),
                value=value,
                problem=problem,
                models=names,
                model=f"{name}@{version}" if name and version else name,
                slice=_text(metric.get("slice")),
            )


def _sla_evidence_measurements(attestation: Attestation) -> Iterator[Measurement]:
    summary = attestation.summary
    if summary.get("term") != MODEL_PERFORMANCE_TERM:
        return
    at = _when(attestation)
    end = _time((summary.get("period") or {}).get("end"))
    if end is not None and end < at:
        at = end
    scope = summary.get("scope") or {}
    version = _text(scope.get("modelVersion"))
    names: set[str] = set()
    for key in ("model", "product"):
        names |= _model_names(_text(scope.get(key)), version, None)
    names |= {normalise(s["name"]) for s in attestation.subjects if _text(s.get("name"))}
    model = _text(scope.get("model")) or _text(scope.get("product"))
    for m in _dicts(summary.get("measurements")):
        metric = _text(m.get("metric"))
        if metric is None:
            continue
        value, problem = _number(m.get("measured"))
        yield Measurement(
            attestation=attestation,
            at=at,
            metric=metric,
            reported=m.get("measured"),
            value=value,
            problem=problem,
            models=frozenset(names),
            model=f"{model}@{version}" if model and version else model,
            slice=_text(m.get("slice")),
            unit=_text(m.get("unit")),
        )


def _model_names(name: str | None, version: str | None, group: str | None) -> frozenset[str]:
    if not name:
        return frozenset()
    bases = [name] + ([f"{group}/{name}"] if group else [])
    names = bases + ([f"{b}@{version}" for b in bases] if version else [])
    return frozenset(normalise(n) for n in names)


def _number(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return None, f"{value!r} is not a number"
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits is valid JSON
            return None, f"{str(value)[:20]}... is too large to score"
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"{value!r} is not a plain number"
    else:
        return None, "no value reported" if value is None else f"{value!r} is not a number"
    if not math.isfinite(number):
        return None, f"{value!r} is not a finite number"
    return number, None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


# ------------------------------------------------------------------------------ scoring


@dataclass
class CommitmentScore:
    """How one commitment stands: what the scorecard shows and a breach is opened from."""

    metric: str
    model: str | None
    slice: str | None
    min: float | None
    max: float | None
    status: Status
    since: datetime
    reason: str
    measured: float | None = None
    unit: str | None = None
    measured_model: str | None = None
    attestation: str | None = None
    measured_at: datetime | None = None
    unscorable: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return commitment_key(self.metric, self.model, self.slice)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "metric": self.metric,
            "model": self.model,
            "slice": self.slice,
            "min": self.min,
            "max": self.max,
            "status": self.status,
            "since": self.since.isoformat(),
            "reason": self.reason,
            "measured": self.measured,
            "unit": self.unit,
            "measured_model": self.measured_model,
            "attestation": self.attestation,
            "measured_at": self.measured_at.isoformat() if self.measured_at else None,
            "unscorable": self.unscorable,
        }


@dataclass(frozen=True)
class _Commitment:
    metric: str
    model: str | None
    slice: str | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> _Commitment:
        # Stored JSON, validated by SlaTerms when it was set; read leniently all the same.
        def bound(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if isinstance(value, int | float) else None

        return cls(
            metric=str(raw.get("metric", "")),
            model=_text(raw.get("model")),
            slice=_text(raw.get("slice")),
            min=bound("min"),
            max=bound("max"),
        )

    def matches(self, m: Measurement) -> bool:
        if normalise(m.metric) != normalise(self.metric):
            return False
        if normalise(m.slice or "") != normalise(self.slice or ""):
            return False
        return self.model is None or normalise(self.model) in m.models

    def miss(self, value: float) -> str | None:
        """Why `value` misses the commitment, or None when it meets it."""
        if self.min is not None and value < self.min:
            return f"below the committed minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"above the committed maximum {self.max:g}"
        return None

    def describe(self) -> str:
        about = self.metric + (f" of {self.model}" if self.model else "")
        return about + (f" on slice {self.slice!r}" if self.slice else "")


def score_commitments(
    commitments: Iterable[dict[str, Any]],
    evidence: Iterable[Attestation],
    *,
    now: datetime,
    terms_since: datetime,
) -> list[CommitmentScore]:
    """Score each commitment on `evidence`: the supplier's verified attestations (expired ones
    included: they say since when there is no evidence)."""
    # Indexed by (metric, slice) as compared, so each commitment looks only at its own.
    current: dict[tuple[str, str], list[Measurement]] = defaultdict(list)
    expired: dict[tuple[str, str], list[Measurement]] = defaultdict(list)
    for attestation in evidence:
        live = attestation.expires_at is None or aware_utc(attestation.expires_at) > now
        for m in measurements(attestation):
            (current if live else expired)[_name_key(m.metric, m.slice)].append(m)
    scores = []
    for raw in commitments:
        c = _Commitment.of(raw)
        key = _name_key(c.metric, c.slice)
        scores.append(
            _score(
                c, current.get(key, []), expired.get(key, []), terms_since=aware_utc(terms_since)
            )
        )
    return scores


def _name_key(metric: str, slice_: str | None) -> tuple[str, str]:
    return normalise(metric), normalise(slice_ or "")


def _score(
    c: _Commitment, current: list[Measurement], expired: list[Measurement], *, terms_since: datetime
) -> CommitmentScore:
    matching = sorted((m for m in current if c.matches(m)), key=lambda m: m.order, reverse=True)
    scorable = [(m, v) for m in matching if (v := m.value) is not None]
    unscorable = [
        {
            "attestation": m.attestation.id,
            "model": m.model,
            "value": m.reported,
            "reason": m.problem,
        }
        for m in matching
        if m.value is None
    ][:MAX_UNSCORABLE]
    base: dict[str, Any] = {
        "metric": c.metric,
        "model": c.model,
        "slice": c.slice,
        "min": c.min,
        "max": c.max,
        "unscorable": unscorable,
    }
    if not scorable:
        return _no_evidence(c, expired, unscorable, terms_since, base)

    # Group by attestation, newest first; each group is judged as a whole.
    groups: list[list[tuple[Measurement, float]]] = []
    for m, v in scorable:
        if groups and groups[-1][0][0].attestation.id == m.attestation.id:
            groups[-1].append((m, v))
        else:
            groups.append([(m, v)])
    verdicts = [_judge(c, group) for group in groups]
    status, (deciding, measured), miss = verdicts[0]
    since = deciding.at
    for other, (m, _), _ in verdicts[1:]:
        if other != status:
            break
        since = m.at
    value = f"{measured:g}" + (f" {deciding.unit}" if deciding.unit else "")
    about = f" ({deciding.model})" if deciding.model and not c.model else ""
    if miss is None:
        miss = "meets " + " and ".join(_bounds(c)) if _bounds(c) else "reported (no bound set)"
    reason = f"{c.metric}{about} measured {value}: {miss}"
    return CommitmentScore(
        **base,
        status=status,
        since=since,
        reason=reason,
        measured=measured,
        unit=deciding.unit,
        measured_model=deciding.model,
        attestation=deciding.attestation.id,
        measured_at=deciding.at,
    )


def _judge(
    c: _Commitment, group: list[tuple[Measurement, float]]
) -> tuple[Status, tuple[Measurement, float], str | None]:
    """One attestation's matching measurements: met only if every one meets the commitment."""
    for m, value in group:
        miss = c.miss(value)
        if miss is not None:
            return "not_met", (m, value), miss
    return "met", group[0], None


def _bounds(c: _Commitment) -> list[str]:
    return ([f">= {c.min:g}"] if c.min is not None else []) + (
        [f"<= {c.max:g}"] if c.max is not None else []
    )


def _no_evidence(
    c: _Commitment,
    expired: list[Measurement],
    unscorable: list[dict[str, Any]],
    terms_since: datetime,
    base: dict[str, Any],
) -> CommitmentScore:
    lapsed = [
        aware_utc(m.attestation.expires_at)
        for m in expired
        if c.matches(m) and m.value is not None and m.attestation.expires_at is not None
    ]
    if unscorable:
        first = unscorable[0]
        reason = (
            f"no numeric evidence of {c.describe()}: attestation {first['attestation']} "
            f"reports {first['value']!r} ({first['reason']})"
        )
    elif lapsed:
        reason = f"the evidence of {c.describe()} expired"
    else:
        reason = f"no verified, unexpired attestation reports {c.describe()}"
    since = max(lapsed) if lapsed else terms_since
    return CommitmentScore(**base, status="no_evidence", since=since, reason=reason)
