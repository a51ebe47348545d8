"""Inference telemetry: records batched, overrides at once, memory bounded while NATS is down.

Records collect in an open batch. When it holds ``batch_size`` records it is sealed into an
:class:`~linegate.events.InferenceBatchV1` and published in the background; every
``flush_interval`` seconds a partial batch is sealed too. A sealed batch never changes, so a
retry carries the same event id and JetStream drops it if the first attempt did land.

While the publisher is down, sealed batches wait. Past ``max_buffered`` records the oldest
waiting batch is dropped whole; its records (and any drops it was reporting) are counted and
reported in the ``dropped`` field of the next batch sealed, so the incident service can tell a
gap in the data from a quiet line. Overrides are operator actions: they are published before
any batch and queued separately (bounded by ``max_overrides``) when the publisher is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from linegate.events import EventV1, InferenceBatchV1, InferenceRecordV1, OverrideV1, Subjects
from linegate.events import publish as publish_event

log = logging.getLogger("linegate.edge.telemetry")

#: ``await publish(subject, event)``; raises when the event was not accepted.
Publish = Callable[[str, EventV1], Awaitable[None]]


class PublisherUnavailable(Exception):
    """The publisher is known to be down; nothing was sent."""


def jetstream_publisher(nc: Any, *, timeout: float = 5.0) -> Publish:
    """Publish to JetStream over ``nc`` (a nats-py connection) and wait for the ack.

    Fails at once while ``nc`` is disconnected instead of letting nats-py queue the message in
    its reconnect buffer: the telemetry buffer, not the client, decides what to keep.
    """
    js = nc.jetstream()

    async def publish(subject: str, event: EventV1) -> None:
        if not nc.is_connected:
            raise PublisherUnavailable("NATS is not connected")
        await publish_event(js, subject, event, timeout=timeout)

    return publish


class TelemetryBuffer:
    """Batches inference records and publishes them with overrides on one device's subject."""

    def __init__(
        self,
        publish: Publish,
        *,
        line: str,
        device_id: str,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        max_buffered: int = 10_000,
        max_overrides: int = 1_000,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0 or max_overrides < 1:
            raise ValueError("batch_size, flush_interval and max_overrides must be positive")
        if max_buffered < 2 * batch_size:
            # One batch may be in flight and one open; anything less could not be honoured.
            raise ValueError(f"max_buffered must be at least 2 * batch_size ({2 * batch_size})")
        self.subject = Subjects.telemetry(line, device_id)  # validates both tokens
        self.line, self.device_id = line, device_id
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_buffered, self.max_overrides = max_buffered, max_overrides
        self._publish = publish
        self._open: list[InferenceRecordV1] = []
        self._sealed: deque[InferenceBatchV1] = deque()
        self._overrides: deque[OverrideV1] = deque()
        self._held = 0  # records in the open batch and the sealed ones
        self._inflight: InferenceBatchV1 | None = None
        self._unreported = 0
        self._lock = asyncio.Lock()
        self._drain_requested = False
        self._drainer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._publisher_up = True
        #: Records dropped since start (reported ones included).
        self.dropped_total = 0
        self.overrides_dropped = 0
        self.batches_published = 0

    @property
    def buffered(self) -> int:
        """Records held on the device, waiting to be published."""
        return self._held

    @property
    def overrides_pending(self) -> int:
        return len(self._overrides)

    # ---------------------------------------------------------------------------- intake

    def add(self, record: InferenceRecordV1) -> None:
        """Buffer ``record``; a full batch is sealed and published in the background."""
        self._open.append(record)
        self._held += 1
        if len(self._open) >= self.batch_size:
            self._seal()
            self._request_drain()
        self._enforce_bound()

    async def override(self, event: OverrideV1) -> bool:
        """Publish ``event`` now; True once it is published, False if it is queued for the
        next flush because the publisher is down."""
        self._overrides.append(event)
        if len(self._overrides) > self.max_overrides:
            lost = self._overrides.popleft()
            self.overrides_dropped += 1
            log.error("override queue full: dropped the oldest", extra={"id": lost.event_id})
        async with self._lock:
            await self._publish_overrides()
        return all(queued is not event for queued in self._overrides)

    # ----------------------------------------------------------------------------- flush

    async def flush(self) -> bool:
        """Seal the open batch (or a pending drop report) and publish everything waiting;
        True when nothing is left on the device."""
        self._seal()
        async with self._lock:
            return await self._publish_overrides() and await self._publish_batches()

    async def start(self) -> None:
        """Flush every ``flush_interval`` seconds until :meth:`close`."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="telemetry-flush")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop flushing; one last flush, bounded by ``timeout``."""
        for task in (self._ticker, self._drainer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._drainer = None
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("telemetry left unpublished at shutdown", extra={"records": self._held})

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    def _request_drain(self) -> None:
        self._drain_requested = True
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="telemetry-drain")

    async def _drain(self) -> None:
        # Batches sealed while this runs are picked up by the loop, not by another task; after
        # a failure the ticker retries, so a down publisher costs one attempt per interval.
        while self._drain_requested:
            self._drain_requested = False
            async with self._lock:
                if not await self._publish_batches():
                    return

    # --------------------------------------------------------------------------- internals

    def _seal(self) -> None:
        if not self._open and not self._unreported:
            return
        self._sealed.append(
            InferenceBatchV1(
                line=self.line,
                device_id=self.device_id,
                records=self._open,
                dropped=self._unreported,
            )
        )
        self._open, self._unreported = [], 0

    def _enforce_bound(self) -> None:
        while self._held > self.max_buffered:
            # The batch being published stays: it may be acked a moment from now.
            index = 1 if self._sealed and self._sealed[0] is self._inflight else 0
            if index >= len(self._sealed):
                return
            victim = self._sealed[index]
            del self._sealed[index]
            self._held -= len(victim.records)
            self._unreported += len(victim.records) + victim.dropped
            self.dropped_total += len(victim.records)

    async def _publish_overrides(self) -> bool:
        while self._overrides:
            if not await self._send(self._overrides[0]):
                return False
            self._overrides.popleft()
        return True

    async def _publish_batches(self) -> bool:
        while self._sealed:
            batch = self._inflight = self._sealed[0]
            try:
                sent = await self._send(batch)
            finally:
                self._inflight = None
            if not sent:
                return False
            self._sealed.popleft()  # still the head: the in-flight batch is never dropped
            self._held -= len(batch.records)
            self.batches_published += 1
        return True

    async def _send(self, event: EventV1) -> bool:
        try:
            await self._publish(self.subject, event)
        except Exception as e:  # noqa: BLE001 - any failure means "keep it and retry later"
            if self._publisher_up:
                log.warning(
                    "telemetry publisher down; buffering",
                    extra={"error": repr(e), "buffered": self._held},
                )
            self._publisher_up = False
            return False
        if not self._publisher_up:
            log.info("telemetry publisher back", extra={"dropped_total": self.dropped_total})
        self._publisher_up = True
        return True
