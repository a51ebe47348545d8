"""pytest fixtures: ``pytest_plugins = ["linegate.testing.fixtures"]``.

- ``nats_server``: a fresh nats-server with JetStream in a temp dir, per test.
- ``database_url``: parametrised ``sqlite`` / ``postgresql``; the PostgreSQL case is skipped
  with a reason when no server is reachable, and gets schemas unique to the test.
- ``settings_factory``: settings for any service class wired to both of the above.
- ``service_client``: runs an app's lifespan and yields an ``httpx.AsyncClient`` on it.
- ``mint_token``: tokens from the embedded issuer of the test's data directory.
- ``serve_http``: runs an app with uvicorn on a free loopback port (for CLI and e2e tests).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from linegate.auth import Role, TokenIssuer
from linegate.embedded import NatsServer, free_port
from linegate.settings import LinegateSettings
from linegate.testing.postgres import drop_schemas, postgres_url

S = TypeVar("S", bound=LinegateSettings)

_PG_URL: list[str | None] = []


def _pg() -> str | None:
    if not _PG_URL:
        _PG_URL.append(postgres_url())
    return _PG_URL[0]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    if backend == "postgresql" and _pg() is None:
        pytest.skip("PostgreSQL is not reachable at LINEGATE_TEST_POSTGRES_URL / 127.0.0.1:5432")
    return backend


@pytest.fixture
def database_settings(database_backend: str) -> Iterator[dict[str, Any]]:
    """``database_url`` and ``database_schema_prefix`` for the backend under test."""
    if database_backend == "sqlite":
        yield {}
        return
    url = _pg()
    assert url is not None
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield {"database_url": url, "database_schema_prefix": prefix}
    drop_schemas(url, [prefix + s for s in ("attestation", "registry", "edge_gateway", "incident")])


@pytest.fixture
def settings_factory(
    tmp_path: Path, nats_server: NatsServer, database_settings: dict[str, Any]
) -> Callable[..., Any]:
    def make(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "nats_url": nats_server.url,
            "log_format": "text",
            **database_settings,
        }
        values.update(overrides)
        return cls(**values)

    return make


@pytest.fixture
def service_client() -> Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]:
    @asynccontextmanager
    async def run(app: FastAPI, *, wait_for_nats: bool = True) -> AsyncIterator[httpx.AsyncClient]:
        async with app.router.lifespan_context(app):
            if wait_for_nats:
                await app.state.ctx.nats.wait_connected(10)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                yield client

    return run


@pytest.fixture
def mint_token(tmp_path: Path) -> Callable[..., str]:
    """``mint_token(Role.SUPPLIER, tenant="acme")`` -> a bearer token for the test stack."""

    def mint(
        *roles: Role,
        tenant: str | None = None,
        device_id: str | None = None,
        sub: str = "tester",
        **kw: Any,
    ) -> str:
        issuer = TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path / "data"))
        token, _ = issuer.issue(sub, roles, tenant=tenant, device_id=device_id, **kw)
        return token

    return mint


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def serve_http() -> Iterator[Callable[[FastAPI, int], str]]:
    """``url = serve_http(app, port)``: serve ``app`` over real HTTP until the test ends."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(app: FastAPI, port: int | None = None) -> str:
        port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {port}")
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)
