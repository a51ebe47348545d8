"""The AI inventory (NIST AI RMF MAP 1.1 / 2.2, GOVERN 6.1; EU AI Act Art. 6 classification).

Every AI system the plant runs is listed, including third-party AI that Linegate does not deploy.
The monitoring cadence follows the NIST consequence tier (tier 1 real time, 2 daily, 3 monthly)
unless overridden with a written reason. The report puts systems with gaps first: a system with
no answer to "what happens if it is wrong" or no named accountable person.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.errors import Unprocessable
from registry.errors import AlreadyExists, CandidateNotFound, SystemNotFound
from registry.models import AiSystem, InventoryCandidate
from registry.repository import RegistryRepository
from registry.schemas import (
    CADENCE_BY_TIER,
    CandidateCreate,
    CandidateDecision,
    CandidateRead,
    InventoryReport,
    SystemCreate,
    SystemRead,
    SystemUpdate,
)

LINEGATE_PROVIDER = "linegate"


def gaps(system: AiSystem) -> list[str]:
    """What the classification lacks, most important first."""
    missing = []
    if not system.consequence_if_wrong:
        missing.append("consequence_if_wrong")
    if not system.owner_name:
        missing.append("owner")
    if system.eu_category is None:
        missing.append("eu_category")
    if system.nist_tier is None:
        missing.append("nist_tier")
    return missing


def cadence(system: AiSystem) -> tuple[str | None, str]:
    if system.cadence_override:
        return system.cadence_override, "override"
    if system.nist_tier is not None:
        return CADENCE_BY_TIER[system.nist_tier], "tier"
    return None, "unset"


def to_read(system: AiSystem, models: list[str] | None = None) -> SystemRead:
    value, source = cadence(system)
    owner = (
        {"name": system.owner_name, "email": system.owner_email}
        if system.owner_name is not None
        else None
    )
    return SystemRead(
        id=system.id,
        name=system.name,
        purpose=system.purpose,
        intended_use=system.intended_use,
        deployment_context=system.deployment_context,
        decision_influenced=system.decision_influenced,
        consequence_if_wrong=system.consequence_if_wrong,
        eu_category=system.eu_category,
        eu_basis=system.eu_basis,
        eu_rationale=system.eu_rationale,
        nist_tier=system.nist_tier,
        owner=owner,
        monitoring_cadence=value,
        monitoring_cadence_source=source,
        monitoring_cadence_reason=system.cadence_override_reason,
        provider=system.provider,
        third_party=system.provider != LINEGATE_PROVIDER,
        product=system.product,
        supplier_id=system.supplier_id,
        lines=list(system.lines),
        status=system.status,
        gaps=gaps(system),
        models=models or [],
        created_at=system.created_at,
        created_by=system.created_by,
        updated_at=system.updated_at,
        updated_by=system.updated_by,
    )


def _fields(body: SystemCreate | SystemUpdate, *, only_set: bool) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=only_set, exclude={"id", "reason"})
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "owner":
            out["owner_name"] = value["name"] if value else None
            out["owner_email"] = value["email"] if value else None
        elif key == "monitoring_cadence":
            out["cadence_override"] = value
        elif key == "monitoring_cadence_reason":
            out["cadence_override_reason"] = value
        elif key == "eu_category":
            out[key] = value.value if value is not None else None
        else:
            out[key] = value
    return out


async def create_system(
    repo: RegistryRepository, audit: AuditLog, actor: Principal, body: SystemCreate
) -> AiSystem:
    if await repo.system(body.id) is not None:
        raise AlreadyExists(f"AI system {body.id!r} is already in the inventory")
    now = datetime.now(UTC)
    system = AiSystem(
        id=body.id,
        **_fields(body, only_set=False),
        created_at=now,
        created_by=actor.subject,
        updated_at=now,
        updated_by=actor.subject,
    )
    await repo.add(system)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="inventory.system.created",
        subject=f"system:{system.id}",
        payload=body.model_dump(mode="json"),
    )
    return system


async def update_system(
    repo: RegistryRepository,
    audit: AuditLog,
    actor: Principal,
    system_id: str,
    body: SystemUpdate,
) -> AiSystem:
    system = await repo.system(system_id)
    if system is None:
        raise SystemNotFound(f"no AI system {system_id!r} in the inventory")
    changes = _fields(body, only_set=True)
    merged = {**system.model_dump(), **changes}
    # Re-check the whole record: a change to one field may break a rule across fields.
    try:
        SystemCreate.model_validate(
            {
                "id": system.id,
                **{k: v for k, v in _create_shape(merged).items() if v is not None},
            }
        )
    except ValidationError as e:
        raise Unprocessable(
            "the update leaves the classification inconsistent",
            extra={"reasons": [err["msg"] for err in e.errors()]},
        ) from e
    for key, value in changes.items():
        setattr(system, key, value)
    system.updated_at = datetime.now(UTC)
    system.updated_by = actor.subject
    await repo.add(system)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="inventory.system.updated",
        subject=f"system:{system.id}",
        payload=body.model_dump(mode="json", exclude_unset=True),
        reason=body.reason,
    )
    return system


def _create_shape(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in SystemCreate.model_fields if k in row}
    out["owner"] = (
        {"name": row["owner_name"], "email": row["owner_email"]} if row.get("owner_name") else None
    )
    out["monitoring_cadence"] = row.get("cadence_override")
    out["monitoring_cadence_reason"] = row.get("cadence_override_reason")
    return out


async def system_read(repo: RegistryRepository, system: AiSystem) -> SystemRead:
    models = [m.name for m in await repo.model_lines(system.id)]
    return to_read(system, models)


async def report(repo: RegistryRepository) -> InventoryReport:
    systems = await repo.systems()
    models: dict[str, list[str]] = {}
    for line in await repo.model_lines():
        models.setdefault(line.system_id, []).append(line.name)
    reads = [to_read(s, models.get(s.id)) for s in systems if s.status == "active"]

    def order(r: SystemRead) -> tuple[int, int, int, str]:
        # No consequence answer or no owner first, then by how much is missing, then tier.
        critical = sum(1 for g in r.gaps if g in {"consequence_if_wrong", "owner"})
        return (-critical, -len(r.gaps), r.nist_tier or 0, r.id)

    reads.sort(key=order)
    return InventoryReport(
        total=len(reads),
        with_gaps=sum(1 for r in reads if r.gaps),
        by_eu_category=dict(Counter((r.eu_category or "unclassified") for r in reads)),
        by_nist_tier=dict(Counter(str(r.nist_tier or "unclassified") for r in reads)),
        systems=reads,
    )


# ----------------------------------------------------------------------------- candidates


def candidate_read(c: InventoryCandidate) -> CandidateRead:
    return CandidateRead.model_validate(c, from_attributes=True)


async def add_candidate(
    repo: RegistryRepository, audit: AuditLog, actor: Principal, body: CandidateCreate
) -> InventoryCandidate:
    candidate = InventoryCandidate(
        id=uuid.uuid4().hex,
        **body.model_dump(),
        created_at=datetime.now(UTC),
        created_by=actor.subject,
    )
    await repo.add(candidate)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="inventory.candidate.added",
        subject=f"candidate:{candidate.id}",
        payload=body.model_dump(mode="json"),
    )
    return candidate


async def decide_candidate(
    repo: RegistryRepository,
    audit: AuditLog,
    actor: Principal,
    candidate_id: str,
    body: CandidateDecision,
) -> InventoryCandidate:
    candidate = await repo.candidate(candidate_id)
    if candidate is None:
        raise CandidateNotFound(f"no inventory candidate {candidate_id!r}")
    if candidate.status != "open":
        raise AlreadyExists(f"candidate {candidate_id} was already {candidate.status}")
    if body.system_id is not None and await repo.system(body.system_id) is None:
        raise SystemNotFound(
            f"no AI system {body.system_id!r}: add it to the inventory, then confirm"
        )
    candidate.status = "confirmed" if body.decision == "confirm" else "dismissed"
    candidate.system_id = body.system_id
    candidate.decided_by = actor.subject
    candidate.decided_at = datetime.now(UTC)
    candidate.decision_reason = body.reason
    await repo.add(candidate)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action=f"inventory.candidate.{candidate.status}",
        subject=f"candidate:{candidate.id}",
        payload={"system_id": body.system_id},
        reason=body.reason,
    )
    return candidate
