"""Corrective actions: proposed, approved by authorised humans, then carried out by the gateway.

Nothing reaches a line on a model's or a monitor's say-so (EU AI Act Art. 14): a responder
proposes an action (roll back to the previous model, switch a line to manual inspection,
raise the reject threshold, resume automatic inspection) with a rationale; it executes only
once enough distinct responders approved it, each with a rationale: one, or two for a
critical incident or a NIST tier-1 system. The approval that completes the set publishes
``IncidentActionV1`` on ``linegate.incident.action.<kind>`` through the outbox, in the same
transaction; the gateway's ``IncidentActionResultV1`` then lands on the timeline. An action
proposed for a runbook step needs that runbook's earlier human gates passed first.

What goes on the subject is signed (:class:`ActionSigner`): a DSSE envelope whose payload is the
``IncidentActionV1`` JSON (payloadType ``application/vnd.linegate.incident-action+json``,
``occurred_at`` = the moment of issue), signed with the service's own action key. The gateway
carries out only what verifies against the incident key it pinned, is fresh and new. Evidence
freezes (:mod:`incident.incidents.freeze`) are signed with the same key under their own
payloadType (``EvidenceFreezeV1.PAYLOAD_TYPE``).

Example::

    signer = ActionSigner.from_settings(settings)  # creates the key on first start
    envelope = signer.envelope(event)              # dsse_verify(envelope, [public key])
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import workflow
from incident.incidents.competence import RegistryCompetence
from incident.incidents.core import log, note, record_postmarket
from incident.incidents.errors import (
    ActionNotFound,
    ActionState,
    DuplicateApproval,
    GateNotPassed,
    InvalidAction,
    InvalidTransition,
    MissingContext,
)
from incident.incidents.models import ActionApproval, Incident, IncidentAction, RunbookStepRecord
from incident.incidents.runbooks import Catalogue
from incident.incidents.schemas import ActionCreate, ActionRead, ApprovalCreate, ApprovalRead
from incident.settings import IncidentSettings
from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.events import EvidenceFreezeV1, IncidentActionResultV1, IncidentActionV1, Subjects
from linegate.outbox import OutboxMessage
from linegate.signing import (
    PrivateKey,
    dsse_sign,
    key_id,
    load_or_create_private_key,
    public_key_pem,
)

#: Approvals an action needs on a critical incident or a tier-1 system (four eyes).
CRITICAL_APPROVALS = 2


@dataclass(frozen=True)
class ActionSigner:
    """Signs what the edge gateway obeys: a DSSE envelope over the event's JSON with the
    event's payloadType (``IncidentActionV1.PAYLOAD_TYPE`` for approved actions,
    ``EvidenceFreezeV1.PAYLOAD_TYPE`` for evidence freezes and their release)."""

    key: PrivateKey

    @classmethod
    def from_settings(cls, settings: IncidentSettings) -> ActionSigner:
        """The service's action key (created on first start), its public key written to
        ``settings.action_public_key_path`` for the gateway to pin."""
        key = load_or_create_private_key(settings.action_key_path)
        _write_public_key(settings.action_public_key_path, public_key_pem(key.public_key()))
        return cls(key)

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    def envelope(self, event: IncidentActionV1 | EvidenceFreezeV1) -> dict[str, Any]:
        return dsse_sign(event.model_dump_json().encode(), event.PAYLOAD_TYPE, self.key)

    def outbox_message(
        self, subject: str, event: IncidentActionV1 | EvidenceFreezeV1
    ) -> OutboxMessage:
        """The signed envelope of ``event`` for the outbox (JetStream de-duplicates by event
        id), to add in the transaction that decided it."""
        return OutboxMessage(
            event_id=event.event_id,
            subject=subject,
            event_type=type(event).__name__,
            body=json.dumps(self.envelope(event)),
            created_at=datetime.now(UTC),
        )


def _write_public_key(path: Path, pem: bytes) -> None:
    if path.exists() and path.read_bytes() == pem:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A reader (the gateway, at its start) sees the old file or the new, never half.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pub-")
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    Path(tmp).chmod(0o644)
    Path(tmp).replace(path)


def required_approvals(incident: Incident) -> int:
    critical = incident.severity == "critical" or incident.risk_tier == 1
    return CRITICAL_APPROVALS if critical else 1


async def approvals_of(session: AsyncSession, action_id: str) -> list[ActionApproval]:
    stmt = (
        select(ActionApproval)
        .where(ActionApproval.action_id == action_id)
        .order_by(col(ActionApproval.id))
    )
    return list((await session.exec(stmt)).all())


async def action_read(session: AsyncSession, action: IncidentAction) -> ActionRead:
    read = ActionRead.model_validate(action, from_attributes=True)
    read.approvals = [
        ApprovalRead.model_validate(a, from_attributes=True)
        for a in await approvals_of(session, action.id)
    ]
    return read


async def list_actions(session: AsyncSession, incident_id: str) -> list[IncidentAction]:
    stmt = (
        select(IncidentAction)
        .where(IncidentAction.incident_id == incident_id)
        .order_by(col(IncidentAction.proposed_at), col(IncidentAction.id))
    )
    return list((await session.exec(stmt)).all())


async def get_action(
    session: AsyncSession, incident_id: str, action_id: str, *, lock: bool = False
) -> IncidentAction:
    stmt = select(IncidentAction).where(IncidentAction.id == action_id)
    if lock:
        stmt = stmt.with_for_update()
    action = (await session.exec(stmt)).first()
    if action is None or action.incident_id != incident_id:
        raise ActionNotFound(f"incident {incident_id} has no action {action_id!r}")
    return action


def _params(incident: Incident, body: ActionCreate) -> dict[str, Any]:
    if incident.model is None:
        raise MissingContext(f"incident {incident.id} names no model: the gateway cannot act")
    params: dict[str, Any] = {
        "model": incident.model,
        "version": incident.version,
        "line": body.line or incident.line,
        "device_ids": body.device_ids,
    }
    if body.action == "rollback":
        if not body.target_version:
            raise InvalidAction("a rollback names the target_version to return to")
        if incident.version is None:
            raise MissingContext(f"incident {incident.id} names no model version to roll back")
        if body.target_version == incident.version:
            raise InvalidAction("the target version is the implicated version itself")
        params["target_version"] = body.target_version
    elif body.target_version is not None:
        raise InvalidAction("only a rollback takes a target_version")
    if body.action == "raise_threshold":
        if body.threshold is None:
            raise InvalidAction("raising the reject threshold names the new threshold")
        params["threshold"] = body.threshold
    elif body.threshold is not None:
        raise InvalidAction("only raise_threshold takes a threshold")
    return params


async def _check_gates(
    session: AsyncSession, catalogue: Catalogue, incident: Incident, body: ActionCreate
) -> None:
    if body.step_id is None:
        return
    book = workflow.runbook_of(catalogue, incident)
    step = book.step(body.step_id)
    if step is None or step.kind != "action" or step.action != body.action:
        raise InvalidAction(
            f"runbook {book.id} v{book.version} has no {body.action} step {body.step_id!r}"
        )
    records = await workflow.step_records(session, incident.id)
    missing = [g.id for g in book.gates_before(body.step_id) if g.id not in records]
    if missing:
        raise GateNotPassed(
            f"complete the runbook's earlier human gates first: {', '.join(missing)}",
            extra={"pending_gates": missing},
        )


async def propose(
    session: AsyncSession,
    audit: AuditLog,
    catalogue: Catalogue,
    principal: Principal,
    incident_id: str,
    body: ActionCreate,
    now: datetime,
) -> IncidentAction:
    incident = await workflow.get_incident(session, incident_id, lock=True)
    if incident.status == "closed":
        raise InvalidTransition(f"incident {incident_id} is closed")
    params = _params(incident, body)
    await _check_gates(session, catalogue, incident, body)
    action = IncidentAction(
        id=f"act-{uuid.uuid4().hex[:16]}",
        incident_id=incident.id,
        action=body.action,
        step_id=body.step_id,
        params=params,
        rationale=body.rationale,
        proposed_by=principal.actor,
        proposed_at=now,
        required_approvals=required_approvals(incident),
        state="pending_approval",
    )
    session.add(action)
    await session.flush()
    await note(
        session,
        incident.id,
        at=now,
        kind="action_proposed",
        actor=principal.actor,
        detail=f"{body.action} proposed, needs {action.required_approvals} approval(s): "
        f"{body.rationale}",
        data={"action_id": action.id, "params": params},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.action.propose",
        subject=f"incident:{incident.id}",
        payload={"action_id": action.id, "action": body.action, "params": params},
        reason=body.rationale,
        now=now,
    )
    return action


async def approve(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    action_id: str,
    body: ApprovalCreate,
    now: datetime,
    competence: RegistryCompetence,
    signer: ActionSigner,
) -> IncidentAction:
    action = await get_action(session, incident_id, action_id, lock=True)
    if action.state != "pending_approval":
        raise ActionState(f"action {action_id} is {action.state}, not awaiting approval")
    approvals = await approvals_of(session, action.id)
    if any(a.approver == principal.actor for a in approvals):
        raise DuplicateApproval(
            f"{principal.actor} already approved {action_id}; a second approver must be "
            "another person"
        )
    # Refuses (tier 1) before anything is written; flags (tiers 2-3) stay on the approval.
    standing = await competence.approver(
        principal.subject, action.params.get("model"), action.params.get("line")
    )
    approval = ActionApproval(
        action_id=action.id,
        approver=principal.actor,
        rationale=body.rationale,
        at=now,
        competence=standing.as_json(),
    )
    session.add(approval)
    approvals.append(approval)
    flagged = f" [flagged: {'; '.join(standing.flags)}]" if standing.flags else ""
    await note(
        session,
        incident_id,
        at=now,
        kind="action_approved",
        actor=principal.actor,
        detail=f"{action.action} approved ({len(approvals)}/{action.required_approvals}): "
        f"{body.rationale}{flagged}",
        data={"action_id": action.id, "competence": standing.as_json()},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.action.approve",
        subject=f"incident:{incident_id}",
        payload={
            "action_id": action.id,
            "approvals": len(approvals),
            "competence": standing.as_json(),
        },
        reason=body.rationale,
        now=now,
    )
    if len(approvals) >= action.required_approvals:
        approvers = [a.approver for a in approvals]
        await _send(session, audit, signer, action, approvers, principal, now)
    await session.flush()
    return action


async def _send(
    session: AsyncSession,
    audit: AuditLog,
    signer: ActionSigner,
    action: IncidentAction,
    approvers: list[str],
    principal: Principal,
    now: datetime,
) -> None:
    p = action.params
    event = IncidentActionV1(
        event_id=action.id,
        occurred_at=now,
        actor=principal.actor,
        action_id=action.id,
        incident_id=action.incident_id,
        action=action.action,
        model=p["model"],
        version=p.get("version"),
        line=p.get("line"),
        device_ids=p.get("device_ids"),
        target_version=p.get("target_version"),
        threshold=p.get("threshold"),
        approved_by=approvers,
        rationale=action.rationale,
    )
    # The outbox carries the signed envelope itself.
    session.add(signer.outbox_message(Subjects.incident_action(action.action), event))
    action.state, action.sent_at = "sent", now
    session.add(action)
    await note(
        session,
        action.incident_id,
        at=now,
        kind="action_sent",
        actor=principal.actor,
        detail=f"{action.action} sent to the edge gateway (approved by {', '.join(approvers)})",
        data={"action_id": action.id, "event": event.model_dump(mode="json")},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.action.send",
        subject=f"incident:{action.incident_id}",
        payload={**event.model_dump(mode="json"), "signed_by": signer.key_id},
        reason=action.rationale,
        now=now,
    )
    incident = await workflow.get_incident(session, action.incident_id)
    await record_postmarket(
        session,
        kind="incident.action",
        occurred_at=now,
        payload={"action_id": action.id, "action": action.action, "params": p},
        incident_id=incident.id,
        model=incident.model,
        version=incident.version,
        line=p.get("line"),
    )


async def cancel(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    action_id: str,
    reason: str,
    now: datetime,
) -> IncidentAction:
    action = await get_action(session, incident_id, action_id, lock=True)
    if action.state != "pending_approval":
        raise ActionState(f"action {action_id} is {action.state}; only a pending one is cancelled")
    action.state = "cancelled"
    session.add(action)
    await note(
        session,
        incident_id,
        at=now,
        kind="action_cancelled",
        actor=principal.actor,
        detail=f"{action.action} cancelled: {reason}",
        data={"action_id": action.id},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.action.cancel",
        subject=f"incident:{incident_id}",
        payload={"action_id": action.id},
        reason=reason,
        now=now,
    )
    return action


async def record_result(
    session: AsyncSession, audit: AuditLog, result: IncidentActionResultV1, now: datetime
) -> bool:
    """Put the gateway's outcome on the timeline; False when there is nothing to record."""
    action = await session.get(IncidentAction, result.action_id)
    if action is None or action.incident_id != result.incident_id:
        log.warning("result for unknown action %s ignored", result.action_id)
        return False
    if action.state != "sent":
        return False  # a redelivered result, or one for an action never sent
    actor = result.actor or "service:edge-gateway"
    action.state, action.result_at = result.outcome, now
    action.result = result.model_dump(mode="json")
    session.add(action)
    devices = ", ".join(result.devices) if result.devices else "no devices"
    await note(
        session,
        action.incident_id,
        at=now,
        kind="action_result",
        actor=actor,
        detail=f"{action.action} {result.outcome} on {devices}"
        + (f": {result.detail}" if result.detail else ""),
        data={"action_id": action.id, "result": action.result},
    )
    if (
        result.outcome == "done"
        and action.step_id is not None
        and action.step_id not in await workflow.step_records(session, action.incident_id)
    ):
        session.add(
            RunbookStepRecord(
                incident_id=action.incident_id,
                step_id=action.step_id,
                state="done",
                actor=actor,
                at=now,
                note=f"action {action.id} carried out on {devices}",
            )
        )
    await audit.append(
        session,
        actor=actor,
        action=f"incident.action.{result.outcome}",
        subject=f"incident:{action.incident_id}",
        payload=action.result,
        reason=result.detail,
        now=now,
    )
    await session.flush()
    return True
