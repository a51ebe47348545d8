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

**Proofs.** An entry is proven by the *segment* of the chain from it to a signed checkpoint:
every entry from ``seq`` to the checkpoint's ``seq``, and the checkpoint's DSSE envelope. Each
entry's hash covers its predecessor's, so the signed head hash commits to every entry of the
segment; :func:`verify_proof` re-hashes the segment, checks the links and the signature, and
needs nothing but the proof and the service's public key (offline). One segment proves every
entry in it, which is how evidence bundles carry a service's log. Proofs are JSON
(:data:`PROOF_TYPE`)::

    {"type": PROOF_TYPE, "service": "registry", "entries": [<entry>, ...],
     "checkpoint": {"seq", "hash", "time", "key_id", "envelope": <DSSE envelope>}}

**Retention** is set by ``LINEGATE_AUDIT_LOG_RETENTION_DAYS`` (EU AI Act Art. 19(1) / 26(6):
at least six months, :data:`AUDIT_LOG_RETENTION_FLOOR_DAYS`) and
``LINEGATE_DOCUMENTATION_RETENTION_DAYS`` (Art. 18: ten years,
:data:`DOCUMENTATION_RETENTION_FLOOR_DAYS`); settings below the floors are refused outside
development. Nothing deletes audit entries today, so the log is kept at least that long.

Example::

    audit = AuditLog("registry", signing_key, checkpoint_every=100)
    async with db.session() as session:
        ...  # the change itself
        await audit.append(session, actor=p.actor, action="model.approve",
                           subject="weld-seam-inspector@2.1.0", payload=body, reason=rationale)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.db import DriverStatement, core_connection
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
PROOF_TYPE = "https://linegate.dev/audit/proof/v1"
#: Six months at their longest (e.g. July to December): Art. 19(1) and 26(6) EU AI Act.
AUDIT_LOG_RETENTION_FLOOR_DAYS = 184
#: Ten years including three leap days: Art. 18(1) EU AI Act (technical documentation).
DOCUMENTATION_RETENTION_FLOOR_DAYS = 3653
#: Longest segment one proof carries (a larger range is split or checkpointed more often).
MAX_PROOF_ENTRIES = 100_000


class ProofUnavailable(Exception):
    """No proof can be built: the entry does not exist or no checkpoint covers it yet."""


#: Sequence numbers are 64-bit (a PostgreSQL INTEGER ends at 2**31 - 1 entries; SQLite's
#: INTEGER is 64-bit already): see :func:`widen_audit_sequences`.
SEQ = sa.BigInteger


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True, sa_type=SEQ, sa_column_kwargs={"autoincrement": False})
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

    seq: int = Field(primary_key=True, sa_type=SEQ, sa_column_kwargs={"autoincrement": False})
    hash: str
    time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    key_id: str
    envelope: str  # DSSE envelope JSON over the checkpoint statement


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0, sa_type=SEQ)
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
    """The hash of one entry: ``sha256`` of the canonical JSON of its fields."""
    return _entry_hash(seq, _iso(time), actor, action, subject, reason, payload_digest, prev_hash)


def _entry_hash(
    seq: int,
    time_iso: str,
    actor: str,
    action: str,
    subject: str,
    reason: str | None,
    payload_digest: str,
    prev_hash: str,
) -> str:
    material = {
        "seq": seq,
        "time": time_iso,
        "actor": actor,
        "action": action,
        "subject": subject,
        "reason": reason,
        "payload_digest": payload_digest,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()


def _table(model: type[SQLModel]) -> sa.Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


_HEAD = _table(AuditHead)
_HEAD_FOR_UPDATE = DriverStatement(
    sa.select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
)
_UPDATE_HEAD = DriverStatement(
    sa.update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=sa.bindparam("new_seq"), hash=sa.bindparam("new_hash"))
)
_INSERT_ENTRIES = DriverStatement(sa.insert(_table(AuditEntry)))
_INSERT_CHECKPOINTS = DriverStatement(sa.insert(_table(AuditCheckpoint)))


def _iso(t: datetime) -> str:
    # SQLite hands datetimes back naive; all Linegate times are UTC.
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditRecord:
    """One entry to append with :meth:`AuditLog.append_many`.

    ``payload_digest`` (``sha256:<hex>``, as :func:`payload_digest` gives) may be passed
    instead of ``payload`` when the caller has it already, e.g. the digest of uploaded bytes."""

    actor: str
    action: str
    subject: str
    payload: Any = None
    reason: str | None = None
    payload_digest: str | None = None


