"""Content-addressed storage for model artefacts, golden sets and signatures.

Files live at ``<root>/sha256/<2 hex>/<64 hex>``. Uploads are written to a staging directory
under the same root while they are hashed (one pass, fixed memory), then linked into place, so a
reader never sees a partial file and storing the same bytes twice keeps one copy. A stored file
is never rewritten; the only way a stored file changes is tampering, which signature
verification detects.

Example::

    store = BlobStore(Path("/tmp/lg-blobs"))
    with store.staging() as stage:
        received = stage.write_bytes("model_card.md", b"# card\\n", limit=1024)
        added = store.commit(received)
    assert store.path(received.sha256).read_bytes() == b"# card\\n"
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from linegate.errors import PayloadTooLarge

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Small writes are batched to this size before they hit the file: fewer syscalls, bounded
# memory. Pieces of at least _DIRECT_BYTES (an upload's received chunks) go through as they are.
_WRITE_CHUNK = 1024 * 1024
_DIRECT_BYTES = 64 * 1024
# How much written data may wait in the page cache before its writeback is started.
_WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def _writeback_starter() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)`` where the OS has it, else None.

    Python's ``os`` has no ``sync_file_range``, so it is called from libc. It only *starts*
    writeback of the range and returns, so the disk works while data still arrives and the
    final fsync has little left to do; durability still comes from that fsync alone.
    """
    native = getattr(os, "sync_file_range", None)  # should a future Python add it
    if native is not None:
        return lambda fd, offset, n: native(fd, offset, n, _SYNC_FILE_RANGE_WRITE)
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, n: int) -> None:
        # Advisory: a failure here (say, EIO) is reported again by the fsync that follows.
        call(fd, offset, n, _SYNC_FILE_RANGE_WRITE)

    return start


_start_writeback = _writeback_starter()


@dataclass(frozen=True, slots=True)
class Received:
    """A file written to staging: where it is, its SHA-256 (hex) and size."""

    name: str
    path: Path
    sha256: str
    size: int


class Staging:
    """A private directory for one request's uploads; removed with everything in it at exit,
    unless :meth:`detach` handed its removal to the caller."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.detached = False

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def detach(self) -> Callable[[], None]:
        """Leave this directory in place at the end of the ``with`` block and return what
        removes it, for the caller to run later: deleting a staged gigabyte that turned out
        to be stored already (the same bytes pushed again) takes the file system a while, and
        a request should not wait for it. A crash before it runs leaves the directory to
        :meth:`BlobStore.sweep_staging`."""
        self.detached = True
        return self.remove

    def _target(self, name: str) -> Path:
        if "/" in name or name in {"", ".", ".."}:
            raise ValueError(f"invalid staged file name {name!r}")
        return self.directory / name

    async def receive(self, name: str, chunks: AsyncIterator[bytes], *, limit: int) -> Received:
        """Write ``chunks`` to ``name`` while hashing; :class:`PayloadTooLarge` past ``limit``."""
        writer = HashingWriter(self._target(name), limit=limit, name=name)
        try:
            async for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return writer.received()

    def write_bytes(self, name: str, data: bytes, *, limit: int) -> Received:
        writer = HashingWriter(self._target(name), limit=limit, name=name)
        try:
            writer.write(data)
        finally:
            writer.close()
        return writer.received()


#: Pieces an upload's hashing thread may lag behind its writes (each one a received chunk,
#: about 256 KiB): memory stays bounded when hashing is the slower of the two.
_HASH_QUEUE = 16


class _HashThread:
    """SHA-256 in a thread of its own, fed in order through a bounded queue, so that a
    writer's ``write`` and the hashing of the same bytes overlap (both release the GIL).
    Only immutable buffers are queued: what is hashed is exactly what was written."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(_HASH_QUEUE)
        self._thread = threading.Thread(target=self._run, name="linegate-upload-hash", daemon=True)
        self._thread.start()
        self._digest: str | None = None

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes | memoryview) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        if self._digest is None:
            self._queue.put(None)
            self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest


