"""What suppliers are trusted with, cached in memory and checked against a version at commit.

Verifying an upload needs every supplier's keys (another supplier's key is impersonation),
this supplier's Sigstore identities and its SLA's maximum age. Reading them for every upload
was most of an upload's cost, so :class:`TrustCache` keeps one :class:`TrustSnapshot` of them
with the version counter it was read at. Every change to that material bumps the counter in
its own transaction (:meth:`attestation.repository.TrustRepository.changed`), and ingest
compares the counter with the snapshot's inside the transaction that records the outcome:
when they differ, the snapshot is reloaded there and the upload verified again. So the cache
never decides an outcome that the database at commit time would not, in any process.

Example::

    cache = TrustCache()
    snapshot = await cache.get(db)
    trust = snapshot.context("optivision", default_max_age=timedelta(days=365),
                             clock_skew=timedelta(minutes=5))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from attestation.models import SupplierIdentity, SupplierKey
from attestation.repository import SupplierRepository, TrustRepository
from attestation.verification import TrustContext
from linegate.db import Database


@dataclass(frozen=True)
class TrustSnapshot:
    """Trust material as of one version of the counter (read-only; shared between tasks)."""

    version: int
    suppliers: frozenset[str]
    keys: tuple[SupplierKey, ...]
    identities: dict[str, tuple[SupplierIdentity, ...]]
    max_age_days: dict[str, int]
    _split: dict[str, tuple[list[SupplierKey], list[SupplierKey]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    async def load(cls, session: AsyncSession) -> TrustSnapshot:
        """Read the snapshot in ``session``'s transaction. The version is read first: material
        newer than its version only costs a reload later, material older would be wrong."""
        trust = TrustRepository(session)
        version = await trust.version()
        identities: dict[str, list[SupplierIdentity]] = {}
        for identity in sorted(await trust.all_identities(), key=lambda i: i.created_at):
            identities.setdefault(identity.supplier_id, []).append(identity)
        return cls(
            version=version,
            suppliers=frozenset(await trust.supplier_ids()),
            keys=tuple(await SupplierRepository(session).all_keys()),
            identities={k: tuple(v) for k, v in identities.items()},
            max_age_days=await trust.max_ages(),
        )

    def context(
        self,
        supplier_id: str,
        *,
        default_max_age: timedelta,
        clock_skew: timedelta,
        now: datetime | None = None,
    ) -> TrustContext:
        """What ``supplier_id`` is trusted with, for a verification at ``now``."""
        split = self._split.get(supplier_id)
        if split is None:
            own = [k for k in self.keys if k.supplier_id == supplier_id]
            others = [k for k in self.keys if k.supplier_id != supplier_id]
            # Benign race: two tasks computing the same split store equal values.
            split = self._split[supplier_id] = (own, others)
        days = self.max_age_days.get(supplier_id)
        return TrustContext(
            supplier_id=supplier_id,
            keys=split[0],
            other_keys=split[1],
            identities=list(self.identities.get(supplier_id, ())),
            max_age=timedelta(days=days) if days is not None else default_max_age,
            now=now or datetime.now(UTC),
            clock_skew=clock_skew,
        )


class TrustCache:
    """The newest :class:`TrustSnapshot` this process has read."""

    def __init__(self) -> None:
        self._snapshot: TrustSnapshot | None = None
        self._loading = asyncio.Lock()

    @property
    def snapshot(self) -> TrustSnapshot | None:
        return self._snapshot

    async def get(self, db: Database) -> TrustSnapshot:
        """The cached snapshot, read from the database the first time."""
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot
        async with self._loading:  # many first uploads at once read it once
            if self._snapshot is None:
                async with db.session() as session:
                    self.install(await TrustSnapshot.load(session))
            assert self._snapshot is not None
            return self._snapshot

    async def refresh(self, db: Database) -> TrustSnapshot:
        """Read the snapshot again in a transaction of its own (e.g. a supplier not in it)."""
        async with self._loading, db.session() as session:
            return self.install(await TrustSnapshot.load(session))

    async def reload(self, session: AsyncSession) -> TrustSnapshot:
        """Read the snapshot again inside ``session``'s transaction."""
        return self.install(await TrustSnapshot.load(session))

    def install(self, snapshot: TrustSnapshot) -> TrustSnapshot:
        current = self._snapshot
        if current is None or snapshot.version >= current.version:
            self._snapshot = snapshot
        return snapshot
