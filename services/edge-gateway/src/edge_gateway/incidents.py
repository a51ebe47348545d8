"""Incident actions and evidence freezes from the incident service, carried out on devices.

The incident service publishes ``IncidentActionV1`` on ``linegate.incident.action.<kind>``
once the people it needs approved the action; the gateway carries it out once (by
``action_id``), audits it, and reports ``IncidentActionResultV1`` on
``linegate.incident.action_result`` through the outbox, in the same transaction.

Once: the action id is claimed first (an ``in_progress`` row committed on its own; the
primary key makes a second claim fail), then the action is carried out, then the row is
settled (done/failed) with the audit entry and the result. A delivery that finds the claim
held does not act: a JetStream redelivery is negatively acknowledged and comes back later
(``ActionInProgress``), anything else is a replay. A claim older than
``incident_action_claim_timeout_seconds`` (the gateway stopped mid-action) is settled as
failed and reported, at start or by its redelivery, so the responder can propose it again.

- ``rollback``: the devices of ``line`` (every line when ``None``; or ``device_ids``) that
  want or run ``model`` ``version`` get ``target_version``, with a signed rollback instruction
  naming the incident and its approvers when that has a lower security_version (the only way a
  device installs it). Rollouts of the version that hold those devices are aborted first, so no
  stage re-installs it.
- ``manual_inspection`` / ``resume_automatic`` / ``raise_threshold``: a device control in the
  devices' signed desired state (:func:`edge_gateway.distribution.set_control`); the agent
  verifies it like any release metadata and its local inference API obeys it. The control
  stays across release changes until another action changes it.

``EvidenceFreezeV1`` on ``linegate.incident.freeze`` puts the incident's hold on a version
(``frozen=True``, :class:`~edge_gateway.models.FreezeHold`); its release (``frozen=False``)
removes only that incident's hold. While any incident holds the version nothing assigns it and
no rollout of it starts, resumes, advances or installs (409 problem+json naming the
incidents). Freezes are signed and verified like actions (payloadType
``application/vnd.linegate.evidence-freeze+json``, the same key, :func:`verify_signed`) and
applied once by event id; a release issued outside the window is refused (the version stays
frozen), a freeze is applied whatever its age. Refusals are
logged and audited as ``evidence_freeze.refused``, under ``nats:<subject>`` unless authentic.

Actions are authenticated end to end, not only confined by NATS permissions: the message is a
DSSE envelope (payloadType ``application/vnd.linegate.incident-action+json``, payload the
``IncidentActionV1`` JSON) that must verify against the pinned incident-service key
(``LINEGATE_INCIDENT_ACTION_KEY``, default ``<data dir>/keys/incident-action.pub.pem``, read
once at start: :class:`PinnedKey`). Refused,
logged and audited (``incident_action.refused``, actor ``service:edge-gateway``, with the
reason), and nothing changes on any device:

- unsigned, not an envelope, another payloadType, tampered, signed by another key, or no key
  pinned: nothing in it can be trusted, so no result is reported for the action id it claims;
- a genuine action on another kind's subject: no result (the genuine delivery decides);
- a genuine action whose ``action_id`` was already handled or is being carried out (a
  replay; a JetStream redelivery of the same message is not one: it returns the first
  result, or waits while the action is in progress);
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
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from edge_gateway import distribution
from edge_gateway.distribution import Gateway
from edge_gateway.models import (
    DesiredState,
    Device,
    FreezeHold,
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
#: ``IncidentAction.outcome`` of a claimed action being carried out (the row is committed
#: before anything is done, so a second delivery cannot also act).
IN_PROGRESS = "in_progress"
#: Seconds before a delivery that found the action claimed by another is redelivered.
CLAIMED_REDELIVERY_DELAY = 5.0
#: Rows of handled evidence freezes share the action table, under this prefix + event id.
FREEZE_ROW_PREFIX = "freeze:"

Signed = TypeVar("Signed", IncidentActionV1, EvidenceFreezeV1)


class ActionFailed(Exception):
    """The action cannot be carried out as asked; the message goes into the result."""


class ActionInProgress(Exception):
    """A redelivered action another delivery claimed and is still carrying out: the message
    is negatively acknowledged and delivered again later (it then finds the result, or the
    claim gone stale: :func:`receive`)."""


class Refused(Exception):
    """A signed message (action or freeze) the gateway will not obey; ``reason`` says why.

    ``event`` is the message's event when its signature verified (``authentic``) or,
    otherwise, what the message claims (never trusted, kept for the audit entry). ``final``:
    the genuine action is settled by the refusal (recorded, and reported back as failed).
    """

    def __init__(
        self,
        reason: str,
        *,
        event: IncidentActionV1 | EvidenceFreezeV1 | None = None,
        authentic: bool = False,
        final: bool = False,
        key_ids: list[str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event = event
        self.authentic = authentic
        self.final = final
        self.key_ids = key_ids or []


#: The name this exception had when only actions were signed.
ActionRefused = Refused


class PinnedKey:
    """The incident service's public key, read once from its pinned file when the gateway
    starts (its key id is logged): replacing the file changes nothing until a restart.

    While the file is absent or unreadable every action and freeze is refused with that
    reason; each message tries the file again until it reads once (so the gateway and the
    incident service may start in either order), and from then on it is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: PublicKey | None = None
        self._error = ""
        if not self._load():
            log.warning(
                "no incident-service key at %s (LINEGATE_INCIDENT_ACTION_KEY): incident "
                "actions and evidence freezes are refused until it is there (%s)",
                path,
                self._error,
            )

    def _load(self) -> bool:
        try:
            self._key = load_public_key(self.path.read_bytes())
        except (OSError, SignatureError) as e:
            self._error = str(e)
            return False
        log.info(
            "incident-service key pinned from %s: key id %s (a change of the file takes a restart)",
            self.path,
            key_id(self._key),
        )
        return True

    @property
    def key_id(self) -> str | None:
        return key_id(self._key) if self._key is not None else None

    def get(self) -> PublicKey:
        """The pinned key; :class:`Refused` with the reason when there is none."""
        if self._key is None and not self._load():
            raise Refused(
                f"no incident-service key pinned at {self.path} "
                f"(LINEGATE_INCIDENT_ACTION_KEY): {self._error}"
            )
        assert self._key is not None  # _load set it
        return self._key


