"""Errors are RFC 9457 problem+json: unknown routes, validation errors and unexpected ones."""

import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel

from linegate.errors import NotFound
from linegate.service import create_service_app
from registry.app import MIGRATIONS
from registry.settings import RegistrySettings


class Thing(BaseModel):
    size: int


def _app(settings):
    router = APIRouter()

    @router.post("/things")
    async def create_thing(thing: Thing) -> Thing:
        return thing

    @router.get("/things/{name}")
    async def get_thing(name: str) -> Thing:
        raise NotFound(f"no thing {name!r}", extra={"name": name})

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return create_service_app(settings, title="t", routers=[router], migrations=MIGRATIONS)


async def test_unknown_route_is_problem_json(settings_factory, service_client):
    async with service_client(_app(settings_factory(RegistrySettings))) as client:
        r = await client.get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Not Found"


async def test_domain_error_carries_type_detail_and_extension_members(
    settings_factory, service_client
):
    async with service_client(_app(settings_factory(RegistrySettings))) as client:
        r = await client.get("/things/x")
    body = r.json()
    assert r.status_code == 404
    assert body["type"].endswith("/not-found")
    assert body["detail"] == "no thing 'x'"
    assert body["name"] == "x"
    assert body["instance"] == "/things/x"


async def test_validation_error_is_422_problem_json_with_reasons(settings_factory, service_client):
    async with service_client(_app(settings_factory(RegistrySettings))) as client:
        r = await client.post("/things", json={"size": "big"})
        malformed = await client.post(
            "/things", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reasons"][0]["location"] == "body.size"
    assert malformed.status_code == 422


async def test_unexpected_error_is_500_with_a_trace_id_that_is_logged(
    settings_factory, service_client, caplog
):
    caplog.set_level(logging.ERROR, logger="linegate.errors")
    async with service_client(_app(settings_factory(RegistrySettings))) as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    assert "secret internals" not in r.text
    assert any(rec.__dict__.get("trace_id") == body["trace_id"] for rec in caplog.records)


async def test_a_client_that_disconnects_mid_body_is_no_server_error(
    settings_factory, service_client, caplog
):
    """wrk and impatient clients close the connection while a body is being read: a quiet
    400, never an "unhandled error" 500 with a traceback."""
    router = APIRouter()

    @router.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    app = create_service_app(
        settings_factory(RegistrySettings), title="t", routers=[router], migrations=MIGRATIONS
    )
    async with service_client(app):
        sent: list[dict] = []
        messages = [
            {"type": "http.request", "body": b"half of ", "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/upload",
            "raw_path": b"/upload",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/octet-stream")],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "state": {},
        }
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
