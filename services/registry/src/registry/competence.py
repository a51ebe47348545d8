"""The competence register: who is trained for which role on which AI system, until when.

NIS2 Art. 21(2)(g) asks for cybersecurity training, EU AI Act Art. 4 for AI literacy and Art. 14
for human oversight by people with "the necessary competence, training and authority". Linegate
keeps one record per person, role (``approver``, ``override``, ``responder``) and system, valid
from ``trained_at`` until ``valid_until`` unless revoked. Nobody records their own training.

The release gate asks :func:`eligibility` for every approval: without a current ``approver``
record the approval is refused on a NIST tier 1 system (or one with no tier yet) and accepted
with a flag on tier 2 and 3, so an auditor sees it. Overrides and incident responses happen in
the gateway, the device agent and the incident service, which ask
``GET /v1/competence/check`` over HTTP.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.errors import Forbidden, NotFound
from registry.errors import AlreadyExists, SystemNotFound
from registry.models import AiSystem, CompetenceRecord, CompetenceRole
from registry.repository import RegistryRepository
from registry.schemas import CompetenceCheck, CompetenceCreate, CompetenceRead

ROLES = tuple(r.value for r in CompetenceRole)


class SelfCertification(Forbidden):
    title = "Nobody records their own training"


class UntrainedApprover(Forbidden):
    title = "No current training for this system"


class CompetenceNotFound(NotFound):
    title = "Competence record not found"


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def is_current(record: CompetenceRecord, at: datetime) -> bool:
    return record.revoked_at is None and _utc(record.trained_at) <= at < _utc(record.valid_until)


def to_read(record: CompetenceRecord, at: datetime | None = None) -> CompetenceRead:
    return CompetenceRead(
        **record.model_dump(), current=is_current(record, at or datetime.now(UTC))
    )


def refuses_without_training(system: AiSystem) -> bool:
    """Tier 1 (and an unclassified system, which is treated as the strictest) refuses."""
    return system.nist_tier in (None, 1)


async def record(
    repo: RegistryRepository, audit: AuditLog, actor: Principal, body: CompetenceCreate
) -> CompetenceRecord:
    if await repo.system(body.system_id) is None:
        raise SystemNotFound(f"no AI system {body.system_id!r} in the inventory")
    if body.person == actor.subject:
        raise SelfCertification(
            f"{actor.subject} may not record their own training: someone else (their trainer or "
            "manager) records it"
        )
    now = datetime.now(UTC)
    row = CompetenceRecord(
        id=uuid.uuid4().hex,
        person=body.person,
        role=body.role,
        system_id=body.system_id,
        course=body.course,
        evidence=body.evidence,
        trained_at=_utc(body.trained_at or now),
        valid_until=_utc(body.valid_until),
        recorded_by=actor.subject,
        recorded_at=now,
    )
    await repo.add(row)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="competence.recorded",
        subject=f"competence:{row.person}@{row.system_id}",
        payload={**body.model_dump(mode="json"), "id": row.id},
    )
    return row


async def revoke(
    repo: RegistryRepository, audit: AuditLog, actor: Principal, record_id: str, reason: str
) -> CompetenceRecord:
    row = await repo.competence(record_id)
    if row is None:
        raise CompetenceNotFound(f"no competence record {record_id!r}")
    if row.revoked_at is not None:
        raise AlreadyExists(f"competence record {record_id} was already revoked")
    row.revoked_at = datetime.now(UTC)
    row.revoked_by = actor.subject
    row.revoke_reason = reason
    await repo.add(row)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="competence.revoked",
        subject=f"competence:{row.person}@{row.system_id}",
        payload={"id": row.id},
        reason=reason,
    )
    return row


@dataclass(frozen=True)
class Eligibility:
    record: CompetenceRecord | None
    flags: tuple[str, ...]


async def eligibility(
    repo: RegistryRepository, system: AiSystem, person: str, role: str, at: datetime
) -> Eligibility:
    """Whether ``person`` may act as ``role`` on ``system``; raises :class:`UntrainedApprover`
    where the tier refuses, else returns the record or a flag."""
    current = await repo.current_competence(person, system.id, role, at)
    if current is not None:
        return Eligibility(current, ())
    why = (
        f"{person} has no current {role} training for AI system {system.id!r} "
        f"(NIST tier {system.nist_tier if system.nist_tier is not None else 'unset'})"
    )
    if refuses_without_training(system):
        raise UntrainedApprover(
            why + ": record it in the competence register (POST /v1/competence) first",
            extra={"person": person, "system_id": system.id, "role": role},
        )
    return Eligibility(None, (why + "; accepted and flagged",))


async def check(
    repo: RegistryRepository, system_id: str, person: str, role: str
) -> CompetenceCheck:
    system = await repo.system(system_id)
    if system is None:
        raise SystemNotFound(f"no AI system {system_id!r} in the inventory")
    current = await repo.current_competence(person, system_id, role, datetime.now(UTC))
    return CompetenceCheck(
        person=person,
        system_id=system_id,
        role=role,
        current=current is not None,
        record_id=current.id if current else None,
        valid_until=current.valid_until if current else None,
        nist_tier=system.nist_tier,
        without_training="refuse" if refuses_without_training(system) else "flag",
    )
