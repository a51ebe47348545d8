"""Quality KPIs from device telemetry, and the thresholds that abort a rollout stage.

The agent publishes ``InferenceBatchV1`` on ``linegate.telemetry.<line>.<device_id>``; each
record names the model version that decided. The gateway keeps, per device and version, how
many inferences, rejects, manual inspections and the confidence sum (``DeviceKpi``: the
baseline), and per rollout device the same for the candidate since its install
(``RolloutDevice``). A stage's reject rate against the previous version's rate on the same
devices (else the same lines) is the scrap-rate KPI; the drop in mean confidence is the other.

A record may carry the result of a shadow candidate on the same input (``record.shadow``); the
rollout devices shadowing that candidate count those inputs and the disagreements among them:
the shadow stage's disagreement rate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway.distribution import Gateway
from edge_gateway.models import Device, DeviceKpi, Release, Rollout, RolloutDevice
from edge_gateway.rollouts.schemas import ACTIVE_STATES, Thresholds
from linegate.events import InferenceBatchV1, InferenceRecordV1, Subjects

log = logging.getLogger("edge_gateway.rollouts.kpis")

#: Device states whose candidate inferences count toward the stage.
COUNTING_STATES = ("assigned", "installing", "active")


@dataclass
class Counts:
    inferences: int = 0
    rejects: int = 0
    manual: int = 0
    confidence_sum: float = 0.0
    confidence_n: int = 0

    def add(self, other: Counts | DeviceKpi | RolloutDevice) -> None:
        self.inferences += other.inferences
        self.rejects += other.rejects
        self.manual += other.manual
        self.confidence_sum += other.confidence_sum
        self.confidence_n += other.confidence_n

    @property
    def reject_rate(self) -> float | None:
        return self.rejects / self.inferences if self.inferences else None

    @property
    def confidence_mean(self) -> float | None:
        return self.confidence_sum / self.confidence_n if self.confidence_n else None

    def values(self) -> dict[str, Any]:
        return {
            "inferences": self.inferences,
            "rejects": self.rejects,
            "manual": self.manual,
            "confidence_sum": self.confidence_sum,
            "confidence_n": self.confidence_n,
        }


def tally(records: Iterable[InferenceRecordV1]) -> dict[tuple[str, str], Counts]:
    """Counts per (model, version); records no model decided are not a model's KPI."""
    out: dict[tuple[str, str], Counts] = {}
    for r in records:
        if r.model is None or r.version is None:
            continue
        c = out.setdefault((r.model, r.version), Counts())
        c.inferences += 1
        c.rejects += r.decision == "reject"
        c.manual += r.decision == "manual_inspection"
        if r.confidence is not None:
            c.confidence_sum += r.confidence
            c.confidence_n += 1
    return out


