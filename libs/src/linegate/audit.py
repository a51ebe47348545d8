"""Append-only, hash-chained audit log with signed checkpoints (EU AI Act Art. 12).

Every state change a service makes calls :meth:`AuditLog.append` inside the same database
transaction as the change, so the change and its audit entry commit or roll back together.
Entry ``n`` stores ``hash = sha256(canonical(seq, time, actor, action, subject, reason,
payload_digest, prev_hash))`` with ``prev_hash`` = hash of entry ``n-1``. Every
``checkpoint_every`` entries the service signs ``(service, seq, hash)`` as a DSSE envelope
with its own key. :func:`verify_chain` then detects any edited, removed, inserted or reordered
entry, and a truncated tail when a checkpoint names an entry that is gone.

Appends serialise on the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite transactions are ``BEGIN IMMEDIATE``), so concurrent requests never fork the chain.

Example::

    audit = AuditLog("registry", signing_key, checkpoint_every=100)
    async with db.session() as session:
        ...  # the change itself
        await audit.append(session, actor=p.actor, action="model.approve",
                           subject="weld-seam-inspector@2.1.0", payload=body, reason=rationale)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.signing import (
    PrivateKey,
    PublicKey,
    SignatureError,
    canonical_json,
    dsse_sign,
    dsse_verify,
    key_id,
)

GENESIS_HASH = "0" * 64
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.linegate.audit-checkpoint.v1+json"


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    actor: str
    action: str = Field(index=True)
    subject: str = Field(index=True)
    reason: str | None = None
    payload_digest: str
    prev_hash: str
    hash: str


class AuditCheckpoint(SQLModel, table=True):
    __tablename__ = "audit_checkpoint"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: str
    time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    key_id: str
    envelope: str  # DSSE envelope JSON over the checkpoint statement


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = GENESIS_HASH


def payload_digest(payload: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``payload`` (or of raw bytes)."""
    data = payload if isinstance(payload, bytes) else canonical_json(payload)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def entry_hash(
    *,
    seq: int,
    time: datetime,
    actor: str,
    action: str,
    subject: str,
    reason: str | None,
    payload_digest: str,
    prev_hash: str,
) -> str:
    material = {
        "seq": seq,
        "time": _iso(time),
        "actor": actor,
        "action": action,
        "subject": subject,
        "reason": reason,
        "payload_digest": payload_digest,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()


def _iso(t: datetime) -> str:
    # SQLite hands datetimes back naive; all Linegate times are UTC.
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="microseconds")


class AuditLog:
    """One service's audit log."""

    def __init__(self, service: str, key: PrivateKey, *, checkpoint_every: int = 100) -> None:
        self.service = service
        self._key = key
        self.public_key: PublicKey = key.public_key()
        self.checkpoint_every = checkpoint_every

    async def _head(self, session: AsyncSession) -> AuditHead:
        stmt = select(AuditHead).where(AuditHead.id == 1).with_for_update()
        head = (await session.exec(stmt)).first()
        if head is None:
            # Seeded by create_audit_tables; creating it lazily would race between writers.
            raise RuntimeError("audit_head row is missing: the audit migration has not run")
        return head

    async def append(
        self,
        session: AsyncSession,
        *,
        actor: str,
        action: str,
        subject: str,
        payload: Any = None,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> AuditEntry:
        """Append an entry in ``session``'s transaction (committed with the change itself)."""
        head = await self._head(session)
        t = (now or datetime.now(UTC)).astimezone(UTC)
        seq = head.seq + 1
        digest = payload_digest(payload)
        h = entry_hash(
            seq=seq,
            time=t,
            actor=actor,
            action=action,
            subject=subject,
            reason=reason,
            payload_digest=digest,
            prev_hash=head.hash,
        )
        entry = AuditEntry(
            seq=seq,
            time=t,
            actor=actor,
            action=action,
            subject=subject,
            reason=reason,
            payload_digest=digest,
            prev_hash=head.hash,
            hash=h,
        )
        session.add(entry)
        head.seq, head.hash = seq, h
        session.add(head)
        if seq % self.checkpoint_every == 0:
            session.add(self._sign_checkpoint(seq, h, t))
        await session.flush()
        return entry

    async def checkpoint(self, session: AsyncSession) -> AuditCheckpoint | None:
        """Sign the current head now (no-op when it is already checkpointed or empty)."""
        head = await self._head(session)
        if head.seq == 0 or await session.get(AuditCheckpoint, head.seq) is not None:
            return None
        cp = self._sign_checkpoint(head.seq, head.hash, datetime.now(UTC))
        session.add(cp)
        await session.flush()
        return cp

    def _sign_checkpoint(self, seq: int, h: str, t: datetime) -> AuditCheckpoint:
        statement = {"service": self.service, "seq": seq, "hash": h, "time": _iso(t)}
        envelope = dsse_sign(canonical_json(statement), CHECKPOINT_PAYLOAD_TYPE, self._key)
        return AuditCheckpoint(
            seq=seq, hash=h, time=t, key_id=key_id(self.public_key), envelope=json.dumps(envelope)
        )

    @staticmethod
    async def entries(
        session: AsyncSession, *, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        stmt = (
            select(AuditEntry)
            .where(col(AuditEntry.seq) > after)
            .order_by(col(AuditEntry.seq))
            .limit(limit)
        )
        return list((await session.exec(stmt)).all())

    @staticmethod
    async def checkpoints(session: AsyncSession) -> list[AuditCheckpoint]:
        stmt = select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq))
        return list((await session.exec(stmt)).all())


