"""Migration 0008 on SQLite and PostgreSQL: a freeze recorded under the old schema (one
``frozen_version`` row per version, 0005-0007) becomes the hold of the incident it names, and
the version stays frozen; a downgrade keeps each version's oldest hold."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from edge_gateway import distribution
from edge_gateway.app import MIGRATIONS
from edge_gateway.errors import VersionFrozen
from edge_gateway.models import FreezeHold
from edge_gateway.settings import GatewaySettings
from linegate.db import Database

MODEL = "weld-seam-inspector"
FROZEN_AT = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)


async def migrate_to(db: Database, revision: str, *, down: bool = False) -> None:
    """Upgrade (or downgrade) the schema to ``revision``, as :meth:`Database.migrate` does."""

    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with db.engine.begin() as conn:
        if db.schema is not None:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
        await conn.run_sync(run)


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_an_old_freeze_becomes_its_incidents_hold(
    tmp_path: Path, database_settings: dict[str, Any]
) -> None:
    db = Database.for_service(GatewaySettings(data_dir=tmp_path / "data", **database_settings))
    try:
        await migrate_to(db, "0007")
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO frozen_version (model, version, incident_id, reason, "
                    "frozen_at, frozen_by) VALUES (:m, '2.1.0', 'inc-7', 'seam images', :t, "
                    "'rita-responder')"
                ),
                {"m": MODEL, "t": FROZEN_AT},
            )
        await db.migrate(MIGRATIONS)

        assert "frozen_version" not in await tables(db)
        async with db.session() as session:
            [hold] = await distribution.freeze_holds(session, MODEL, "2.1.0")
            assert (hold.incident_id, hold.reason, hold.frozen_by) == (
                "inc-7",
                "seam images",
                "rita-responder",
            )
            assert hold.frozen_at.replace(tzinfo=hold.frozen_at.tzinfo or UTC) == FROZEN_AT
            with pytest.raises(VersionFrozen) as refused:
                await distribution.refuse_frozen(session, MODEL, "2.1.0", "assign it")
            assert refused.value.extra["incident_ids"] == ["inc-7"]
            # A second incident's hold on the same version now sits beside the first.
            session.add(
                FreezeHold(
                    model=MODEL,
                    version="2.1.0",
                    incident_id="inc-8",
                    reason="porosity",
                    frozen_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
                    frozen_by="sam-responder",
                )
            )

        await migrate_to(db, "0007", down=True)
        async with db.engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT incident_id FROM frozen_version"))).all()
        assert [r[0] for r in rows] == ["inc-7"]
        assert "freeze_hold" not in await tables(db)
    finally:
        await db.dispose()
