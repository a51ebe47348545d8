import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from linegate.audit import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditEntry,
    AuditHead,
    AuditLog,
    verify_log,
)
from linegate.db import Database
from linegate.signing import generate_private_key

AUDIT_TABLES = [AuditEntry.__table__, AuditCheckpoint.__table__, AuditHead.__table__]


@pytest.fixture
async def db(tmp_path, database_settings):
    if database_settings:
        database = Database(
            database_settings["database_url"],
            schema=database_settings["database_schema_prefix"] + "registry",
        )
        async with database.engine.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"'))
    else:
        database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(lambda c: SQLModel.metadata.create_all(c, tables=AUDIT_TABLES))
        await conn.execute(sa.insert(AuditHead.__table__).values(id=1, seq=0, hash=GENESIS_HASH))
    yield database
    await database.dispose()


@pytest.fixture
def key():
    return generate_private_key()


async def _fill(db, audit, n):
    for i in range(n):
        async with db.session() as s:
            await audit.append(
                s, actor="qa@plant", action="model.approve", subject=f"m@{i}", payload={"i": i}
            )


async def _verify(db, audit):
    async with db.session() as s:
        return await verify_log(s, [audit.public_key], service="registry")


async def test_an_untouched_chain_verifies_with_its_checkpoints(db, key):
    audit = AuditLog("registry", key, checkpoint_every=4)
    await _fill(db, audit, 10)
    report = await _verify(db, audit)
    assert report.ok, report.errors
    assert (report.entries, report.checkpoints) == (10, 2)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 5",
            "seq 5: content does not match its hash",
        ),
        (
            "UPDATE audit_log SET payload_digest = 'sha256:00' WHERE seq = 2",
            "seq 2: content does not match",
        ),
        ("DELETE FROM audit_log WHERE seq = 6", "seq 7: expected seq 6"),
        ("DELETE FROM audit_log WHERE seq > 8", "checkpoint 12: entries up to 12 are missing"),
        ("UPDATE audit_log SET seq = seq + 100 WHERE seq = 3", "expected seq 3"),
    ],
    ids=["edited-actor", "edited-payload", "removed", "truncated", "reordered"],
)
async def test_tampering_is_detected(db, key, tamper, expected):
    audit = AuditLog("registry", key, checkpoint_every=4)
    await _fill(db, audit, 12)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(tamper))
    report = await _verify(db, audit)
    assert not report.ok
    assert any(expected in e for e in report.errors), report.errors


async def test_one_flipped_byte_in_a_hash_is_detected(db, key):
    audit = AuditLog("registry", key, checkpoint_every=100)
    await _fill(db, audit, 3)
    async with db.engine.begin() as conn:
        h = (await conn.execute(sa.text("SELECT hash FROM audit_log WHERE seq = 2"))).scalar_one()
        flipped = ("1" if h[0] != "1" else "2") + h[1:]
        await conn.execute(sa.text("UPDATE audit_log SET hash = :h WHERE seq = 2"), {"h": flipped})
    report = await _verify(db, audit)
    assert any("seq 2" in e for e in report.errors)
    assert any("seq 3: prev_hash" in e for e in report.errors)


async def test_a_checkpoint_signed_by_another_key_is_rejected(db, key):
    audit = AuditLog("registry", key, checkpoint_every=2)
    await _fill(db, audit, 2)
    impostor = AuditLog("registry", generate_private_key(), checkpoint_every=2)
    async with db.session() as s:
        report = await verify_log(s, [impostor.public_key])
    assert any("checkpoint 2: signature invalid" in e for e in report.errors)


async def test_concurrent_appends_never_fork_the_chain(db, key):
    audit = AuditLog("registry", key, checkpoint_every=5)

    async def one(i):
        async with db.session() as s:
            await audit.append(s, actor="a", action="x", subject=str(i), payload=None)

    await asyncio.gather(*(one(i) for i in range(25)))
    report = await _verify(db, audit)
    assert report.ok, report.errors
    assert report.entries == 25


async def test_a_rolled_back_change_leaves_no_audit_entry(db, key):
    audit = AuditLog("registry", key)

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError):
        async with db.session() as s:
            await audit.append(s, actor="a", action="x", subject="y", now=datetime.now(UTC))
            raise BoomError
    async with db.session() as s:
        assert await AuditLog.entries(s) == []


async def test_append_many_chains_exactly_like_appends_one_by_one(db, key):
    from linegate.audit import AuditRecord

    audit = AuditLog("registry", key, checkpoint_every=4)
    await _fill(db, audit, 2)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    records = [
        AuditRecord(
            actor=f"a{i}",
            action="attestation.verified",
            subject=f"att-{i}",
            payload={"i": i},
            reason=None if i % 2 else "why",
        )
        for i in range(7)
    ]
    async with db.session() as s:
        many = await audit.append_many(s, records, now=now)
    assert [e.seq for e in many] == list(range(3, 10))
    assert (await _verify(db, audit)).ok
    log, cps, head = AuditEntry.__table__, AuditCheckpoint.__table__, AuditHead.__table__
    async with db.engine.begin() as conn:
        checkpoints = sorted((await conn.execute(sa.select(cps.c.seq))).scalars())
        assert checkpoints == [4, 8]
        # Rewind to the first two entries and append the same records one by one.
        await conn.execute(sa.delete(log).where(log.c.seq > 2))
        await conn.execute(sa.delete(cps))
        second = (await conn.execute(sa.select(log.c.hash).where(log.c.seq == 2))).scalar_one()
        await conn.execute(sa.update(head).values(seq=2, hash=second))
    one_by_one = []
    for r in records:
        async with db.session() as s:
            e = await audit.append(
                s,
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                payload=r.payload,
                reason=r.reason,
                now=now,
            )
            one_by_one.append(e.hash)
    assert [e.hash for e in many] == one_by_one


async def test_append_flushes_the_change_it_records_first(db, key):
    # Callers read what the flush assigns (ids, defaults) right after appending, as they did
    # when the entry itself went through the ORM flush.
    audit = AuditLog("registry", key, checkpoint_every=100)
    async with db.session() as s:
        pending = AuditCheckpoint(
            seq=1000, hash="h", time=datetime.now(UTC), key_id="k", envelope="{}"
        )
        s.add(pending)
        assert pending in s.new
        await audit.append(s, actor="a", action="x", subject="y")
        assert not s.new
        await s.delete(pending)
    async with db.session() as s:
        assert [e.seq for e in await AuditLog.entries(s)] == [1]
