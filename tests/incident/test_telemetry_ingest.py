"""Telemetry ingest on real NATS and a real database: exactly-once counting across
redelivery and restarts, dead letters for what cannot be used, the post-market log."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from incident.telemetry.consumer import PullError, TelemetryConsumer, _stream_seq
from incident.telemetry.ingest import Incoming, TelemetryIngest
from linegate.auth import Role
from linegate.events import OverrideV1, Streams, Subjects
from tests.incident.telemetry_support import (
    DEVICES,
    LINE,
    MODEL,
    STABLE,
    VERSION,
    day,
    production_run,
    wait_for,
)


async def test_a_run_is_counted_once_into_windows_and_the_log(line_factory: Any) -> None:
    run = production_run(day(STABLE))
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        r = await line.client.get(
            "/v1/telemetry/windows",
            params={"model": MODEL, "version": VERSION, "line": LINE},
            headers=line.auth(Role.AUDITOR),
        )
        assert r.status_code == 200, r.text
        windows = r.json()
        assert [w["shift"] for w in windows] == ["night", "late", "early"]
        assert windows[0]["bucket_start"] == "2026-11-02T22:00:00Z"
        assert all(w["n"] == 600 for w in windows)
        assert all(sum(w["confidence_histogram"]) == 600 for w in windows)
        assert all(0.9 < w["confidence_mean"] < 1.0 for w in windows)
        # Every batch as the device published it, and the KPI samples, are in the log.
        r = await line.client.get(
            "/v1/postmarket/events",
            params={"kind": "inference_batch", "limit": 1000},
            headers=line.auth(Role.AUDITOR),
        )
        assert r.status_code == 200
        batches = r.json()["items"]
        assert sum(len(b["payload"]["records"]) for b in batches) == 1800
        assert {(b["model"], b["version"], b["line"]) for b in batches} == {(MODEL, VERSION, LINE)}
        assert {b["device_id"] for b in batches} == set(DEVICES)
        first = batches[0]
        assert first["occurred_at"] == first["payload"]["records"][0]["occurred_at"]


async def test_redelivered_and_republished_events_count_once(line_factory: Any) -> None:
    run = production_run([STABLE], batch=100)
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        # The same events again under new message ids: JetStream's own dedup cannot see
        # them, only the service's seen-set.
        for subject, event in run.messages:
            await line.publish(subject, event, msg_id=f"again-{event.event_id}")
        marker = production_run([STABLE], seed=99, start=run.messages[-1][1].occurred_at)
        await line.publish_run(marker)
        before = len(run.messages)
        await wait_for(lambda: _at_least(line, run.records + marker.records), "the marker run")
        inferences, _, kpis, dead = await line.totals()
        assert inferences == 600 + 600
        assert kpis == 2
        assert dead == 0
        metrics = (await line.client.get("/metrics")).text
        assert (
            f'incident_telemetry_messages_total{{outcome="duplicate"}} {float(before)}' in metrics
        )


async def _at_least(line: Any, records: int) -> bool:
    inferences, overrides, kpis, _ = await line.totals()
    return inferences + overrides + kpis >= records


async def test_processing_the_same_fetch_twice_counts_it_once(line_factory: Any) -> None:
    """A crash after commit but before the acks: the batch is processed again."""
    run = production_run([STABLE])
    async with line_factory() as line:
        await line.telemetry.consumer.stop()  # drive the ingest by hand
        incoming = [
            Incoming(subject, event.model_dump_json().encode(), seq)
            for seq, (subject, event) in enumerate(run.messages, start=1)
        ]
        first = await line.telemetry.ingest.process(incoming)
        again = await line.telemetry.ingest.process(incoming)
        assert first.events == len(run.messages)
        assert first.duplicates == 0
        assert again.events == 0
        assert again.duplicates == len(run.messages)
        assert await line.totals() == (600, 0, 1, 0)


async def test_consumer_restarted_mid_stream_loses_nothing(line_factory: Any) -> None:
    run = production_run(day(STABLE))
    half = len(run.messages) // 2
    # A short ack wait: what a killed consumer had fetched but not acked comes back soon.
    async with line_factory(telemetry_ack_wait_seconds=2) as line:
        for subject, event in run.messages[:half]:
            await line.publish(subject, event)
        await wait_for(lambda: _at_least(line, 1), "some of the first half")
        # Killed, not stopped: no grace, the task is cancelled wherever it is (mid-transaction
        # or mid-acks) and what it had fetched stays unacked.
        await line.telemetry.consumer.stop(grace=0)
    # The service is down: the rest of the shift's telemetry waits in the stream.
    async with line_factory(telemetry_ack_wait_seconds=2) as again:
        for subject, event in run.messages[half:]:
            await again.publish(subject, event)
        await again.wait_ingested(run)
        assert await again.totals() == (1800, 0, 3, 0)


async def test_malformed_telemetry_is_dead_lettered_and_the_consumer_goes_on(
    line_factory: Any,
) -> None:
    run = production_run([STABLE])
    blank = OverrideV1(
        line=LINE,
        device_id=DEVICES[0],
        record_id="r-0-1",
        camera="cam0",
        model=MODEL,
        version=VERSION,
        original_decision="reject",
        decision="pass",
        reason_code="false_reject",
        rationale="   ",
        actor="operator-anna",
    )
    async with line_factory() as line:
        await line.publish_raw(Subjects.telemetry(LINE, DEVICES[0]), b"{not json")
        await line.publish_raw(
            Subjects.telemetry(LINE, DEVICES[0]),
            json.dumps({"kind": "telemetry.inference_batch.v1", "line": LINE}).encode(),
        )
        await line.publish_raw(
            Subjects.telemetry(LINE, DEVICES[0]),
            json.dumps({"kind": "telemetry.selfie.v1"}).encode(),
        )
        # Device cam-3-2 publishing as cam-3-1: the subject is what NATS authorised.
        _subject, event = run.messages[0]
        await line.publish(Subjects.telemetry(LINE, "cam-3-2"), event, msg_id="spoofed")
        await line.publish(Subjects.telemetry(LINE, DEVICES[0]), blank)
        await line.publish_run(run)
        await line.wait_ingested(run, dead=5)

        r = await line.client.get("/v1/telemetry/dead-letters", headers=line.auth(Role.AUDITOR))
        assert r.status_code == 200, r.text
        reasons = [d["reason"] for d in r.json()["items"]]
        assert reasons[0] == "not JSON"
        assert reasons[1].startswith("invalid payload:")
        assert "device_id" in reasons[1]
        assert "union_tag_invalid" in reasons[2] or "telemetry.selfie.v1" in reasons[2]
        assert "cam-3-2" in reasons[3]
        assert "cam-3-1" in reasons[3]
        assert reasons[4].startswith("override without a rationale")
        assert r.json()["items"][0]["data"] == "{not json"

        page = await line.client.get(
            "/v1/telemetry/dead-letters", params={"limit": 2}, headers=line.auth(Role.AUDITOR)
        )
        nxt = page.json()["next_cursor"]
        rest = await line.client.get(
            "/v1/telemetry/dead-letters",
            params={"cursor": nxt, "limit": 10},
            headers=line.auth(Role.AUDITOR),
        )
        assert [d["reason"] for d in rest.json()["items"]] == reasons[2:]

        metrics = (await line.client.get("/metrics")).text
        assert 'incident_telemetry_dead_letters_total{reason="not_json"} 1.0' in metrics
        assert 'incident_telemetry_dead_letters_total{reason="invalid"} 2.0' in metrics
        assert 'incident_telemetry_dead_letters_total{reason="subject"} 1.0' in metrics
        assert 'incident_telemetry_dead_letters_total{reason="no_rationale"} 1.0' in metrics

        forbidden = await line.client.get(
            "/v1/telemetry/dead-letters", headers=line.auth(Role.PROCUREMENT, sub="p")
        )
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"] == "application/problem+json"


def test_the_gateway_kpi_consumer_ignores_kpi_samples() -> None:
    """KPI samples share the telemetry stream with device batches; the edge gateway's
    rollout KPIs count only inference batches (and only on four-token device subjects).

    Run in a fresh interpreter: the gateway's and the incident service's SQLModel tables
    are never loaded into one process in production, and need not be here."""
    run = production_run([STABLE])
    subject, sample = run.messages[-1]
    assert subject == f"linegate.telemetry.{LINE}.mes.kpi"
    code = (
        "import asyncio, json, sys\n"
        "from edge_gateway.rollouts.kpis import record_batch\n"
        "subject, data = sys.argv[1], json.loads(sys.argv[2])\n"
        "print(asyncio.run(record_batch(None, subject, data)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, subject, sample.model_dump_json()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "0"


class _BrokenOnOne(TelemetryIngest):
    """The real ingest with a bug that only one event triggers (fault injection)."""

    def __init__(self, *args: Any, poison: str) -> None:
        super().__init__(*args)
        self.poison = poison

    def _add(self, event: Any, *args: Any) -> None:
        if event.event_id == self.poison:
            raise RuntimeError("a bug this event triggers")
        super()._add(event, *args)


async def test_a_message_that_breaks_processing_is_dead_lettered_alone(line_factory: Any) -> None:
    run = production_run([STABLE])
    poison = run.messages[3][1].event_id
    async with line_factory() as line:
        await line.telemetry.consumer.stop()
        app_ingest = line.telemetry.ingest
        consumer = TelemetryConsumer(
            line.app.state.ctx.nats,
            _BrokenOnOne(app_ingest.db, app_ingest.shifts, poison=poison),
            durable="incident-telemetry-faulty",
        )
        consumer.start()
        try:
            await line.publish_run(run)
            broken = len(run.messages[3][1].records)  # type: ignore[attr-defined]

            async def rest_counted() -> bool:
                return await line.totals() == (600 - broken, 0, 1, 1)

            await wait_for(rest_counted, "everything but the poison message")
        finally:
            await consumer.stop()
        r = await line.client.get("/v1/telemetry/dead-letters", headers=line.auth(Role.AUDITOR))
        [dead] = r.json()["items"]
        assert dead["reason"].startswith("processing failed: RuntimeError")
        assert poison in dead["data"]


async def test_an_event_is_deduplicated_by_the_id_it_parses_to(
    line_factory: Any,
) -> None:
    """JSON's last ``event_id`` is the one that counts, whatever the message starts with."""
    run = production_run([STABLE])
    (subject_a, a), (subject_b, b) = run.messages[0], run.messages[1]
    async with line_factory() as line:
        await line.telemetry.consumer.stop()  # drive the ingest by hand
        ingest = line.telemetry.ingest
        first = await ingest.process([Incoming(subject_a, a.model_dump_json().encode(), 1)])
        assert first.events == 1
        # A new id up front, A's at the end: this is A again.
        again = a.model_dump_json()[:-1] + f',"event_id":"{a.event_id}"}}'
        again = again.replace(a.event_id, "not-the-id", 1)
        # A's id up front, B's at the end: this is B, never seen.
        other = '{"event_id":"' + a.event_id + '",' + b.model_dump_json()[1:]
        out = await ingest.process(
            [Incoming(subject_a, again.encode(), 2), Incoming(subject_b, other.encode(), 3)]
        )
        assert (out.events, out.duplicates, out.dead_letters) == (1, 1, [])
        assert out.records == len(b.records)  # type: ignore[attr-defined]
        counted = len(a.records) + len(b.records)  # type: ignore[attr-defined]
        assert await line.totals() == (counted, 0, 0, 0)


