"""The rollout evaluator: installs inside maintenance windows, advances stages, aborts.

Each pass, for every running, paused or awaiting rollout (serialised on the rollout's row):

1. devices assigned longer than the device timeout without a report on the candidate are
   marked late: listed, no longer holding the stage up, still rolled back on abort;
2. the current stage's KPIs are computed (``kpis.stage_kpis``); a crossed threshold aborts the
   rollout, opens an incident (``IncidentOpenedV1`` on ``linegate.incident.opened``, through
   the outbox, in the same transaction) and moves the stage's devices back — also while
   paused or awaiting approval, since a bad model keeps deciding parts meanwhile;
3. a running stage is complete when no device waits for a window or an overdue report, one
   device runs the candidate, the soak time since the stage's last install has passed and the
   candidate made ``min_inferences``; then the next stage begins (or waits for approval),
   or the rollout completes. A stage that selected no new device is complete at once;
4. a running stage's devices whose maintenance window is open get the candidate as desired
   state (``distribution.assign``), or, in a shadow stage, as their shadow
   (``distribution.set_shadow``: their model keeps deciding; the candidate's disagreements
   are counted and abort the stage above ``max_shadow_disagreement_rate``). A completed
   shadow stage stops its devices shadowing.

While an incident holds the candidate frozen as evidence, a running rollout neither advances
nor installs (its evaluation says why); thresholds still abort it.

The clock is a parameter, so tests drive passes at chosen instants instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway import distribution
from edge_gateway.distribution import Gateway
from edge_gateway.models import Device, Release, Rollout, RolloutDevice
from edge_gateway.rollouts import calendar
from edge_gateway.rollouts.kpis import breaches, stage_kpis
from edge_gateway.rollouts.schemas import ACTIVE_STATES, ASSIGNED_STATES, AnyStage, ShadowStage
from edge_gateway.rollouts.service import (
    ACTOR,
    SHADOW_DONE,
    Revert,
    audit_note,
    begin_stage,
    desired_releases,
    lock,
    move_back,
    rows_of,
    soak_left,
    stage_spec,
    stop,
    utc,
)
from linegate.audit import AuditLog
from linegate.errors import LinegateError
from linegate.events import DeviceStatusV1, IncidentOpenedV1, Subjects
from linegate.outbox import enqueue

log = logging.getLogger("edge_gateway.rollouts")

INCIDENT_TYPE = "rollout_threshold_crossed"


@dataclass
class Pass:
    """What one pass decided inside the transaction, to carry out after it commits."""

    outcome: str
    installs: Revert = field(default_factory=list)
    revert: Revert = field(default_factory=list)
    revert_reason: str = ""
    #: Devices of a completed shadow stage, to stop shadowing the candidate.
    stop_shadow: list[str] = field(default_factory=list)


async def evaluate(gw: Gateway, *, now: datetime | None = None) -> dict[str, str]:
    """One pass over every rollout in progress; returns each one's outcome."""
    now = now or datetime.now(UTC)
    async with gw.db.session() as session:
        ids = (
            await session.exec(select(Rollout.id).where(col(Rollout.state).in_(ACTIVE_STATES)))
        ).all()
    outcomes = {}
    for rollout_id in ids:
        try:
            outcomes[rollout_id] = await evaluate_rollout(gw, rollout_id, now=now)
        except Exception as e:  # one broken rollout must not stall the others
            log.exception("evaluating rollout %s failed", rollout_id)
            outcomes[rollout_id] = f"error: {e!r}"
    return outcomes


async def evaluate_rollout(gw: Gateway, rollout_id: str, *, now: datetime) -> str:
    async with gw.db.session() as session:
        rollout = await lock(session, rollout_id)
        if rollout.state not in ACTIVE_STATES:
            return rollout.state
        step = await _decide(session, gw.audit, rollout, now)
    if step.stop_shadow:
        await distribution.set_shadow(
            gw,
            step.stop_shadow,
            None,
            actor=ACTOR,
            reason=f"rollout {rollout.id}: shadow stage complete",
            only_if=rollout.release_id,
        )
    if step.installs:
        await _install(gw, rollout, step.installs)
    if step.revert:
        await move_back(gw, rollout, step.revert, actor=ACTOR, reason=step.revert_reason)
    return step.outcome


