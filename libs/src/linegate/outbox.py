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
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.db import Database
from linegate.events import EventV1, NatsClient

log = logging.getLogger("linegate.outbox")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
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


class OutboxRelay:
    """Background task publishing pending outbox rows in order."""

    def __init__(
        self, db: Database, nats: NatsClient, *, poll_interval: float = 1.0, batch: int = 100
    ) -> None:
        self.db = db
        self.nats = nats
        self.poll_interval = poll_interval
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Best effort: flush what is pending while NATS is still connected.
        if self.nats.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout=5)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            if not self.nats.connected:
                continue
            try:
                await self.flush()
            except Exception:
                log.exception("outbox relay failed; will retry")

    async def flush(self) -> int:
        """Publish every pending message; returns how many were sent."""
        sent = 0
        while True:
            async with self.db.session() as session:
                stmt: Any = (
                    select(OutboxMessage)
                    .where(col(OutboxMessage.sent_at).is_(None))
                    .order_by(col(OutboxMessage.id))
                    .limit(self.batch)
                )
                if not self.db.is_sqlite:
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = list((await session.exec(stmt)).all())
                for row in rows:
                    await self.nats.js.publish(
                        row.subject,
                        row.body.encode(),
                        timeout=5,
                        headers={"Nats-Msg-Id": row.event_id, "Linegate-Event": row.event_type},
                    )
                    row.sent_at = datetime.now(UTC)
                    session.add(row)
                    sent += 1
            if len(rows) < self.batch:
                return sent


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
