"""The monitors themselves: pure functions from window sums to a verdict per monitor.

Each monitor compares the *current* window with the *reference* window of the same model
version on the same line (see :mod:`incident.monitors.service` for how the windows are chosen)
and answers ``ok``, ``firing``, ``insufficient_data`` or ``disabled``, with the figures behind
it. Firing monitors carry the :class:`~incident.signals.Signal` to raise.

- ``confidence_drift``: PSI, KS and Wasserstein of the confidence histogram;
- ``confidence_level``: the fall of mean confidence (a confidence collapse);
- ``reject_rate`` / ``override_rate``: shifts of the model's reject rate and of operators'
  overrides;
- ``input_drift:<device>/<camera>``: brightness, contrast, sharpness per camera;
- ``outcome``: escapes (and the model's pass rate and confidence) per shift: "confident but
  wrong" when escapes rise while the model passes as many parts as confidently as before;
- ``scrap``: scrap rate per shift; ``feedback``: operators reporting wrong outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident.monitors import stats
from incident.monitors.schemas import Thresholds
from incident.signals import IncidentType, Severity, Signal
from incident.telemetry.models import HIST, N_BINS, STATS

Sums = Mapping[str, float]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


@dataclass
class Verdict:
    monitor: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    incident_type: IncidentType | None = None
    severity: Severity | None = None
    device_id: str | None = None

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True)
class Group:
    model: str
    version: str
    line: str
    tier: int

    def dedup_key(self, monitor: str) -> str:
        return f"{monitor}:{self.model}:{self.version}:{self.line}"

    def severity(self, bump: int = 0) -> Severity:
        # Tier 1 (a wrong decision ships a defective safety part) starts at high.
        base = {1: 2, 2: 1, 3: 0}.get(self.tier, 1)
        return SEVERITIES[min(base + bump, len(SEVERITIES) - 1)]


@dataclass(frozen=True)
class KpiShift:
    bucket_start: datetime
    shift: str
    kpi: Sums
    #: The model's telemetry in the same shift (empty when it decided nothing then).
    telemetry: Sums


@dataclass(frozen=True)
class Windows:
    reference: Sums
    current: Sums
    #: (device, camera) -> camera sums.
    cameras_reference: Mapping[tuple[str, str], Sums]
    cameras_current: Mapping[tuple[str, str], Sums]
    kpi_reference: Sums
    kpi_current: Sequence[KpiShift]
    window: dict[str, Any]


def _rate(s: Sums, num: str, den: str) -> float | None:
    d = s.get(den, 0)
    return s.get(num, 0) / d if d else None


def _mean_conf(s: Sums) -> float | None:
    return _rate(s, "conf_sum", "conf_n")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def confidence_drift(w: Windows, t: Thresholds) -> Verdict:
    name = "confidence_drift"
    if t.psi is None and t.ks is None and t.wasserstein is None:
        return Verdict(name, "disabled", "psi, ks and wasserstein thresholds are all off")
    ref_n, cur_n = w.reference.get("conf_n", 0), w.current.get("conf_n", 0)
    if ref_n < t.min_samples or cur_n < t.min_samples:
        return Verdict(
            name,
            "insufficient_data",
            f"{int(cur_n)} current and {int(ref_n)} reference confidences, "
            f"{t.min_samples} needed in each",
        )
    ref = [w.reference.get(h, 0) for h in HIST]
    cur = [w.current.get(h, 0) for h in HIST]
    values: dict[str, Any] = {
        "psi": stats.psi(ref, cur),
        "ks": stats.ks(ref, cur),
        "wasserstein": stats.wasserstein(ref, cur, width=1.0 / N_BINS),
        "reference_n": int(ref_n),
        "current_n": int(cur_n),
        "reference_mean": _r(_mean_conf(w.reference)),
        "current_mean": _r(_mean_conf(w.current)),
    }
    crossed = [
        f"{k} {values[k]:.3f} > {limit:g}"
        for k, limit in (("psi", t.psi), ("ks", t.ks), ("wasserstein", t.wasserstein))
        if limit is not None and values[k] > limit
    ]
    values = {k: _r(v) if isinstance(v, float) else v for k, v in values.items()}
    if crossed:
        return Verdict(
            name,
            "firing",
            "confidence distribution drifted from the reference: " + ", ".join(crossed),
            values,
            "drift",
        )
    return Verdict(name, "ok", "confidence distribution matches the reference", values)


def confidence_level(w: Windows, t: Thresholds) -> Verdict:
    name = "confidence_level"
    if t.confidence_drop is None:
        return Verdict(name, "disabled", "confidence_drop is off")
    ref_n, cur_n = w.reference.get("conf_n", 0), w.current.get("conf_n", 0)
    if ref_n < t.min_samples or cur_n < t.min_samples:
        return Verdict(name, "insufficient_data", "too few confidences in a window")
    ref, cur = _mean_conf(w.reference), _mean_conf(w.current)
    assert ref is not None
    assert cur is not None
    drop = ref - cur
    values = {"reference_mean": _r(ref), "current_mean": _r(cur), "drop": _r(drop)}
    if drop > t.confidence_drop:
        return Verdict(
            name,
            "firing",
            f"mean confidence fell {drop:.3f} ({ref:.3f} -> {cur:.3f}) > {t.confidence_drop:g}",
            values,
            "confidence_collapse",
        )
    return Verdict(name, "ok", f"mean confidence {cur:.3f} (reference {ref:.3f})", values)


def reject_rate(w: Windows, t: Thresholds) -> Verdict:
    name = "reject_rate"
    if t.reject_rate_delta is None:
        return Verdict(name, "disabled", "reject_rate_delta is off")
    if w.reference.get("n", 0) < t.min_samples or w.current.get("n", 0) < t.min_samples:
        return Verdict(name, "insufficient_data", "too few inferences in a window")
    ref, cur = _rate(w.reference, "rejects", "n"), _rate(w.current, "rejects", "n")
    assert ref is not None
    assert cur is not None
    values = {"reference_rate": _r(ref), "current_rate": _r(cur), "delta": _r(cur - ref)}
    if abs(cur - ref) > t.reject_rate_delta:
        return Verdict(
            name,
            "firing",
            f"reject rate {cur:.4f} vs {ref:.4f} in the reference: "
            f"|delta| {abs(cur - ref):.4f} > {t.reject_rate_delta:g}",
            values,
            "drift",
        )
    return Verdict(name, "ok", f"reject rate {cur:.4f} (reference {ref:.4f})", values)


def override_rate(w: Windows, t: Thresholds) -> Verdict:
    name = "override_rate"
    if t.override_rate_delta is None:
        return Verdict(name, "disabled", "override_rate_delta is off")
    if w.reference.get("n", 0) < t.min_samples or w.current.get("n", 0) < t.min_samples:
        return Verdict(name, "insufficient_data", "too few inferences in a window")
    ref = _rate(w.reference, "overrides", "n")
    cur = _rate(w.current, "overrides", "n")
    assert ref is not None
    assert cur is not None
    count = int(w.current.get("overrides", 0))
    values = {
        "reference_rate": _r(ref),
        "current_rate": _r(cur),
        "overrides": count,
        "to_pass": int(w.current.get("overrides_to_pass", 0)),
        "to_reject": int(w.current.get("overrides_to_reject", 0)),
    }
    if count >= t.min_overrides and cur - ref > t.override_rate_delta:
        return Verdict(
            name,
            "firing",
            f"{count} overrides: rate {cur:.4f} vs {ref:.4f} > +{t.override_rate_delta:g}",
            values,
            "override_cluster",
        )
    return Verdict(name, "ok", f"{count} overrides, rate {cur:.4f}", values)


def input_drift(w: Windows, t: Thresholds) -> list[Verdict]:
    out: list[Verdict] = []
    for (device, camera), cur in sorted(w.cameras_current.items()):
        name = f"input_drift:{device}/{camera}"
        if t.input_shift_sd is None:
            out.append(Verdict(name, "disabled", "input_shift_sd is off", device_id=device))
            continue
        ref = w.cameras_reference.get((device, camera))
        if ref is None or ref["n"] < t.min_camera_samples or cur["n"] < t.min_camera_samples:
            out.append(
                Verdict(name, "insufficient_data", "too few images in a window", device_id=device)
            )
            continue
        values: dict[str, Any] = {"reference_n": int(ref["n"]), "current_n": int(cur["n"])}
        crossed = []
        for s in STATS:
            r = (ref["n"], ref[f"{s}_sum"], ref[f"{s}_sumsq"])
            c = (cur["n"], cur[f"{s}_sum"], cur[f"{s}_sumsq"])
            shift = stats.standardised_shift(r, c)
            values[s] = {
                "reference_mean": _r(stats.mean_sd(*r)[0]),
                "current_mean": _r(stats.mean_sd(*c)[0]),
                "shift_sd": _r(shift, 3),
            }
            if shift > t.input_shift_sd:
                crossed.append(f"{s} moved {shift:.2f} sd")
        if crossed:
            out.append(
                Verdict(
                    name,
                    "firing",
                    f"camera {camera} on {device}: "
                    + ", ".join(crossed)
                    + f" (> {t.input_shift_sd:g})",
                    values,
                    "sensor_degradation",
                    device_id=device,
                )
            )
        else:
            out.append(Verdict(name, "ok", "input statistics match", values, device_id=device))
    return out


def outcome(w: Windows, t: Thresholds, g: Group) -> Verdict:
    """Escapes per shift against the reference shifts, beside the model's own view."""
    name = "outcome"
    if t.escape_rate_min is None:
        return Verdict(name, "disabled", "escape_rate_min is off")
    base_prod = w.kpi_reference.get("produced", 0)
    judged = [k for k in w.kpi_current if k.kpi.get("produced", 0) >= t.min_produced]
    if base_prod < t.min_produced or not judged:
        return Verdict(
            name,
            "insufficient_data",
            f"{int(base_prod)} parts in the reference shifts, "
            f"{len(judged)} current shifts with {t.min_produced}+ parts",
        )
    base_rate = w.kpi_reference.get("escapes", 0) / base_prod
    limit = max(t.escape_rate_min, t.escape_factor * base_rate)
    ref_pass = _rate(w.reference, "passes", "n")
    ref_conf = _mean_conf(w.reference)
    worst: tuple[float, KpiShift] | None = None
    for k in judged:
        rate = k.kpi.get("escapes", 0) / k.kpi["produced"]
        hit = k.kpi.get("escapes", 0) >= t.min_escapes and rate >= limit
        if hit and (worst is None or rate > worst[0]):
            worst = (rate, k)
    latest = judged[-1]
    shown = worst[1] if worst else latest
    rate = shown.kpi.get("escapes", 0) / shown.kpi["produced"]
    pass_rate = _rate(shown.telemetry, "passes", "n")
    conf = _mean_conf(shown.telemetry)
    confident = (
        pass_rate is not None
        and conf is not None
        and ref_pass is not None
        and ref_conf is not None
        and pass_rate >= ref_pass - (t.reject_rate_delta or 0.05)
        and conf >= ref_conf - (t.confidence_drop or 0.1)
    )
    values = {
        "shift": shown.shift,
        "shift_start": shown.bucket_start.isoformat(),
        "produced": int(shown.kpi["produced"]),
        "escapes": int(shown.kpi.get("escapes", 0)),
        "escape_rate": _r(rate),
        "baseline_escape_rate": _r(base_rate),
        "limit": _r(limit),
        "model_pass_rate": _r(pass_rate),
        "reference_pass_rate": _r(ref_pass),
        "confidence_mean": _r(conf),
        "reference_confidence_mean": _r(ref_conf),
        "confident_but_wrong": confident,
    }
    if worst is None:
        return Verdict(
            name, "ok", f"escape rate {rate:.4f} on {shown.shift} (limit {limit:.4f})", values
        )
    why = (
        f"escapes {rate:.2%} of {int(shown.kpi['produced'])} parts on the {shown.shift} shift "
        f"(baseline {base_rate:.2%}, limit {limit:.2%})"
    )
    if confident:
        why += (
            f" while the model passed {pass_rate:.1%} at mean confidence {conf:.3f}: "
            "confident but wrong"
        )
    return Verdict(name, "firing", why, values, "defect_escape", g.severity(1 if confident else 0))


