"""Large artefacts in a JetStream object store: pipelined upload, resumable bounded download.

Objects stay in the standard layout (NATS ADR-20), so ``ObjectStore.get``/``put`` of nats-py,
nats.go or the ``nats`` CLI read what :func:`put_file` writes and :func:`download` reads theirs:
stream ``OBJ_<bucket>``, chunks on ``$O.<bucket>.C.<nuid>``, one JSON :class:`ObjectInfo`
rolled up on ``$O.<bucket>.M.<base64url(name)>`` with ``digest = "SHA-256=<base64url>"``.

What nats-py's own ``ObjectStore`` lacks for multi-GB models, and these functions add:

- :func:`put_file` keeps up to ``window`` chunk acks in flight instead of one round trip per
  chunk, streams from disk (memory ~ ``window * chunk_size``) and never overwrites: the same
  content under the same name is a no-op, different content is refused.
- :func:`download` writes chunks to ``<dest>.partial`` as they arrive, resumes an interrupted
  ``.partial``, survives a broker restart, bounds every wait by ``timeout``, stops as soon as
  more bytes than expected arrive, checks the SHA-256 and renames atomically.

Example::

    import asyncio, hashlib
    from pathlib import Path

    import nats

    from linegate.objstore import download, put_file

    async def main() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        model = Path("model.onnx")
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        info = await put_file(js, "models", digest, model)
        await download(js, "models", digest, Path("/tmp/model.onnx"),
                       expected_size=info.size or 0, expected_sha256=digest)
        await nc.close()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ObjectInfo, ObjectStoreConfig
from nats.nuid import NUID

__all__ = ["ObjectNotFoundError", "ObjectTransferError", "download", "put_file"]

log = logging.getLogger("linegate.objstore")

DEFAULT_CHUNK_SIZE = 128 * 1024  # ADR-20 default; what other clients write
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_DIGEST_PREFIX = "SHA-256="
_FETCH_BYTES = 4 * 1024 * 1024  # one pull batch: bounds download memory
_FETCH_WAIT = 2.0  # a pull lost in a broker restart is noticed after this long
_ERR_WRONG_LAST_SEQUENCE = 10071
_ERR_STREAM_NOT_FOUND = 10059
# Transient: retried while the transfer keeps making progress within `timeout`.
_TRANSIENT = (nats.errors.Error, asyncio.TimeoutError, OSError)


class ObjectTransferError(Exception):
    """An object could not be stored or fetched; the message says what to do about it."""


class ObjectNotFoundError(ObjectTransferError):
    """The bucket or the object does not exist (or the object was deleted)."""


def _stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


def _meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def _chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


def _encode_digest(raw: bytes) -> str:
    return _DIGEST_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _decode_digest(value: str | None) -> bytes | None:
    """Raw SHA-256 of an ADR-20 digest string, or None when absent or not SHA-256."""
    if not value or value[: len(_DIGEST_PREFIX)].upper() != _DIGEST_PREFIX:
        return None
    try:
        raw = base64.urlsafe_b64decode(value[len(_DIGEST_PREFIX) :])
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _check_bucket(bucket: str) -> None:
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"invalid bucket name {bucket!r}: use only A-Z, a-z, 0-9, '-' and '_'")


async def _read_meta(
    js: JetStreamContext, bucket: str, name: str, timeout: float
) -> tuple[ObjectInfo, int] | None:
    """The object's current info and the stream sequence of its meta message, or None."""
    try:
        raw = await asyncio.wait_for(
            js.get_last_msg(_stream(bucket), _meta_subject(bucket, name)), timeout
        )
    except nats.js.errors.NotFoundError as e:
        if e.err_code == _ERR_STREAM_NOT_FOUND:
            raise ObjectNotFoundError(
                f"object store bucket {bucket!r} does not exist on this server "
                f"(stream {_stream(bucket)}): publish to it first or check the bucket name"
            ) from e
        return None
    except _TRANSIENT as e:
        raise ObjectTransferError(
            f"could not read the info of {bucket}/{name} within {timeout}s: {e!r}; "
            "check that the NATS server is reachable and has JetStream enabled"
        ) from e
    try:
        info = ObjectInfo.from_response(json.loads(raw.data or b""))
    except (ValueError, TypeError, AttributeError) as e:
        raise ObjectTransferError(f"the stored info of {bucket}/{name} is not ADR-20 JSON") from e
    if raw.time is not None:
        info.mtime = raw.time.isoformat()  # ADR-20: mtime is the meta message's time
    assert raw.seq is not None
    return info, raw.seq


# ---------------------------------------------------------------------------------------- put