async def _decide(session: AsyncSession, audit: AuditLog, rollout: Rollout, now: datetime) -> Pass:
    release = await session.get(Release, rollout.release_id)
    if release is None or release.state == "revoked":
        # The revocation moved the devices already (distribution.revoke); stop here.
        await stop(session, rollout, "abort", reason="the candidate release was revoked")
        await audit_note(
            session, audit, rollout, now, "aborted", actor=ACTOR, reason=rollout.abort_reason or ""
        )
        return Pass("aborted: candidate revoked")
    rows = await rows_of(session, rollout.id, rollout.stage_index)
    stage = stage_spec(rollout, rollout.stage_index)
    late = _mark_late(session, rollout, rows, now)
    if late:
        await audit_note(
            session,
            audit,
            rollout,
            now,
            "devices_late",
            actor=ACTOR,
            devices=late,
            reason=f"no report on the candidate within {rollout.device_timeout_seconds} s",
        )
    kpis = await stage_kpis(session, rollout, rows, stage.thresholds)
    crossed = breaches(stage.thresholds, kpis)
    evaluation = {"at": now.isoformat(), "stage": rollout.stage_index, "kpis": kpis}
    if crossed:
        rollout.evaluation = {**evaluation, "blocking": [], "breaches": crossed}
        return await _abort(session, audit, rollout, rows, kpis, crossed, now)
    blocking = _blocking(stage, rows, kpis, now) if rollout.state == "running" else []
    freeze = await distribution.frozen(session, rollout.model, rollout.version)
    if freeze is not None and rollout.state == "running":
        blocking.insert(
            0, f"frozen as evidence by incident {freeze.incident_id}: no advance, no installs"
        )
    rollout.evaluation = {**evaluation, "blocking": blocking, "breaches": []}
    outcome = rollout.state
    stopped: list[str] = []
    if rollout.state == "running" and not blocking:
        outcome, stopped = await _advance(session, audit, rollout, kpis, now)
    installs = (
        await _ready_to_install(session, rollout, now)
        if rollout.state == "running" and freeze is None
        else []
    )
    return Pass(outcome, installs=installs, stop_shadow=stopped)


def _mark_late(
    session: AsyncSession, rollout: Rollout, rows: list[RolloutDevice], now: datetime
) -> list[str]:
    timeout = timedelta(seconds=rollout.device_timeout_seconds)
    late = []
    for rd in rows:
        assigned = utc(rd.assigned_at)
        pending = rd.state in ("assigned", "installing") and rd.late_since is None
        if pending and assigned and now - assigned >= timeout:
            rd.late_since = now
            session.add(rd)
            late.append(rd.device_id)
    return late


def _blocking(
    stage: AnyStage,
    rows: list[RolloutDevice],
    kpis: dict[str, Any],
    now: datetime,
) -> list[str]:
    """Why the stage is not complete yet (empty: complete)."""
    counted = [rd for rd in rows if rd.state not in ("skipped", "cancelled")]
    if not counted:
        return []
    out = []
    waiting = sum(rd.state == "waiting_window" for rd in counted)
    if waiting:
        out.append(f"{waiting} device(s) wait for a maintenance window")
    pending = sum(rd.state in ("assigned", "installing") and not rd.late_since for rd in counted)
    if pending:
        out.append(f"{pending} device(s) have not reported the install yet")
    if not any(rd.state == "active" for rd in counted):
        out.append("no device of the stage runs the candidate yet")
    installed = [t for rd in counted if (t := utc(rd.assigned_at))]
    if not waiting and (left := soak_left(stage.soak_seconds, max(installed, default=None), now)):
        out.append(f"soak: {int(left.total_seconds())} s left")
    if isinstance(stage, ShadowStage):
        if kpis["shadow_inferences"] < stage.min_inferences:
            out.append(f"shadow inferences: {kpis['shadow_inferences']} of {stage.min_inferences}")
    elif kpis["inferences"] < stage.min_inferences:
        out.append(f"inferences: {kpis['inferences']} of {stage.min_inferences}")
    return out


