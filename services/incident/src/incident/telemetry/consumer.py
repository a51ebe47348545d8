"""The durable JetStream pull consumer that feeds :class:`TelemetryIngest`.

Every replica fetches from the same durable consumer (``telemetry_consumer``), so JetStream
hands each message to one of them: the queue group of pull consumers. A fetched batch is
processed in one transaction and acked after the commit; if the commit fails nothing is acked
and the batch comes back after ``ack_wait``. ``batch`` messages are fetched at once when they
hold the device agent's default of 100 records each; smaller messages are fetched up to
:data:`MAX_FETCH_FACTOR` times as many, so a transaction holds about as many records (its
statements and commit cost nearly the same whatever it holds). The next batch is fetched and
parsed while one is being written, and written only after that one committed. A message that
breaks processing on its own (a bug, not the database) is found by retrying the batch one
message at a time and is dead-lettered, so one bad message never blocks the stream.

The fetches are JetStream's own pull requests (:class:`_Pull`), not nats-py's
``PullSubscription.fetch``, which waits for each message of a batch in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy.exc import DBAPIError, OperationalError

from incident.telemetry.ingest import Incoming, Outcome, Prepared, TelemetryIngest
from linegate.events import NatsClient, Streams, Subjects

log = logging.getLogger("incident.telemetry.consumer")

OnOutcome = Callable[[Outcome], Awaitable[None] | None]
#: Records per message of the device agent's default batch: ``batch`` is meant for them.
AGENT_BATCH_RECORDS = 100
#: Most messages fetched at once, as a multiple of ``batch``. Two fetches are in flight at
#: most, and the durable consumer allows ``8 * batch`` unacked messages.
MAX_FETCH_FACTOR = 4


class TelemetryConsumer:
    def __init__(
        self,
        nats: NatsClient,
        ingest: TelemetryIngest,
        *,
        durable: str,
        batch: int = 256,
        ack_wait: float = 30.0,
        on_outcome: OnOutcome | None = None,
    ) -> None:
        self.nats = nats
        self.ingest = ingest
        self.durable = durable
        self.batch = batch
        self.ack_wait = ack_wait
        self.on_outcome = on_outcome
        #: Messages the next fetch asks for (see :meth:`_resize`).
        self.fetch_size = batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sub: _Pull | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="incident-telemetry")

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batches in hand (so a deploy does not leave them to ``ack_wait``), then
        stop; after ``grace`` seconds what is left is abandoned unacked and comes again
        (``grace=0`` is what a crash does). ``_stopping`` is set first: Python 3.11's
        ``wait_for`` can swallow a cancellation that races a fetched message, and the loop
        must still end."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=grace)
            if pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _subscribe(self) -> _Pull:
        """The durable consumer (created as ``js.pull_subscribe`` would if it is missing)
        and a :class:`_Pull` of it."""
        await self.nats.wait_connected(timeout=365 * 24 * 3600)
        js, stream = self.nats.js, Streams.TELEMETRY.name
        try:
            await js.consumer_info(stream, self.durable)
        except NotFoundError:
            await js.add_consumer(
                stream,
                config=ConsumerConfig(
                    name=self.durable,
                    durable_name=self.durable,
                    filter_subject=Subjects.TELEMETRY_ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=max(self.batch * 8, 1000),
                ),
            )
        pull = _Pull(self.nats.nc, stream, self.durable)
        await pull.start()
        return pull

    async def _run(self) -> None:
        # Two batches in flight at most: while one is written (the database's work, on its
        # thread or server), the next is fetched and parsed. Writes stay one after another,
        # so each batch's seen-check sees every batch before it committed.
        writing: asyncio.Task[None] | None = None
        delay = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    if self._sub is None:
                        self._sub = await self._subscribe()
                    try:
                        msgs = await self._sub.fetch(self.fetch_size, timeout=1.0)
                    except (TimeoutError, NatsTimeoutError):
                        continue
                    incoming, prepared = await self._prepare(msgs)
                    self._resize(prepared)
                    if writing is not None:
                        # (Cancelling this await cancels the write too.) If it failed, the
                        # batch in hand is left unacked as well and comes again.
                        previous, writing = writing, None
                        await previous
                    writing = asyncio.create_task(self._write(msgs, incoming, prepared))
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if isinstance(e, PullError) and self._sub is not None:
                        # (e.g. the consumer was deleted): subscribe, and so create it, anew
                        with contextlib.suppress(Exception):
                            await self._sub.unsubscribe()
                        self._sub = None
                    log.exception("telemetry fetch failed; retrying in %.1fs", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # killed mid-write: nothing of it is acked
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    def _resize(self, prepared: Prepared | None) -> None:
        """Size the next fetch so that it holds about ``batch`` agent-sized messages' worth
        of records, judged by the records per event of the fetch just parsed."""
        if prepared is None or not prepared.out.events:
            return  # nothing to judge by (a failed parse, only duplicates or dead letters)
        out = prepared.out
        per_message = max(out.records / out.events, 1.0)
        wanted = round(self.batch * AGENT_BATCH_RECORDS / per_message)
        self.fetch_size = min(max(wanted, self.batch), self.batch * MAX_FETCH_FACTOR)

    async def handle(self, msgs: list[Any]) -> None:
        """Process and ack one fetched batch (or leave it unacked for redelivery)."""
        incoming, prepared = await self._prepare(msgs)
        await self._write(msgs, incoming, prepared)

    async def _prepare(self, msgs: list[Any]) -> tuple[list[Incoming], Prepared | None]:
        incoming = [Incoming(m.subject, m.data, _stream_seq(m)) for m in msgs]
        try:
            return incoming, await self.ingest.prepare(incoming)
        except Exception:
            log.exception("telemetry batch failed; retrying its messages one by one")
            return incoming, None

    async def _write(
        self, msgs: list[Any], incoming: list[Incoming], prepared: Prepared | None
    ) -> None:
        if prepared is None:
            await self._one_by_one(msgs, incoming)
            return
        try:
            outcome = await self.ingest.write(prepared)
        except (OperationalError, DBAPIError):
            # The database (or a concurrent replica's insert of the same id): all come again.
            log.warning("telemetry batch not committed; redelivering", exc_info=True)
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.nak(delay=1)
            return
        except Exception:
            log.exception("telemetry batch failed; retrying its messages one by one")
            await self._one_by_one(msgs, incoming)
            return
        for m in msgs:
            await m.ack()
        await self._report(outcome)

    async def _one_by_one(self, msgs: list[Any], incoming: list[Incoming]) -> None:
        for m, inc in zip(msgs, incoming, strict=True):
            try:
                outcome = await self.ingest.process([inc])
            except (OperationalError, DBAPIError):
                await m.nak(delay=1)
                continue
            except Exception as e:
                log.exception("telemetry message %s cannot be processed", inc.stream_seq)
                outcome = await self.ingest.dead_letter(inc, f"processing failed: {e!r}")
            await m.ack()
            await self._report(outcome)

    async def _report(self, outcome: Outcome) -> None:
        if self.on_outcome is not None:
            result = self.on_outcome(outcome)
            if result is not None:
                await result


class PullError(Exception):
    """JetStream answered a pull request with an error status (not 'no messages' or a
    request's end)."""


#: Status codes that end a pull request without an error: no messages (a ``no_wait``
#: request), the request expired or was filled as far as it could be, and 409 (max ack
#: pending reached, a leadership change, a batch or bytes limit).
_ENDS = frozenset({"404", "408", "409"})
#: Idle heartbeats and flow control: not an end.
_CONTROL = "100"
#: The request reached no consumer (deleted, or not made yet).
_NO_RESPONDERS = "503"


class _Pull:
    """Fetches from a durable pull consumer with JetStream's pull requests
    (``$JS.API.CONSUMER.MSG.NEXT``), each with a reply inbox of its own under one wildcard
    subscription whose callback collects what arrives.

    nats-py's ``PullSubscription.fetch`` waits for each message of a batch with
    ``asyncio.wait_for`` on ``next_msg``: a task, a timer and a uuid per message, about a
    third of the CPU of a raw consume of one-record messages. Here the connection's reader
    hands every message to :meth:`_on_msg`, which appends it, and a fetch wakes once the
    batch is full or the server ended the request. As with nats-py's fetch, a lingering
    request (made when nothing was there) returns with its first messages and stays open
    on the server until it expires; what it delivers later is kept for the next fetch (at
    most one batch per open request, within ``max_ack_pending``)."""

    def __init__(self, nc: NatsConnection, stream: str, durable: str) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = nc.new_inbox()
        self._requests = 0
        self._got: list[Msg] = []
        #: Reply inboxes of the requests the server ended, and the last error status.
        self._ended: set[str] = set()
        self._error: tuple[str, str] | None = None
        self._wake = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            self._prefix + ".*",
            cb=self._on_msg,
            pending_msgs_limit=512 * 1024,
            pending_bytes_limit=256 * 1024 * 1024,
        )

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is None:
            self._got.append(msg)
        elif status == _CONTROL:
            return
        else:
            description = (headers or {}).get("Description", "").strip()
            if status == _NO_RESPONDERS:
                # No description on the status line; nats-py puts the header after it there.
                description = "no responders (no such consumer)"
            if status not in _ENDS or "deleted" in description.lower():
                self._error = (status, description)
            self._ended.add(msg.subject)
        self._wake.set()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages: those there now, or else the first to come within
        ``timeout`` seconds (:class:`nats.errors.TimeoutError` if none does)."""
        if not self._got:
            deadline = time.monotonic() + timeout
            reply = await self._request({"batch": batch, "no_wait": True})
            await self._until(lambda: len(self._got) >= batch or reply in self._ended, deadline)
            self._ended.discard(reply)
            if not self._got:
                expires = int((deadline - time.monotonic()) * 1e9) - 100_000
                if expires > 0:
                    reply = await self._request({"batch": batch, "expires": expires})
                    await self._until(lambda: bool(self._got) or reply in self._ended, deadline)
                    ended = reply in self._ended
                    self._ended.discard(reply)
                    if self._got:
                        await asyncio.sleep(0)  # the rest of what came with the first
                    elif ended and self._error is None:
                        # Ended at once with nothing (e.g. max ack pending): not a busy loop.
                        await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        if self._error is not None:
            (status, description), self._error = self._error, None
            raise PullError(f"JetStream pull request: {status} {description}")
        if not self._got:
            raise NatsTimeoutError
        msgs = self._got[:batch]
        del self._got[:batch]
        return msgs

    async def _request(self, request: dict[str, Any]) -> str:
        self._requests += 1
        reply = f"{self._prefix}.{self._requests}"
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=reply)
        return reply

    async def _until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and self._error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)


#: Tokens of a JetStream ack subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>
#: .<consumer seq>.<timestamp>.<pending>`` (v1), or from server 2.9 with ``<domain>.<account
#: hash>`` after ``ACK`` and a random token at the end (v2, 12 tokens; 11 without the last).
_V1_TOKENS = 9
_V1_STREAM_SEQ = 5
_V2_MIN_TOKENS = 11
_V2_STREAM_SEQ = 7


def _stream_seq(m: Any) -> int | None:
    """The message's stream sequence, read from its ack subject as ``m.metadata`` does (which
    also parses the delivery time and builds three objects, for every message of a fetch)."""
    reply = getattr(m, "reply", None)
    if not reply:
        return None  # a message without JetStream metadata
    tokens = reply.split(".")
    if tokens[0] != "$JS" or tokens[1:2] != ["ACK"]:
        return None
    try:
        if len(tokens) == _V1_TOKENS:
            return int(tokens[_V1_STREAM_SEQ])
        if len(tokens) >= _V2_MIN_TOKENS:
            return int(tokens[_V2_STREAM_SEQ])
    except ValueError:
        return None
    return None
