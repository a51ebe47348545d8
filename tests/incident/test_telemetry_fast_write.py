"""The ingest's bulk writes on both databases: a fetch's post-market rows (one ``COPY`` on
PostgreSQL) are stored exactly as given and a row the database refuses is a database error
(so the consumer redelivers the batch); the seen-set written and read as one statement each
holds exactly the ids marked, with their time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from incident import postmarket
from incident.postmarket import record_many
from incident.postmarket._record import COPY_FROM_ROWS
from incident.telemetry.ingest import _already_seen, _mark_seen

T0 = datetime(2026, 11, 2, 6, 0, 0, 123456, tzinfo=UTC)


def _rows(n: int) -> list[dict[str, Any]]:
    payload = {
        "text": 'quotes " and \\ backslashes, tabs\t, newlines\n, ünïcödé, \u2603, \U0001f600',
        "records": [{"i": i, "c": 0.1 * i} for i in range(50)],
    }
    return [
        postmarket.row(
            kind="inference_batch",
            occurred_at=T0 + timedelta(seconds=i),
            recorded_at=T0 + timedelta(hours=1),
            payload=json.dumps({**payload, "n": i}, ensure_ascii=False),
            event_id=f"e-{i}",
            model="weld-seam-inspector" if i % 2 else None,
            version="2.1.0" if i % 2 else None,
            device_id="cam-3-1",
            line="line3",
            record_id=None,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [3, COPY_FROM_ROWS, 300])
async def test_log_rows_are_stored_as_given(line_factory: Any, n: int) -> None:
    rows = _rows(n)
    async with line_factory() as line:
        db = line.app.state.ctx.db
        async with db.session() as session:
            await record_many(session, rows)
        async with db.session() as session:
            result = await session.exec(  # type: ignore[call-overload]
                sa.select(postmarket.postmarket_event)
                .where(postmarket.postmarket_event.c.kind == "inference_batch")
                .order_by(postmarket.postmarket_event.c.id)
            )
            stored = [dict(r) for r in result.mappings().all()]
    assert len(stored) == n
    for got, want in zip(stored, rows, strict=True):
        for column, value in want.items():
            if isinstance(value, datetime):
                got_at = got[column]
                got_at = got_at.replace(tzinfo=UTC) if got_at.tzinfo is None else got_at
                assert got_at == value, column
            else:
                assert got[column] == value, column
    assert [r["id"] for r in stored] == sorted(r["id"] for r in stored)


async def test_a_log_row_the_database_refuses_is_a_database_error(line_factory: Any) -> None:
    rows = _rows(COPY_FROM_ROWS + 4)
    rows[7]["payload"] = None  # NOT NULL
    async with line_factory() as line:
        db = line.app.state.ctx.db
        with pytest.raises(DBAPIError):
            async with db.session() as session:
                await record_many(session, rows)
        async with db.session() as session:
            result = await session.exec(  # type: ignore[call-overload]
                sa.select(sa.func.count())
                .select_from(postmarket.postmarket_event)
                .where(postmarket.postmarket_event.c.kind == "inference_batch")
            )
            assert result.one()[0] == 0  # nothing of the batch was kept


async def test_the_seen_set_holds_exactly_the_ids_marked(line_factory: Any) -> None:
    marked = [f"evt-{i:05d}" for i in range(1200)] + ["dl:17", "dl:" + "f" * 64]
    others = [f"evt-{i:05d}" for i in range(1200, 1500)] + ["dl:18", "evt-'quoted\"", ""]
    now = datetime.now(UTC)
    async with line_factory() as line:
        db = line.app.state.ctx.db
        async with db.session() as session:
            await _mark_seen(session, marked, now)
        async with db.session() as session:
            assert await _already_seen(session, others + marked + others) == set(marked)
            assert await _already_seen(session, others) == set()
            assert await _already_seen(session, []) == set()
        ingest = line.telemetry.ingest
        # Marked now: kept by a retention of a day, forgotten by one that ends tomorrow.
        assert await ingest.prune_seen(timedelta(days=1)) == 0
        assert await ingest.prune_seen(timedelta(days=-1)) == len(marked)
