"""The post-market log's query API (by incident, model version, equipment, line, time, with
keyset pagination) and its streamed CSV / JSON-lines export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from incident.postmarket import record
from linegate.auth import Role
from linegate.testing.fixtures import bearer
from tests.incident.telemetry_support import (
    DEVICES,
    LINE,
    MODEL,
    STABLE,
    T0,
    VERSION,
    production_run,
    shifted,
)


async def test_query_by_model_equipment_line_time_and_incident(line_factory: Any) -> None:
    run = production_run([shifted(STABLE, parts=40, overrides=2)], batch=10)
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        async with line.app.state.ctx.db.session() as session:
            await record(
                session,
                kind="incident.opened",
                occurred_at=T0 + timedelta(hours=9),
                payload={"incident_id": "inc-7", "type": "defect_escape"},
                incident_id="inc-7",
                model=MODEL,
                version=VERSION,
                line=LINE,
            )
        auditor = line.auth(Role.AUDITOR)

        async def query(**params: Any) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            cursor = None
            while True:
                p = {**params, "limit": 7, **({"cursor": cursor} if cursor else {})}
                r = await line.client.get("/v1/postmarket/events", params=p, headers=auditor)
                assert r.status_code == 200, r.text
                page = r.json()
                items += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return items

        everything = await query()
        # Four batches of ten records, two overrides, the KPI sample, the incident event.
        assert len(everything) == 4 + 2 + 1 + 1
        ids = [e["id"] for e in everything]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

        device = await query(device_id=DEVICES[0])
        assert {e["device_id"] for e in device} == {DEVICES[0]}
        assert len(device) == 2 + 2  # its two batches and both overrides

        version = await query(model=MODEL, version=VERSION, kind="inference_batch")
        assert sum(len(b["payload"]["records"]) for b in version) == 40
        assert await query(version="9.9.9") == []

        first_hour = await query(since=T0.isoformat(), until=(T0 + timedelta(hours=1)).isoformat())
        # A part every 12 minutes, alternating devices: each device's first batch starts in it.
        assert [(e["kind"], e["device_id"]) for e in first_hour] == [
            ("inference_batch", DEVICES[0]),
            ("inference_batch", DEVICES[1]),
        ]

        [opened] = await query(incident_id="inc-7")
        assert opened["kind"] == "incident.opened"
        assert opened["payload"] == {"incident_id": "inc-7", "type": "defect_escape"}

        [kpi] = await query(kind="kpi_sample", line=LINE)
        assert kpi["payload"]["produced"] == 40

        # Not a cursor this API returned: not a number, negative, or past a 64-bit id.
        for cursor in ("abc", "-1", str(2**63), "1" * 40):
            bad = await line.client.get(
                "/v1/postmarket/events", params={"cursor": cursor}, headers=auditor
            )
            assert bad.status_code == 422, (cursor, bad.text)
            assert bad.headers["content-type"] == "application/problem+json"
        assert (
            await line.client.get(
                "/v1/postmarket/events", params={"cursor": str(2**63 - 1)}, headers=auditor
            )
        ).json()["items"] == []
        huge = await line.client.get(
            "/v1/telemetry/dead-letters", params={"cursor": 2**63}, headers=auditor
        )
        assert huge.status_code == 422, huge.text
        backwards = await line.client.get(
            "/v1/postmarket/events",
            params={"since": T0.isoformat(), "until": (T0 - timedelta(hours=1)).isoformat()},
            headers=auditor,
        )
        assert backwards.status_code == 422
        # Devices never read the log.
        device = bearer(line.mint(Role.DEVICE, device_id=DEVICES[0], sub="d"))
        refused = await line.client.get("/v1/postmarket/events", headers=device)
        assert refused.status_code == 403


async def test_export_streams_csv_and_json_lines(line_factory: Any) -> None:
    run = production_run([shifted(STABLE, parts=30)], batch=10)
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        auditor = line.auth(Role.AUDITOR)
        async with line.client.stream(
            "GET",
            "/v1/postmarket/export",
            params={"format": "jsonl", "kind": "inference_batch", "device_id": DEVICES[1]},
            headers=auditor,
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(x) async for x in r.aiter_lines() if x]
        assert [len(x["payload"]["records"]) for x in lines] == [10, 5]
        assert {x["device_id"] for x in lines} == {DEVICES[1]}
        assert lines[0]["payload"]["device_id"] == DEVICES[1]
        assert lines[0]["occurred_at"].endswith("+00:00")

        r = await line.client.get(
            "/v1/postmarket/export", params={"format": "csv"}, headers=auditor
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 4 + 1
        assert rows[0]["kind"] == "inference_batch"
        assert json.loads(rows[0]["payload"])["line"] == LINE
        assert rows[-1]["kind"] == "kpi_sample"

        bad = await line.client.get(
            "/v1/postmarket/export", params={"format": "xlsx"}, headers=auditor
        )
        assert bad.status_code == 422
