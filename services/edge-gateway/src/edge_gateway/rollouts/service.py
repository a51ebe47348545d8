"""Rollout plans and the commands on them: create, start, pause, resume, approve the next
stage, abort, roll back. Every command is audited with its actor and reason; a command that is
not valid in the rollout's state raises :class:`RolloutStateConflict` (409).

States::

    draft --start--> running --(stage met, next needs approval)--> awaiting_approval
    running <--approve-next-stage-- awaiting_approval
    running | awaiting_approval --pause--> paused --resume--> (the state it was paused in)
    running --(last stage met)--> completed
    draft | running | paused | awaiting_approval --abort (or a threshold)--> aborted
    running | paused | awaiting_approval | completed | aborted --rollback--> rolled_back

Abort stops the rollout and returns the current stage's devices to the release each had
before; rollback returns every device the rollout moved. Both commit the new state first and
move devices after, so they work whatever the devices do: a device that is offline gets its
desired state back and converges when it reconnects.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway import distribution
from edge_gateway.distribution import Gateway
from edge_gateway.errors import ReleaseRevoked
from edge_gateway.models import DesiredState, Device, Release, Rollout, RolloutDevice
from edge_gateway.rollouts import calendar
from edge_gateway.rollouts.errors import (
    RolloutInvalid,
    RolloutNotFound,
    RolloutOverlap,
    RolloutStateConflict,
)
from edge_gateway.rollouts.schemas import (
    ACTIVE_STATES,
    ASSIGNED_STATES,
    STAGE,
    AnyStage,
    CanaryStage,
    PercentStage,
    RolloutCreate,
    RolloutDeviceRead,
    RolloutStatus,
    ShadowStage,
)
from edge_gateway.schemas import Selector
from linegate.audit import AuditLog
from linegate.errors import LinegateError

ACTOR = "service:edge-gateway"
log = logging.getLogger("edge_gateway.rollouts")

Command = Literal["start", "pause", "resume", "approve", "abort", "rollback"]
#: The states each command is valid in.
ALLOWED: dict[Command, frozenset[str]] = {
    "start": frozenset({"draft"}),
    "pause": frozenset({"running", "awaiting_approval"}),
    "resume": frozenset({"paused"}),
    "approve": frozenset({"awaiting_approval"}),
    "abort": frozenset({"draft", *ACTIVE_STATES}),
    "rollback": frozenset({*ACTIVE_STATES, "completed", "aborted"}),
}
#: (device id, release it had before the rollout) of devices to move back.
Revert = list[tuple[str, str | None]]
#: A device that ran the candidate in a completed shadow stage (and no longer does).
SHADOW_DONE = "shadow_done"


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; every Linegate time is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def stage_spec(rollout: Rollout, index: int) -> AnyStage:
    return STAGE.validate_python(rollout.stages[index])


def note(
    rollout: Rollout, now: datetime, action: str, actor: str, reason: str, **extra: Any
) -> None:
    entry = {"at": now.isoformat(), "action": action, "actor": actor, "reason": reason}
    # A new list, so the JSON column is seen as changed.
    rollout.history = [*rollout.history, {**entry, "stage": rollout.stage_index, **extra}]
    rollout.updated_at = now


async def audit_note(
    session: AsyncSession,
    audit: AuditLog,
    rollout: Rollout,
    now: datetime,
    action: str,
    *,
    actor: str,
    reason: str,
    **payload: Any,
) -> None:
    """Record a rollout step in its history and in the audit log, in this transaction."""
    note(rollout, now, action, actor, reason, **payload)
    await audit.append(
        session,
        actor=actor,
        action=f"rollout.{action}",
        subject=f"rollout:{rollout.id}",
        payload={"state": rollout.state, "stage": rollout.stage_index, **payload},
        reason=reason,
    )


async def lock(session: AsyncSession, rollout_id: str) -> Rollout:
    """The rollout, locked for this transaction (commands and evaluators serialise on it)."""
    stmt = select(Rollout).where(Rollout.id == rollout_id).with_for_update()
    rollout = (await session.exec(stmt)).first()
    if rollout is None:
        raise RolloutNotFound(f"no rollout {rollout_id!r}")
    return rollout


async def rows_of(
    session: AsyncSession, rollout_id: str, stage: int | None = None
) -> list[RolloutDevice]:
    stmt = select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
    if stage is not None:
        stmt = stmt.where(RolloutDevice.stage == stage)
    return list((await session.exec(stmt.order_by(col(RolloutDevice.device_id)))).all())


async def select_devices(session: AsyncSession, selector: Selector) -> list[Device]:
    """The devices matching every criterion of ``selector``, by id."""
    stmt = select(Device).order_by(col(Device.id))
    if selector.device_ids:
        stmt = stmt.where(col(Device.id).in_(selector.device_ids))
    for field in ("plant", "line", "station"):
        value = getattr(selector, field)
        if value is not None:
            stmt = stmt.where(getattr(Device, field) == value)
    wanted = set(selector.tags)
    return [d for d in (await session.exec(stmt)).all() if wanted <= set(d.tags)]


async def desired_releases(session: AsyncSession, device_ids: list[str]) -> dict[str, str]:
    """Device id -> the release id it wants now (devices without desired state are absent)."""
    stmt = select(DesiredState).where(col(DesiredState.device_id).in_(device_ids))
    return {d.device_id: d.release_id for d in (await session.exec(stmt)).all()}


# ------------------------------------------------------------------------------ create


async def create_rollout(
    session: AsyncSession, audit: AuditLog, body: RolloutCreate, *, actor: str, now: datetime
) -> Rollout:
    release = await distribution.require_release(session, body.model, body.version)
    if release.state == "revoked":
        raise ReleaseRevoked(f"{body.model} {body.version} was revoked: {release.revoked_reason}")
    target = {d.id for d in await select_devices(session, body.selector)}
    for i, stage in enumerate(body.stages):
        if isinstance(stage, CanaryStage | ShadowStage) and (
            outside := set(stage.device_ids) - target
        ):
            raise RolloutInvalid(
                f"stage {i}: {', '.join(sorted(outside))} not among the devices the selector "
                "matches"
            )
    rollout = Rollout(
        id=uuid.uuid4().hex,
        model=body.model,
        version=body.version,
        release_id=release.id,
        selector=body.selector.model_dump(mode="json"),
        stages=[s.model_dump(mode="json") for s in body.stages],
        device_timeout_seconds=body.device_timeout_seconds,
        reason=body.reason,
        created_at=now,
        created_by=actor,
        updated_at=now,
    )
    session.add(rollout)
    await audit_note(
        session,
        audit,
        rollout,
        now,
        "created",
        actor=actor,
        reason=body.reason,
        plan=body.model_dump(mode="json"),
    )
    return rollout


# ------------------------------------------------------------------------------ stages


async def begin_stage(
    session: AsyncSession, rollout: Rollout, index: int, now: datetime
) -> list[RolloutDevice]:
    """Pick the stage's devices; they wait for their maintenance window (the evaluator
    assigns them). A device that already wants the candidate is ``skipped``. Devices that
    only shadowed the candidate in an earlier stage are free to be chosen again."""
    stage = stage_spec(rollout, index)
    target = await select_devices(session, Selector.model_validate(rollout.selector))
    existing = {rd.device_id: rd for rd in await rows_of(session, rollout.id)}
    taken = {d for d, rd in existing.items() if rd.state != SHADOW_DONE}
    free = [d for d in target if d.id not in taken]
    if isinstance(stage, PercentStage):
        # Cumulative: the stage brings the rollout to `percent` of today's target.
        want = math.ceil(len(target) * stage.percent / 100 - 1e-9)
        chosen = free[: max(0, want - (len(target) - len(free)))]
    elif stage.line is not None:
        chosen = [d for d in free if d.line == stage.line]
    elif stage.device_ids:
        chosen = [d for d in free if d.id in set(stage.device_ids)]
    else:
        chosen = free[: stage.count]
    desired = await desired_releases(session, [d.id for d in chosen])
    rows = []
    for device in chosen:
        already = desired.get(device.id) == rollout.release_id
        row = existing.get(device.id) or RolloutDevice(
            rollout_id=rollout.id, device_id=device.id, stage=index, state="waiting_window"
        )
        row.stage, row.state = index, "skipped" if already else "waiting_window"
        row.assigned_at = row.late_since = row.previous_release_id = None
        # A shadow stage's counts were judged there (and audited with its completion).
        row.shadow_inferences = row.shadow_disagreements = 0
        session.add(row)
        rows.append(row)
    rollout.stage_index, rollout.stage_started_at = index, now
    await session.flush()
    return rows


async def _check_startable(session: AsyncSession, rollout: Rollout) -> None:
    release = await session.get(Release, rollout.release_id)
    if release is None or release.state == "revoked":
        raise ReleaseRevoked(f"{rollout.model} {rollout.version} was revoked")
    target = {
        d.id for d in await select_devices(session, Selector.model_validate(rollout.selector))
    }
    if not target:
        raise RolloutInvalid("the selector matches no registered device")
    others = (
        await session.exec(
            select(Rollout).where(col(Rollout.state).in_(ACTIVE_STATES), Rollout.id != rollout.id)
        )
    ).all()
    for other in others:
        theirs = {
            d.id for d in await select_devices(session, Selector.model_validate(other.selector))
        }
        if overlap := target & theirs:
            raise RolloutOverlap(
                f"{', '.join(sorted(overlap)[:10])} are in rollout {other.id} ({other.state}); "
                "finish, abort or roll it back first",
                extra={"rollout_id": other.id},
            )


# ------------------------------------------------------------------------------ commands


async def command(
    gw: Gateway,
    rollout_id: str,
    action: Command,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> Rollout:
    """Carry out ``action``; the new state commits before any device is moved back."""
    now = now or datetime.now(UTC)
    revert: Revert = []
    async with gw.db.session() as session:
        rollout = await lock(session, rollout_id)
        if rollout.state not in ALLOWED[action]:
            raise RolloutStateConflict(
                f"cannot {action} a rollout that is {rollout.state}",
                extra={"state": rollout.state, "allowed_from": sorted(ALLOWED[action])},
            )
        before = rollout.state
        if action in ("start", "resume", "approve"):
            await distribution.refuse_frozen(
                session, rollout.model, rollout.version, f"{action} rollout {rollout.id}"
            )
        if action == "start":
            await _check_startable(session, rollout)
            rollout.state = "running"
            if not await begin_stage(session, rollout, 0, now):
                raise RolloutInvalid("the first stage selects no device")
        elif action == "pause":
            rollout.resume_state, rollout.state = rollout.state, "paused"
        elif action == "resume":
            rollout.state, rollout.resume_state = rollout.resume_state or "running", None
        elif action == "approve":
            rollout.state = "running"
            await begin_stage(session, rollout, rollout.stage_index + 1, now)
        else:
            revert = await stop(session, rollout, action, reason=reason)
        name = "approve_next_stage" if action == "approve" else action
        await audit_note(
            session, gw.audit, rollout, now, name, actor=actor, reason=reason, previous=before
        )
    if revert:
        await move_back(gw, rollout, revert, actor=actor, reason=reason)
    return rollout


async def stop(
    session: AsyncSession, rollout: Rollout, action: Literal["abort", "rollback"], *, reason: str
) -> Revert:
    """End the rollout: installs not yet made are cancelled; returns the devices to move
    back (the current stage's on abort, every stage's on rollback)."""
    rollout.state = "aborted" if action == "abort" else "rolled_back"
    rollout.resume_state = None
    if action == "abort":
        rollout.abort_reason = reason
    revert: Revert = []
    for rd in await rows_of(session, rollout.id):
        if rd.state == "waiting_window":
            rd.state = "cancelled"
            session.add(rd)
        elif rd.state in ASSIGNED_STATES and (
            action == "rollback" or rd.stage == rollout.stage_index
        ):
            revert.append((rd.device_id, rd.previous_release_id))
    return revert


async def move_back(
    gw: Gateway, rollout: Rollout, revert: Revert, *, actor: str, reason: str
) -> None:
    """Give each device back the release it had before the rollout. Devices whose desired
    state is no longer the candidate (already back, or moved on by someone else) are left
    alone; failures are recorded per device and never undo the stop. Devices shadowing the
    candidate stop doing so."""
    try:
        await distribution.set_shadow(
            gw,
            [device_id for device_id, _ in revert],
            None,
            actor=actor,
            reason=f"rollout {rollout.id} {rollout.state}: {reason}",
            only_if=rollout.release_id,
        )
    except Exception as e:  # noqa: BLE001 - the stop has committed; the devices are retried below
        log.warning("rollout %s: stopping shadows failed: %r", rollout.id, e)
    async with gw.db.session() as session:
        candidate = await session.get(Release, rollout.release_id)
        assert candidate is not None
        groups, errors = _group_by_previous(
            rollout, revert, await desired_releases(session, [d for d, _ in revert])
        )
        releases = [r for r in [await session.get(Release, p) for p in groups] if r]
    for release in releases:
        device_ids = groups[release.id]
        instruction = None
        if release.security_version < candidate.security_version:
            # Devices install a lower security_version only with a signed instruction.
            instruction = {
                "incident_id": rollout.incident_id or f"rollout-{rollout.id}",
                "approved_by": [actor],
                "reason": f"rollout {rollout.id} of {rollout.version}: {reason}",
                "from_security_version": candidate.security_version,
            }
        try:
            await distribution.assign(
                gw,
                model=release.model,
                version=release.version,
                device_ids=device_ids,
                actor=actor,
                reason=f"rollout {rollout.id} {rollout.state}: {reason}",
                rollback=instruction,
            )
        except LinegateError as e:
            errors.update(dict.fromkeys(device_ids, e.detail))
        except Exception as e:  # noqa: BLE001 - the stop has committed; report, never undo it
            log.warning("rollout %s: moving %s back failed: %r", rollout.id, device_ids, e)
            errors.update(dict.fromkeys(device_ids, f"moving back failed: {e!r}"))
    await _record_moved_back(gw, rollout, revert, errors)


def _group_by_previous(
    rollout: Rollout, revert: Revert, desired: dict[str, str]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    groups: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for device_id, previous in revert:
        now_wants = desired.get(device_id)
        if now_wants == previous:
            continue  # already back
        if now_wants != rollout.release_id:
            errors[device_id] = "desired state changed outside the rollout; left alone"
        elif previous is None:
            errors[device_id] = "the device had no release before the rollout"
        else:
            groups.setdefault(previous, []).append(device_id)
    return groups, errors


async def _record_moved_back(
    gw: Gateway, rollout: Rollout, revert: Revert, errors: dict[str, str]
) -> None:
    # What the database says the devices want is the truth, whatever failed on the way.
    async with gw.db.session() as session:
        desired = await desired_releases(session, [device_id for device_id, _ in revert])
        for device_id, previous in revert:
            rd = await session.get(RolloutDevice, (rollout.id, device_id))
            if rd is None:
                continue
            if previous is not None and desired.get(device_id) == previous:
                rd.state, rd.rollback_error = "rolled_back", errors.get(device_id)
            else:
                rd.rollback_error = errors.get(device_id, "not moved back")
            session.add(rd)


# ------------------------------------------------------------------------------ status


async def status(session: AsyncSession, rollout: Rollout, now: datetime) -> RolloutStatus:
    rows = await rows_of(session, rollout.id)
    ids = [rd.device_id for rd in rows]
    devices = {d.id: d for d in (await session.exec(select(Device).where(col(Device.id).in_(ids))))}
    previous = {rd.previous_release_id for rd in rows if rd.previous_release_id}
    versions = dict(
        (
            await session.exec(
                select(Release.id, Release.version).where(col(Release.id).in_(previous))
            )
        ).all()
    )
    calendars = (
        await calendar.load(session) if any(r.state == "waiting_window" for r in rows) else {}
    )
    reads = []
    for rd in rows:
        device = devices[rd.device_id]
        windows = calendar.windows_for(calendars, device) if rd.state == "waiting_window" else None
        reads.append(
            RolloutDeviceRead(
                device_id=rd.device_id,
                line=device.line,
                stage=rd.stage,
                state=rd.state,
                late=rd.late_since is not None,
                late_since=utc(rd.late_since),
                previous_version=versions.get(rd.previous_release_id or ""),
                assigned_at=utc(rd.assigned_at),
                reported_at=utc(rd.reported_at),
                last_report=rd.last_report,
                next_window_at=calendar.next_opening(windows, now) if windows else None,
                inferences=rd.inferences,
                reject_rate=rd.rejects / rd.inferences if rd.inferences else None,
                confidence_mean=rd.confidence_sum / rd.confidence_n if rd.confidence_n else None,
                shadow_inferences=rd.shadow_inferences,
                shadow_disagreement_rate=(
                    rd.shadow_disagreements / rd.shadow_inferences if rd.shadow_inferences else None
                ),
                rollback_error=rd.rollback_error,
            )
        )
    return RolloutStatus(
        **rollout.model_dump(),
        devices=reads,
        late_devices=[r.device_id for r in reads if r.late],
    )


def soak_left(seconds: int, since: datetime | None, now: datetime) -> timedelta:
    if since is None:
        return timedelta(seconds=seconds)
    return max(timedelta(0), since + timedelta(seconds=seconds) - now)
