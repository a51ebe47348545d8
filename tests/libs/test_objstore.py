"""linegate.objstore against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from linegate.embedded import NatsServer
from linegate.objstore import (
    DEFAULT_CHUNK_SIZE,
    ObjectNotFoundError,
    ObjectTransferError,
    download,
    put_file,
)

MB = 1024 * 1024
CS = DEFAULT_CHUNK_SIZE
BUCKET = "models"


async def _quiet(_: Exception) -> None:
    """Disconnects are expected in some tests; nats-py would log each one."""


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await nats.connect(
        nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, error_cb=_quiet
    )
    yield conn
    await conn.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., tuple[Path, str]]:
    def make(size: int, name: str = "src.bin") -> tuple[Path, str]:
        path = tmp_path / name
        data = os.urandom(size)
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()

    return make


class Progress:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)


async def _download(js: JetStreamContext, digest: str, dest: Path, size: int, **kw: Any) -> Path:
    """``download`` of an object named by its own digest, as the models bucket stores them."""
    return await download(
        js, BUCKET, digest, dest, expected_size=size, expected_sha256=digest, **kw
    )


def _partial(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


async def test_round_trip_20mb(js, make_file, tmp_path):
    src, digest = make_file(20 * MB + 12345)
    info = await put_file(js, BUCKET, digest, src, description="model v1")
    assert (info.size, info.chunks, info.bucket) == (src.stat().st_size, 161, BUCKET)
    raw = hashlib.sha256(src.read_bytes()).digest()
    assert info.digest == "SHA-256=" + base64.urlsafe_b64encode(raw).decode()

    dest = tmp_path / "out" / "model.onnx"
    got = await download(
        js, BUCKET, digest, dest, expected_size=info.size, expected_sha256=digest.upper()
    )
    assert got == dest
    assert dest.read_bytes() == src.read_bytes()
    assert not _partial(dest).exists()


async def test_nats_py_reads_what_put_file_writes(js, make_file, tmp_path):
    src, digest = make_file(3 * MB + 7)
    await put_file(js, BUCKET, digest, src, description="d", headers={"Content-Type": "x/onnx"})
    obs = await js.object_store(BUCKET)
    info = await obs.get_info(digest)
    assert (info.size, info.description, info.headers) == (
        src.stat().st_size,
        "d",
        {"Content-Type": ["x/onnx"]},
    )
    out = tmp_path / "via-nats-py"
    with out.open("wb") as f:
        await obs.get(digest, writeinto=f)  # also checks the digest itself
    assert out.read_bytes() == src.read_bytes()
    # The meta subject is the ADR-20 one.
    subject = f"$O.{BUCKET}.M." + base64.urlsafe_b64encode(digest.encode()).decode()
    meta = json.loads((await js.get_last_msg(f"OBJ_{BUCKET}", subject)).data)
    assert meta["nuid"] == info.nuid
    assert "mtime" not in meta  # ADR-20: never stored


async def test_download_reads_what_nats_py_writes(js, make_file, tmp_path):
    src, digest = make_file(5 * MB + 3)
    obs = await js.create_object_store(BUCKET)
    with src.open("rb") as f:
        await obs.put(digest, f)
    dest = tmp_path / "from-nats-py"
    await download(
        js, BUCKET, digest, dest, expected_size=src.stat().st_size, expected_sha256=digest
    )
    assert dest.read_bytes() == src.read_bytes()


async def test_put_is_never_an_overwrite(js, make_file):
    src, _ = make_file(1 * MB)
    first = await put_file(js, BUCKET, "model", src)
    messages = (await js.stream_info(f"OBJ_{BUCKET}")).state.messages

    again = await put_file(js, BUCKET, "model", src)
    assert again.nuid == first.nuid
    assert (await js.stream_info(f"OBJ_{BUCKET}")).state.messages == messages

    other, _ = make_file(1 * MB, "other.bin")
    with pytest.raises(ObjectTransferError, match="never overwritten"):
        await put_file(js, BUCKET, "model", other)
    assert (await js.stream_info(f"OBJ_{BUCKET}")).state.messages == messages
    kept = await (await js.object_store(BUCKET)).get_info("model")
    assert kept.nuid == first.nuid


async def test_concurrent_puts_of_one_name_store_it_once(js, make_file):
    src, _ = make_file(2 * MB)
    other, _ = make_file(2 * MB, "other.bin")
    a, b = await asyncio.gather(put_file(js, BUCKET, "m", src), put_file(js, BUCKET, "m", src))
    assert a.nuid == b.nuid
    state = (await js.stream_info(f"OBJ_{BUCKET}", subjects_filter=">")).state
    assert sum(1 for s in state.subjects or {} if ".C." in s) == 1  # loser's chunks purged

    results = await asyncio.gather(
        put_file(js, BUCKET, "n", src), put_file(js, BUCKET, "n", other), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["ObjectInfo", "ObjectTransferError"]


async def test_wrong_expected_sha256_leaves_nothing(js, make_file, tmp_path):
    src, digest = make_file(1 * MB)
    info = await put_file(js, BUCKET, digest, src)
    dest = tmp_path / "dest"
    with pytest.raises(ObjectTransferError, match="expected"):
        await download(js, BUCKET, digest, dest, expected_size=info.size, expected_sha256="0" * 64)
    assert not dest.exists()
    assert not _partial(dest).exists()


async def test_corrupt_partial_fails_the_final_digest_and_is_discarded(js, make_file, tmp_path):
    src, digest = make_file(2 * MB)
    info = await put_file(js, BUCKET, digest, src)
    dest = tmp_path / "dest"
    _partial(dest).write_bytes(b"\0" * (4 * CS))  # a prefix of something else
    with pytest.raises(ObjectTransferError, match="SHA-256"):
        await _download(js, digest, dest, info.size)
    assert not dest.exists()
    assert not _partial(dest).exists()
    await _download(js, digest, dest, info.size)
    assert dest.read_bytes() == src.read_bytes()


async def test_size_mismatch_is_refused_before_any_data(nc, js, make_file, tmp_path):
    src, digest = make_file(8 * MB)
    await put_file(js, BUCKET, digest, src)
    progress, before = Progress(), nc.stats["in_bytes"]
    with pytest.raises(ObjectTransferError, match="expected"):
        await _download(js, digest, tmp_path / "d", MB, on_progress=progress)
    assert progress.calls == []
    assert nc.stats["in_bytes"] - before < 64 * 1024
    assert not _partial(tmp_path / "d").exists()


async def test_object_sending_more_than_its_size_is_cut_off(js, make_file, tmp_path):
    src, digest = make_file(2 * MB)
    info = await put_file(js, BUCKET, digest, src)
    # Forge the info of a lying object: 1 MB + 100 bytes claimed, 2 MB of chunks stored.
    claimed = MB + 100
    subject = f"$O.{BUCKET}.M." + base64.urlsafe_b64encode(digest.encode()).decode()
    meta = json.loads((await js.get_last_msg(f"OBJ_{BUCKET}", subject)).data)
    meta["size"] = claimed
    del meta["digest"]
    await js.publish(subject, json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})

    progress, dest = Progress(), tmp_path / "d"
    with pytest.raises(ObjectTransferError, match="more than"):
        await _download(js, digest, dest, claimed, on_progress=progress)
    assert max(progress.calls) <= claimed < info.size
    assert not _partial(dest).exists()
    assert not dest.exists()


async def test_resume_transfers_only_the_missing_chunks(nc, js, make_file, tmp_path):
    src, digest = make_file(20 * MB + 5)
    info = await put_file(js, BUCKET, digest, src)
    dest, kept = tmp_path / "d", 40 * CS
    # An interrupted earlier download: 40 whole chunks and a torn 41st.
    _partial(dest).write_bytes(src.read_bytes()[: kept + 1000])
    progress, before = Progress(), nc.stats["in_bytes"]
    await _download(js, digest, dest, info.size, on_progress=progress)
    assert dest.read_bytes() == src.read_bytes()
    assert progress.calls[0] == kept
    assert progress.calls[-1] == info.size
    remainder = info.size - kept
    assert remainder <= nc.stats["in_bytes"] - before < remainder + 256 * 1024


async def test_resume_locates_chunks_of_interleaved_uploads(nc, js, make_file, tmp_path):
    a, digest_a = make_file(4 * MB, "a.bin")
    b, digest_b = make_file(4 * MB, "b.bin")
    info, _ = await asyncio.gather(
        put_file(js, BUCKET, digest_a, a, window=1), put_file(js, BUCKET, digest_b, b, window=1)
    )
    stream, chunk_subject = f"OBJ_{BUCKET}", f"$O.{BUCKET}.C.{info.nuid}"
    first = (await js.get_msg(stream, seq=1, next=True, subject=chunk_subject)).seq
    last = (await js.get_last_msg(stream, chunk_subject)).seq
    assert last - first + 1 > info.chunks, "the two uploads did not interleave"

    dest, kept = tmp_path / "d", 20 * CS
    _partial(dest).write_bytes(a.read_bytes()[:kept])
    progress, before = Progress(), nc.stats["in_bytes"]
    await _download(js, digest_a, dest, info.size, on_progress=progress)
    assert dest.read_bytes() == a.read_bytes()
    assert progress.calls[0] == kept
    assert nc.stats["in_bytes"] - before < info.size - kept + 256 * 1024


async def test_interrupted_download_resumes(js, make_file, tmp_path):
    src, digest = make_file(20 * MB)
    info = await put_file(js, BUCKET, digest, src)
    dest = tmp_path / "d"

    class Interrupted(Exception):
        pass

    def stop_midway(n: int) -> None:
        if n > 5 * MB:
            raise Interrupted

    with pytest.raises(Interrupted):
        await _download(js, digest, dest, info.size, on_progress=stop_midway)
    on_disk = _partial(dest).stat().st_size
    assert 5 * MB < on_disk < info.size
    progress = Progress()
    await _download(js, digest, dest, info.size, on_progress=progress)
    assert progress.calls[0] == on_disk
    assert dest.read_bytes() == src.read_bytes()


async def test_download_rides_out_a_server_restart(nc, js, make_file, tmp_path, nats_server):
    src, digest = make_file(20 * MB)
    info = await put_file(js, BUCKET, digest, src)
    progress, restarted = Progress(), []

    def restart_midway(n: int) -> None:
        progress(n)
        if n > 5 * MB and not restarted:
            restarted.append(n)
            nats_server.stop()  # same port and store dir: the broker comes back
            nats_server.start()

    started = time.monotonic()
    await _download(js, digest, tmp_path / "d", info.size, timeout=10, on_progress=restart_midway)
    assert restarted
    assert nc.stats["reconnects"] == 1
    assert (tmp_path / "d").read_bytes() == src.read_bytes()
    assert progress.calls == sorted(progress.calls)
    assert time.monotonic() - started < 12


async def test_download_gives_up_after_timeout_and_resumes_later(
    js, make_file, tmp_path, nats_server
):
    src, digest = make_file(20 * MB)
    info = await put_file(js, BUCKET, digest, src)
    dest = tmp_path / "d"

    def kill_midway(n: int) -> None:
        if n > 5 * MB and nats_server.process is not None:
            nats_server.stop()

    started = time.monotonic()
    with pytest.raises(ObjectTransferError, match="download again to resume"):
        await _download(js, digest, dest, info.size, timeout=1.5, on_progress=kill_midway)
    assert time.monotonic() - started < 5
    on_disk = _partial(dest).stat().st_size
    assert on_disk > 5 * MB

    nats_server.start()
    progress = Progress()
    await _download(js, digest, dest, info.size, timeout=10, on_progress=progress)
    assert progress.calls[0] == on_disk
    assert dest.read_bytes() == src.read_bytes()


async def test_missing_object_or_bucket_fails_fast(js, make_file, tmp_path):
    started = time.monotonic()
    with pytest.raises(ObjectNotFoundError, match="bucket"):
        await download(js, "nope", "x", tmp_path / "d", expected_size=1, expected_sha256="0" * 64)
    src, digest = make_file(1000)
    await put_file(js, BUCKET, digest, src)
    with pytest.raises(ObjectNotFoundError, match="no object"):
        await download(js, BUCKET, "x", tmp_path / "d", expected_size=1, expected_sha256="0" * 64)
    assert time.monotonic() - started < 2


async def test_missing_chunk_fails_fast_instead_of_hanging(js, make_file, tmp_path):
    src, digest = make_file(2 * MB)
    info = await put_file(js, BUCKET, digest, src)
    stream, chunk_subject = f"OBJ_{BUCKET}", f"$O.{BUCKET}.C.{info.nuid}"
    fifth = (await js.get_msg(stream, seq=1, next=True, subject=chunk_subject)).seq + 5
    await js.delete_msg(stream, fifth)
    started = time.monotonic()
    with pytest.raises(ObjectTransferError, match="incomplete"):
        await _download(js, digest, tmp_path / "d", info.size)
    assert time.monotonic() - started < 2


async def test_empty_object_round_trip(js, make_file, tmp_path):
    src, digest = make_file(0)
    info = await put_file(js, BUCKET, digest, src)
    assert (info.size, info.chunks) == (0, 0)
    dest = await download(
        js, BUCKET, digest, tmp_path / "e", expected_size=0, expected_sha256=digest
    )
    assert dest.read_bytes() == b""


async def test_download_memory_stays_bounded(js, make_file, tmp_path):
    src, digest = make_file(64 * MB)
    info = await put_file(js, BUCKET, digest, src)
    src.unlink()  # keep the test's own footprint out of the picture
    tracemalloc.start()
    try:
        await _download(js, digest, tmp_path / "d", info.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"download peak {peak / MB:.1f} MB for a 64 MB object")
    assert peak < 16 * MB, f"peak {peak / MB:.1f} MB for a 64 MB object"


async def test_put_rejects_bad_arguments(js, tmp_path):
    with pytest.raises(ValueError, match="bucket"):
        await put_file(js, "bad.name", "x", tmp_path)
    with pytest.raises(ValueError, match="max_payload"):
        await put_file(js, BUCKET, "x", tmp_path, chunk_size=64 * MB)
    with pytest.raises(FileNotFoundError):
        await put_file(js, BUCKET, "x", tmp_path / "missing")
