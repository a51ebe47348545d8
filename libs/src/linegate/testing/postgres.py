"""The local PostgreSQL, when reachable (``LINEGATE_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import os
from collections.abc import Iterable

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str | None:
    """The test PostgreSQL URL, or ``None`` when no server answers there."""
    import psycopg

    url = os.environ.get("LINEGATE_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return url


def drop_schemas(url: str, schemas: Iterable[str]) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