async def _advance(
    session: AsyncSession, audit: AuditLog, rollout: Rollout, kpis: dict[str, Any], now: datetime
) -> tuple[str, list[str]]:
    """Complete the current stage; returns the outcome and the devices of a completed
    shadow stage (free to be chosen by the next stage, to stop shadowing after the commit)."""
    done = rollout.stage_index
    reason = f"stage {done} met its soak time, inference count and thresholds"
    stopped = []
    if isinstance(stage_spec(rollout, done), ShadowStage):
        for rd in await rows_of(session, rollout.id, done):
            if rd.state in ASSIGNED_STATES:
                rd.state = SHADOW_DONE
                session.add(rd)
                stopped.append(rd.device_id)
        await session.flush()
    if done + 1 >= len(rollout.stages):
        rollout.state = "completed"
        await audit_note(
            session, audit, rollout, now, "completed", actor=ACTOR, reason=reason, kpis=kpis
        )
        return "completed", stopped
    if stage_spec(rollout, done + 1).require_approval:
        rollout.state = "awaiting_approval"
        await audit_note(
            session, audit, rollout, now, "awaiting_approval", actor=ACTOR, reason=reason, kpis=kpis
        )
        return "awaiting_approval", stopped
    rows = await begin_stage(session, rollout, done + 1, now)
    await audit_note(
        session,
        audit,
        rollout,
        now,
        "stage_started",
        actor=ACTOR,
        reason=reason,
        kpis=kpis,
        devices=[rd.device_id for rd in rows],
    )
    return f"stage {rollout.stage_index} started", stopped


async def _ready_to_install(session: AsyncSession, rollout: Rollout, now: datetime) -> Revert:
    """Mark the stage's devices whose window is open as assigned (committed before the
    desired state is written, so an abort in between knows to move them back)."""
    waiting = [
        rd
        for rd in await rows_of(session, rollout.id, rollout.stage_index)
        if rd.state == "waiting_window"
    ]
    if not waiting:
        return []
    calendars = await calendar.load(session)
    ids = [rd.device_id for rd in waiting]
    devices = {d.id: d for d in (await session.exec(select(Device).where(col(Device.id).in_(ids))))}
    desired = await desired_releases(session, ids)
    out: Revert = []
    for rd in waiting:
        if not calendar.may_install(calendars, devices[rd.device_id], now):
            continue
        if desired.get(rd.device_id) == rollout.release_id:
            rd.state = "skipped"
        else:
            rd.state, rd.assigned_at = "assigned", now
            rd.previous_release_id = desired.get(rd.device_id)
            out.append((rd.device_id, rd.previous_release_id))
        session.add(rd)
    return out


async def _install(gw: Gateway, rollout: Rollout, installs: Revert) -> None:
    device_ids = [device_id for device_id, _ in installs]
    reason = f"rollout {rollout.id} stage {rollout.stage_index}"
    try:
        if isinstance(stage_spec(rollout, rollout.stage_index), ShadowStage):
            await distribution.set_shadow(
                gw, device_ids, rollout.release_id, actor=ACTOR, reason=reason + " (shadow)"
            )
        else:
            await distribution.assign(
                gw,
                model=rollout.model,
                version=rollout.version,
                device_ids=device_ids,
                actor=ACTOR,
                reason=reason,
            )
    except LinegateError as e:
        log.warning("rollout %s could not assign %s: %s", rollout.id, device_ids, e.detail)
        async with gw.db.session() as session:
            for device_id in device_ids:
                rd = await session.get(RolloutDevice, (rollout.id, device_id))
                if rd is not None and rd.state == "assigned":
                    rd.state, rd.assigned_at, rd.last_report = "waiting_window", None, e.detail
                    session.add(rd)
        return
    async with gw.db.session() as session:
        current = await session.get(Rollout, rollout.id)
        state = current.state if current else "gone"
    if state not in ACTIVE_STATES:
        # Aborted or rolled back while we assigned: its move-back may have run before our
        # assignment landed, so move these devices back ourselves.
        await move_back(gw, rollout, installs, actor=ACTOR, reason=f"the rollout was {state}")