@dataclass(frozen=True, slots=True)
class ChainedEntry:
    """An entry as :meth:`AuditLog.append_many` stored it (the fields of :class:`AuditEntry`)."""

    seq: int
    time: datetime
    actor: str
    action: str
    subject: str
    reason: str | None
    payload_digest: str
    prev_hash: str
    hash: str


class AuditLog:
    """One service's audit log."""

    def __init__(self, service: str, key: PrivateKey, *, checkpoint_every: int = 100) -> None:
        self.service = service
        self._key = key
        self.public_key: PublicKey = key.public_key()
        self.checkpoint_every = checkpoint_every

    async def _head(self, session: AsyncSession) -> tuple[int, str]:
        """``(seq, hash)`` of the head, locked until the transaction ends."""
        rows = await _HEAD_FOR_UPDATE.execute(await core_connection(session))
        row = rows[0] if rows else None
        if row is None:
            # Seeded by create_audit_tables; creating it lazily would race between writers.
            raise RuntimeError("audit_head row is missing: the audit migration has not run")
        return int(row[0]), str(row[1])

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
        record = AuditRecord(
            actor=actor, action=action, subject=subject, payload=payload, reason=reason
        )
        (entry,) = await self.append_many(session, [record], now=now)
        return AuditEntry(**dataclasses.asdict(entry))

    async def append_many(
        self, session: AsyncSession, records: Sequence[AuditRecord], *, now: datetime | None = None
    ) -> list[ChainedEntry]:
        """Append ``records`` in order in ``session``'s transaction: the same chain, entry by
        entry, as that many :meth:`append` calls, with one head read, one multi-row insert of
        all entries and one head update (for group commits)."""
        if not records:
            return []
        # The change being recorded is flushed first, as the ORM flush of the entries used to
        # do: callers may read ids it assigns right after appending (a no-op when clean).
        await session.flush()
        seq, prev = await self._head(session)
        t = (now or datetime.now(UTC)).astimezone(UTC)
        t_iso = _iso(t)
        entries: list[ChainedEntry] = []
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        for r in records:
            seq += 1
            digest = r.payload_digest or payload_digest(r.payload)
            h = _entry_hash(seq, t_iso, r.actor, r.action, r.subject, r.reason, digest, prev)
            row: dict[str, Any] = {
                "seq": seq,
                "time": t,
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "reason": r.reason,
                "payload_digest": digest,
                "prev_hash": prev,
                "hash": h,
            }
            rows.append(row)
            entries.append(ChainedEntry(**row))
            if seq % self.checkpoint_every == 0:
                checkpoints.append(self._checkpoint_row(seq, h, t))
            prev = h
        # Statements compiled once and run on the driver (see DriverStatement): an ORM object
        # per entry, or Core's per-row parameter processing, cost more than storing them.
        conn = await core_connection(session)
        await _INSERT_ENTRIES.executemany(conn, rows)
        await _UPDATE_HEAD.execute(conn, {"new_seq": seq, "new_hash": prev})
        if checkpoints:
            await _INSERT_CHECKPOINTS.executemany(conn, checkpoints)
        return entries

    async def checkpoint(self, session: AsyncSession) -> AuditCheckpoint | None:
        """Sign the current head now (no-op when it is already checkpointed or empty)."""
        seq, h = await self._head(session)
        if seq == 0 or await session.get(AuditCheckpoint, seq) is not None:
            return None
        cp = AuditCheckpoint(**self._checkpoint_row(seq, h, datetime.now(UTC)))
        session.add(cp)
        await session.flush()
        return cp

    async def checkpoint_now(
        self, session: AsyncSession, *, actor: str, reason: str | None = None
    ) -> AuditCheckpoint:
        """Record who asked for a checkpoint, then sign the head that includes that entry.

        Used before exporting proofs of recent entries: the request is itself a state change,
        so it is in the log it checkpoints."""
        entry = await self.append(
            session, actor=actor, action="audit.checkpoint", subject="audit", reason=reason
        )
        cp = await self.checkpoint(session)
        if cp is None:  # append() already signed it (seq was a multiple of checkpoint_every)
            cp = await session.get(AuditCheckpoint, entry.seq)
            assert cp is not None
        return cp

    @staticmethod
    async def proof(
        session: AsyncSession, seq: int, *, checkpoint: int | None = None, service: str
    ) -> dict[str, Any]:
        """The proof of entry ``seq``: the segment from it to the first checkpoint at or after
        it (or to checkpoint ``checkpoint``). Raises :class:`ProofUnavailable`."""
        if await session.get(AuditEntry, seq) is None:
            raise ProofUnavailable(f"there is no audit entry {seq}")
        if checkpoint is not None:
            cp = await session.get(AuditCheckpoint, checkpoint)
            if cp is None:
                raise ProofUnavailable(f"there is no checkpoint at seq {checkpoint}")
            if cp.seq < seq:
                raise ProofUnavailable(
                    f"checkpoint {checkpoint} is older than entry {seq} and cannot prove it"
                )
        else:
            stmt = (
                select(AuditCheckpoint)
                .where(col(AuditCheckpoint.seq) >= seq)
                .order_by(col(AuditCheckpoint.seq))
                .limit(1)
            )
            cp = (await session.exec(stmt)).first()
            if cp is None:
                raise ProofUnavailable(
                    f"no signed checkpoint covers entry {seq} yet: ask for one "
                    "(POST /v1/audit/checkpoints) or wait for the next"
                )
        if cp.seq - seq + 1 > MAX_PROOF_ENTRIES:
            raise ProofUnavailable(
                f"entry {seq} is {cp.seq - seq + 1} entries before checkpoint {cp.seq}; "
                f"a proof carries at most {MAX_PROOF_ENTRIES}"
            )
        stmt2 = (
            select(AuditEntry)
            .where(col(AuditEntry.seq) >= seq, col(AuditEntry.seq) <= cp.seq)
            .order_by(col(AuditEntry.seq))
        )
        segment = list((await session.exec(stmt2)).all())
        return {
            "type": PROOF_TYPE,
            "service": service,
            "entries": [entry_to_dict(e) for e in segment],
            "checkpoint": checkpoint_to_dict(cp),
        }

    def _checkpoint_row(self, seq: int, h: str, t: datetime) -> dict[str, Any]:
        statement = {"service": self.service, "seq": seq, "hash": h, "time": _iso(t)}
        envelope = dsse_sign(canonical_json(statement), CHECKPOINT_PAYLOAD_TYPE, self._key)
        return {
            "seq": seq,
            "hash": h,
            "time": t,
            "key_id": key_id(self.public_key),
            "envelope": json.dumps(envelope),
        }

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
        if _rehash(e) != e.hash:
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


