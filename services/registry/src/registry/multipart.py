"""Streamed ``multipart/form-data`` uploads straight into staging files.

Starlette's form parser spools file parts to temporary files and keeps other fields in memory;
pushing a multi-gigabyte model through it would write it twice. Here each part goes to its own
staging file as it arrives, hashed on the way (:class:`registry.storage.Staging`), with a size
limit per part name, so memory stays fixed whatever the upload size.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Mapping

from python_multipart.multipart import MultipartParser, parse_options_header

from linegate.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from registry.storage import HashingWriter, Received, Staging
from registry.timing import StageTimes

# The event loop hands the worker about 4 MiB at a time, at most 4 batches ahead (~16 MiB
# waits for the disk). Each handoff wakes the worker and trades the GIL: 1 MiB batches cost the
# server 1.8-2.1 CPU seconds per GiB pushed, 4 MiB ones 1.5-1.75 (16 MiB ones no less).
_BATCH_BYTES = 4 * 1024 * 1024
_QUEUE_BATCHES = 4


async def _put(feed: queue.Queue[list[bytes] | None], item: list[bytes] | None) -> None:
    try:
        feed.put_nowait(item)
    except queue.Full:
        await asyncio.to_thread(feed.put, item)


async def _pump(
    chunks: AsyncIterator[bytes],
    feed: queue.Queue[list[bytes] | None],
    failed: list[BaseException],
    max_total: int,
) -> None:
    """Receive the body into ``feed`` in batches of about a megabyte, until it ends, passes
    ``max_total`` (413) or the parser in the worker has failed.

    A batch is the list of chunks as received, never joined: the event loop copies nothing
    (it is the busier thread during an upload), and the chunks are hashed and written as-is.
    """
    batch: list[bytes] = []
    batched = total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_total:
            raise PayloadTooLarge(f"upload exceeds the {max_total}-byte limit")
        if failed:
            return
        batch.append(chunk)
        batched += len(chunk)
        if batched >= _BATCH_BYTES:
            await _put(feed, batch)
            batch = []
            batched = 0
    if batch:
        await _put(feed, batch)


class _PartCollector:
    """Callbacks for :class:`MultipartParser`: one staging file per named part."""

    def __init__(self, staging: Staging, limits: Mapping[str, int]) -> None:
        self.staging = staging
        self.limits = limits
        self.received: dict[str, Received] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._writer: HashingWriter | None = None
        self._name: str | None = None

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition")
        if disposition is None:
            raise Unprocessable("a multipart part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        raw_name = options.get(b"name")
        name = raw_name.decode("utf-8", "replace") if raw_name else ""
        if name not in self.limits:
            raise Unprocessable(
                f"unexpected multipart part {name!r}; expected: {', '.join(sorted(self.limits))}"
            )
        if name in self.received:
            raise Unprocessable(f"multipart part {name!r} appears twice")
        self._name = name
        self._writer = HashingWriter(
            self.staging.directory / f"part-{name}",
            limit=self.limits[name],
            name=name,
            hash_thread=True,
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._writer is not None
        # A view, not a slice: a received chunk goes to the hash and the file without a copy.
        self._writer.write(memoryview(data)[start:end])

    def on_part_end(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or self._name is None:
            return
        # Not synced here: BlobStore.commit fsyncs what it stores, and a part whose bytes the
        # store already has (or an upload refused later) never needs it.
        writer.close(sync=False)
        self.received[self._name] = writer.received()

    @property
    def open_part(self) -> bool:
        return self._writer is not None

    def abort(self) -> None:
        """Drop a part left open by a failed upload (no fsync: staging is removed anyway)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


async def receive_multipart(
    content_type: str | None,
    chunks: AsyncIterator[bytes],
    staging: Staging,
    limits: Mapping[str, int],
    *,
    max_total: int,
    times: StageTimes | None = None,
) -> dict[str, Received]:
    """Stream a multipart body into ``staging``; returns the parts by name.

    ``limits`` names the parts accepted and the largest size of each. Raises 415 for another
    content type, 413 past a limit, 422 for a malformed body or an unexpected part. ``times``,
    if given, gets ``body`` (until the last byte arrived) and ``drain`` (the worker finishing
    what was queued after that). The parts are closed unsynced: committing them to a
    :class:`~registry.storage.BlobStore` makes them durable.
    """
    mime, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send the model version as multipart/form-data with a boundary")
    collector = _PartCollector(staging, limits)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
        },
    )
    # Parsing, hashing and writing run in a worker thread fed through a
    # bounded queue: the event loop only receives, so network and disk overlap and the service
    # keeps answering other requests during a multi-gigabyte upload.
    feed: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=_QUEUE_BATCHES)
    failed: list[BaseException] = []

    def parse() -> None:
        while (batch := feed.get()) is not None:
            if failed:
                continue  # drain what the loop already queued
            try:
                for data in batch:
                    parser.write(data)
            except Exception as e:  # noqa: BLE001  (re-raised on the event loop below)
                failed.append(e)

    loop = asyncio.get_running_loop()
    worker = loop.run_in_executor(None, parse)
    try:
        try:
            await _pump(chunks, feed, failed, max_total)
        finally:
            if times is not None:
                times.mark("body")
            await _put(feed, None)
            await worker
            if times is not None:
                times.mark("drain")
        if failed:
            error = failed[0]
            if isinstance(error, PayloadTooLarge | Unprocessable):
                raise error
            raise Unprocessable(f"malformed multipart body: {error}") from error
        parser.finalize()
        if collector.open_part or not collector.received:
            raise Unprocessable("the multipart body ended early or held no parts")
    finally:
        collector.abort()
    return collector.received