def _immutable(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """``data`` itself when nothing can change it before a thread reads it, else a copy."""
    if isinstance(data, bytes) or (isinstance(data, memoryview) and isinstance(data.obj, bytes)):
        return data
    return bytes(data)


class HashingWriter:
    """Writes a file while hashing exactly the bytes written; :class:`PayloadTooLarge` past
    ``limit``. Memory stays at one write chunk. Writeback starts every few tens of MiB and
    :meth:`close` fsyncs; :meth:`abort` closes without syncing, for a file about to be removed.

    With ``hash_thread`` the bytes are hashed in a thread of their own while this one writes
    them (a multi-gigabyte upload: hashing is most of the CPU, and a worker that hashed and wrote
    in turn was the longest stage of a push).

    Not thread-safe: one thread writes (the event loop or a worker, never both at once).
    """

    def __init__(self, path: Path, *, limit: int, name: str, hash_thread: bool = False) -> None:
        self.path = path
        self.name = name
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        self._hash_thread = hash_thread
        self._hasher: _HashThread | None = None
        self._buffer = bytearray()
        self._file: BinaryIO = path.open("wb")
        self._written = 0
        self._synced = 0
        #: Wall seconds :meth:`close` waited in fsync (the writeback the disk had not done yet).
        self.fsync_seconds = 0.0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        n = len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes
        self.size += n
        if self.size > self.limit:
            raise PayloadTooLarge(f"{self.name} exceeds the {self.limit}-byte limit")
        if n >= _DIRECT_BYTES:  # large enough for a syscall of its own: no copy into the buffer
            self._flush()
            self._put(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) >= _WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            with memoryview(self._buffer) as view:
                self._put(view)
            self._buffer.clear()

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        # The same buffer is hashed and written, so the digest is of exactly the bytes stored.
        if self._hash_thread:
            if self._hasher is None:
                self._hasher = _HashThread()
            data = _immutable(data)
            self._hasher.update(data)
        else:
            self._hash.update(data)
        self._file.write(data)
        self._written += len(data) if not isinstance(data, memoryview) else data.nbytes
        if _start_writeback is not None and self._written - self._synced >= _WRITEBACK_BYTES:
            self._file.flush()
            _start_writeback(self._file.fileno(), self._synced, self._written - self._synced)
            self._synced = self._written

    def close(self, *, sync: bool = True) -> None:
        """Write what is buffered and, with ``sync``, fsync: after that the file is durable.
        ``sync=False`` leaves the fsync to :meth:`BlobStore.commit` (a staged upload that may
        turn out to be stored already)."""
        try:
            self._flush()
            self._file.flush()
            if sync:
                start = time.perf_counter()
                os.fsync(self._file.fileno())
                self.fsync_seconds = time.perf_counter() - start
        finally:
            self._file.close()

    def abort(self) -> None:
        """Close without writing the buffer or syncing (the upload failed; the file goes)."""
        self._buffer.clear()
        if self._hasher is not None:
            self._hasher.hexdigest()  # ends the thread (what it still has to hash is bounded)
        with contextlib.suppress(OSError):
            self._file.close()

    def received(self) -> Received:
        digest = self._hash.hexdigest() if self._hasher is None else self._hasher.hexdigest()
        return Received(self.name, self.path, digest, self.size)


class BlobStore:
    """Files named by SHA-256 under ``root`` (a local directory; the path is a setting)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging_root = root / ".staging"
        self._staging_root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _HEX64.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Staging]:
        stage = Staging(Path(tempfile.mkdtemp(dir=self._staging_root)))
        try:
            yield stage
        finally:
            if not stage.detached:
                stage.remove()

    def commit(self, received: Received) -> bool:
        """Link a staged file into place under its digest, durably; True if the store did not
        have it. The staged file is fsynced here, before it gets its stored name, so a writer
        may close it unsynced (:meth:`HashingWriter.close` with ``sync=False``): bytes the
        store already has are then never synced at all, only removed with the staging."""
        target = self.path(received.sha256)
        if target.exists():
            return False
        _fsync_file(received.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A hard link, not a move: the staged name stays usable for the rest of the request.
            os.link(received.path, target)
        except FileExistsError:
            return False  # a concurrent upload of the same bytes won
        _fsync_dir(target.parent)
        return True

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def materialise(self, files: Mapping[str, str], directory: Path) -> Path:
        """Hard-link stored files into ``directory`` under their artefact names (no copying)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, digest in files.items():
            os.link(self.path(digest), directory / name)
        return directory

    def sweep_staging(self, older_than_seconds: float = 3600) -> int:
        """Remove staging directories a crashed request left behind; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self._staging_root.iterdir():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # Linux flushes a file's dirty pages through any descriptor of it
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