async def test_a_batch_written_while_the_next_is_parsed_is_never_counted_twice(
    line_factory: Any,
) -> None:
    """One message per fetch, so every batch is parsed while the one before it is written:
    an event republished right behind itself still counts once."""
    run = production_run([STABLE])
    async with line_factory() as line:
        await line.telemetry.consumer.stop()
        consumer = TelemetryConsumer(
            line.app.state.ctx.nats,
            line.telemetry.ingest,
            durable="incident-telemetry-one-at-a-time",
            batch=1,
        )
        consumer.start()
        try:
            for subject, event in run.messages:
                await line.publish(subject, event)
                await line.publish(subject, event, msg_id=f"again-{event.event_id}")
            await line.wait_ingested(run)
            marker = production_run([STABLE], seed=99, start=run.messages[-1][1].occurred_at)
            await line.publish_run(marker)
            await wait_for(lambda: _at_least(line, run.records + marker.records), "the marker")
        finally:
            await consumer.stop()
        assert await line.totals() == (1200, 0, 2, 0)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.TELEMETRY.incident-telemetry.1.4711.12.1764690000000000000.42",
        "$JS.ACK.plant3.ACCHASH.TELEMETRY.incident-telemetry.2.4711.12.1764690000000000000.0",
        "$JS.ACK.plant3.ACCHASH.TELEMETRY.incident-telemetry.2.4711.12.1764690000000000000.0.r4nd",
        "$JS.ACK._.ACCHASH.TELEMETRY.incident-telemetry.1.9.9.1764690000000000000.3.x",
        "_INBOX.abc.def",
        "$JS.ACK.TELEMETRY.short",
        "$JS.ACK.TELEMETRY.incident-telemetry.1.notanumber.12.1764690000000000000.42",
        "",
    ],
)
def test_the_stream_sequence_is_the_one_nats_py_reads_from_the_ack_subject(reply: str) -> None:
    msg = Msg(cast(Any, None), subject="linegate.telemetry.l.d", reply=reply, data=b"{}")
    try:
        expected: int | None = msg.metadata.sequence.stream
    except Exception:  # noqa: BLE001 - not a JetStream message (nats-py's errors vary)
        expected = None
    assert _stream_seq(msg) == expected


