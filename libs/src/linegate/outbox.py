"""Transactional outbox: events commit with the change that caused them, then reach NATS.

Publishing straight to NATS after a commit loses the event if the process dies in between;
publishing before the commit announces changes that may roll back. Instead a service adds an
:class:`OutboxMessage` in the same transaction as its change (:func:`enqueue`), and the
:class:`OutboxRelay` publishes pending rows to JetStream and marks them sent. A crash between
publish and mark re-publishes the row; JetStream drops the duplicate by ``Nats-Msg-Id`` (the
event id) within the stream's duplicate window.

Example::

    async with db.session() as session:
        ...  # the change
        await enqueue(session, Subjects.ATTESTATION_VERIFIED, AttestationVerifiedV1(...))
    relay.wake()  # publish now rather than at the next poll
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.db import Database, DriverStatement, core_connection
from linegate.events import EventV1, NatsClient

log = logging.getLogger("linegate.outbox")


#: 64-bit ids on PostgreSQL (see :func:`widen_outbox_ids`); SQLite only auto-increments an
#: ``INTEGER PRIMARY KEY``, which is 64-bit there.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    event_id: str = Field(unique=True)
    subject: str
    event_type: str
    body: str
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True), index=True)


async def enqueue(session: AsyncSession, subject: str, event: EventV1) -> OutboxMessage:
    """Queue ``event`` for ``subject`` in ``session``'s transaction."""
    message = OutboxMessage(
        event_id=event.event_id,
        subject=subject,
        event_type=type(event).__name__,
        body=event.model_dump_json(),
        created_at=datetime.now(UTC),
    )
    session.add(message)
    await session.flush()
    return message


async def enqueue_many(session: AsyncSession, events: Iterable[tuple[str, EventV1]]) -> int:
    """Queue several ``(subject, event)`` pairs in ``session``'s transaction with one
    multi-row INSERT (for writers that record many changes in one transaction); returns how
    many were queued. The relay publishes them in the given order."""
    now = datetime.now(UTC)
    rows = [
        {
            "event_id": event.event_id,
            "subject": subject,
            "event_type": type(event).__name__,
            "body": event.model_dump_json(),
            "created_at": now,
            "sent_at": None,
        }
        for subject, event in events
    ]
    if rows:
        await _INSERT_MESSAGES.executemany(await core_connection(session), rows)
    return len(rows)


class OutboxRelay:
    """Background task publishing pending outbox rows in order, and deleting sent rows once
    they are older than ``retention`` (checked every ``prune_every`` seconds; None keeps
    them): a sent row's event is in its JetStream stream, and the change that caused it in
    the audit log, so the table holds what is pending and a day or so of history, not every
    event the service ever published."""

    def __init__(
        self,
        db: Database,
        nats: NatsClient,
        *,
        poll_interval: float = 1.0,
        batch: int = 100,
        retention: timedelta | None = timedelta(days=1),
        prune_every: float = 600.0,
    ) -> None:
        self.db = db
        self.nats = nats
        self.poll_interval = poll_interval
        self.batch = batch
        self.retention = retention
        self.prune_every = prune_every
        self._pruned_at = time.monotonic()
        #: Seconds to wait for JetStream's acknowledgements of one batch.
        self.publish_timeout = 5.0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._js: JetStreamContext | None = None
        self._js_nc: object = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        # The flag ends the loop even when the cancel is lost: on Python 3.11 asyncio.wait_for
        # (used inside nats-py's request) swallows a cancel that arrives as its reply does.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Best effort: flush what is pending while NATS is still connected.
        if self.nats.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout=5)

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if not self.nats.connected:
                continue
            try:
                await self.flush()
            except Exception:
                log.exception("outbox relay failed; will retry")
            due = time.monotonic() - self._pruned_at >= self.prune_every
            if self.retention is not None and due:
                self._pruned_at = time.monotonic()
                try:
                    await self.prune()
                except Exception:
                    log.exception("outbox prune failed; will retry")

    async def prune(self) -> int:
        """Delete rows sent before ``retention`` ago; returns how many (never a pending one)."""
        if self.retention is None:
            return 0
        cutoff = datetime.now(UTC) - self.retention
        async with self.db.session() as session:
            result = await session.exec(
                sa.delete(_OUTBOX).where(_OUTBOX.c.sent_at.is_not(None), _OUTBOX.c.sent_at < cutoff)
            )
            deleted = int(result.rowcount or 0)
        if deleted:
            log.info("outbox: deleted %d rows sent before %s", deleted, cutoff.isoformat())
        return deleted

    async def flush(self) -> int:
        """Publish every pending message, in order; returns how many were sent. Flushes of one
        relay run one at a time; relays of several processes keep the order too (on
        PostgreSQL by waiting for each other's row locks; on SQLite each publishes from the
        oldest pending row, and JetStream drops the duplicates by Nats-Msg-Id)."""
        async with self._flushing:
            if self.db.is_sqlite:
                return await self._flush_sqlite()
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        sent = 0
        while True:
            async with self.db.session() as session:
                rows = await _pending(session, _PENDING_LOCKED, self.batch)
                published = await self._publish(rows)
                await _mark_sent(session, published)
                sent += len(published)
            if len(rows) < self.batch:
                return sent

    async def _flush_sqlite(self) -> int:
        # A SQLite transaction holds the whole database's write lock, so the rows are read in
        # one short transaction, published with none open, and marked sent in another: every
        # writer of the service waits neither for NATS nor for a slow publish. A crash (or a
        # second process's relay) between publish and mark re-publishes a row, which JetStream
        # drops by Nats-Msg-Id, as for a crash in the locked variant.
        sent = 0
        while True:
            async with self.db.session() as session:
                rows = await _pending(session, _PENDING, self.batch)
            published: list[int] = []
            try:
                published = await self._publish(rows)
            finally:
                if published:
                    async with self.db.session() as session:
                        await _mark_sent(session, published)
                    sent += len(published)
            if len(rows) < self.batch:
                return sent

    async def _publish(self, rows: Sequence[Any]) -> list[int]:
        """Publish ``rows`` (id, subject, body, event_id, event_type) in order, without waiting
        for one acknowledgement before sending the next; returns the ids JetStream acknowledged,
        and raises the first failure once every acknowledgement is in (or has timed out).

        Order: JetStream handles one connection's messages in order and acknowledges them in
        that order, so a lost connection or a timeout fails a row and every row after it (each
        retried in order; one that was stored after all is dropped as a duplicate by its
        Nats-Msg-Id). A later row can be stored before an earlier one only when the stream
        refuses the earlier message alone (its size, a subject no stream takes): a refusal of
        that message which each retry meets again, logged at every flush, rather than one it
        outlives to arrive out of order."""
        if not rows:
            return []
        js = self._jetstream()
        acks: list[asyncio.Future[Any]] = []
        failure: BaseException | None = None
        try:
            # Sent one after another on the one connection: JetStream stores them in order.
            for row in rows:
                acks.append(
                    await js.publish_async(
                        row.subject,
                        row.body.encode(),
                        headers={"Nats-Msg-Id": row.event_id, "Linegate-Event": row.event_type},
                    )
                )
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.wait(acks)
        except Exception as e:  # noqa: BLE001 - re-raised below, after what was acknowledged
            failure = e
        published: list[int] = []
        for row, ack in zip(rows, acks, strict=False):
            if not ack.done():
                ack.cancel()  # timed out: retried at the next flush
            elif ack.cancelled():
                pass
            elif (error := ack.exception()) is not None:
                failure = failure or error
            else:
                published.append(int(row.id))
        if failure is not None and not published:
            raise failure
        if failure is not None:
            log.warning(
                "outbox: %d of %d events not published (%s); will retry",
                len(rows) - len(published),
                len(rows),
                failure,
            )
        return published

    def _jetstream(self) -> JetStreamContext:
        # One context per connection: publish_async's acknowledgements arrive on an inbox
        # subscription the context makes once (``NatsClient.js`` builds a new context).
        nc = self.nats.nc
        if self._js is None or self._js_nc is not nc:
            self._js, self._js_nc = nc.jetstream(), nc
        return self._js