class _AckWindow:
    """Publishes in order with a private reply inbox, keeping at most ``window`` acks pending.

    Works with every nats-py 2.x (``publish_async`` is newer than our floor and its futures
    never time out). Acks must come back with increasing stream sequences: that proves the
    chunks were stored in the order they were read.
    """

    def __init__(self, js: JetStreamContext, stream: str, window: int, timeout: float) -> None:
        self._nc = js._nc  # no public accessor; nats-py's own ObjectStore does the same
        self._stream = stream
        self._window = window
        self._timeout = timeout
        self._inbox = self._nc.new_inbox()
        self._futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._inflight: deque[int] = deque()
        self._next = 0
        self._last_seq = 0

    async def __aenter__(self) -> _AckWindow:
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for fut in self._futures.values():
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the first failure is already being raised
            fut.cancel()
        with contextlib.suppress(*_TRANSIENT):
            await self._sub.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._futures.get(int(msg.subject.rsplit(".", 1)[1]))
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(ObjectTransferError(f"no JetStream stream {self._stream} answered"))
            return
        try:
            fut.set_result(json.loads(msg.data))
        except ValueError:
            fut.set_exception(ObjectTransferError(f"unreadable publish ack: {msg.data[:200]!r}"))

    async def publish(self, subject: str, payload: bytes) -> None:
        while len(self._inflight) >= self._window:
            await self._settle_oldest()
        index = self._next
        self._next += 1
        self._futures[index] = asyncio.get_running_loop().create_future()
        self._inflight.append(index)
        await self._nc.publish(subject, payload, reply=f"{self._inbox}.{index}")

    async def drain(self) -> None:
        while self._inflight:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        index = self._inflight.popleft()
        try:
            ack = await asyncio.wait_for(self._futures[index], self._timeout)
        except TimeoutError as e:
            raise ObjectTransferError(
                f"chunk {index} was not acknowledged within {self._timeout}s: the server is slow "
                "or unreachable; retry, or raise `timeout` / lower `window`"
            ) from e
        finally:
            del self._futures[index]  # only now: the ack callback looks the future up here
        if "error" in ack:
            raise ObjectTransferError(f"JetStream refused chunk {index}: {ack['error']}")
        if ack.get("stream") != self._stream or int(ack.get("seq", 0)) <= self._last_seq:
            raise ObjectTransferError(f"chunk {index} was stored out of order ({ack}); retry")
        self._last_seq = int(ack["seq"])


