"""Incident actions and evidence freezes from the incident service, carried out on devices.

The incident service publishes ``IncidentActionV1`` on ``linegate.incident.action.<kind>``
once the people it needs approved the action; the gateway carries it out once (by
``action_id``), audits it, and reports ``IncidentActionResultV1`` on
``linegate.incident.action_result`` through the outbox, in the same transaction:

- ``rollback``: the devices of ``line`` (every line when ``None``; or ``device_ids``) that
  want or run ``model`` ``version`` get ``target_version``, with a signed rollback instruction
  naming the incident and its approvers when that has a lower security_version (the only way a
  device installs it). Rollouts of the version that hold those devices are aborted first, so no
  stage re-installs it.
- ``manual_inspection`` / ``resume_automatic`` / ``raise_threshold``: a device control in the
  devices' signed desired state (:func:`edge_gateway.distribution.set_control`); the agent
  verifies it like any release metadata and its local inference API obeys it. The control
  stays across release changes until another action changes it.

``EvidenceFreezeV1`` on ``linegate.incident.freeze`` freezes a version (``frozen=True``) until
the same incident releases it: meanwhile nothing assigns it and no rollout of it starts,
resumes, advances or installs (409 problem+json naming the incident).

Actions are authenticated end to end, not only confined by NATS permissions: the message is a
DSSE envelope (payloadType ``application/vnd.linegate.incident-action+json``, payload the
``IncidentActionV1`` JSON) that must verify against the pinned incident-service key
(``LINEGATE_INCIDENT_ACTION_KEY``, default ``<data dir>/keys/incident-action.pub.pem``). Refused,
logged and audited (``incident_action.refused``, actor ``service:edge-gateway``, with the
reason), and nothing changes on any device:

- unsigned, not an envelope, another payloadType, tampered, signed by another key, or no key
  pinned: nothing in it can be trusted, so no result is reported for the action id it claims;
- a genuine action on another kind's subject: no result (the genuine delivery decides);
- a genuine action whose ``action_id`` was already handled (a replay; a JetStream
  redelivery of the same message is not one and just returns the first result);
- a genuine action issued (``occurred_at``) more than ``incident_action_max_age_seconds``
  ago, or more than five minutes ahead of the gateway's clock: recorded as ``refused`` and
  reported as ``failed`` with the reason, so the responder sees it and can propose it anew.

A device cannot publish on ``linegate.incident.>`` (``linegate.nats_auth``); the action's
approvers travel into the signed instruction, so what a device obeys names who approved it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlmodel import col, select

from edge_gateway import distribution
from edge_gateway.distribution import Gateway
from edge_gateway.models import (
    DesiredState,
    Device,
    FrozenVersion,
    IncidentAction,
    Release,
    Rollout,
    RolloutDevice,
)
from edge_gateway.rollouts import service as rollout_service
from edge_gateway.rollouts.schemas import ACTIVE_STATES
from linegate.errors import LinegateError
from linegate.events import (
    EvidenceFreezeV1,
    IncidentActionResultV1,
    IncidentActionV1,
    Subjects,
)
from linegate.outbox import enqueue
from linegate.signing import (
    PublicKey,
    SignatureError,
    b64decode_any,
    dsse_verify,
    key_id,
    load_public_key,
)

log = logging.getLogger("edge_gateway.incidents")
#: Results are named after their action, so a redelivered action cannot report twice.
_RESULT_NS = uuid.UUID("5d6c1d55-7a43-4c1e-9b47-0f6a1c3e2d10")
ACTOR = "service:edge-gateway"
#: How far ahead of the gateway's clock a signed issue time may be (clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)


class ActionFailed(Exception):
    """The action cannot be carried out as asked; the message goes into the result."""


class ActionRefused(Exception):
    """A message on an action subject the gateway will not carry out; ``reason`` says why.

    ``action`` is the action when its signature verified (``authentic``) or, otherwise, what
    the message claims (never trusted, kept for the audit entry). ``final``: the genuine
    action is settled by the refusal (recorded, and reported back as failed).
    """

    def __init__(
        self,
        reason: str,
        *,
        action: IncidentActionV1 | None = None,
        authentic: bool = False,
        final: bool = False,
        key_ids: list[str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.action = action
        self.authentic = authentic
        self.final = final
        self.key_ids = key_ids or []


def pinned_key(gw: Gateway) -> PublicKey:
    """The incident service's public key, read from its pinned file at each action."""
    path = gw.settings.incident_action_key_path
    try:
        return load_public_key(path.read_bytes())
    except (OSError, SignatureError) as e:
        raise ActionRefused(
            f"no incident-service key pinned at {path} (LINEGATE_INCIDENT_ACTION_KEY): {e}"
        ) from e


