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


async def test_0007_widens_audit_sequences_and_outbox_ids_and_keeps_the_chain(db):
    """Entries and events written before 0007 stay; on PostgreSQL the sequence numbers and
    outbox ids then take values past 2**31 (SQLite's INTEGER holds 64 bits already)."""
    await _upgrade_to(db, "0006")
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO audit_log (seq, time, actor, action, subject, reason, "
                "payload_digest, prev_hash, hash) VALUES (1, :t, 'a', 'x', 's', NULL, 'd', "
                "'p', 'h')"
            ),
            {"t": NOW},
        )
        await conn.execute(sa.text("UPDATE audit_head SET seq = 1, hash = 'h' WHERE id = 1"))
        await conn.execute(
            sa.text(
                "INSERT INTO outbox (event_id, subject, event_type, body, created_at) "
                "VALUES ('e1', 's', 't', '{}', :t)"
            ),
            {"t": NOW},
        )
    await _upgrade_to(db, "0007")
    big = 2**31 + 5
    async with db.engine.begin() as conn:
        if db.schema is not None:
            await conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('outbox', 'id'), :v)"), {"v": big}
            )
        else:
            renumber = sa.text("UPDATE outbox SET id = :v WHERE event_id = 'e1'")
            await conn.execute(renumber, {"v": big})
        await conn.execute(
            sa.text(
                "INSERT INTO audit_log (seq, time, actor, action, subject, reason, "
                "payload_digest, prev_hash, hash) VALUES (:seq, :t, 'a', 'x', 's', NULL, 'd', "
                "'h', 'h2')"
            ),
            {"seq": big, "t": NOW},
        )
        await conn.execute(sa.text("UPDATE audit_head SET seq = :seq WHERE id = 1"), {"seq": big})
        await conn.execute(
            sa.text(
                "INSERT INTO outbox (event_id, subject, event_type, body, created_at) "
                "VALUES ('e2', 's', 't', '{}', :t)"
            ),
            {"t": NOW},
        )
        seqs = (await conn.execute(sa.text("SELECT seq FROM audit_log ORDER BY seq"))).all()
        head = (await conn.execute(sa.text("SELECT seq FROM audit_head"))).scalar_one()
        ids = (await conn.execute(sa.text("SELECT id FROM outbox ORDER BY id"))).all()
    assert [r[0] for r in seqs] == [1, big]
    assert head == big
    assert ids[-1][0] > 2**31  # the next event's id, past what a 32-bit column holds
    await _upgrade_to(db, "head")