def scrap(w: Windows, t: Thresholds) -> Verdict:
    name = "scrap"
    if t.scrap_rate_delta is None:
        return Verdict(name, "disabled", "scrap_rate_delta is off")
    base_prod = w.kpi_reference.get("produced", 0)
    judged = [k for k in w.kpi_current if k.kpi.get("produced", 0) >= t.min_produced]
    if base_prod < t.min_produced or not judged:
        return Verdict(name, "insufficient_data", "too few parts in the KPI windows")
    base = w.kpi_reference.get("scrap", 0) / base_prod
    rates = [(k.kpi.get("scrap", 0) / k.kpi["produced"], k) for k in judged]
    rate, k = max(rates, key=lambda x: x[0])
    values = {"shift": k.shift, "scrap_rate": _r(rate), "baseline_scrap_rate": _r(base)}
    if rate - base > t.scrap_rate_delta:
        return Verdict(
            name,
            "firing",
            f"scrap {rate:.2%} on the {k.shift} shift vs {base:.2%} (> +{t.scrap_rate_delta:g})",
            values,
            "scrap_spike",
        )
    return Verdict(name, "ok", f"scrap {rate:.2%} (baseline {base:.2%})", values)


def feedback(w: Windows, t: Thresholds) -> Verdict:
    name = "feedback"
    if t.feedback_count is None:
        return Verdict(name, "disabled", "feedback_count is off")
    count = int(w.current.get("feedback", 0))
    values = {"reports": count, "limit": t.feedback_count}
    if count >= t.feedback_count:
        return Verdict(
            name,
            "firing",
            f"{count} operator reports of wrong outputs in the current window "
            f"(>= {t.feedback_count})",
            values,
            "operator_feedback",
        )
    return Verdict(name, "ok", f"{count} operator reports", values)


