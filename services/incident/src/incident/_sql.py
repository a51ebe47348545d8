"""Typed helpers for Core statements on a SQLModel session.

SQLModel's ``AsyncSession.exec`` overloads name its own ``Select`` type; the telemetry tables
are Core tables (additive upserts, executemany), whose ``sqlalchemy.Select`` it accepts at run
time but not in the type checker. These helpers keep that one cast in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import sqlalchemy as sa
from pydantic import AfterValidator
from sqlmodel.ext.asyncio.session import AsyncSession

from linegate.db import BIGINT_MAX

#: The largest row id of the service's BIGINT (PostgreSQL) / INTEGER (SQLite) id columns, both
#: 64-bit: paging cursors above it are refused as 422 instead of overflowing in the driver.
ID_MAX = BIGINT_MAX


async def fetch_all(session: AsyncSession, stmt: sa.Select[Any]) -> list[sa.RowMapping]:
    result = await session.exec(cast(Any, stmt))
    return list(result.mappings().all())


async def fetch_one(session: AsyncSession, stmt: sa.Select[Any]) -> sa.RowMapping | None:
    result = await session.exec(cast(Any, stmt))
    row: sa.RowMapping | None = result.mappings().first()
    return row


async def execute(
    session: AsyncSession,
    stmt: sa.Executable,
    params: Sequence[Mapping[str, Any]] | None = None,
) -> Any:
    return await session.exec(cast(Any, stmt), params=params)


def _as_utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


#: A datetime read back from the database, always with its UTC offset (SQLite drops it).
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