def _claimed(data: Any, model: type[Signed]) -> Signed | None:
    """What an unverified message says it is, for the audit entry (never acted on)."""
    try:
        if isinstance(data, Mapping) and isinstance(data.get("payload"), str):
            data = json.loads(b64decode_any(data["payload"]))
        return model.model_validate(data)
    except (ValueError, SignatureError):  # pydantic's ValidationError is a ValueError
        return None


def verify_signed(pinned: PinnedKey, raw: bytes, model: type[Signed], what: str) -> Signed:
    """The ``model`` event in ``raw`` if it is a DSSE envelope with ``model.PAYLOAD_TYPE``
    signed by the pinned incident-service key; :class:`Refused` otherwise. ``what`` names
    the kind of message in reasons ("incident action", "evidence freeze")."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise Refused(f"unsigned: not JSON ({e})") from e
    if not isinstance(data, dict) or "payloadType" not in data or "signatures" not in data:
        raise Refused(
            f"unsigned: not a DSSE envelope ({what}s must be signed by the incident service)",
            event=_claimed(data, model),
        )
    signatures = data["signatures"] if isinstance(data["signatures"], list) else []
    key_ids = [str(e["keyid"]) for e in signatures if isinstance(e, dict) and e.get("keyid")]
    claimed = _claimed(data, model)
    try:
        key = pinned.get()
    except Refused as e:
        raise Refused(e.reason, event=claimed, key_ids=key_ids) from e
    try:
        verified = dsse_verify(data, [key])
    except SignatureError as e:
        raise Refused(
            f"bad signature: {e} (the pinned incident-service key is {key_id(key)[:16]})",
            event=claimed,
            key_ids=key_ids,
        ) from e
    if verified.payload_type != model.PAYLOAD_TYPE:
        raise Refused(
            f"payloadType {verified.payload_type!r} is not {model.PAYLOAD_TYPE!r}",
            event=claimed,
            key_ids=key_ids,
        )
    try:
        event = model.model_validate_json(verified.payload)
    except ValueError as e:
        raise Refused(f"signed payload is not an {what}: {e}", key_ids=key_ids) from e
    return event


def verify_action(pinned: PinnedKey, subject: str, raw: bytes) -> IncidentActionV1:
    """The action in ``raw`` if it is a DSSE envelope of an incident action signed by the
    pinned incident-service key, for ``subject``; :class:`Refused` otherwise."""
    action = verify_signed(pinned, raw, IncidentActionV1, "incident action")
    if subject != Subjects.incident_action(action.action):
        raise Refused(
            f"a {action.action} action on {subject}, not {Subjects.incident_action(action.action)}",
            event=action,
            authentic=True,
        )
    return action


def _issued(event: IncidentActionV1 | EvidenceFreezeV1) -> datetime:
    issued = event.occurred_at
    if issued.tzinfo is None:  # a time without an offset is UTC, as Linegate writes them
        issued = issued.replace(tzinfo=UTC)
    return issued


def freshness_problem(
    gw: Gateway, event: IncidentActionV1 | EvidenceFreezeV1, now: datetime
) -> str | None:
    """Why ``event`` was issued outside the window (stale, or too far ahead), or ``None``."""
    issued = _issued(event)
    window = timedelta(seconds=gw.settings.incident_action_max_age_seconds)
    if issued < now - window:
        return (
            f"stale: issued at {issued:%Y-%m-%dT%H:%M:%SZ}, more than "
            f"{window.total_seconds():g} s ago (LINEGATE_INCIDENT_ACTION_MAX_AGE_SECONDS)"
        )
    if issued > now + MAX_CLOCK_SKEW:
        return f"issued in the future ({issued:%Y-%m-%dT%H:%M:%SZ}): check the clocks"
    return None


def check_fresh(gw: Gateway, action: IncidentActionV1, now: datetime) -> None:
    """:class:`Refused` (final) when ``action`` was issued outside the window."""
    reason = freshness_problem(gw, action, now)
    if reason is not None:
        raise Refused(reason, event=action, authentic=True, final=True)


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
    gw: Gateway, pinned: PinnedKey, subject: str, raw: bytes, *, redelivered: bool = False
) -> IncidentActionResultV1 | None:
    """Verify the message ``raw`` from ``subject`` and carry its action out once.

    Returns the result reported to the incident service (the first one for a redelivery),
    or ``None`` when the message was refused without one. ``redelivered``: JetStream delivers
    the same message again (the gateway stopped before its ack, or another replica is still
    carrying it out), which is no replay; while the action is claimed and its claim not
    stale, :class:`ActionInProgress` asks for a later redelivery.
    """
    try:
        action = verify_action(pinned, subject, raw)
        async with gw.db.session() as session:
            row = await session.get(IncidentAction, action.action_id)
        if row is not None:
            return await _handled(gw, action, row, redelivered=redelivered)
        check_fresh(gw, action, datetime.now(UTC))
        if not await _claim(gw, action):
            # Another delivery claimed it between the look-up and the claim.
            _being_carried_out(action, redelivered=redelivered)
    except Refused as refusal:
        return await refuse(gw, subject, raw, refusal)
    return await carry_out(gw, action)


async def _handled(
    gw: Gateway, action: IncidentActionV1, row: IncidentAction, *, redelivered: bool
) -> IncidentActionResultV1 | None:
    """A delivery of an action the gateway already claimed: nothing is carried out again."""
    if row.outcome == IN_PROGRESS:
        if _claim_stale(gw, row, datetime.now(UTC)):
            return await _interrupted(gw, row)
        _being_carried_out(action, redelivered=redelivered)
    if redelivered:
        return _result(row.action_id, row.incident_id, row.outcome, row.devices, row.detail)
    raise Refused(
        f"replayed: action {action.action_id} was already handled ({row.outcome}: {row.detail})",
        event=action,
        authentic=True,
    )


def _being_carried_out(action: IncidentActionV1, *, redelivered: bool) -> NoReturn:
    """Another delivery holds the claim: a redelivery waits, anything else is a replay."""
    if redelivered:
        raise ActionInProgress(action.action_id)
    raise Refused(
        f"replayed: action {action.action_id} is being carried out",
        event=action,
        authentic=True,
    )


def _claim_stale(gw: Gateway, row: IncidentAction, now: datetime) -> bool:
    claimed: datetime = row.received_at
    if claimed.tzinfo is None:
        claimed = claimed.replace(tzinfo=UTC)
    return claimed < now - timedelta(seconds=gw.settings.incident_action_claim_timeout_seconds)


async def refuse(
    gw: Gateway, subject: str, raw: bytes, refusal: Refused
) -> IncidentActionResultV1 | None:
    """Log and audit ``refusal``; a final one is also recorded and reported as failed."""
    log.warning("incident action on %s refused: %s", subject, refusal.reason)
    action = refusal.event if isinstance(refusal.event, IncidentActionV1) else None
    result = None
    async with gw.db.session() as session:
        if refusal.final and action is not None:
            if await session.get(IncidentAction, action.action_id) is not None:
                return None  # a concurrent delivery settled it
            detail = f"refused: {refusal.reason}"
            result = _result(action.action_id, action.incident_id, "refused", [], detail)
            session.add(_record(action, "refused", [], detail))
            await enqueue(session, Subjects.INCIDENT_ACTION_RESULT, result)
        await _audit_refusal(
            gw, session, "incident_action.refused", "action", subject, raw, refusal
        )
    if result is not None and gw.outbox_wake is not None:
        gw.outbox_wake()
    return result


async def _audit_refusal(
    gw: Gateway,
    session: Any,
    audit_action: str,
    payload_key: str,
    subject: str,
    raw: bytes,
    refusal: Refused,
) -> None:
    event = refusal.event
    await gw.audit.append(
        session,
        actor=ACTOR,
        action=audit_action,
        # Filed under the incident only when the incident service really signed it: a
        # forged message must not write into a real incident's audit trail.
        subject=(
            f"incident:{event.incident_id}" if event and refusal.authentic else f"nats:{subject}"
        ),
        payload={
            "nats_subject": subject,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "authentic": refusal.authentic,
            "signature_key_ids": refusal.key_ids,
            # Unless authentic, only what the message claims: nothing of it was acted on.
            payload_key: event.model_dump(mode="json") if event else None,
        },
        reason=refusal.reason,
    )


async def _claim(gw: Gateway, action: IncidentActionV1) -> bool:
    """Record ``action`` as in progress in its own committed transaction; False when another
    delivery (a replica, a racing replay) claimed it first (the primary key refuses)."""
    try:
        async with gw.db.session() as session:
            session.add(_record(action, IN_PROGRESS, [], "claimed; being carried out"))
    except IntegrityError:
        return False
    return True


async def carry_out(gw: Gateway, action: IncidentActionV1) -> IncidentActionResultV1:
    """Carry out ``action``, claimed by :func:`receive`, and settle its claim."""
    devices: list[str] = []
    try:
        targets = await _targets(gw, action)
        if not targets:
            where = f"line {action.line}" if action.line else "any line"
            outcome = "failed"
            detail = f"no device on {where} wants or runs {action.model} {action.version or ''}"
        else:
            if action.action == "rollback":
                devices = await _rollback(gw, action, targets)
            else:
                devices = await _control(gw, action, list(targets))
            outcome, detail = "done", f"{action.action} on {len(devices)} device(s)"
    except (ActionFailed, LinegateError) as e:
        outcome, detail = "failed", str(getattr(e, "detail", e))
    except Exception as e:
        # Settled as failed rather than retried: part of it may have been done, and the
        # responder decides whether to propose it again.
        log.exception("incident action %s failed", action.action_id)
        outcome, detail = "failed", f"error while carrying it out: {e!r}"
    result = _result(action.action_id, action.incident_id, outcome, devices, detail)
    async with gw.db.session() as session:
        row = await session.get(IncidentAction, action.action_id, with_for_update=True)
        settled = row is not None and row.outcome == IN_PROGRESS
        if row is not None and settled:
            row.outcome, row.devices, row.detail = outcome, devices, detail
            session.add(row)
            await enqueue(session, Subjects.INCIDENT_ACTION_RESULT, result)
        else:
            # The claim went stale while this ran and was reported failed: what was done
            # is still audited below, but the incident service already has its answer.
            log.warning(
                "incident action %s finished (%s) after its claim was settled as %s",
                action.action_id,
                outcome,
                row.outcome if row else "missing",
            )
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
    if gw.outbox_wake is not None:
        gw.outbox_wake()
    return result


async def _interrupted(gw: Gateway, row: IncidentAction) -> IncidentActionResultV1 | None:
    """Settle a stale claim as failed and report it, so the responder can propose it again;
    ``None`` when someone settled it meanwhile."""
    claimed = row.received_at
    detail = (
        f"interrupted: claimed at {claimed:%Y-%m-%dT%H:%M:%SZ} and not finished within "
        f"{gw.settings.incident_action_claim_timeout_seconds:g} s "
        "(LINEGATE_INCIDENT_ACTION_CLAIM_TIMEOUT_SECONDS; the gateway stopped while carrying "
        "it out?); some devices may have changed: check them and propose it again"
    )
    result = _result(row.action_id, row.incident_id, "failed", [], detail)
    async with gw.db.session() as session:
        current = await session.get(IncidentAction, row.action_id, with_for_update=True)
        if current is None or current.outcome != IN_PROGRESS:
            return None
        current.outcome, current.detail = "failed", detail
        session.add(current)
        log.warning("incident action %s: %s", row.action_id, detail)
        await gw.audit.append(
            session,
            actor=ACTOR,
            action="incident_action.interrupted",
            subject=f"incident:{row.incident_id}",
            payload={
                "action_id": row.action_id,
                "action": row.action,
                "model": row.model,
                "version": row.version,
            },
            reason=detail,
        )
        await enqueue(session, Subjects.INCIDENT_ACTION_RESULT, result)
    if gw.outbox_wake is not None:
        gw.outbox_wake()
    return result


async def recover_interrupted(
    gw: Gateway, now: datetime | None = None
) -> list[IncidentActionResultV1]:
    """Settle every claim older than the claim timeout as failed and report it (at start:
    a gateway that stopped between claim and finish). Younger claims may belong to a
    replica still at work; their redelivery settles them once stale."""
    now = now or datetime.now(UTC)
    async with gw.db.session() as session:
        rows = (
            await session.exec(select(IncidentAction).where(IncidentAction.outcome == IN_PROGRESS))
        ).all()
    results = []
    for row in rows:
        if _claim_stale(gw, row, now):
            result = await _interrupted(gw, row)
            if result is not None:
                results.append(result)
    return results


def _record(
    event: IncidentActionV1, outcome: str, devices: list[str], detail: str | None
) -> IncidentAction:
    """The row that settles ``action_id``: a later delivery of it returns this outcome."""
    return IncidentAction(
        action_id=event.action_id,
        incident_id=event.incident_id,
        action=event.action,
        model=event.model,
        version=event.version,
        outcome=outcome,
        devices=devices,
        detail=detail,
        received_at=datetime.now(UTC),
    )


def _result(
    action_id: str, incident_id: str, outcome: str, devices: list[str], detail: str | None
) -> IncidentActionResultV1:
    return IncidentActionResultV1(
        event_id=uuid.uuid5(_RESULT_NS, action_id).hex,
        actor="service:edge-gateway",
        action_id=action_id,
        incident_id=incident_id,
        outcome="done" if outcome == "done" else "failed",
        devices=devices,
        detail=detail,
    )


# --------------------------------------------------------------------------- evidence freeze


async def receive_freeze(
    gw: Gateway, pinned: PinnedKey, subject: str, raw: bytes, *, redelivered: bool = False
) -> str:
    """Verify the evidence freeze (or release) in ``raw`` and apply it once (by event id);
    returns what happened (``applied``, ``ignored``, ``redelivered`` or ``refused``)."""
    try:
        event = verify_signed(pinned, raw, EvidenceFreezeV1, "evidence freeze")
        async with gw.db.session() as session:
            seen = await session.get(IncidentAction, FREEZE_ROW_PREFIX + event.event_id)
        if seen is not None:
            return _freeze_seen(event, seen, redelivered=redelivered)
        _check_release_fresh(gw, event)
        return await apply_freeze(gw, event)
    except Refused as refusal:
        log.warning("evidence freeze on %s refused: %s", subject, refusal.reason)
        async with gw.db.session() as session:
            await _audit_refusal(
                gw, session, "evidence_freeze.refused", "freeze", subject, raw, refusal
            )
        return "refused"


def _freeze_seen(event: EvidenceFreezeV1, seen: IncidentAction, *, redelivered: bool) -> str:
    if redelivered:
        return "redelivered"
    raise Refused(
        f"replayed: evidence freeze {event.event_id} was already handled "
        f"({seen.outcome}: {seen.detail})",
        event=event,
        authentic=True,
    )


def _check_release_fresh(gw: Gateway, event: EvidenceFreezeV1) -> None:
    # Only a release is refused for its age: freezing is the safe direction, and a genuine
    # freeze that waited out a gateway outage must still hold the version.
    problem = freshness_problem(gw, event, datetime.now(UTC))
    if problem is not None and not event.frozen:
        raise Refused(
            f"{problem}; the version stays frozen: release it again",
            event=event,
            authentic=True,
        )


async def apply_freeze(gw: Gateway, event: EvidenceFreezeV1) -> str:
    """Add or remove the hold of ``event.incident_id`` on ``model`` ``version`` (``event``
    verified by :func:`receive_freeze`). The version is frozen while any incident holds it:
    a release removes only its own incident's hold. The event id is recorded in the same
    transaction, so it is applied once.

    Audited as ``release.frozen`` (a hold added), ``release.unfrozen`` (the last hold
    removed: the version may be deployed again) or ``release.hold_released`` (a hold removed
    while other incidents still hold the version), with ``held_by`` after the change."""
    actor = event.actor or f"incident:{event.incident_id}"
    outcome, detail = "applied", "frozen" if event.frozen else "released"
    async with gw.db.session() as session:
        # Locking every hold of the version serialises this with other incidents' releases
        # of it: whichever removes the last hold sees that it did (``release.unfrozen``).
        holds = await distribution.freeze_holds(session, event.model, event.version, lock=True)
        hold = next((h for h in holds if h.incident_id == event.incident_id), None)
        action: str | None = None
        if event.frozen:
            if hold is not None:
                outcome, detail = "ignored", "already frozen by this incident"
            else:
                session.add(
                    FreezeHold(
                        model=event.model,
                        version=event.version,
                        incident_id=event.incident_id,
                        reason=event.reason,
                        frozen_at=datetime.now(UTC),
                        frozen_by=actor,
                    )
                )
                await session.flush()
                action = "release.frozen"
        elif hold is None:
            log.info(
                "unfreeze of %s %s by %s ignored: not its freeze",
                event.model,
                event.version,
                event.incident_id,
            )
            outcome, detail = "ignored", "not frozen by this incident"
        else:
            await session.delete(hold)
            await session.flush()
        held_by = [
            h.incident_id
            for h in await distribution.freeze_holds(session, event.model, event.version)
        ]
        if not event.frozen and hold is not None:
            action = "release.hold_released" if held_by else "release.unfrozen"
            if held_by:
                detail = f"released; still frozen by {', '.join(held_by)}"
        session.add(
            IncidentAction(
                action_id=FREEZE_ROW_PREFIX + event.event_id,
                incident_id=event.incident_id,
                action="evidence_freeze" if event.frozen else "evidence_release",
                model=event.model,
                version=event.version,
                outcome=outcome,
                detail=detail,
                received_at=datetime.now(UTC),
            )
        )
        if action is not None:
            await gw.audit.append(
                session,
                actor=actor,
                action=action,
                subject=f"model:{event.model}@{event.version}",
                payload={**event.model_dump(mode="json"), "held_by": held_by},
                reason=event.reason,
            )
    return outcome


async def subscribe(gw: Gateway) -> list[Any]:
    """Durable consumers in queue groups (replicas share them) of actions and freezes.

    The incident-service key is read here, once (:class:`PinnedKey`); claims left by a
    gateway that stopped mid-action are settled first (:func:`recover_interrupted`).
    """
    js = gw.nats.js
    pinned = PinnedKey(gw.settings.incident_action_key_path)
    try:
        await recover_interrupted(gw)
    except Exception:
        log.exception("settling interrupted incident actions failed; their redelivery retries")

    async def action_cb(msg: Any) -> None:
        try:
            await receive(
                gw, pinned, msg.subject, msg.data, redelivered=msg.metadata.num_delivered > 1
            )
            await msg.ack()
        except ActionInProgress:
            log.info("incident action on %s is being carried out; redelivering", msg.subject)
            await msg.nak(delay=CLAIMED_REDELIVERY_DELAY)
        except Exception:
            log.exception("incident action on %s failed; redelivering", msg.subject)
            await msg.nak(delay=5)

    async def freeze_cb(msg: Any) -> None:
        try:
            await receive_freeze(
                gw, pinned, msg.subject, msg.data, redelivered=msg.metadata.num_delivered > 1
            )
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