async def _abort(
    session: AsyncSession,
    audit: AuditLog,
    rollout: Rollout,
    rows: list[RolloutDevice],
    kpis: dict[str, Any],
    crossed: list[str],
    now: datetime,
) -> Pass:
    reason = "threshold crossed: " + "; ".join(crossed)
    rollout.incident_id = f"rollout-{rollout.id}-stage{rollout.stage_index}"
    revert = await stop(session, rollout, "abort", reason=reason)
    await audit_note(
        session,
        audit,
        rollout,
        now,
        "aborted",
        actor=ACTOR,
        reason=reason,
        breaches=crossed,
        kpis=kpis,
        incident_id=rollout.incident_id,
    )
    lines = {
        d.line
        for d in (
            await session.exec(
                select(Device).where(col(Device.id).in_([rd.device_id for rd in rows]))
            )
        ).all()
    }
    await enqueue(
        session,
        Subjects.INCIDENT_OPENED,
        IncidentOpenedV1(
            actor=ACTOR,
            incident_id=rollout.incident_id,
            incident_type=INCIDENT_TYPE,
            severity="high",
            line=lines.pop() if len(lines) == 1 else None,
            model=rollout.model,
            version=rollout.version,
        ),
    )
    return Pass("aborted", revert=revert, revert_reason=reason)


# ------------------------------------------------------------------------------ reports

_REPORTED = {
    "downloaded": "installing",
    "verified": "installing",
    "self_test": "installing",
    "active": "active",
    # A shadow stage's device runs the candidate (beside its model): that is its install.
    "shadow": "active",
    "refused": "failed",
}
#: Device states a report can still change or annotate.
_TRACKED = ("assigned", "installing", "active", "failed", "rolled_back")


async def record_device_status(
    session: AsyncSession, device_id: str, status: DeviceStatusV1, now: datetime | None = None
) -> None:
    """Called by the device-status consumer, in its transaction: moves the device's place in
    the rollouts that hold it (installing, active, failed) and notes the report."""
    now = now or datetime.now(UTC)
    stmt = select(RolloutDevice, Rollout).where(
        RolloutDevice.rollout_id == Rollout.id,
        RolloutDevice.device_id == device_id,
        col(RolloutDevice.state).in_(_TRACKED),
        col(Rollout.state).in_([*ACTIVE_STATES, "completed", "aborted", "rolled_back"]),
    )
    for rd, rollout in (await session.exec(stmt)).all():
        what = f"{status.model}@{status.version}" if status.version else "metadata"
        rd.reported_at = now
        rd.last_report = f"{status.state} {what}" + (f": {status.detail}" if status.detail else "")
        session.add(rd)
        if rd.state == "rolled_back":
            rd.late_since = None  # it is back: it will converge on its own
            continue
        # A report without a version is about the metadata the device was given: ours.
        ours = status.version is None or (status.model, status.version) == (
            rollout.model,
            rollout.version,
        )
        new = _REPORTED.get(status.state)
        # A completed rollout still records a late device catching up (or failing to).
        if rollout.state not in {*ACTIVE_STATES, "completed"} or not ours or new is None:
            continue
        if status.version is None and new != "failed":
            continue
        if new == "installing" and rd.state in ("active", "failed"):
            continue
        rd.state, rd.late_since = new, None
        if new == "failed":
            rd.selftest_failed = (status.detail or "").startswith("self-test")


# ------------------------------------------------------------------------------ periodic


class RolloutEvaluator:
    """Runs :func:`evaluate` every ``interval`` seconds (0: never; tests call it directly)."""

    def __init__(
        self, gw: Gateway, *, interval: float, after_pass: Callable[[], None] | None = None
    ) -> None:
        self.gw = gw
        self.interval = interval
        self.after_pass = after_pass
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="rollout-evaluator")

    def wake(self) -> None:
        """Evaluate now rather than at the next tick (after a command)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await evaluate(self.gw)
            except Exception:
                log.exception("rollout evaluation failed; will retry")
            if self.after_pass is not None:
                self.after_pass()
