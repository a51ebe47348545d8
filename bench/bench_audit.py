"""Audit-log appends per second on SQLite, beside plain inserts of the same rows."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import SQLModel

from _harness import report, scaled
from linegate.audit import GENESIS_HASH, AuditCheckpoint, AuditEntry, AuditHead, AuditLog
from linegate.db import Database
from linegate.signing import generate_private_key

TABLES = [AuditEntry.__table__, AuditCheckpoint.__table__, AuditHead.__table__]


async def _setup(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: SQLModel.metadata.create_all(c, tables=TABLES))
        await conn.execute(sa.insert(AuditHead.__table__).values(id=1, seq=0, hash=GENESIS_HASH))
    return db


async def _run(tmp: Path, n: int) -> tuple[float, float]:
    db = await _setup(tmp / "audit.db")
    audit = AuditLog("bench", generate_private_key(), checkpoint_every=100)
    start = time.perf_counter()
    for i in range(n):
        async with db.session() as s:
            await audit.append(s, actor="bench", action="x.y", subject=str(i), payload={"i": i})
    ours = n / (time.perf_counter() - start)
    await db.dispose()

    plain = await _setup(tmp / "plain.db")
    start = time.perf_counter()
    for i in range(n):
        async with plain.engine.begin() as conn:
            await conn.execute(
                sa.insert(AuditEntry.__table__).values(
                    seq=i + 1,
                    time=sa.func.now(),
                    actor="bench",
                    action="x.y",
                    subject=str(i),
                    reason=None,
                    payload_digest="sha256:0",
                    prev_hash="0",
                    hash="0",
                )
            )
    raw = n / (time.perf_counter() - start)
    await plain.dispose()
    return ours, raw


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours, raw = asyncio.run(_run(Path(tmp), scaled(1000)))
    report(
        "audit",
        "hash-chained appends, one commit each",
        ours,
        "/s",
        "plain inserts, one commit each",
        raw,
    )


if __name__ == "__main__":
    main()