def evaluate(g: Group, w: Windows, t: Thresholds) -> list[Verdict]:
    """Every monitor's verdict for one model version on one line."""
    verdicts = [
        confidence_drift(w, t),
        confidence_level(w, t),
        reject_rate(w, t),
        override_rate(w, t),
        *input_drift(w, t),
        outcome(w, t, g),
        scrap(w, t),
        feedback(w, t),
    ]
    for v in verdicts:
        if v.firing and v.severity is None:
            v.severity = g.severity()
    return verdicts


def signal_of(g: Group, v: Verdict, window: Mapping[str, Any], now: datetime) -> Signal:
    assert v.incident_type is not None
    assert v.severity is not None
    return Signal(
        incident_type=v.incident_type,
        severity=v.severity,
        dedup_key=g.dedup_key(v.monitor),
        summary=f"{g.model} {g.version} on {g.line}: {v.detail}",
        source=f"monitor:{v.monitor.split(':', 1)[0]}",
        observed_at=now,
        line=g.line,
        device_id=v.device_id,
        model=g.model,
        version=g.version,
        evidence={
            **v.values,
            "monitor": v.monitor,
            "window": dict(window),
            # The system's NIST tier: tier 1 actions need two approvers (incidents.actions).
            "risk_tier": g.tier,
        },
    )
