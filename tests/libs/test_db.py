"""linegate.db on a real SQLite file: inline connections leave WAL checkpoints to a thread;
a worker may open a new file another process is writing."""

import asyncio
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from linegate.db import _WAL_CHECKPOINT_BYTES, Database

ROWS_PER_COMMIT = 8
PAGE = 4096


async def _write(db: Database, commits: int) -> None:
    for i in range(commits):
        async with db.session() as session:
            await session.exec(  # type: ignore[call-overload]
                sa.text("INSERT INTO blob (n, data) VALUES (:n, :data)"),
                params=[
                    {"n": i * ROWS_PER_COMMIT + j, "data": bytes(PAGE)}
                    for j in range(ROWS_PER_COMMIT)
                ],
            )
        await asyncio.sleep(0)  # a server's loop turns between commits; the checkpoint runs


async def test_inline_sqlite_checkpoints_in_a_thread_and_keeps_the_wal_bounded(tmp_path):
    path = tmp_path / "inline.db"
    db = Database(f"sqlite:///{path}", sqlite_inline=True)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE blob (n INTEGER PRIMARY KEY, data BLOB)"))
        autocheckpoint = (await conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar()
    assert autocheckpoint == 0  # the commit that crosses the threshold no longer checkpoints

    commits = 200  # ~1,600 pages: past SQLite's 1,000-page threshold, so checkpoints must run
    await _write(db, commits)
    await db.dispose()

    assert db._wal is not None
    assert db._wal.checkpoints >= commits // 16 - 1
    # Each checkpoint completed with no writer in between, so the WAL restarted from its
    # start instead of growing with everything written.
    wal = path.with_name(path.name + "-wal")
    written = commits * ROWS_PER_COMMIT * PAGE
    assert not wal.exists() or wal.stat().st_size < written / 3
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM blob").fetchone() == (commits * ROWS_PER_COMMIT,)


async def test_sqlite_through_aiosqlite_threads_keeps_sqlites_own_checkpoints(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'threads.db'}")
    async with db.engine.begin() as conn:
        autocheckpoint = (await conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar()
    await db.dispose()
    assert db._wal is None
    assert autocheckpoint == 1000


async def test_large_commits_checkpoint_by_the_wal_size_and_the_file_shrinks_back(tmp_path):
    """A few large commits (a telemetry fetch's log rows) checkpoint before the 16th commit,
    once the WAL passes its size, and after the restart the WAL file is cut back to that size."""
    path = tmp_path / "large.db"
    db = Database(f"sqlite:///{path}", sqlite_inline=True)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE blob (n INTEGER PRIMARY KEY, data BLOB)"))
        limit = (await conn.execute(sa.text("PRAGMA journal_size_limit"))).scalar()
    assert limit == _WAL_CHECKPOINT_BYTES
    wal = path.with_name(path.name + "-wal")
    sizes = []
    for i in range(6):  # 6 commits of ~8 MiB: far fewer than 16
        async with db.session() as session:
            await session.exec(  # type: ignore[call-overload]
                sa.text("INSERT INTO blob (n, data) VALUES (:n, :data)"),
                params=[{"n": i * 64 + j, "data": bytes(128 * 1024)} for j in range(64)],
            )
        await asyncio.sleep(0.05)  # let a checkpoint started by this commit run
        sizes.append(wal.stat().st_size)
    assert db._wal is not None
    assert db._wal.checkpoints >= 2, sizes
    # Without the size trigger the WAL would hold all 48 MiB; it stays near one commit or two.
    assert max(sizes) < 3 * _WAL_CHECKPOINT_BYTES, sizes
    await db.dispose()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM blob").fetchone() == (6 * 64,)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "aiosqlite-threads"])
async def test_a_new_file_another_process_is_writing_is_switched_to_wal_once_it_can(
    tmp_path, inline
):
    # Several workers of one service starting together on a new file: while one writes (its
    # migration) the file is still in rollback-journal mode, and SQLite answers another's
    # switch to WAL "database is locked" at once, whatever the busy timeout (that worker
    # then failed to start). Here a plain sqlite3 connection plays the first worker.
    path = tmp_path / "new.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE t (n INTEGER)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO t VALUES (1)")
    done = threading.Timer(0.5, first.execute, ["COMMIT"])
    done.start()
    db = Database(f"sqlite:///{path}", sqlite_inline=inline)
    try:
        async with db.session() as session:  # connects while the first still writes
            await session.exec(sa.text("INSERT INTO t VALUES (2)"))  # type: ignore[call-overload]
        async with db.engine.connect() as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
    finally:
        done.join()
        first.close()
        await db.dispose()
    assert mode == "wal"
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]
