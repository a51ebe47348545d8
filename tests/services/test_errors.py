"""Errors are RFC 9457 problem+json: unknown routes, validation errors and unexpected ones."""

import logging

from fastapi import APIRouter
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
