"""Ingest: verify each upload concurrently, record them in group commits.

An upload is verified as soon as it arrives, against the cached trust material
(:mod:`attestation.trust`), with no transaction open. Its outcome then goes to one writer task
that records everything waiting in one transaction: the records and blobs with one multi-row
insert per table, one audit entry per upload (each chained to the one before, appended in
order), one outbox event per upload. Each upload's caller gets its answer only after that
commit, so a 2xx still means the record, its audit entry and its event are durable. While a
batch commits the next one gathers, so a single upload waits for no timer and many uploads
share one commit.

Inside the batch transaction the writer locks the trust version counter first: uploads
verified against an older snapshot are verified again against the material as committed, and
an upload whose bytes this supplier uploaded before (in an earlier batch, in another process,
or earlier in the same batch) answers with that earlier record.

Example::

    ingestor = Ingestor(db, audit, outbox.wake, TrustCache(), verify=..., limits=...)
    await ingestor.start()
    result = await ingestor.ingest(Upload(media, data), supplier_id="optivision", actor=p)
    await ingestor.stop()  # records what is queued, then stops
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from attestation.errors import SupplierNotFound
from attestation.models import Attestation
from attestation.repository import AttestationRepository, TrustRepository
from attestation.trust import TrustCache, TrustSnapshot
from attestation.verification import Outcome, TrustContext
from linegate.audit import AuditLog, AuditRecord
from linegate.auth import Principal
from linegate.db import Database
from linegate.errors import ServiceUnavailable
from linegate.events import (
    AttestationRejectedV1,
    AttestationVerifiedV1,
    EventV1,
    SubjectDigest,
    Subjects,
)
from linegate.outbox import enqueue_many

log = logging.getLogger("attestation.ingest")

#: ``verify(content_type, data, trust) -> Outcome``; never raises for bad input.
Verify = Callable[[str, bytes, TrustContext], Outcome]


@dataclass(frozen=True)
class Upload:
    content_type: str
    data: bytes

    @cached_property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class RecordedAttestation:
    """An upload this process has just recorded: the row as inserted (the columns of
    :class:`Attestation`), kept as plain values since building and tracking an ORM object per
    upload costs more than inserting it."""

    id: str
    supplier_id: str
    status: str
    verified: bool
    content_type: str
    envelope: str
    raw_digest: str
    raw_size: int
    predicate_type: str | None
    predicate_kind: str | None
    recognised: bool
    signer: str | None
    subjects: list[dict[str, Any]]
    summary: dict[str, Any]
    reasons: list[str]
    issued_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    uploaded_by: str


@dataclass(frozen=True)
class IngestResult:
    #: The new record, or the earlier one (as stored) when the same bytes came before.
    attestation: Attestation | RecordedAttestation
    created: bool
    malformed: bool = False


@dataclass(frozen=True)
class IngestLimits:
    #: Expiry when the supplier's SLA does not say otherwise.
    default_max_age: timedelta
    clock_skew: timedelta
    #: Most uploads recorded in one transaction.
    batch_max: int = 256
    #: Bodies up to this size are verified on the event loop (about a millisecond); larger
    #: ones (SBOMs take seconds) in a worker thread, so the loop keeps answering.
    inline_verify_max_bytes: int = 64 * 1024
    #: Bodies from this size are first looked up as a re-upload, so their verification is not
    #: repeated; smaller ones are verified and found to be re-uploads in the batch.
    duplicate_precheck_min_bytes: int = 64 * 1024


@dataclass
class _Pending:
    upload: Upload
    supplier_id: str
    actor: Principal
    trust: TrustContext
    version: int
    outcome: Outcome
    future: asyncio.Future[IngestResult] = field(repr=False)


_STOP = object()
#: Loop turns the writer lets pass before it takes a batch (see _write_batches).
_GATHER_TURNS = 8


class Ingestor:
    """Verifies uploads and records them through one group-committing writer task."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        published: Callable[[], None],
        trust: TrustCache,
        *,
        verify: Verify,
        limits: IngestLimits,
        committed: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.trust = trust
        self.limits = limits
        self._verify_sync = verify
        self._published = published  # e.g. the outbox relay's wake(): events are committed
        #: Told the number of uploads of each group commit (the batch-size metric).
        self._committed = committed
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="attestation-ingest-writer")

    async def stop(self) -> None:
        """Record everything already queued, then stop the writer."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except TimeoutError:
            log.exception("ingest writer did not drain within 30 s; cancelling it")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -------------------------------------------------------------------------- ingest

    async def ingest(self, upload: Upload, *, supplier_id: str, actor: Principal) -> IngestResult:
        """Verify and record one upload (accepted or rejected) with its audit entry and event;
        returns after the commit."""
        if self._closing or self._task is None:
            raise ServiceUnavailable("the service is shutting down; retry the upload")
        snapshot = await self.trust.get(self.db)
        if supplier_id not in snapshot.suppliers:
            # Onboarded since the snapshot was read (perhaps by another process)?
            snapshot = await self.trust.refresh(self.db)
            if supplier_id not in snapshot.suppliers:
                raise SupplierNotFound(f"no supplier {supplier_id!r}")
        if len(upload.data) >= self.limits.duplicate_precheck_min_bytes:
            async with self.db.session() as session:
                earlier = await AttestationRepository(session).by_raw_digest(
                    supplier_id, upload.digest
                )
            if earlier is not None:
                return IngestResult(earlier, created=False)
        trust = self._context(snapshot, supplier_id)
        pending = _Pending(
            upload=upload,
            supplier_id=supplier_id,
            actor=actor,
            trust=trust,
            version=snapshot.version,
            outcome=await self._verify(upload, trust),
            future=asyncio.get_running_loop().create_future(),
        )
        # Checked again with no await before the put, so stop() cannot miss the upload.
        if self._closing or self._task is None or self._task.done():
            raise ServiceUnavailable("the service is shutting down; retry the upload")
        self._queue.put_nowait(pending)
        # If this request is cancelled (client gone) the upload is still recorded: the
        # future is cancelled with it and the writer skips answering it.
        return await pending.future

    def _context(self, snapshot: TrustSnapshot, supplier_id: str) -> TrustContext:
        return snapshot.context(
            supplier_id,
            default_max_age=self.limits.default_max_age,
            clock_skew=self.limits.clock_skew,
        )

    async def _verify(self, upload: Upload, trust: TrustContext) -> Outcome:
        if len(upload.data) <= self.limits.inline_verify_max_bytes:
            return self._verify_sync(upload.content_type, upload.data, trust)
        return await asyncio.to_thread(self._verify_sync, upload.content_type, upload.data, trust)

    # -------------------------------------------------------------------------- writer

    async def _run(self) -> None:
        try:
            await self._write_batches()
        finally:
            # Cancelled (shutdown timed out): nobody may wait for ever on what is left.
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, _Pending):
                    _answer(item, error=ServiceUnavailable("the service stopped; retry"))

    async def _write_batches(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            # A few turns of the loop (no timer) before the batch is taken: uploads verified
            # meanwhile, and those whose requests arrive meanwhile, join this batch instead of
            # starting the next, so a batch's statements, commit and relay round are shared
            # by more uploads. Requests arrive in bursts with empty turns between them (a
            # client answered in one commit sends its next upload a few tens of microseconds
            # later): stopping at the first turn that brought nothing left a third of the
            # concurrent uploads to the next batch (16 clients: 10 uploads per commit instead
            # of 16, 5% fewer uploads per second). An idle turn costs microseconds, which is
            # all a lone upload waits.
            for _ in range(_GATHER_TURNS):
                if self._queue.qsize() + 1 >= self.limits.batch_max:
                    break
                await asyncio.sleep(0)
            batch: list[_Pending] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, _Pending)
                    batch.append(item)
                if stopping or len(batch) >= self.limits.batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._record(batch)
        except Exception as e:  # noqa: BLE001 - handed to each waiting upload, not swallowed
            if len(batch) == 1:
                _answer(batch[0], error=e)
                return
            # One bad upload must not fail the others: record each on its own.
            log.warning("batch of %d failed (%s); recording one by one", len(batch), e)
            for pending in batch:
                await self._commit([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            _answer(pending, result=result)
        self._published()
        if self._committed is not None:
            self._committed(len(batch))

    async def _record(self, batch: list[_Pending]) -> list[IngestResult]:
        async with self.db.session() as session:
            version = await TrustRepository(session).version(lock=True)
            snapshot = self.trust.snapshot
            if snapshot is None or snapshot.version != version:
                snapshot = await self.trust.reload(session)
            for pending in batch:
                if pending.version != version:
                    # Trust material changed since this upload was verified (a key revoked, an
                    # identity added): verify it again against the material as committed.
                    pending.trust = self._context(snapshot, pending.supplier_id)
                    pending.version = version
                    pending.outcome = await self._verify(pending.upload, pending.trust)
            attestations = AttestationRepository(session)
            earlier: dict[tuple[str, str], Attestation | RecordedAttestation] = dict(
                await attestations.by_raw_digests((p.supplier_id, p.upload.digest) for p in batch)
            )
            results: list[IngestResult] = []
            rows: list[dict[str, Any]] = []
            blobs: dict[str, dict[str, Any]] = {}
            subjects: dict[tuple[str, str, str], dict[str, Any]] = {}
            audit: list[AuditRecord] = []
            events: list[tuple[str, EventV1]] = []
            for pending in batch:
                key = (pending.supplier_id, pending.upload.digest)
                if key in earlier:
                    results.append(IngestResult(earlier[key], created=False))
                    continue
                row = _row(pending)
                record = RecordedAttestation(**row)
                earlier[key] = record  # the same bytes again later in this batch
                rows.append(row)
                blobs.setdefault(
                    pending.upload.digest,
                    {
                        "digest": pending.upload.digest,
                        "size": len(pending.upload.data),
                        "data": pending.upload.data,
                    },
                )
                for subject in record.subjects:
                    for algorithm, value in subject["digest"].items():
                        subjects.setdefault(
                            (record.id, algorithm, value),
                            {
                                "attestation_id": record.id,
                                "algorithm": algorithm,
                                "digest": value,
                                "name": subject["name"],
                            },
                        )
                audit.append(
                    AuditRecord(
                        actor=pending.actor.actor,
                        action=f"attestation.{record.status}",
                        subject=record.id,
                        reason="; ".join(record.reasons) or None,
                        # The digest of the uploaded bytes, as payload=upload.data would give.
                        payload_digest=pending.upload.digest,
                    )
                )
                events.append(_event(pending, record))
                results.append(
                    IngestResult(record, created=True, malformed=pending.outcome.malformed)
                )
            await attestations.add_many(rows, list(blobs.values()), list(subjects.values()))
            # One chained entry per upload, appended with one head read and one insert.
            await self.audit.append_many(session, audit)
            await enqueue_many(session, events)
        return results


def _answer(
    pending: _Pending, *, result: IngestResult | None = None, error: Exception | None = None
) -> None:
    if pending.future.done():  # the request was cancelled; the upload is recorded anyway
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        assert result is not None
        pending.future.set_result(result)


def _row(pending: _Pending) -> dict[str, Any]:
    outcome, upload = pending.outcome, pending.upload
    return {
        "id": time_ordered_id(),
        "supplier_id": pending.supplier_id,
        "status": outcome.status,
        "verified": outcome.verified,
        "content_type": upload.content_type,
        "envelope": outcome.envelope,
        "raw_digest": upload.digest,
        "raw_size": len(upload.data),
        "predicate_type": outcome.predicate_type,
        "predicate_kind": outcome.predicate_kind,
        "recognised": outcome.recognised,
        "signer": outcome.signer,
        "subjects": outcome.subjects,
        "summary": outcome.summary,
        "reasons": outcome.reasons,
        "issued_at": outcome.issued_at,
        "expires_at": outcome.expires_at,
        "created_at": pending.trust.now,
        "uploaded_by": pending.actor.actor,
    }


def time_ordered_id() -> str:
    """A UUIDv7 (RFC 9562: 48-bit millisecond time, 74 random bits) as 32 hex digits, the
    form of ``uuid4().hex``.

    Record ids and event ids key B-tree indexes (the attestation's primary key, its subjects',
    the audit log's subject, the outbox's event id): random ids put each upload's entries on
    a random leaf page of each index, so every group commit wrote one page per upload per
    index to the WAL; ids that grow with time land on the same few rightmost pages. Ids are
    not secrets: tenancy is enforced in every query."""
    millis = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return f"{value:032x}"


def _event(pending: _Pending, record: RecordedAttestation) -> tuple[str, EventV1]:
    if record.status == "rejected":
        return Subjects.ATTESTATION_REJECTED, AttestationRejectedV1(
            event_id=time_ordered_id(),
            attestation_id=record.id,
            supplier=record.supplier_id,
            reasons=record.reasons,
            actor=pending.actor.actor,
        )
    return Subjects.ATTESTATION_VERIFIED, AttestationVerifiedV1(
        event_id=time_ordered_id(),
        attestation_id=record.id,
        supplier=record.supplier_id,
        predicate_type=record.predicate_type,
        subjects=[SubjectDigest(**s) for s in record.subjects],
        expires_at=record.expires_at,
        verified=record.verified,
        actor=pending.actor.actor,
    )