def tally_shadow(records: Iterable[InferenceRecordV1]) -> dict[tuple[str, str], tuple[int, int]]:
    """(inputs, disagreements) per shadow candidate (model, version)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for r in records:
        if r.shadow is None:
            continue
        n, d = out.get((r.shadow.model, r.shadow.version), (0, 0))
        out[(r.shadow.model, r.shadow.version)] = (n + 1, d + (not r.shadow.agrees))
    return out


# ------------------------------------------------------------------------------ ingest


async def record_batch(gw: Gateway, subject: str, data: Mapping[str, Any]) -> int:
    """Add one telemetry message to the counters; returns the records counted. Anything but
    an inference batch (overrides, samples) is not a rollout KPI and is skipped."""
    if data.get("kind") != "telemetry.inference_batch.v1":
        return 0
    try:
        batch = InferenceBatchV1.model_validate(data)
    except ValidationError as e:
        log.warning("malformed inference batch on %s: %s", subject, e.errors()[:3])
        return 0
    # The subject is what the server let the device publish on; trust it over the payload.
    tokens = subject.split(".")
    device_id = tokens[3] if len(tokens) == 4 else None
    if batch.device_id != device_id:
        log.warning("device %s sent a batch as %s; ignored", device_id, batch.device_id)
        return 0
    tallies = tally(batch.records)
    shadows = tally_shadow(batch.records)
    if not tallies and not shadows:
        return 0
    now = datetime.now(UTC)
    async with gw.db.session() as session:
        if await session.get(Device, device_id) is None:
            return 0
        for (model, version), counts in tallies.items():
            await _add_device_kpi(session, device_id, model, version, counts, now)
            await _add_rollout_counts(session, device_id, model, version, counts)
        for (model, version), (n, disagreements) in shadows.items():
            await _add_shadow_counts(session, device_id, model, version, n, disagreements)
    return sum(c.inferences for c in tallies.values())


def _increments(table: type[DeviceKpi] | type[RolloutDevice], c: Counts) -> dict[str, Any]:
    # Increments in SQL, not read-modify-write: replicas count batches concurrently.
    return {name: getattr(table, name) + value for name, value in c.values().items()}


async def _add_device_kpi(
    session: AsyncSession, device_id: str, model: str, version: str, c: Counts, now: datetime
) -> None:
    stmt = (
        update(DeviceKpi)
        .where(
            col(DeviceKpi.device_id) == device_id,
            col(DeviceKpi.model) == model,
            col(DeviceKpi.version) == version,
        )
        .values(last_at=now, **_increments(DeviceKpi, c))
    )
    if (await session.exec(stmt)).rowcount:
        return
    # A concurrent first insert makes this fail; the message is redelivered and updates.
    session.add(
        DeviceKpi(
            device_id=device_id,
            model=model,
            version=version,
            first_at=now,
            last_at=now,
            **c.values(),
        )
    )
    await session.flush()


async def _add_rollout_counts(
    session: AsyncSession, device_id: str, model: str, version: str, c: Counts
) -> None:
    rollouts = select(Rollout.id).where(
        Rollout.model == model, Rollout.version == version, col(Rollout.state).in_(ACTIVE_STATES)
    )
    stmt = (
        update(RolloutDevice)
        .where(
            col(RolloutDevice.device_id) == device_id,
            col(RolloutDevice.rollout_id).in_(rollouts),
            col(RolloutDevice.state).in_(COUNTING_STATES),
        )
        .values(**_increments(RolloutDevice, c))
    )
    await session.exec(stmt)


async def _add_shadow_counts(
    session: AsyncSession, device_id: str, model: str, version: str, n: int, disagreements: int
) -> None:
    rollouts = select(Rollout.id).where(
        Rollout.model == model, Rollout.version == version, col(Rollout.state).in_(ACTIVE_STATES)
    )
    stmt = (
        update(RolloutDevice)
        .where(
            col(RolloutDevice.device_id) == device_id,
            col(RolloutDevice.rollout_id).in_(rollouts),
            col(RolloutDevice.state).in_(COUNTING_STATES),
        )
        .values(
            shadow_inferences=RolloutDevice.shadow_inferences + n,
            shadow_disagreements=RolloutDevice.shadow_disagreements + disagreements,
        )
    )
    await session.exec(stmt)


async def subscribe(gw: Gateway) -> Any:
    """Durable consumer of ``linegate.telemetry.>`` in a queue group shared by replicas."""

    async def telemetry_cb(msg: Any) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            log.warning("telemetry on %s is not JSON; dropped", msg.subject)
            await msg.ack()
            return
        try:
            if isinstance(data, dict):
                await record_batch(gw, msg.subject, data)
            await msg.ack()
        except Exception:
            log.exception("telemetry failed; redelivering")
            await msg.nak(delay=5)

    return await gw.nats.js.subscribe(
        Subjects.TELEMETRY_ALL,
        queue="edge-gateway-telemetry",
        cb=telemetry_cb,
        manual_ack=True,
    )


# ------------------------------------------------------------------------------ KPIs


async def _baseline(
    session: AsyncSession, rollout: Rollout, rows: Sequence[RolloutDevice], enough: int
) -> tuple[Counts, str | None, list[str]]:
    """The previous versions' counts on the stage's devices, else on their lines."""
    previous = {rd.previous_release_id for rd in rows if rd.previous_release_id}
    if not previous:
        return Counts(), None, []
    versions = sorted(
        (await session.exec(select(Release.version).where(col(Release.id).in_(previous)))).all()
    )
    kpi = select(DeviceKpi).where(
        DeviceKpi.model == rollout.model, col(DeviceKpi.version).in_(versions)
    )
    counts = Counts()
    for row in (
        await session.exec(kpi.where(col(DeviceKpi.device_id).in_([r.device_id for r in rows])))
    ).all():
        counts.add(row)
    if counts.inferences >= enough:
        return counts, "devices", versions
    places = (
        select(Device.plant, Device.line)
        .where(col(Device.id).in_([r.device_id for r in rows]))
        .distinct()
    )
    line_counts = Counts()
    for plant, line in (await session.exec(places)).all():
        on_line = select(Device.id).where(Device.plant == plant, Device.line == line)
        for row in (await session.exec(kpi.where(col(DeviceKpi.device_id).in_(on_line)))).all():
            line_counts.add(row)
    return line_counts, "lines", versions


async def stage_kpis(
    session: AsyncSession, rollout: Rollout, rows: Sequence[RolloutDevice], t: Thresholds
) -> dict[str, Any]:
    """The stage's device states, the candidate's KPIs and the baseline they compare to."""
    counted = [rd for rd in rows if rd.state not in ("skipped", "cancelled")]
    candidate = Counts()
    for rd in counted:
        candidate.add(rd)
    base, scope, versions = await _baseline(session, rollout, counted, t.kpi_min_inferences)
    failed = sum(rd.state == "failed" for rd in counted)
    judged = (
        candidate.inferences >= t.kpi_min_inferences and base.inferences >= t.kpi_min_inferences
    )
    confidence_judged = (
        candidate.confidence_n >= t.kpi_min_inferences and base.confidence_n >= t.kpi_min_inferences
    )
    shadow_n = sum(rd.shadow_inferences for rd in counted)
    shadow_d = sum(rd.shadow_disagreements for rd in counted)
    delta = drop = None
    if judged and candidate.reject_rate is not None and base.reject_rate is not None:
        delta = candidate.reject_rate - base.reject_rate
    if confidence_judged and candidate.confidence_mean is not None:
        assert base.confidence_mean is not None
        drop = base.confidence_mean - candidate.confidence_mean
    return {
        "devices": len(counted),
        "states": _count_states(counted),
        "late": sum(rd.late_since is not None for rd in counted),
        "selftest_failures": sum(rd.selftest_failed for rd in counted),
        "failed_devices_pct": 100.0 * failed / len(counted) if counted else 0.0,
        "inferences": candidate.inferences,
        "reject_rate": candidate.reject_rate,
        "confidence_mean": candidate.confidence_mean,
        "baseline": {
            "versions": versions,
            "scope": scope,
            "inferences": base.inferences,
            "reject_rate": base.reject_rate,
            "confidence_mean": base.confidence_mean,
        },
        "reject_rate_delta": delta,
        "confidence_drop": drop,
        "shadow_inferences": shadow_n,
        "shadow_disagreements": shadow_d,
        # Judged, like the other rates, only over enough inputs.
        "shadow_disagreement_rate": (
            shadow_d / shadow_n if shadow_n >= t.kpi_min_inferences else None
        ),
    }


def _count_states(rows: Sequence[RolloutDevice]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rd in rows:
        out[rd.state] = out.get(rd.state, 0) + 1
    return out


def breaches(t: Thresholds, kpis: Mapping[str, Any]) -> list[str]:
    """Every threshold the stage's KPIs cross, in words."""
    out = []
    pct = kpis["failed_devices_pct"]
    if t.max_failed_devices_pct is not None and pct > t.max_failed_devices_pct:
        out.append(f"failed devices {pct:.1f}% > {t.max_failed_devices_pct:g}%")
    selftest = kpis["selftest_failures"]
    if t.max_selftest_failures is not None and selftest > t.max_selftest_failures:
        out.append(f"self-test failures {selftest} > {t.max_selftest_failures}")
    delta, base = kpis["reject_rate_delta"], kpis["baseline"]
    if (
        t.max_reject_rate_delta is not None
        and delta is not None
        and delta > t.max_reject_rate_delta
    ):
        out.append(
            f"reject rate {kpis['reject_rate']:.4f} vs {base['reject_rate']:.4f} on "
            f"{', '.join(base['versions'])} (same {base['scope']}): "
            f"delta {delta:+.4f} > {t.max_reject_rate_delta:g}"
        )
    rate = kpis["shadow_disagreement_rate"]
    if (
        t.max_shadow_disagreement_rate is not None
        and rate is not None
        and rate > t.max_shadow_disagreement_rate
    ):
        out.append(
            f"shadow disagreement {rate:.4f} ({kpis['shadow_disagreements']} of "
            f"{kpis['shadow_inferences']} inputs) > {t.max_shadow_disagreement_rate:g}"
        )
    drop = kpis["confidence_drop"]
    if t.max_confidence_drop is not None and drop is not None and drop > t.max_confidence_drop:
        out.append(
            f"mean confidence {kpis['confidence_mean']:.3f} vs {base['confidence_mean']:.3f}: "
            f"drop {drop:.3f} > {t.max_confidence_drop:g}"
        )
    return out