def _claimed(data: Any) -> IncidentActionV1 | None:
    """What an unverified message says it is, for the audit entry (never acted on)."""
    try:
        if isinstance(data, Mapping) and isinstance(data.get("payload"), str):
            data = json.loads(b64decode_any(data["payload"]))
        return IncidentActionV1.model_validate(data)
    except (ValueError, SignatureError):  # pydantic's ValidationError is a ValueError
        return None


def verify_action(gw: Gateway, subject: str, raw: bytes) -> IncidentActionV1:
    """The action in ``raw`` if it is a DSSE envelope of an incident action signed by the
    pinned incident-service key, for ``subject``; :class:`ActionRefused` otherwise."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ActionRefused(f"unsigned: not JSON ({e})") from e
    if not isinstance(data, dict) or "payloadType" not in data or "signatures" not in data:
        raise ActionRefused(
            "unsigned: not a DSSE envelope (incident actions must be signed by the incident "
            "service)",
            action=_claimed(data),
        )
    signatures = data["signatures"] if isinstance(data["signatures"], list) else []
    key_ids = [str(e["keyid"]) for e in signatures if isinstance(e, dict) and e.get("keyid")]
    claimed = _claimed(data)
    try:
        key = pinned_key(gw)
    except ActionRefused as e:
        raise ActionRefused(e.reason, action=claimed, key_ids=key_ids) from e
    try:
        verified = dsse_verify(data, [key])
    except SignatureError as e:
        raise ActionRefused(
            f"bad signature: {e} (the pinned incident-service key is {key_id(key)[:16]})",
            action=claimed,
            key_ids=key_ids,
        ) from e
    if verified.payload_type != IncidentActionV1.PAYLOAD_TYPE:
        raise ActionRefused(
            f"payloadType {verified.payload_type!r} is not {IncidentActionV1.PAYLOAD_TYPE!r}",
            action=claimed,
            key_ids=key_ids,
        )
    try:
        action = IncidentActionV1.model_validate_json(verified.payload)
    except ValueError as e:
        raise ActionRefused(f"signed payload is not an incident action: {e}") from e
    if subject != Subjects.incident_action(action.action):
        raise ActionRefused(
            f"a {action.action} action on {subject}, not {Subjects.incident_action(action.action)}",
            action=action,
            authentic=True,
            key_ids=key_ids,
        )
    return action


def check_fresh(gw: Gateway, action: IncidentActionV1, now: datetime) -> None:
    """:class:`ActionRefused` (final) when ``action`` was issued outside the window."""
    issued = action.occurred_at
    if issued.tzinfo is None:  # a time without an offset is UTC, as Linegate writes them
        issued = issued.replace(tzinfo=UTC)
    window = timedelta(seconds=gw.settings.incident_action_max_age_seconds)
    if issued < now - window:
        reason = (
            f"stale: issued at {issued:%Y-%m-%dT%H:%M:%SZ}, more than "
            f"{window.total_seconds():g} s ago (LINEGATE_INCIDENT_ACTION_MAX_AGE_SECONDS)"
        )
    elif issued > now + MAX_CLOCK_SKEW:
        reason = f"issued in the future ({issued:%Y-%m-%dT%H:%M:%SZ}): check the clocks"
    else:
        return
    raise ActionRefused(reason, action=action, authentic=True, final=True)


def _actor(action: IncidentActionV1) -> str:
    return action.actor or action.approved_by[-1]


def _approvers(action: IncidentActionV1) -> list[str]:
    return list(dict.fromkeys(action.approved_by))  # distinct, in order


async def _targets(gw: Gateway, action: IncidentActionV1) -> dict[str, Release | None]:
    """Device id -> the release of ``action.model`` it wants, for the devices the action
    names that want or report running ``model`` (``version``, when given)."""

    def matches(model: str | None, version: str | None) -> bool:
        return model == action.model and (action.version is None or version == action.version)

    async with gw.db.session() as session:
        stmt = select(Device, DesiredState, Release).join(
            DesiredState, col(DesiredState.device_id) == col(Device.id), isouter=True
        )
        stmt = stmt.join(
            Release, col(Release.id) == col(DesiredState.release_id), isouter=True
        ).order_by(col(Device.id))
        if action.line is not None:
            stmt = stmt.where(Device.line == action.line)
        if action.device_ids:
            stmt = stmt.where(col(Device.id).in_(action.device_ids))
        out: dict[str, Release | None] = {}
        for device, _, release in (await session.exec(stmt)).all():
            wants = release is not None and matches(release.model, release.version)
            if wants or matches(device.active_model, device.active_version):
                out[device.id] = release if wants else None
        return out


async def _rollback(gw: Gateway, action: IncidentActionV1, targets: dict[str, Any]) -> list[str]:
    if not action.target_version:
        raise ActionFailed("a rollback needs target_version")
    async with gw.db.session() as session:
        target = await distribution.require_release(session, action.model, action.target_version)
        running = (
            await session.exec(
                select(Rollout.id)
                .join(RolloutDevice, col(RolloutDevice.rollout_id) == col(Rollout.id))
                .where(
                    Rollout.model == action.model,
                    col(Rollout.state).in_(ACTIVE_STATES),
                    col(RolloutDevice.device_id).in_(list(targets)),
                    *([Rollout.version == action.version] if action.version else []),
                )
                .distinct()
            )
        ).all()
    reason = f"incident {action.incident_id}: {action.rationale}"
    for rollout_id in running:
        await rollout_service.command(gw, rollout_id, "abort", actor=_actor(action), reason=reason)
    # One assignment per source security_version: each instruction names what it rolls back.
    groups: dict[int, list[str]] = {}
    for device_id, source in targets.items():
        groups.setdefault(source.security_version if source else 0, []).append(device_id)
    moved: list[str] = []
    for from_sv, device_ids in sorted(groups.items()):
        instruction = None
        if target.security_version < from_sv:
            instruction = {
                "incident_id": action.incident_id,
                "approved_by": _approvers(action),
                "reason": action.rationale,
                "from_security_version": from_sv,
            }
        moved += await distribution.assign(
            gw,
            model=action.model,
            version=target.version,
            device_ids=device_ids,
            actor=_actor(action),
            reason=reason,
            rollback=instruction,
        )
    return moved


async def _control(gw: Gateway, action: IncidentActionV1, device_ids: list[str]) -> list[str]:
    mode: str | None = None
    threshold: float | None = None
    if action.action == "manual_inspection":
        mode = "manual_inspection"
    elif action.action == "resume_automatic":
        mode = "automatic"
    else:
        if action.threshold is None or not 0.0 < action.threshold <= 1.0:
            raise ActionFailed(
                f"raise_threshold needs a threshold in (0, 1], not {action.threshold}"
            )
        threshold = action.threshold
    return await distribution.set_control(
        gw,
        device_ids,
        mode=mode,
        threshold=threshold,
        incident_id=action.incident_id,
        action_id=action.action_id,
        approved_by=_approvers(action),
        actor=_actor(action),
        reason=f"incident {action.incident_id}: {action.rationale}",
    )


async def receive(
    gw: Gateway, subject: str, raw: bytes, *, redelivered: bool = False
) -> IncidentActionResultV1 | None:
    """Verify the message ``raw`` from ``subject`` and carry its action out once.

    Returns the result reported to the incident service (the first one for a redelivery),
    or ``None`` when the message was refused without one. ``redelivered``: JetStream delivers
    the same message again (the gateway stopped before its ack), which is no replay.
    """
    try:
        action = verify_action(gw, subject, raw)
        async with gw.db.session() as session:
            done = await session.get(IncidentAction, action.action_id)
        if done is not None:
            if redelivered:
                return _result(action, done.outcome, done.devices, done.detail)
            _refuse_replay(action, done)
        check_fresh(gw, action, datetime.now(UTC))
    except ActionRefused as refusal:
        return await refuse(gw, subject, raw, refusal)
    return await carry_out(gw, action)


def _refuse_replay(action: IncidentActionV1, done: IncidentAction) -> None:
    raise ActionRefused(
        f"replayed: action {action.action_id} was already handled ({done.outcome}: {done.detail})",
        action=action,
        authentic=True,
    )


async def refuse(
    gw: Gateway, subject: str, raw: bytes, refusal: ActionRefused
) -> IncidentActionResultV1 | None:
    """Log and audit ``refusal``; a final one is also recorded and reported as failed."""
    log.warning("incident action on %s refused: %s", subject, refusal.reason)
    action = refusal.action
    result = None
    async with gw.db.session() as session:
        if refusal.final and action is not None:
            if await session.get(IncidentAction, action.action_id) is not None:
                return None  # a concurrent delivery settled it
            detail = f"refused: {refusal.reason}"
            result = _result(action, "refused", [], detail)
            session.add(_record(action, "refused", [], detail))
            await enqueue(session, Subjects.INCIDENT_ACTION_RESULT, result)
        await gw.audit.append(
            session,
            actor=ACTOR,
            action="incident_action.refused",
            # Filed under the incident only when the incident service really signed it: a
            # forged message must not write into a real incident's audit trail.
            subject=(
                f"incident:{action.incident_id}"
                if action and refusal.authentic
                else f"nats:{subject}"
            ),
            payload={
                "nats_subject": subject,
                "sha256": hashlib.sha256(raw).hexdigest(),
                "authentic": refusal.authentic,
                "signature_key_ids": refusal.key_ids,
                # Unless authentic, only what the message claims: nothing of it was acted on.
                "action": action.model_dump(mode="json") if action else None,
            },
            reason=refusal.reason,
        )
    if result is not None and gw.outbox_wake is not None:
        gw.outbox_wake()
    return result


async def carry_out(gw: Gateway, action: IncidentActionV1) -> IncidentActionResultV1:
    """Carry out ``action`` (verified by :func:`receive`) once; a repeated ``action_id``
    returns the first result."""
    async with gw.db.session() as session:
        done = await session.get(IncidentAction, action.action_id)
    if done is not None:
        return _result(action, done.outcome, done.devices, done.detail)
    devices: list[str] = []
    targets = await _targets(gw, action)
    if not targets:
        where = f"line {action.line}" if action.line else "any line"
        outcome = "failed"
        detail = f"no device on {where} wants or runs {action.model} {action.version or ''}"
    else:
        try:
            if action.action == "rollback":
                devices = await _rollback(gw, action, targets)
            else:
                devices = await _control(gw, action, list(targets))
            outcome, detail = "done", f"{action.action} on {len(devices)} device(s)"
        except (ActionFailed, LinegateError) as e:
            outcome, detail = "failed", str(getattr(e, "detail", e))
    result = _result(action, outcome, devices, detail)
    async with gw.db.session() as session:
        if await session.get(IncidentAction, action.action_id) is not None:
            return result  # a concurrent delivery recorded it
        session.add(_record(action, outcome, devices, detail))
        await gw.audit.append(
            session,
            actor=_actor(action),
            action=f"incident_action.{action.action}",
            subject=f"incident:{action.incident_id}",
            payload={
                **action.model_dump(mode="json"),
                "outcome": outcome,
                "devices": devices,
                "detail": detail,
            },
            reason=action.rationale,
        )
        await enqueue(session, Subjects.INCIDENT_ACTION_RESULT, result)
    if gw.outbox_wake is not None:
        gw.outbox_wake()
    return result


def _record(
    action: IncidentActionV1, outcome: str, devices: list[str], detail: str | None
) -> IncidentAction:
    """The row that settles ``action_id``: a later delivery of it returns this outcome."""
    return IncidentAction(
        action_id=action.action_id,
        incident_id=action.incident_id,
        action=action.action,
        model=action.model,
        version=action.version,
        outcome=outcome,
        devices=devices,
        detail=detail,
        received_at=datetime.now(UTC),
    )


def _result(
    action: IncidentActionV1, outcome: str, devices: list[str], detail: str | None
) -> IncidentActionResultV1:
    return IncidentActionResultV1(
        event_id=uuid.uuid5(_RESULT_NS, action.action_id).hex,
        actor="service:edge-gateway",
        action_id=action.action_id,
        incident_id=action.incident_id,
        outcome="done" if outcome == "done" else "failed",
        devices=devices,
        detail=detail,
    )


async def apply_freeze(gw: Gateway, event: EvidenceFreezeV1) -> None:
    """Freeze or release ``model`` ``version``; only the incident that froze it releases it."""
    actor = event.actor or f"incident:{event.incident_id}"
    async with gw.db.session() as session:
        freeze = await session.get(FrozenVersion, (event.model, event.version))
        if event.frozen:
            if freeze is not None and freeze.incident_id == event.incident_id:
                return
            freeze = freeze or FrozenVersion(
                model=event.model,
                version=event.version,
                incident_id=event.incident_id,
                reason=event.reason,
                frozen_at=datetime.now(UTC),
                frozen_by=actor,
            )
            freeze.incident_id, freeze.reason, freeze.frozen_by = (
                event.incident_id,
                event.reason,
                actor,
            )
            session.add(freeze)
            action = "release.frozen"
        else:
            if freeze is None or freeze.incident_id != event.incident_id:
                log.info(
                    "unfreeze of %s %s by %s ignored: not its freeze",
                    event.model,
                    event.version,
                    event.incident_id,
                )
                return
            await session.delete(freeze)
            action = "release.unfrozen"
        await gw.audit.append(
            session,
            actor=actor,
            action=action,
            subject=f"model:{event.model}@{event.version}",
            payload=event.model_dump(mode="json"),
            reason=event.reason,
        )


async def subscribe(gw: Gateway) -> list[Any]:
    """Durable consumers in queue groups (replicas share them) of actions and freezes."""
    js = gw.nats.js

    async def action_cb(msg: Any) -> None:
        try:
            await receive(gw, msg.subject, msg.data, redelivered=msg.metadata.num_delivered > 1)
            await msg.ack()
        except Exception:
            log.exception("incident action on %s failed; redelivering", msg.subject)
            await msg.nak(delay=5)

    async def freeze_cb(msg: Any) -> None:
        try:
            event = EvidenceFreezeV1.model_validate(json.loads(msg.data))
        except (ValueError, ValidationError) as e:
            log.warning("malformed evidence freeze dropped: %s", e)
            await msg.ack()
            return
        try:
            await apply_freeze(gw, event)
            await msg.ack()
        except Exception:
            log.exception("evidence freeze failed; redelivering")
            await msg.nak(delay=5)

    return [
        await js.subscribe(
            Subjects.INCIDENT_ACTION_ALL,
            queue="edge-gateway-incident-actions",
            cb=action_cb,
            manual_ack=True,
        ),
        await js.subscribe(
            Subjects.INCIDENT_FREEZE,
            queue="edge-gateway-incident-freeze",
            cb=freeze_cb,
            manual_ack=True,
        ),
    ]
