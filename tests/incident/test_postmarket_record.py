"""``incident.postmarket.record``: the function other modules append to the log with, on the
migrated schema of SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from incident.app import MIGRATIONS
from incident.postmarket import postmarket_event, record
from incident.settings import IncidentSettings
from linegate.db import Database


async def test_record_appends_a_queryable_row(
    tmp_path: Path, database_settings: dict[str, Any]
) -> None:
    settings = IncidentSettings(data_dir=tmp_path / "data", **database_settings)
    db = Database.for_service(settings)
    try:
        await db.migrate(MIGRATIONS)
        t = datetime(2026, 11, 2, 22, 15, tzinfo=UTC)
        async with db.session() as session:
            await record(
                session,
                kind="incident.opened",
                occurred_at=t,
                payload={"incident_id": "inc-1", "type": "defect_escape", "at": t},
                incident_id="inc-1",
                model="weld-seam-inspector",
                version="2.1.0",
                line="line3",
            )
        async with db.session() as session:
            rows = (await session.exec(sa.select(postmarket_event))).mappings().all()
        assert len(rows) == 1
        got = rows[0]
        assert (got["kind"], got["incident_id"], got["model"], got["version"], got["line"]) == (
            "incident.opened",
            "inc-1",
            "weld-seam-inspector",
            "2.1.0",
            "line3",
        )
        assert got["device_id"] is None
        assert json.loads(got["payload"])["type"] == "defect_escape"
        assert got["occurred_at"].replace(tzinfo=UTC) == t
    finally:
        await db.dispose()