def entry_to_dict(e: AuditEntry) -> dict[str, Any]:
    """An entry as JSON, with its time exactly as it was hashed."""
    return {
        "seq": e.seq,
        "time": _iso(e.time),
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "reason": e.reason,
        "payload_digest": e.payload_digest,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def checkpoint_to_dict(cp: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint as JSON, its DSSE envelope as an object."""
    return {
        "seq": cp.seq,
        "hash": cp.hash,
        "time": _iso(cp.time),
        "key_id": cp.key_id,
        "envelope": json.loads(cp.envelope),
    }


@dataclass
class ProofReport:
    """Outcome of :func:`verify_proof`: what it proves and every problem found."""

    service: str | None = None
    first: int | None = None
    last: int | None = None
    checkpoint_seq: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def proves(self, seq: int) -> bool:
        return (
            self.ok
            and self.first is not None
            and self.last is not None
            and self.first <= seq <= self.last
        )


def _entry_from(item: Any) -> AuditEntry:
    if not isinstance(item, dict):
        raise TypeError("an entry is not a JSON object")
    t = datetime.fromisoformat(str(item["time"]))
    return AuditEntry(
        seq=int(item["seq"]),
        time=t,
        actor=str(item["actor"]),
        action=str(item["action"]),
        subject=str(item["subject"]),
        reason=None if item.get("reason") is None else str(item["reason"]),
        payload_digest=str(item["payload_digest"]),
        prev_hash=str(item["prev_hash"]),
        hash=str(item["hash"]),
    )


def verify_proof(
    proof: Any,
    keys: Sequence[PublicKey],
    *,
    service: str | None = None,
    seqs: Sequence[int] = (),
) -> ProofReport:
    """Verify an audit proof offline: every entry re-hashes to its ``hash``, each links to the
    one before, the last is the checkpoint's head, and the checkpoint's DSSE signature verifies
    with one of ``keys`` over that (service, seq, hash). ``seqs`` must all lie in the segment.

    Example::

        report = verify_proof(json.loads(raw), [load_public_key(pem)], service="registry")
        assert report.ok and report.proves(42)
    """
    report = ProofReport()
    if not isinstance(proof, dict) or proof.get("type") != PROOF_TYPE:
        report.errors.append(f"not an audit proof (type must be {PROOF_TYPE})")
        return report
    report.service = str(proof.get("service"))
    if service is not None and proof.get("service") != service:
        report.errors.append(f"proof is for service {proof.get('service')!r}, not {service!r}")
    entries = _proof_entries(proof, report)
    if entries:
        report.first, report.last = entries[0].seq, entries[-1].seq
        _check_segment(entries, report)
        _check_proof_checkpoint(proof, entries[-1], keys, report)
        for seq in seqs:
            if not entries[0].seq <= seq <= entries[-1].seq:
                report.errors.append(f"entry {seq} is not in the proven segment")
    return report


def _proof_entries(proof: dict[str, Any], report: ProofReport) -> list[AuditEntry]:
    raw_entries = proof.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        report.errors.append("proof has no entries")
        return []
    try:
        return [_entry_from(item) for item in raw_entries]
    except (KeyError, ValueError, TypeError) as e:
        report.errors.append(f"malformed entry: {e}")
        return []


def _rehash(e: AuditEntry) -> str:
    """The hash ``e``'s stored fields give (what its ``hash`` must equal)."""
    return entry_hash(
        seq=e.seq,
        time=e.time,
        actor=e.actor,
        action=e.action,
        subject=e.subject,
        reason=e.reason,
        payload_digest=e.payload_digest,
        prev_hash=e.prev_hash,
    )


def _check_segment(entries: Sequence[AuditEntry], report: ProofReport) -> None:
    prev = entries[0].prev_hash
    for i, e in enumerate(entries):
        if i and e.seq != entries[i - 1].seq + 1:
            report.errors.append(f"seq {e.seq}: expected seq {entries[i - 1].seq + 1}")
        if e.prev_hash != prev:
            report.errors.append(f"seq {e.seq}: prev_hash does not match the previous entry's hash")
        if _rehash(e) != e.hash:
            report.errors.append(f"seq {e.seq}: content does not match its hash (entry edited)")
        prev = e.hash


def _check_proof_checkpoint(
    proof: dict[str, Any], last: AuditEntry, keys: Sequence[PublicKey], report: ProofReport
) -> None:
    cp = proof.get("checkpoint")
    if not isinstance(cp, dict):
        report.errors.append("proof has no checkpoint")
        return
    try:
        verified = dsse_verify(cp.get("envelope") or {}, keys)
        statement = json.loads(verified.payload)
    except (SignatureError, ValueError) as e:
        report.errors.append(f"checkpoint {cp.get('seq')}: signature invalid ({e})")
        return
    if verified.payload_type != CHECKPOINT_PAYLOAD_TYPE:
        report.errors.append(f"checkpoint: wrong payload type {verified.payload_type}")
    if not isinstance(statement, dict):
        report.errors.append("checkpoint: signed statement is not a JSON object")
        return
    report.checkpoint_seq = statement.get("seq")
    if statement.get("seq") != last.seq or statement.get("hash") != last.hash:
        report.errors.append(
            f"checkpoint {statement.get('seq')}: the signed head is not the segment's last "
            f"entry {last.seq}"
        )
    if statement.get("service") != proof.get("service"):
        report.errors.append(
            f"checkpoint signed by service {statement.get('service')!r}, "
            f"proof names {proof.get('service')!r}"
        )


async def verify_log(
    session: AsyncSession, keys: Sequence[PublicKey], *, service: str | None = None
) -> ChainReport:
    """Read one service's whole log and verify it."""
    entries = await AuditLog.entries(session, limit=2**62)
    checkpoints = await AuditLog.checkpoints(session)
    return verify_chain(entries, checkpoints, keys, service=service)


#: (table, column) of the audit tables' sequence numbers.
_SEQ_COLUMNS = (("audit_log", "seq"), ("audit_checkpoint", "seq"), ("audit_head", "seq"))


def widen_audit_sequences(op: Any) -> None:
    """Alembic operations making the audit tables' sequence numbers BIGINT on PostgreSQL (the
    tables :func:`create_audit_tables` made have INTEGER: 2**31 - 1 entries, about twelve days
    of attestation uploads at the benchmark's rate). Nothing to do on SQLite, whose INTEGER
    holds 64 bits."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _SEQ_COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger, existing_type=sa.Integer)


def narrow_audit_sequences(op: Any) -> None:
    """The downgrade of :func:`widen_audit_sequences` (refused by PostgreSQL once a value no
    longer fits)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _SEQ_COLUMNS:
        op.alter_column(table, column, type_=sa.Integer, existing_type=sa.BigInteger)


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