async def test_small_messages_are_fetched_more_at_once_and_counted_once(line_factory: Any) -> None:
    """Messages of 5 records (the agent's default is 100): the consumer asks for more of them
    per fetch, at most four times ``batch``, and every record still counts once."""
    run = production_run([STABLE], batch=5)
    async with line_factory(telemetry_fetch_batch=8) as line:
        consumer = line.telemetry.consumer
        assert consumer.fetch_size == 8
        await line.publish_run(run)
        await line.wait_ingested(run)
        assert consumer.fetch_size == 32
        assert await line.totals() == (600, 0, 1, 0)


async def test_a_consumer_deleted_under_the_ingest_is_made_anew_and_counts_nothing_twice(
    line_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator (or a stream restore) deletes the durable consumer under the running
    service: the consumer creates the durable again, which delivers the stream from its
    start, and what was counted before is recognised as seen."""
    run = production_run(day(STABLE))
    half = len(run.messages) // 2
    async with line_factory() as line:
        for subject, event in run.messages[:half]:
            await line.publish(subject, event)
        await wait_for(lambda: _at_least(line, 1), "some of the first half")
        consumer = line.telemetry.consumer
        stream = Streams.TELEMETRY.name
        js = line.js
        assert (await js.consumer_info(stream, consumer.durable)).config.durable_name
        before = consumer._sub
        await js.delete_consumer(stream, consumer.durable)

        async def made_anew() -> bool:
            try:
                await js.consumer_info(stream, consumer.durable)
            except Exception:  # noqa: BLE001 - not there yet
                return False
            return consumer._sub is not None and consumer._sub is not before

        await wait_for(made_anew, "the durable consumer created again")
        # The pull request open at the deletion ends with 409 "Consumer Deleted", or the next
        # one finds no consumer (503, no responders): either is a PullError, which resubscribes.
        failed = [r for r in caplog.records if r.getMessage().startswith("telemetry fetch failed")]
        assert failed
        assert all(r.exc_info and isinstance(r.exc_info[1], PullError) for r in failed)
        said = {str(r.exc_info[1]) for r in failed if r.exc_info}
        assert said <= {
            "JetStream pull request: 409 Consumer Deleted",
            "JetStream pull request: 503 no responders (no such consumer)",
        }, said
        for subject, event in run.messages[half:]:
            await line.publish(subject, event)
        await line.wait_ingested(run)
        # The new durable redelivered the first half from the stream's start: seen, not added.
        assert await line.totals() == (1800, 0, 3, 0)