def _file_digest(path: Path) -> tuple[bytes, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.digest(), size


async def _ensure_bucket(js: JetStreamContext, bucket: str, replicas: int, timeout: float) -> None:
    try:
        await asyncio.wait_for(js.object_store(bucket), timeout)
        return
    except nats.js.errors.BucketNotFoundError:
        pass
    except _TRANSIENT as e:
        raise ObjectTransferError(f"could not look up bucket {bucket!r}: {e!r}") from e
    try:
        # Creating a stream with an identical config is idempotent, so racing creators agree.
        config = ObjectStoreConfig(bucket=bucket, replicas=replicas)
        await asyncio.wait_for(js.create_object_store(bucket, config=config), timeout)
    except _TRANSIENT as e:
        raise ObjectTransferError(
            f"could not create object store bucket {bucket!r} with {replicas} replica(s): {e!r}; "
            "a cluster needs at least that many JetStream servers"
        ) from e


async def _existing_or_refuse(info: ObjectInfo, path: Path) -> ObjectInfo:
    digest, size = await asyncio.to_thread(_file_digest, path)
    if _decode_digest(info.digest) == digest and info.size == size and not info.is_link():
        log.info("%s/%s already stored with the same digest; nothing to do", info.bucket, info.name)
        return info
    raise ObjectTransferError(
        f"{info.bucket}/{info.name} already exists with digest {info.digest} ({info.size} bytes) "
        f"but {path} has {_encode_digest(digest)} ({size} bytes): objects here are never "
        "overwritten, so publish the new content under a new name"
    )


async def _purge(js: JetStreamContext, stream: str, subject: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(js.purge_stream(stream, subject=subject), timeout)
    except _TRANSIENT:
        log.warning("could not purge orphaned chunks on %s; they stay until purged", subject)


async def _upload_chunks(
    js: JetStreamContext,
    stream: str,
    subject: str,
    path: Path,
    chunk_size: int,
    window: int,
    timeout: float,
) -> tuple[int, int, bytes]:
    """Publish ``path`` in chunks on ``subject``; returns (size, chunks, sha256)."""
    h = hashlib.sha256()

    def read_chunk(f: BinaryIO) -> bytes:
        data = f.read(chunk_size)
        h.update(data)  # in the worker thread: hashlib releases the GIL
        return data

    size = chunks = 0
    f = await asyncio.to_thread(path.open, "rb")
    try:
        on_disk = os.fstat(f.fileno()).st_size
        async with _AckWindow(js, stream, window, timeout) as acks:
            while data := await asyncio.to_thread(read_chunk, f):
                await acks.publish(subject, data)
                size += len(data)
                chunks += 1
            await acks.drain()
    finally:
        f.close()
    if size != on_disk:
        raise ObjectTransferError(f"{path} changed while it was uploaded; upload it again")
    return size, chunks, h.digest()


async def put_file(
    js: JetStreamContext,
    bucket: str,
    name: str,
    path: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    window: int = 64,
    description: str | None = None,
    headers: Mapping[str, str] | None = None,
    replicas: int = 1,
    timeout: float = 30.0,
) -> ObjectInfo:
    """Store ``path`` as object ``name`` in ``bucket`` (created with ``replicas`` if missing).

    Up to ``window`` chunks await their ack at once; each ack wait is bounded by ``timeout``.
    If ``name`` exists with the same SHA-256 and size this is a no-op returning the stored info;
    with other content it raises :class:`ObjectTransferError` (the old object stays). On any
    failure the chunks already written are purged and no info is published.
    """
    _check_bucket(bucket)
    if not name:
        raise ValueError("object name must not be empty")
    if chunk_size < 1 or window < 1:
        raise ValueError(f"chunk_size ({chunk_size}) and window ({window}) must be positive")
    if chunk_size > js._nc.max_payload:
        raise ValueError(f"chunk_size {chunk_size} exceeds max_payload {js._nc.max_payload}")
    if not await asyncio.to_thread(path.is_file):
        raise FileNotFoundError(f"{path} is not a file: nothing to upload")
    await _ensure_bucket(js, bucket, replicas, timeout)
    stream = _stream(bucket)
    existing = await _read_meta(js, bucket, name, timeout)
    if existing is not None and not existing[0].deleted:
        return await _existing_or_refuse(existing[0], path)

    nuid = NUID().next().decode()
    chunk_subject = _chunk_subject(bucket, nuid)
    meta: dict[str, Any] = {"name": name, "options": {"max_chunk_size": chunk_size}}
    if description:
        meta["description"] = description
    if headers:
        meta["headers"] = {k: [v] for k, v in headers.items()}  # ADR-20: values are lists
    try:
        size, chunks, digest = await _upload_chunks(
            js, stream, chunk_subject, path, chunk_size, window, timeout
        )
        meta |= {"bucket": bucket, "nuid": nuid, "size": size, "chunks": chunks}
        meta["digest"] = _encode_digest(digest)
        # Expected-last-subject-sequence turns "check, then write" into one atomic step: of
        # two concurrent writers of one name, exactly one fails here.
        expect = str(existing[1] if existing else 0)
        await asyncio.wait_for(
            js.publish(
                _meta_subject(bucket, name),
                json.dumps(meta).encode(),
                timeout=timeout,
                headers={"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": expect},
            ),
            timeout,
        )
    except nats.js.errors.APIError as e:
        await _purge(js, stream, chunk_subject, timeout)
        if e.err_code == _ERR_WRONG_LAST_SEQUENCE:
            raced = await _read_meta(js, bucket, name, timeout)
            if raced is not None and not raced[0].deleted:
                return await _existing_or_refuse(raced[0], path)
        raise ObjectTransferError(f"JetStream refused {bucket}/{name}: {e}") from e
    except BaseException as e:
        await _purge(js, stream, chunk_subject, timeout)
        if isinstance(e, nats.errors.Error | TimeoutError):
            raise ObjectTransferError(f"upload of {bucket}/{name} failed: {e!r}; retry") from e
        raise
    info: ObjectInfo = ObjectInfo.from_response(dict(meta))
    info.mtime = datetime.now(UTC).isoformat()
    log.info("stored %s/%s: %d bytes in %d chunks", bucket, name, size, chunks)
    return info


# ----------------------------------------------------------------------------------- download


class _Puller:
    """One ephemeral pull consumer (no acks, in memory) on a chunk subject."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str, timeout: float) -> None:
        self.js, self.stream, self.subject, self.timeout = js, stream, subject, timeout
        self.sub: JetStreamContext.PullSubscription | None = None
        self.name = ""

    async def open(self, start_seq: int | None, *, headers_only: bool = False) -> None:
        self.name = NUID().next().decode()
        config = ConsumerConfig(
            name=self.name,
            filter_subject=self.subject,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
            opt_start_seq=start_seq,
            headers_only=headers_only or None,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=max(2 * self.timeout, 10.0),
        )
        await asyncio.wait_for(self.js.add_consumer(self.stream, config), self.timeout)
        self.sub = await self.js.pull_subscribe_bind(self.name, self.stream)

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        assert self.sub is not None
        return await self.sub.fetch(batch, timeout=wait)

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is None:
            return
        with contextlib.suppress(*_TRANSIENT):
            await sub.unsubscribe()
            # inactive_threshold removes it anyway; deleting frees the server sooner.
            await asyncio.wait_for(self.js.delete_consumer(self.stream, self.name), 2.0)


def _position(msg: Msg, chunks: int) -> tuple[int, int]:
    """(chunk index, stream sequence) of a chunk message, from its JetStream metadata."""
    md = msg.metadata
    return chunks - 1 - md.num_pending, md.sequence.stream


async def _chunk_sequence(puller: _Puller, index: int, chunks: int) -> int:
    """Stream sequence of chunk ``index`` using header-only messages (no chunk data moves).

    Chunk k is at or after first + k; it is exactly there unless other uploads interleaved.
    """
    try:
        await puller.open(None, headers_only=True)
        first = (await puller.fetch(1, puller.timeout))[0].metadata.sequence.stream
        await puller.close()
        await puller.open(first + index, headers_only=True)
        at, seq = _position((await puller.fetch(1, puller.timeout))[0], chunks)
        while at < index:
            for msg in await puller.fetch(min(index - at, 1024), puller.timeout):
                at, seq = _position(msg, chunks)
        if at != index:
            raise ObjectTransferError(f"cannot locate chunk {index}: chunk messages are missing")
        log.info("resuming %s at chunk %d (stream sequence %d)", puller.subject, index, seq)
        return seq
    except _TRANSIENT as e:
        raise ObjectTransferError(f"could not locate chunk {index} to resume: {e!r}") from e
    finally:
        await puller.close()


def _open_partial(partial: Path, size: int, chunk_size: int | None) -> tuple[BinaryIO, Any, int]:
    """Open ``partial``, keep its whole-chunk prefix, hash it; returns (file, sha256, kept)."""
    f = partial.open("r+b") if partial.exists() else partial.open("w+b")
    have = min(os.fstat(f.fileno()).st_size, size)
    kept = size if have == size else (have // chunk_size) * chunk_size if chunk_size else 0
    f.truncate(kept)
    h = hashlib.sha256()
    f.seek(0)
    left = kept
    while left and (block := f.read(min(left, 1 << 20))):
        h.update(block)
        left -= len(block)
    f.seek(kept)
    return f, h, kept


class _Sink:
    """The ``.partial`` file being filled, its running SHA-256 and the byte budget."""

    def __init__(self, partial: Path, limit: int, chunk_size: int | None) -> None:
        self.partial, self.limit = partial, limit
        self.file, self.sha, self.written = _open_partial(partial, limit, chunk_size)

    async def append(self, parts: list[bytes]) -> None:
        def write() -> None:
            for part in parts:
                self.file.write(part)
                self.sha.update(part)

        await asyncio.to_thread(write)
        self.written += sum(len(p) for p in parts)

    def discard(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)

    def commit(self, dest: Path) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.partial.replace(dest)
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must survive a power cut
        finally:
            os.close(fd)


async def _verified_info(
    js: JetStreamContext, bucket: str, name: str, size: int, sha256_hex: str, timeout: float
) -> tuple[ObjectInfo, int | None]:
    """The object's info if it matches what the caller expects, and its resumable chunk size."""
    found = await _read_meta(js, bucket, name, timeout)
    if found is None or found[0].deleted:
        raise ObjectNotFoundError(f"no object {name!r} in bucket {bucket!r}; is it published?")
    info, where = found[0], f"{bucket}/{name}"
    if info.is_link() or not info.nuid:
        raise ObjectTransferError(f"{where} is a link or has no nuid; download its target")
    if info.size != size:
        raise ObjectTransferError(f"{where} is {info.size} bytes, expected {size}; refused")
    stored = _decode_digest(info.digest)
    if stored is not None and stored.hex() != sha256_hex:
        raise ObjectTransferError(f"{where} has SHA-256 {stored.hex()}, expected {sha256_hex}")
    subject = _chunk_subject(bucket, info.nuid)
    try:
        state = (await asyncio.wait_for(js.stream_info(_stream(bucket), subject), timeout)).state
    except _TRANSIENT as e:
        raise ObjectTransferError(f"could not count the chunks of {where}: {e!r}") from e
    on_server, chunks = (state.subjects or {}).get(subject, 0), info.chunks or 0
    if on_server != chunks:
        raise ObjectTransferError(f"{where} is incomplete on the server: {on_server}/{chunks}")
    # Resuming by offset needs every chunk but the last to be max_chunk_size long.
    chunk_size = info.options.max_chunk_size if info.options else None
    if chunk_size and chunks != -(-size // chunk_size):
        chunk_size = None
    return info, chunk_size


async def _receive(
    puller: _Puller,
    sink: _Sink,
    chunk_size: int | None,
    chunks: int,
    where: str,
    on_progress: Callable[[int], None] | None,
) -> None:
    """Pull the chunks after ``sink.written`` into ``sink``, riding out reconnects."""
    timeout = puller.timeout
    index = sink.written // (chunk_size or 1)  # without a chunk size nothing was kept
    start = await _chunk_sequence(puller, index, chunks) if index else None
    batch = max(1, min(1024, _FETCH_BYTES // (chunk_size or DEFAULT_CHUNK_SIZE)))
    last_progress, pause = time.monotonic(), 0.1
    while sink.written < sink.limit:
        if index >= chunks:
            raise ObjectTransferError(f"the info of {where} is inconsistent: too few chunks")
        idle = time.monotonic() - last_progress
        try:
            if puller.sub is None:
                await puller.open(start)
            wait = max(0.1, min(_FETCH_WAIT, timeout - idle))
            msgs = await puller.fetch(min(batch, chunks - index), wait)
        except _TRANSIENT as e:
            await puller.close()
            if time.monotonic() - last_progress >= timeout:
                raise ObjectTransferError(
                    f"no data for {where} within {timeout}s ({sink.written}/{sink.limit} bytes "
                    f"kept in {sink.partial}); call download again to resume: {e!r}"
                ) from e
            log.warning("pulling %s failed (%r); retrying from sequence %s", where, e, start)
            await asyncio.sleep(pause)  # the broker may be restarting: back off a little
            pause = min(2 * pause, 1.0)
            continue
        parts, size = [], sink.written
        for msg in msgs:
            at, seq = _position(msg, chunks)
            if at != index:
                raise ObjectTransferError(f"chunk {index} of {where} is missing on the server")
            size += len(msg.data)
            if size > sink.limit:
                sink.discard()
                raise ObjectTransferError(f"{where} sends more than {sink.limit} bytes; refused")
            parts.append(msg.data)
            index, start = index + 1, seq + 1
        await sink.append(parts)
        last_progress, pause = time.monotonic(), 0.1
        if on_progress:
            on_progress(sink.written)


async def download(
    js: JetStreamContext,
    bucket: str,
    name: str,
    dest: Path,
    *,
    expected_size: int,
    expected_sha256: str,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Fetch object ``name`` into ``dest`` (atomically) if it is exactly the expected bytes.

    Data streams into ``<dest>.partial``; an existing ``.partial`` is resumed from its last
    whole chunk. The object is refused before any data moves when its info disagrees with
    ``expected_size``/``expected_sha256`` or chunks are missing, and while streaming as soon as
    more than ``expected_size`` bytes arrive. A broker restart or reconnect is ridden out as
    long as some chunk arrives every ``timeout`` seconds; otherwise :class:`ObjectTransferError`
    is raised and the ``.partial`` kept for the next call. A SHA-256 mismatch deletes it.
    ``on_progress(n)`` gets the bytes in the ``.partial`` so far: first the resumed prefix,
    then after every batch.
    """
    _check_bucket(bucket)
    want = expected_sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want) or expected_size < 0:
        raise ValueError("expected_sha256 must be 64 hex digits and expected_size >= 0")
    info, chunk_size = await _verified_info(js, bucket, name, expected_size, want, timeout)
    where = f"{bucket}/{name}"
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    sink = await asyncio.to_thread(_Sink, partial, expected_size, chunk_size)
    subject = _chunk_subject(bucket, info.nuid)
    puller = _Puller(js, _stream(bucket), subject, timeout)
    try:
        if on_progress:
            on_progress(sink.written)
        if sink.written < expected_size:
            await _receive(puller, sink, chunk_size, info.chunks or 0, where, on_progress)
        if sink.sha.hexdigest() != want:
            sink.discard()
            raise ObjectTransferError(
                f"{where} has SHA-256 {sink.sha.hexdigest()}, expected {want}; discarded {partial}"
            )
        await asyncio.to_thread(sink.commit, dest)
    finally:
        sink.file.close()
        await puller.close()
    return dest