class _Row(NamedTuple):
    id: int
    subject: str
    body: str
    event_id: str
    event_type: str


async def _pending(session: AsyncSession, statement: DriverStatement, limit: int) -> list[_Row]:
    conn = await session.connection()
    return [_Row(*row) for row in await statement.execute(conn, {"limit": limit})]


async def _mark_sent(session: AsyncSession, ids: list[int]) -> None:
    if ids:
        now = datetime.now(UTC)
        await _MARK_SENT.executemany(
            await session.connection(), [{"row_id": i, "now": now} for i in ids]
        )


def _table() -> sa.Table:
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


# The relay's statements, compiled once per dialect and run on the session connection's
# driver (see linegate.db.DriverStatement: SQLAlchemy's execute costs more than the
# statement itself).
_OUTBOX = _table()
_SELECT_PENDING = (
    sa.select(
        _OUTBOX.c.id, _OUTBOX.c.subject, _OUTBOX.c.body, _OUTBOX.c.event_id, _OUTBOX.c.event_type
    )
    .where(_OUTBOX.c.sent_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_PENDING = DriverStatement(_SELECT_PENDING)
#: FOR UPDATE, not SKIP LOCKED: a second relay (another replica, or a flush beside the
#: woken one) waits for the rows the first holds, then finds them sent and goes on after
#: them. Skipping them would publish later events before earlier ones (a revocation before
#: the release it revokes).
_PENDING_LOCKED = DriverStatement(_SELECT_PENDING.with_for_update())
_INSERT_MESSAGES = DriverStatement(sa.insert(_OUTBOX))
_MARK_SENT = DriverStatement(
    sa.update(_OUTBOX)
    .where(_OUTBOX.c.id == sa.bindparam("row_id", type_=sa.Integer))
    .values(sent_at=sa.bindparam("now", type_=_OUTBOX.c.sent_at.type))
)


def widen_outbox_ids(op: Any) -> None:
    """Alembic operations making the outbox's ids BIGINT on PostgreSQL, column and sequence
    (:func:`create_outbox_table` made a SERIAL: 2**31 - 1 events, pruned rows included). Nothing
    to do on SQLite."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("outbox", "id", type_=sa.BigInteger, existing_type=sa.Integer)
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s AS BIGINT', "
        "pg_get_serial_sequence('outbox', 'id')); END $$"
    )


def narrow_outbox_ids(op: Any) -> None:
    """The downgrade of :func:`widen_outbox_ids`."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s AS INTEGER', "
        "pg_get_serial_sequence('outbox', 'id')); END $$"
    )
    op.alter_column("outbox", "id", type_=sa.Integer, existing_type=sa.BigInteger)


def create_outbox_table(op: Any) -> None:
    """Alembic operations creating the outbox table."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String, nullable=False, unique=True),
        sa.Column("subject", sa.String, nullable=False),
        sa.Column("event_type", sa.String, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, index=True),
    )
