"""All SQL of the attestation service. Every attestation query takes the caller's tenant, so
tenancy is enforced in the query itself, never by filtering results afterwards."""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from attestation.models import (
    Attestation,
    AttestationSubject,
    Blob,
    OAuthClient,
    SlaBreach,
    Supplier,
    SupplierArtefact,
    SupplierIdentity,
    SupplierKey,
    SupplierNotice,
    SupplierSla,
    TrustVersion,
)
from linegate.auth import ClientRecord, parse_roles
from linegate.db import DriverStatement, core_connection, driver_execute


def _table(model: type[SQLModel]) -> sa.Table:
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table)
    return table


# The group commit's fixed statements, compiled once per dialect and run on the session
# connection's driver (linegate.db.DriverStatement: SQLAlchemy's execution plumbing and
# per-row parameter processing cost more than the database spends on the statements).
_TRUST_VERSION = _table(TrustVersion).c
_VERSION_FOR_UPDATE = DriverStatement(
    sa.select(_TRUST_VERSION.version).where(_TRUST_VERSION.id == 1).with_for_update()
)
_ATTESTATION = _table(Attestation)
_INSERT_ATTESTATIONS = DriverStatement(sa.insert(_ATTESTATION))
_INSERT_SUBJECTS = DriverStatement(sa.insert(_table(AttestationSubject)))
_INSERT_BLOBS = {
    "postgresql": DriverStatement(
        postgresql.insert(_table(Blob)).on_conflict_do_nothing(index_elements=["digest"])
    ),
    "sqlite": DriverStatement(
        sqlite.insert(_table(Blob)).on_conflict_do_nothing(index_elements=["digest"])
    ),
}
#: The duplicate lookup, by the number of suppliers and digests it lists (driver SQL: the
#: driver takes no expanding parameters). Through uq_attestation_supplier_raw.
_EARLIER = (
    "SELECT id, supplier_id, raw_digest FROM attestation"
    " WHERE supplier_id IN ({}) AND raw_digest IN ({})"
)
_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}


def _earlier_sql(dialect: str, suppliers: int, digests: int) -> str:
    mark = _PLACEHOLDER[dialect]
    return _EARLIER.format(", ".join([mark] * suppliers), ", ".join([mark] * digests))


class ClientRepository:
    """OAuth2 clients; also the token endpoint's :class:`linegate.auth.ClientStore`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self.session.get(OAuthClient, client_id)

    async def add(self, client: OAuthClient) -> OAuthClient:
        self.session.add(client)
        await self.session.flush()
        return client

    async def get_client(self, client_id: str) -> ClientRecord | None:
        row = await self.get(client_id)
        if row is None:
            return None
        return ClientRecord(
            client_id=row.client_id,
            secret_hash=row.secret_hash,
            roles=parse_roles(row.roles),
            tenant=row.tenant,
            device_id=row.device_id,
            active=row.active,
        )


class SupplierRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, supplier_id: str) -> Supplier | None:
        return await self.session.get(Supplier, supplier_id)

    async def all(self) -> list[Supplier]:
        return list((await self.session.exec(select(Supplier).order_by(col(Supplier.id)))).all())

    async def add(self, row: Supplier | SupplierKey | SupplierIdentity) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get_key(self, key_id: str) -> SupplierKey | None:
        return await self.session.get(SupplierKey, key_id)

    async def keys(self, supplier_id: str) -> list[SupplierKey]:
        stmt = (
            select(SupplierKey)
            .where(SupplierKey.supplier_id == supplier_id)
            .order_by(col(SupplierKey.created_at))
        )
        return list((await self.session.exec(stmt)).all())

    async def all_keys(self) -> list[SupplierKey]:
        """Every supplier's keys: a signature by another supplier's key is impersonation,
        and telling that apart from an unknown key needs them all."""
        return list((await self.session.exec(select(SupplierKey))).all())

    async def identities(self, supplier_id: str) -> list[SupplierIdentity]:
        stmt = (
            select(SupplierIdentity)
            .where(SupplierIdentity.supplier_id == supplier_id)
            .order_by(col(SupplierIdentity.created_at))
        )
        return list((await self.session.exec(stmt)).all())

    async def get_identity(self, supplier_id: str, identity_id: str) -> SupplierIdentity | None:
        row = await self.session.get(SupplierIdentity, identity_id)
        return row if row is not None and row.supplier_id == supplier_id else None


class TrustRepository:
    """The trust-material version counter (see :class:`attestation.models.TrustVersion`).

    Lock order: a transaction that changes trust material bumps the counter before it appends
    to the audit log, and ingest locks the counter before its audit appends, so on PostgreSQL
    both take the counter row first and the audit head second (never the other way round)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def version(self, *, lock: bool = False) -> int:
        """The current version; ``lock`` holds the row until commit (PostgreSQL ``FOR UPDATE``;
        SQLite transactions already hold the database's write lock)."""
        value: int | None
        if lock:
            rows = await _VERSION_FOR_UPDATE.execute(await core_connection(self.session))
            value = rows[0][0] if rows else None
        else:
            stmt = select(TrustVersion.version).where(TrustVersion.id == 1)
            value = (await self.session.exec(stmt)).first()
        if value is None:
            raise RuntimeError("attestation_trust_version row is missing: migration 0005 not run")
        return value

    async def changed(self) -> None:
        """Bump the version in this transaction: every process's trust cache goes stale at
        the commit, and uploads recorded after it are verified against the new material."""
        await self.session.exec(
            sa.update(TrustVersion)
            .where(col(TrustVersion.id) == 1)
            .values(version=col(TrustVersion.version) + 1)
        )

    async def all_identities(self) -> list[SupplierIdentity]:
        return list((await self.session.exec(select(SupplierIdentity))).all())

    async def supplier_ids(self) -> list[str]:
        return list((await self.session.exec(select(Supplier.id))).all())

    async def max_ages(self) -> dict[str, int]:
        """Each SLA's maximum attestation age in days, by supplier."""
        stmt = select(SupplierSla.supplier_id, SupplierSla.max_attestation_age_days)
        return dict((await self.session.exec(stmt)).all())


class AttestationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_raw_digests(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Attestation]:
        """Earlier records of these (supplier, raw digest) pairs. Nearly every upload is new,
        so the lookup is one driver query of the keys; records are loaded only for those
        found."""
        wanted = set(keys)
        if not wanted:
            return {}
        suppliers = sorted({s for s, _ in wanted})
        digests = sorted({d for _, d in wanted})
        conn = await core_connection(self.session)
        sql = _earlier_sql(conn.dialect.name, len(suppliers), len(digests))
        found = {
            attestation_id: (supplier_id, digest)
            # Planned for its values each time: its text varies with the batch, and a plan
            # cached while the table was small would scan the whole table (see driver_execute).
            for attestation_id, supplier_id, digest in await driver_execute(
                conn, sql, (*suppliers, *digests), prepare=False
            )
            if (supplier_id, digest) in wanted
        }
        if not found:
            return {}
        rows = await self.session.exec(select(Attestation).where(col(Attestation.id).in_(found)))
        return {found[a.id]: a for a in rows.all()}

    async def add_many(
        self,
        attestations: Sequence[dict[str, Any]],
        blobs: Sequence[dict[str, Any]],
        subjects: Sequence[dict[str, Any]],
    ) -> None:
        """Insert many records with one multi-row statement per table (group commit). Blobs
        are shared by digest: one already stored (another supplier's identical bytes) is kept."""
        conn = await core_connection(self.session)
        await _INSERT_BLOBS[conn.dialect.name].executemany(conn, blobs)
        await _INSERT_ATTESTATIONS.executemany(conn, attestations)
        await _INSERT_SUBJECTS.executemany(conn, subjects)

    async def get(self, attestation_id: str, *, tenant: str | None) -> Attestation | None:
        """The attestation, or None when absent or (for a supplier) not its own."""
        stmt = select(Attestation).where(Attestation.id == attestation_id)
        if tenant is not None:
            stmt = stmt.where(Attestation.supplier_id == tenant)
        return (await self.session.exec(stmt)).first()

    async def by_raw_digest(self, supplier_id: str, raw_digest: str) -> Attestation | None:
        stmt = select(Attestation).where(
            Attestation.supplier_id == supplier_id, Attestation.raw_digest == raw_digest
        )
        return (await self.session.exec(stmt)).first()

    async def blob(self, digest: str) -> Blob | None:
        return await self.session.get(Blob, digest)

    async def add(self, attestation: Attestation, blob: Blob) -> None:
        if await self.session.get(Blob, blob.digest) is None:
            self.session.add(blob)
        self.session.add(attestation)
        await self.session.flush()
        for subject in attestation.subjects:
            for algorithm, value in subject["digest"].items():
                self.session.add(
                    AttestationSubject(
                        attestation_id=attestation.id,
                        algorithm=algorithm,
                        digest=value,
                        name=subject["name"],
                    )
                )
        await self.session.flush()

    async def query(
        self,
        *,
        tenant: str | None,
        supplier: str | None = None,
        subject_digest: tuple[str, str] | None = None,
        predicate_type: str | None = None,
        status: str | None = None,
        expires_before: datetime | None = None,
        expires_after: datetime | None = None,
        created_before: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> Sequence[Attestation]:
        """Newest first; ``created_before`` is the keyset cursor (created_at, id)."""
        stmt = select(Attestation)
        if tenant is not None:
            stmt = stmt.where(Attestation.supplier_id == tenant)
        if supplier is not None:
            stmt = stmt.where(Attestation.supplier_id == supplier)
        if subject_digest is not None:
            algorithm, value = subject_digest
            stmt = stmt.where(
                col(Attestation.id).in_(
                    select(AttestationSubject.attestation_id).where(
                        AttestationSubject.algorithm == algorithm,
                        AttestationSubject.digest == value,
                    )
                )
            )
        if predicate_type is not None:
            stmt = stmt.where(Attestation.predicate_type == predicate_type)
        if status is not None:
            stmt = stmt.where(Attestation.status == status)
        if expires_before is not None:
            stmt = stmt.where(col(Attestation.expires_at) < expires_before)
        if expires_after is not None:
            stmt = stmt.where(col(Attestation.expires_at) >= expires_after)
        if created_before is not None:
            at, last_id = created_before
            stmt = stmt.where(
                (col(Attestation.created_at) < at)
                | ((col(Attestation.created_at) == at) & (col(Attestation.id) < last_id))
            )
        stmt = stmt.order_by(col(Attestation.created_at).desc(), col(Attestation.id).desc()).limit(
            limit
        )
        return (await self.session.exec(stmt)).all()


class SlaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def sla(self, supplier_id: str) -> SupplierSla | None:
        return await self.session.get(SupplierSla, supplier_id)

    async def all_slas(self) -> list[SupplierSla]:
        return list((await self.session.exec(select(SupplierSla))).all())

    async def save(self, row: SupplierSla | SupplierArtefact | SupplierNotice | SlaBreach) -> None:
        self.session.add(row)
        await self.session.flush()

    async def artefacts(self, supplier_id: str) -> list[SupplierArtefact]:
        stmt = (
            select(SupplierArtefact)
            .where(SupplierArtefact.supplier_id == supplier_id)
            .order_by(col(SupplierArtefact.registered_at))
        )
        return list((await self.session.exec(stmt)).all())

    async def notices(self, supplier_id: str) -> list[SupplierNotice]:
        stmt = (
            select(SupplierNotice)
            .where(SupplierNotice.supplier_id == supplier_id)
            .order_by(col(SupplierNotice.sent_at))
        )
        return list((await self.session.exec(stmt)).all())

    async def notice(self, supplier_id: str, notice_id: str) -> SupplierNotice | None:
        row = await self.session.get(SupplierNotice, notice_id)
        return row if row is not None and row.supplier_id == supplier_id else None

    async def evidence(self, supplier_id: str) -> list[Attestation]:
        """The supplier's signed, verified attestations (unsigned SBOMs never count)."""
        stmt = select(Attestation).where(
            Attestation.supplier_id == supplier_id, Attestation.status == "verified"
        )
        return list((await self.session.exec(stmt)).all())

    async def open_breaches(self, supplier_id: str) -> list[SlaBreach]:
        stmt = select(SlaBreach).where(
            SlaBreach.supplier_id == supplier_id, col(SlaBreach.resolved_at).is_(None)
        )
        return list((await self.session.exec(stmt)).all())
