"""The push's streaming path: staging writes hash and store exactly the bytes given, and the
multipart body is parsed to the same parts in whatever pieces it arrives."""

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registry.multipart import receive_multipart
from registry.storage import BlobStore, HashingWriter

MiB = 1024 * 1024


# ------------------------------------------------------------------------ staging writes


@pytest.mark.parametrize("hash_thread", [False, True])
def test_hashing_writer_stores_and_hashes_exactly_the_bytes_given(
    tmp_path: Path, hash_thread: bool
) -> None:
    data = os.urandom(3 * MiB + 12345)
    # Small pieces (buffered), views, and pieces over the write chunk (written directly).
    pieces: list[bytes | memoryview] = [data[:10], memoryview(data)[10 : 2 * MiB + 7]]
    pieces += [data[2 * MiB + 7 : 2 * MiB + 100], memoryview(data)[2 * MiB + 100 :]]
    writer = HashingWriter(
        tmp_path / "part", limit=len(data), name="model", hash_thread=hash_thread
    )
    for piece in pieces:
        writer.write(piece)
    writer.close()
    received = writer.received()
    assert (tmp_path / "part").read_bytes() == data
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.size == len(data)


def test_a_hash_thread_hashes_the_bytes_as_written_when_the_caller_reuses_its_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from registry import storage

    # The multipart parser hands over views of its own buffers, which it rewrites next: the
    # thread that hashes later must see the bytes as they were when written. Here it hashes
    # nothing until the buffer has been rewritten twice.
    go = threading.Event()
    run = storage._HashThread._run

    def late(self: storage._HashThread) -> None:
        go.wait(30)
        run(self)

    monkeypatch.setattr(storage._HashThread, "_run", late)
    first, second = os.urandom(MiB), os.urandom(MiB)
    buffer = bytearray(first)
    writer = HashingWriter(tmp_path / "part", limit=4 * MiB, name="model", hash_thread=True)
    writer.write(memoryview(buffer))
    buffer[:] = second
    writer.write(memoryview(buffer))
    buffer[:] = bytes(MiB)
    go.set()
    writer.close()
    assert writer.received().sha256 == hashlib.sha256(first + second).hexdigest()
    assert (tmp_path / "part").read_bytes() == first + second


@pytest.mark.parametrize("hash_thread", [False, True])
def test_hashing_writer_refuses_a_byte_past_its_limit_and_abort_closes(
    tmp_path: Path, hash_thread: bool
) -> None:
    from linegate.errors import PayloadTooLarge

    writer = HashingWriter(tmp_path / "part", limit=2 * MiB, name="model", hash_thread=hash_thread)
    writer.write(memoryview(os.urandom(2 * MiB)))
    with pytest.raises(PayloadTooLarge, match="model exceeds the 2097152-byte limit"):
        writer.write(b"x")
    writer.abort()
    writer.abort()  # idempotent: the error path may reach it twice


def test_writeback_starts_while_data_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from registry import storage

    if sys.platform.startswith("linux"):
        assert storage._start_writeback is not None, "sync_file_range not found in libc"
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(storage, "_WRITEBACK_BYTES", 2 * MiB)
    monkeypatch.setattr(storage, "_start_writeback", lambda fd, off, n: started.append((off, n)))
    writer = HashingWriter(tmp_path / "part", limit=1 << 30, name="model")
    for _ in range(9):
        writer.write(os.urandom(MiB))
    writer.close()
    assert started == [(0, 2 * MiB), (2 * MiB, 2 * MiB), (4 * MiB, 2 * MiB), (6 * MiB, 2 * MiB)]


@pytest.mark.parametrize("piece", [1, 4093, 64 * 1024, 3 * MiB])
async def test_receive_multipart_gives_the_same_parts_whatever_the_pieces(
    tmp_path: Path, piece: int
) -> None:
    model = os.urandom(2 * MiB + 333) if piece > 1 else os.urandom(20_000)
    card = b"# card\n"
    files = {
        "model": ("model.onnx", model, "application/octet-stream"),
        "model_card": ("model_card.md", card, "text/markdown"),
        "metadata": ("metadata.json", json.dumps({"version": "1"}).encode(), "application/json"),
    }
    request = httpx.Request("POST", "http://registry/", files=files)
    body = request.read()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), piece):
            yield body[i : i + piece]
            if i % (64 * piece) == 0:
                await asyncio.sleep(0)

    store = BlobStore(tmp_path / "store")
    limits = {"model": 1 << 30, "model_card": 1024, "metadata": 1024}
    with store.staging() as stage:
        parts = await receive_multipart(
            request.headers["content-type"], chunks(), stage, limits, max_total=len(body)
        )
        assert parts["model"].path.read_bytes() == model
        assert parts["model"].sha256 == hashlib.sha256(model).hexdigest()
        assert parts["model_card"].path.read_bytes() == card
        assert json.loads(parts["metadata"].path.read_bytes()) == {"version": "1"}
