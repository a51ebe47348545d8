"""The evidence freeze: an incident holds the implicated model version as evidence.

While frozen, nothing may redeploy it: ``EvidenceFreezeV1(frozen=True)`` on
``linegate.incident.freeze`` (through the outbox), which the edge gateway honours, until a
responder releases it with a rationale (``frozen=False``). A reportable triage decision
freezes by default; a responder may freeze at any time.

Both travel signed, like corrective actions: a DSSE envelope (payloadType
``EvidenceFreezeV1.PAYLOAD_TYPE``) signed by the service's action key
(:class:`incident.incidents.actions.ActionSigner`), so a forged release cannot let a frozen
version reach devices again and a forged freeze cannot take a version over.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import workflow
from incident.incidents.actions import ActionSigner
from incident.incidents.core import note
from incident.incidents.errors import FreezeState, MissingContext
from incident.incidents.models import EvidenceFreeze, Incident
from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.events import EvidenceFreezeV1, Subjects


async def active_freeze(session: AsyncSession, incident_id: str) -> EvidenceFreeze | None:
    stmt = select(EvidenceFreeze).where(
        EvidenceFreeze.incident_id == incident_id, col(EvidenceFreeze.released_at).is_(None)
    )
    return (await session.exec(stmt)).first()


async def freeze(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident: Incident,
    reason: str,
    now: datetime,
    signer: ActionSigner,
) -> EvidenceFreeze:
    if incident.model is None or incident.version is None:
        raise MissingContext(f"incident {incident.id} names no model version to freeze")
    if await active_freeze(session, incident.id) is not None:
        raise FreezeState(f"incident {incident.id} already holds a freeze")
    row = EvidenceFreeze(
        incident_id=incident.id,
        model=incident.model,
        version=incident.version,
        reason=reason,
        frozen_by=principal.actor,
        frozen_at=now,
    )
    session.add(row)
    await session.flush()
    await _announce(
        session, audit, principal, row, frozen=True, reason=reason, now=now, signer=signer
    )
    return row


async def release(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    incident_id: str,
    rationale: str,
    now: datetime,
    signer: ActionSigner,
) -> EvidenceFreeze:
    await workflow.get_incident(session, incident_id, lock=True)
    row = await active_freeze(session, incident_id)
    if row is None:
        raise FreezeState(f"incident {incident_id} holds no freeze")
    row.released_by, row.released_at, row.release_reason = principal.actor, now, rationale
    session.add(row)
    await _announce(
        session, audit, principal, row, frozen=False, reason=rationale, now=now, signer=signer
    )
    return row


async def _announce(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    row: EvidenceFreeze,
    *,
    frozen: bool,
    reason: str,
    now: datetime,
    signer: ActionSigner,
) -> None:
    event = EvidenceFreezeV1(
        occurred_at=now,
        actor=principal.actor,
        incident_id=row.incident_id,
        model=row.model,
        version=row.version,
        frozen=frozen,
        reason=reason,
    )
    session.add(signer.outbox_message(Subjects.INCIDENT_FREEZE, event))
    verb = "frozen" if frozen else "released"
    await note(
        session,
        row.incident_id,
        at=now,
        kind="evidence_freeze",
        actor=principal.actor,
        detail=f"{row.model} {row.version} {verb} as evidence: {reason}",
        data={"frozen": frozen, "model": row.model, "version": row.version},
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="incident.freeze" if frozen else "incident.freeze_release",
        subject=f"model:{row.model}@{row.version}",
        payload={**event.model_dump(mode="json"), "signed_by": signer.key_id},
        reason=reason,
        now=now,
    )
