"""Per-service database: async SQLModel sessions, SQLite by default, PostgreSQL by setting.

Every service owns its tables. On SQLite each service has its own file in the data directory;
on PostgreSQL each service owns the schema ``<prefix><service>`` of the shared database, and
its connections set ``search_path`` to it, so no service can reach another's tables by accident.
Schema changes are alembic migrations in ``<service>/migrations``; :meth:`Database.migrate` runs
them to ``head`` at start-up under a PostgreSQL advisory lock, so several replicas starting at
once do not race.

Example::

    db = Database.for_service(settings)
    await db.migrate(Path(attestation.__file__).parent / "migrations")
    async with db.session() as session:
        ...  # commits on success, rolls back on error
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.settings import LinegateSettings

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
log = logging.getLogger("linegate.db")


def _async_url(url: str) -> str:
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if driver in ("postgresql", "postgres", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class _InlineSqliteConnection(aiosqlite.Connection):
    """aiosqlite with every call run on the calling thread (the event loop's).

    aiosqlite hands each call (cursor, execute, fetch, close) to its own thread and back:
    two thread switches per call, which cost far more than the SQLite call itself for the
    small statements services make. In one process nothing makes SQLite wait on a lock:
    :class:`Database` queues its writers in-process, and WAL readers never wait. When other
    processes write the same file (several workers of one service), a write waits for theirs
    in SQLite's busy handler with this process's event loop blocked meanwhile: for as long as
    the other's transaction lasts, as its own long statements block it already. Measured
    with two attestation workers on one file (``bench/bench_attestation.py``), that still
    beat aiosqlite's threads at every concurrency (16 to 128 clients: 1,465-3,039 against
    930-3,017 uploads/s, p99 latency 31 against 79 ms at 32 clients), and kept the WAL
    bounded. It is opt-in per service (``database_sqlite_inline``).
    """

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def _inline_sqlite_creator(url: str, timeout: float) -> Any:
    path = make_url(url).database or ":memory:"

    async def create() -> aiosqlite.Connection:
        def connector() -> sqlite3.Connection:
            # Opened on aiosqlite's thread, then used from the loop's (see the class above).
            connection = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
            # Checkpoints are run off the loop by _WalCheckpointer instead of by the commit
            # that crosses SQLite's threshold (see there).
            connection.execute("PRAGMA wal_autocheckpoint=0")
            # After a checkpoint restarts the WAL, its file is cut back to this size instead
            # of keeping the largest it ever grew to on disk.
            connection.execute(f"PRAGMA journal_size_limit={_WAL_CHECKPOINT_BYTES}")
            return connection

        return await _InlineSqliteConnection(connector, iter_chunk_size=64)

    return create


class _WalCheckpointer:
    """Checkpoints the WAL of an inline SQLite database in a worker thread.

    SQLite checkpoints from inside the commit that takes the WAL past 1,000 pages: it copies
    the pages into the database file and fsyncs both files, which with the connection inline
    blocks the event loop for milliseconds (measured: 0.4 ms of stall per recorded upload,
    three times the CPU of its commits). Inline connections turn that off; instead every
    ``every`` commits, or once the WAL file passes ``max_bytes`` (a few large commits, such as
    a telemetry fetch's log rows), this runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a
    connection of its own in a thread, while holding the writer turn: the loop keeps serving
    requests, no writer appends meanwhile, so the checkpoint completes and the next writer
    restarts the WAL from its start, exactly as after SQLite's own checkpoint. Durability is
    unchanged (every commit is in the WAL before it returns; a checkpoint only moves pages).
    """

    def __init__(
        self, path: str, timeout: float, lock: asyncio.Lock, *, every: int, max_bytes: int
    ) -> None:
        self._path = path
        self._wal_path = Path(path + "-wal")
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._lock = lock
        self._every = every
        self._commits = 0
        self._task: asyncio.Task[None] | None = None
        self._connection: sqlite3.Connection | None = None
        # The thread's connection is used by one checkpoint at a time, even if a cancelled
        # waiter let the next one start before the thread had finished.
        self._thread_lock = threading.Lock()
        #: Checkpoints run (tests check the work moved here).
        self.checkpoints = 0

    def committed(self) -> None:
        """Called after each commit; starts a checkpoint every ``every`` commits, or sooner
        once the WAL has grown past ``max_bytes``."""
        self._commits += 1
        if self._task is not None and not self._task.done():
            return
        if self._commits < self._every and self._wal_bytes() < self._max_bytes:
            return
        self._commits = 0
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="sqlite-wal-checkpoint"
        )

    def _wal_bytes(self) -> int:
        try:
            return self._wal_path.stat().st_size
        except OSError:
            return 0

    async def _run(self) -> None:
        try:
            # Queued like a writer: commits already waiting go first, later ones wait for it.
            async with self._lock:
                await asyncio.to_thread(self._checkpoint)
        except Exception:
            # The commits are durable in the WAL; the next checkpoint copies their pages.
            log.exception("WAL checkpoint failed; will retry after the next commits")

    def _checkpoint(self) -> None:
        with self._thread_lock:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self._path, timeout=self._timeout, check_same_thread=False
                )
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1

    async def close(self) -> None:
        """Wait for a running checkpoint, then close the thread's connection."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        with self._thread_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


#: The largest value an INTEGER column holds on every backend (32 bits on PostgreSQL), and a
#: BIGINT one: API numbers that reach a query on such a column are bounded by it, so a larger
#: one is a 422 from validation, not an overflow in the driver (a 500).
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


async def core_connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection (its transaction), for Core statements built once.

    A statement through the ORM session's execute costs about 100 us more than the same one
    on its connection (measured 140-160 us against 40-60 us), which hot writers (group
    commits, the audit append, the outbox) run several of per transaction. What the session
    holds pending is flushed first, as its own execute would (autoflush)."""
    if session.new or session.dirty or session.deleted:
        await session.flush()
    return await session.connection()


class Database:
    """An async engine bound to one service's tables."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        echo: bool = False,
        sqlite_inline: bool = False,
    ) -> None:
        """``sqlite_inline`` runs SQLite calls on the event loop's thread instead of
        aiosqlite's (see :class:`_InlineSqliteConnection` for what that costs when other
        processes write the same file)."""
        self.url = _async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.schema = None if self.is_sqlite else schema
        if self.schema is not None and not _SCHEMA_RE.match(self.schema):
            raise ValueError(f"invalid schema name {self.schema!r}")
        connect_args: dict[str, Any] = {}
        if self.schema is not None:
            connect_args["options"] = f"-csearch_path={self.schema}"
        if self.is_sqlite:
            connect_args["timeout"] = 30
        engine_args: dict[str, Any] = {}
        if self.is_sqlite and sqlite_inline:
            engine_args["async_creator"] = _inline_sqlite_creator(self.url, connect_args["timeout"])
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            echo=echo,
            connect_args=connect_args,
            pool_pre_ping=not self.is_sqlite,
            **engine_args,
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None
        self._wal: _WalCheckpointer | None = None
        path = make_url(self.url).database
        if self.is_sqlite and sqlite_inline and path and path != ":memory:":
            assert self._sqlite_lock is not None
            self._wal = _WalCheckpointer(
                path,
                connect_args["timeout"],
                self._sqlite_lock,
                every=_WAL_CHECKPOINT_COMMITS,
                max_bytes=_WAL_CHECKPOINT_BYTES,
            )

    @classmethod
    def for_service(cls, settings: LinegateSettings) -> Database:
        """The database of ``settings.service_name`` (SQLite file unless a URL is set)."""
        if settings.database_url:
            return cls(
                settings.database_url,
                schema=settings.database_schema_prefix + settings.service_name,
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = (settings.data_dir / f"{settings.service_name}.db").resolve()
        # A service's settings may offer ``database_sqlite_inline`` (see __init__).
        return cls(
            f"sqlite:///{path}",
            sqlite_inline=bool(getattr(settings, "database_sqlite_inline", False)),
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits once when the block succeeds, rolls back otherwise."""
        async with self._writer_turn(), self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            if self._wal is not None:
                self._wal.committed()

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        # SQLite has one writer at a time. Left to SQLite, waiting writers poll with sleeps of
        # up to 100 ms (its busy handler); queueing them here instead hands the lock over at
        # once. Other processes on the same file still wait through busy_timeout.
        if self._sqlite_lock is None:
            yield
            return
        async with self._sqlite_lock:
            yield

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self, script_location: Path) -> None:
        """Upgrade this service's schema to the newest alembic revision."""
        async with self.engine.begin() as conn:
            if self.schema is not None:
                # Serialise replicas migrating the same schema; released at commit.
                lock_id = int.from_bytes(hashlib.sha256(self.schema.encode()).digest()[:7], "big")
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(_upgrade, str(script_location))

    async def dispose(self) -> None:
        if self._wal is not None:
            await self._wal.close()
        await self.engine.dispose()


#: Commits between two WAL checkpoints of an inline SQLite database: a group commit of a
#: few dozen uploads writes a hundred-odd pages, so about SQLite's own threshold of 1,000
#: pages under load, and fewer (smaller WAL) when commits are small.
_WAL_CHECKPOINT_COMMITS = 16
#: ... or once the WAL file is this large: a telemetry fetch of 256 messages writes about 9 MB of
#: log rows in one commit, and sixteen of those would grow the WAL (and the checkpoint that
#: copies it, with writers waiting) to about 150 MB.
_WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024


def _upgrade(connection: Connection, script_location: str) -> None:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, start transactions (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout queues writers instead of failing them with "database is locked".
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets readers run beside the single writer.
    _journal_mode_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    # In WAL mode NORMAL keeps every commit across a crash of the process (the guarantee
    # Linegate makes); only an OS crash or power cut can lose the last commits. Deployments
    # that need that too run on PostgreSQL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _journal_mode_wal(cursor: Any, *, wait: float = 30.0) -> None:
    """Switch the database file to WAL (it stays so), waiting out the processes it races.

    Switching needs the file to itself. Several workers of one service starting together on
    a file that is new, or still in rollback-journal mode, race for it, and SQLite answers a
    process that finds another one writing the file (its migration) "database is locked" at
    once: the busy timeout covers waiting for readers, not for a writer's lock (checked
    with plain sqlite3: 0.2 ms with a 30 s timeout). A worker then failed to start. The mode is
    read first (a file already in WAL needs no switch, and reading it needs no lock) and the
    switch retried until the winner's has happened or ``wait`` seconds have passed. A file
    that cannot be WAL (``:memory:``) keeps its own mode, as before."""
    deadline = time.monotonic() + wait
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
            return
        except Exception as e:  # the driver's OperationalError (aiosqlite or sqlite3)
            if "database is locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # at connect, before the connection serves anything


def _sqlite_begin_immediate(conn: Connection) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails
    # with SQLITE_BUSY_SNAPSHOT when another writer committed in between (no busy wait).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def run_migrations_online(context: Any) -> None:
    """Body of every service's alembic ``env.py``: migrate on the connection we were given."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Linegate migrations run through Database.migrate(), not the alembic CLI"
        )
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# ----------------------------------------------------------------- statements on the driver
#
# A Core statement run through SQLAlchemy costs ~50-100 us of execution-context plumbing
# before the driver sees it, plus the compiler's parameter processing per row of an
# executemany: in a group commit of a dozen uploads that was more than SQLite spent storing
# them. The hot statements (the audit append, the outbox, the attestation group commit, the
# incident's telemetry seen-check and post-market log) are instead compiled once per dialect
# and run on the session connection's own driver connection (aiosqlite or psycopg), in its
# transaction, with the values made ready by the same bind processors SQLAlchemy would use
# (so a datetime is stored exactly as SQLAlchemy stores it on SQLite, and JSON is serialised
# the same way). Driver errors are raised as SQLAlchemy's exception classes (an
# IntegrityError stays an IntegrityError).


def _driver(conn: AsyncConnection) -> Any:
    """The driver connection (aiosqlite / psycopg AsyncConnection) under ``conn``."""
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        raise sa.exc.ResourceClosedError("this connection is closed")
    return sync.connection.driver_connection


def _wrap(dialect: Dialect, sql: str, params: Any, error: Exception) -> Exception:
    base = dialect.loaded_dbapi.Error
    if not isinstance(error, base):
        return error
    return sa.exc.DBAPIError.instance(sql, params, error, base, dialect=dialect)


async def driver_execute(
    conn: AsyncConnection, sql: str, params: Any = (), *, prepare: bool | None = None
) -> list[Any]:
    """Run ``sql`` (in the driver's paramstyle) on ``conn``'s driver connection, in its
    transaction; the rows it returns, if any.

    ``prepare=False`` (PostgreSQL) never makes it a prepared statement, which psycopg does by
    default from its fifth execution on a connection: PostgreSQL then may keep a generic plan
    made while the table was small, a sequential scan that it goes on using as the table
    grows, until statistics are next analysed. For a lookup the index must serve (measured
    on a fresh attestation table: 6.8 ms per group commit of 32 uploads, 0.85 ms unprepared)."""
    driver = _driver(conn)
    try:
        if conn.dialect.name == "sqlite":
            async with driver.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        async with driver.cursor() as cursor:
            await cursor.execute(sql, params, prepare=prepare)
            return list(await cursor.fetchall()) if cursor.description is not None else []
    except Exception as e:
        raise _wrap(conn.dialect, sql, params, e) from e


async def driver_executemany(conn: AsyncConnection, sql: str, rows: Sequence[Any]) -> None:
    """``executemany`` of ``sql`` on ``conn``'s driver connection, in its transaction."""
    if not rows:
        return
    driver = _driver(conn)
    try:
        if conn.dialect.name == "sqlite":
            cursor = await driver.executemany(sql, rows)
            await cursor.close()
        else:
            async with driver.cursor() as cursor:
                await cursor.executemany(sql, rows)
    except Exception as e:
        raise _wrap(conn.dialect, sql, rows, e) from e


class DriverStatement:
    """A Core statement compiled once per dialect (and, for an INSERT, per set of columns)
    and run on the driver (see above).

    Every parameter must be given in each call (or be a value fixed in the statement): a
    column default SQLAlchemy would fill in is refused at compile time rather than skipped.
    Expanding parameters (``IN`` lists) are not supported."""

    def __init__(self, statement: sa.ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...] | None], _Compiled] = {}

    def _for(self, dialect: Dialect, keys: tuple[str, ...] | None) -> _Compiled:
        compiled = self._compiled.get((dialect.name, keys))
        if compiled is None:
            compiled = self._compiled[(dialect.name, keys)] = _Compiled(
                self.statement, dialect, keys
            )
        return compiled

    async def execute(
        self,
        conn: AsyncConnection,
        params: Mapping[str, Any] | None = None,
        *,
        prepare: bool | None = None,
    ) -> list[Any]:
        """Run the statement once; the rows it returns. ``prepare``: as for
        :func:`driver_execute`."""
        params = params or {}
        keys = tuple(params) if isinstance(self.statement, sa.Insert) else None
        compiled = self._for(conn.dialect, keys)
        return await driver_execute(conn, compiled.sql, compiled.bind(params), prepare=prepare)

    async def executemany(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row (every row with the same keys)."""
        if not rows:
            return
        keys = tuple(rows[0]) if isinstance(self.statement, sa.Insert) else None
        compiled = self._for(conn.dialect, keys)
        await driver_executemany(conn, compiled.sql, [compiled.bind(r) for r in rows])


class _Compiled:
    def __init__(
        self, statement: sa.ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None
    ) -> None:
        compiled = statement.compile(
            dialect=dialect, column_keys=list(keys) if keys is not None else None
        )
        assert isinstance(compiled, SQLCompiler)
        if compiled.escaped_bind_names or "POSTCOMPILE" in compiled.string:
            raise ValueError("DriverStatement takes plain bind names, no expanding parameters")
        self.sql = compiled.string
        fixed = {k: v for k, v in compiled.params.items() if v is not None}
        given = set(keys or ())
        # bind_names maps each parameter to the name the SQL uses (anonymous ones resolved).
        types = {name: bind.type for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup) if compiled.positiontup is not None else list(types)
        for name in names:
            if name not in given and name not in fixed and keys is not None:
                raise ValueError(f"{name!r} would be filled in by SQLAlchemy: pass it")
        self.fixed = fixed
        processors = [
            (name, types[name].dialect_impl(dialect).bind_processor(dialect)) for name in names
        ]
        self.processors = processors
        self.names = tuple(name for name, _ in processors)
        self.procs = tuple(p for _, p in processors)
        self.positional = compiled.positional

    def bind(self, params: Mapping[str, Any]) -> Any:
        if self.fixed:
            params = {**self.fixed, **params}
        if self.positional:
            return tuple(
                [
                    v if p is None else p(v)
                    for p, v in zip(self.procs, map(params.__getitem__, self.names), strict=True)
                ]
            )
        return {n: params[n] if p is None else p(params[n]) for n, p in self.processors}
