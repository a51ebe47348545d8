"""All SQL of the registry service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.models import (
    AiSystem,
    Approval,
    Blob,
    CompetenceRecord,
    GoldenSet,
    InventoryCandidate,
    ModelLine,
    ModelVersion,
    ValidationRun,
    VersionState,
)


class RegistryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *rows: object) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    # ------------------------------------------------------------------------- inventory

    async def system(self, system_id: str) -> AiSystem | None:
        return await self.session.get(AiSystem, system_id)

    async def systems(self) -> list[AiSystem]:
        return list((await self.session.exec(select(AiSystem).order_by(col(AiSystem.id)))).all())

    async def candidate(self, candidate_id: str) -> InventoryCandidate | None:
        return await self.session.get(InventoryCandidate, candidate_id)

    async def candidates(self, status: str | None) -> list[InventoryCandidate]:
        stmt = select(InventoryCandidate).order_by(col(InventoryCandidate.created_at))
        if status is not None:
            stmt = stmt.where(InventoryCandidate.status == status)
        return list((await self.session.exec(stmt)).all())

    # ---------------------------------------------------------------------------- models

    async def model_line(self, name: str) -> ModelLine | None:
        return await self.session.get(ModelLine, name)

    async def model_lines(self, system_id: str | None = None) -> list[ModelLine]:
        stmt = select(ModelLine).order_by(col(ModelLine.name))
        if system_id is not None:
            stmt = stmt.where(ModelLine.system_id == system_id)
        return list((await self.session.exec(stmt)).all())

    async def max_security_version(self, model_name: str) -> int:
        stmt = select(func.max(ModelVersion.security_version)).where(
            ModelVersion.model_name == model_name
        )
        value = (await self.session.exec(stmt)).one()
        return int(value) if value is not None else 0

    async def version(self, model_name: str, version: str) -> ModelVersion | None:
        stmt = select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
        return (await self.session.exec(stmt)).first()

    async def version_by_id(self, version_id: str) -> ModelVersion | None:
        return await self.session.get(ModelVersion, version_id)

    async def versions(self, model_name: str, state: str | None = None) -> list[ModelVersion]:
        stmt = (
            select(ModelVersion)
            .where(ModelVersion.model_name == model_name)
            .order_by(col(ModelVersion.created_at).desc())
        )
        if state is not None:
            stmt = stmt.where(ModelVersion.state == state)
        return list((await self.session.exec(stmt)).all())

    async def versions_by_digest(self, digest: str) -> list[ModelVersion]:
        stmt = select(ModelVersion).where(ModelVersion.artefact_digest == digest)
        return list((await self.session.exec(stmt)).all())

    async def current_release(self, model_name: str, *, exclude: str) -> ModelVersion | None:
        """The released version a candidate is compared with: the newest release, by
        security_version then release time."""
        stmt = (
            select(ModelVersion)
            .where(
                ModelVersion.model_name == model_name,
                ModelVersion.state == VersionState.RELEASED,
                ModelVersion.id != exclude,
            )
            .order_by(
                col(ModelVersion.security_version).desc(), col(ModelVersion.released_at).desc()
            )
        )
        return (await self.session.exec(stmt)).first()

    # ----------------------------------------------------------------------------- blobs

    async def blob(self, digest: str) -> Blob | None:
        return await self.session.get(Blob, digest)

    async def referenced(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` a version, signature or golden set still refers to."""
        found: set[str] = set()
        for version in (await self.session.exec(select(ModelVersion))).all():
            found.update(f["sha256"] for f in version.files)
            found.add(version.signature_digest)
        found.update((await self.session.exec(select(GoldenSet.digest))).all())
        return found & set(digests)

    # ------------------------------------------------------------------ golden / approvals

    async def golden_set(self, golden_set_id: str) -> GoldenSet | None:
        return await self.session.get(GoldenSet, golden_set_id)

    async def golden_sets(self, model_name: str) -> list[GoldenSet]:
        stmt = (
            select(GoldenSet)
            .where(GoldenSet.model_name == model_name)
            .order_by(col(GoldenSet.created_at).desc())
        )
        return list((await self.session.exec(stmt)).all())

    async def validation(self, run_id: str) -> ValidationRun | None:
        return await self.session.get(ValidationRun, run_id)

    async def validations(self, version_id: str) -> list[ValidationRun]:
        stmt = (
            select(ValidationRun)
            .where(ValidationRun.version_id == version_id)
            .order_by(col(ValidationRun.created_at).desc())
        )
        return list((await self.session.exec(stmt)).all())

    async def approvals(self, version_id: str) -> list[Approval]:
        stmt = (
            select(Approval)
            .where(Approval.version_id == version_id)
            .order_by(col(Approval.created_at))
        )
        return list((await self.session.exec(stmt)).all())

    # ----------------------------------------------------------------------- competence

    async def competence(self, record_id: str) -> CompetenceRecord | None:
        return await self.session.get(CompetenceRecord, record_id)

    async def competence_records(
        self,
        *,
        person: str | None = None,
        system_id: str | None = None,
        role: str | None = None,
    ) -> list[CompetenceRecord]:
        stmt = select(CompetenceRecord).order_by(
            col(CompetenceRecord.person), col(CompetenceRecord.valid_until).desc()
        )
        if person is not None:
            stmt = stmt.where(CompetenceRecord.person == person)
        if system_id is not None:
            stmt = stmt.where(CompetenceRecord.system_id == system_id)
        if role is not None:
            stmt = stmt.where(CompetenceRecord.role == role)
        return list((await self.session.exec(stmt)).all())

    async def current_competence(
        self, person: str, system_id: str, role: str, at: datetime
    ) -> CompetenceRecord | None:
        """The record (longest valid) that makes ``person`` competent now, if any."""
        stmt = (
            select(CompetenceRecord)
            .where(
                CompetenceRecord.person == person,
                CompetenceRecord.system_id == system_id,
                CompetenceRecord.role == role,
                col(CompetenceRecord.revoked_at).is_(None),
                col(CompetenceRecord.trained_at) <= at,
                col(CompetenceRecord.valid_until) > at,
            )
            .order_by(col(CompetenceRecord.valid_until).desc())
        )
        return (await self.session.exec(stmt)).first()
