"""Everything the technical file of one model version states, gathered in one place.

From the registry's own tables: the inventory system, the model line, every version of it, the
version's validation runs and golden sets, approvals, the competence register of the system and
the registry audit entries about all of these. Over HTTP: the attestations naming the artefact
digest (attestation service) and the incidents and monitors of the model (incident service).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, or_, select

from linegate.audit import AuditEntry
from linegate.signing import canonical_json
from registry.models import (
    AiSystem,
    Approval,
    CompetenceRecord,
    GoldenSet,
    ModelLine,
    ModelVersion,
    ValidationRun,
)
from registry.repository import RegistryRepository
from registry.techfile.sources import Missing, Sources
from registry.versions import Registry, require_line, require_version


@dataclass
class Facts:
    system: AiSystem
    line: ModelLine
    version: ModelVersion
    versions: list[ModelVersion]
    validations: list[ValidationRun]
    golden_sets: dict[str, GoldenSet]
    approvals: list[Approval]
    competence: list[CompetenceRecord]
    audit: list[AuditEntry]
    attestations: list[dict[str, Any]] | Missing
    incidents: list[dict[str, Any]] | Missing
    monitors: list[dict[str, Any]] | Missing
    evidence_policy: list[str] = field(default_factory=list)
    retention: dict[str, int] = field(default_factory=dict)

    def audit_for(self, *, action: str | None = None, subject: str | None = None) -> list[Any]:
        return [
            e
            for e in self.audit
            if (action is None or e.action == action) and (subject is None or e.subject == subject)
        ]

    @property
    def version_subject(self) -> str:
        return f"model:{self.line.name}@{self.version.version}"


def report_digest(run: ValidationRun) -> str:
    """sha256 of the signed report as the bundle stores it (canonical JSON of the envelope)."""
    return "sha256:" + hashlib.sha256(canonical_json(run.envelope)).hexdigest()


async def _audit_entries(
    repo: RegistryRepository, line: ModelLine, system: AiSystem
) -> list[AuditEntry]:
    subjects = [f"model:{line.name}", f"system:{system.id}"]
    stmt = (
        select(AuditEntry)
        .where(
            or_(
                col(AuditEntry.subject).in_(subjects),
                col(AuditEntry.subject).startswith(f"model:{line.name}@"),
                col(AuditEntry.subject).endswith(f"@{system.id}"),
            )
        )
        .order_by(col(AuditEntry.seq))
    )
    rows = list((await repo.session.exec(stmt)).all())
    # endswith(@system) is broader than competence:*; keep only the records of this system.
    return [
        e
        for e in rows
        if not e.subject.endswith(f"@{system.id}") or e.subject.startswith("competence:")
    ]


def _listing(value: Any, what: str) -> list[dict[str, Any]] | Missing:
    if isinstance(value, Missing):
        return value
    items = value.get("items") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return Missing(f"the incident service's {what} answer is not a list")
    return [i for i in items if isinstance(i, dict)]


async def gather(registry: Registry, sources: Sources, model: str, version: str) -> Facts:
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        line = await require_line(repo, model)
        row = await require_version(repo, model, version)
        system = await repo.system(line.system_id)
        assert system is not None  # foreign key
        validations = await repo.validations(row.id)
        golden = {g.id: g for g in await repo.golden_sets(model)}
        facts = Facts(
            system=system,
            line=line,
            version=row,
            versions=await repo.versions(model),
            validations=validations,
            golden_sets=golden,
            approvals=await repo.approvals(row.id),
            competence=await repo.competence_records(system_id=system.id),
            audit=await _audit_entries(repo, line, system),
            attestations=[],
            incidents=Missing("not read yet"),
            monitors=Missing("not read yet"),
            evidence_policy=list(
                registry.settings.evidence_policy.get(system.eu_category or "", [])
            ),
            retention={
                "audit_log_retention_days": registry.settings.audit_log_retention_days,
                "documentation_retention_days": registry.settings.documentation_retention_days,
            },
        )
    try:
        facts.attestations = await registry.attestations.attestations_for(row.artefact_digest)
    except Exception as e:  # noqa: BLE001 - any failure to read evidence is a gap with its reason
        facts.attestations = Missing(str(getattr(e, "detail", e)))
    facts.incidents = _listing(
        await sources.json("incident", "/v1/incidents", {"model": model, "limit": 1000}),
        "incidents",
    )
    if not isinstance(facts.incidents, Missing):
        facts.incidents = [i for i in facts.incidents if i.get("version") in (None, version)]
    # GET /v1/monitors lists every monitored (model, version, line): keep this version's.
    monitors = _listing(await sources.json("incident", "/v1/monitors"), "monitors")
    facts.monitors = (
        monitors
        if isinstance(monitors, Missing)
        else [
            m
            for m in monitors
            if m.get("model") in (None, model) and m.get("version") in (None, version)
        ]
    )
    return facts
