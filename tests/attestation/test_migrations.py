"""Migrations from an older database: the records stay and every query still answers."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from attestation.app import MIGRATIONS
from attestation.repository import AttestationRepository
from linegate.db import Database

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path, database_settings):
    if database_settings:
        database = Database(
            database_settings["database_url"],
            schema=database_settings["database_schema_prefix"] + "attestation",
        )
    else:
        database = Database(f"sqlite:///{tmp_path / 'attestation.db'}")
    yield database
    await database.dispose()


async def _upgrade_to(db: Database, revision: str) -> None:
    def upgrade(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with db.engine.begin() as conn:
        if db.schema is not None:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
        await conn.run_sync(upgrade)


def _attestation(attestation_id: str, supplier_id: str, raw_digest: str) -> dict[str, object]:
    return {
        "id": attestation_id,
        "supplier_id": supplier_id,
        "status": "verified",
        "verified": True,
        "content_type": "application/vnd.dsse.envelope.v1+json",
        "envelope": "dsse",
        "raw_digest": raw_digest,
        "raw_size": 3,
        "predicate_type": "https://slsa.dev/provenance/v1",
        "predicate_kind": "slsa-provenance-v1",
        "recognised": True,
        "signer": "k",
        "subjects": "[]",
        "summary": "{}",
        "reasons": "[]",
        "issued_at": NOW,
        "expires_at": NOW,
        "created_at": NOW,
        "uploaded_by": "ci@optivision",
    }


INSERT_ATTESTATION = sa.text(
    "INSERT INTO attestation (id, supplier_id, status, verified, content_type, envelope, "
    "raw_digest, raw_size, predicate_type, predicate_kind, recognised, signer, subjects, "
    "summary, reasons, issued_at, expires_at, created_at, uploaded_by) VALUES (:id, "
    ":supplier_id, :status, :verified, :content_type, :envelope, :raw_digest, :raw_size, "
    ":predicate_type, :predicate_kind, :recognised, :signer, :subjects, :summary, :reasons, "
    ":issued_at, :expires_at, :created_at, :uploaded_by)"
)


async def _indexes(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: {str(i["name"]) for i in sa.inspect(c).get_indexes("attestation")}
        )


async def test_0006_drops_the_redundant_indexes_and_keeps_records_and_lookups(db):
    await _upgrade_to(db, "0005")
    async with db.engine.begin() as conn:
        for supplier in ("optivision", "acme"):
            await conn.execute(
                sa.text(
                    "INSERT INTO supplier (id, name, contacts, created_at, created_by) "
                    "VALUES (:id, :id, '[]', :now, 'test')"
                ),
                {"id": supplier, "now": NOW},
            )
        await conn.execute(INSERT_ATTESTATION, _attestation("a1", "optivision", "sha256:aa"))
        await conn.execute(INSERT_ATTESTATION, _attestation("a2", "acme", "sha256:aa"))
    before = await _indexes(db)
    assert {"ix_attestation_supplier_id", "ix_attestation_raw_digest"} <= before

    await db.migrate(MIGRATIONS)

    after = await _indexes(db)
    assert after == before - {"ix_attestation_supplier_id", "ix_attestation_raw_digest"}
    async with db.session() as session:
        repo = AttestationRepository(session)
        found = await repo.by_raw_digests([("optivision", "sha256:aa"), ("acme", "sha256:bb")])
        assert {key: a.id for key, a in found.items()} == {("optivision", "sha256:aa"): "a1"}
        assert [a.id for a in await repo.query(tenant="acme")] == ["a2"]
        assert (await repo.get("a1", tenant="acme")) is None  # tenancy in the query itself
    # The unique index that serves those lookups still refuses the same bytes twice.
    with pytest.raises(sa.exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(INSERT_ATTESTATION, _attestation("a3", "optivision", "sha256:aa"))