@dataclass
class ChainReport:
    """Outcome of :func:`verify_chain`: ``ok`` and every problem found, by sequence number."""

    entries: int = 0
    checkpoints: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify_chain(
    entries: Sequence[AuditEntry],
    checkpoints: Sequence[AuditCheckpoint],
    keys: Sequence[PublicKey],
    *,
    service: str | None = None,
    first_prev_hash: str = GENESIS_HASH,
) -> ChainReport:
    """Check the chain and every checkpoint; ``entries`` must start at seq 1 unless
    ``first_prev_hash`` is the hash of the entry before them."""
    report = ChainReport(entries=len(entries), checkpoints=len(checkpoints))
    by_seq: dict[int, str] = {}
    prev = first_prev_hash
    expected_seq = entries[0].seq if entries else 1
    if first_prev_hash == GENESIS_HASH and entries and entries[0].seq != 1:
        report.errors.append(f"chain does not start at seq 1 (first is {entries[0].seq})")
    for e in entries:
        if e.seq != expected_seq:
            report.errors.append(
                f"seq {e.seq}: expected seq {expected_seq} (entry removed or reordered)"
            )
        if e.prev_hash != prev:
            report.errors.append(f"seq {e.seq}: prev_hash does not match the previous entry's hash")
        recomputed = entry_hash(
            seq=e.seq,
            time=e.time,
            actor=e.actor,
            action=e.action,
            subject=e.subject,
            reason=e.reason,
            payload_digest=e.payload_digest,
            prev_hash=e.prev_hash,
        )
        if recomputed != e.hash:
            report.errors.append(f"seq {e.seq}: content does not match its hash (entry edited)")
        by_seq[e.seq] = e.hash
        prev = e.hash
        expected_seq = e.seq + 1
    last_seq = entries[-1].seq if entries else 0
    for cp in checkpoints:
        try:
            verified = dsse_verify(json.loads(cp.envelope), keys)
            statement = json.loads(verified.payload)
        except (SignatureError, ValueError) as e:
            report.errors.append(f"checkpoint {cp.seq}: signature invalid ({e})")
            continue
        if verified.payload_type != CHECKPOINT_PAYLOAD_TYPE:
            report.errors.append(f"checkpoint {cp.seq}: wrong payload type {verified.payload_type}")
        if statement.get("seq") != cp.seq or statement.get("hash") != cp.hash:
            report.errors.append(
                f"checkpoint {cp.seq}: signed statement differs from the stored checkpoint"
            )
        if service is not None and statement.get("service") != service:
            report.errors.append(
                f"checkpoint {cp.seq}: signed by service {statement.get('service')!r}"
            )
        if cp.seq > last_seq:
            report.errors.append(
                f"checkpoint {cp.seq}: entries up to {cp.seq} are missing (log truncated)"
            )
        elif cp.seq in by_seq and by_seq[cp.seq] != statement.get("hash"):
            report.errors.append(
                f"checkpoint {cp.seq}: entry {cp.seq} hash differs from the signed one"
            )
    return report


async def verify_log(
    session: AsyncSession, keys: Sequence[PublicKey], *, service: str | None = None
) -> ChainReport:
    """Read one service's whole log and verify it."""
    entries = await AuditLog.entries(session, limit=2**62)
    checkpoints = await AuditLog.checkpoints(session)
    return verify_chain(entries, checkpoints, keys, service=service)


def create_audit_tables(op: Any) -> None:
    """Alembic operations creating the audit tables (each service's first migration calls it)."""
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False, index=True),
        sa.Column("subject", sa.String, nullable=False, index=True),
        sa.Column("reason", sa.String, nullable=True),
        sa.Column("payload_digest", sa.String, nullable=False),
        sa.Column("prev_hash", sa.String, nullable=False),
        sa.Column("hash", sa.String, nullable=False),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String, nullable=False),
        sa.Column("envelope", sa.Text, nullable=False),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String, nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
