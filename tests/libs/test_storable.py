"""Text no database can store (U+0000, unpaired surrogates) is a 422 before any handler runs.

On a real service (the registry) on SQLite and PostgreSQL: the same document with the text
fixed is accepted, so the refusal is about the text alone, and nothing refused is recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from linegate.auth import Role
from linegate.storable import may_hold_unstorable, unstorable_location
from linegate.testing.fixtures import bearer
from registry.app import create_app
from registry.settings import RegistrySettings
from tests.registry.conftest import system_body

JSON = {"content-type": "application/json"}


def _raw(document: dict[str, Any], field: str, escape: str) -> bytes:
    """``document`` as JSON with ``escape`` (a JSON escape, e.g. ``\\u0000``) inside ``field``."""
    text = json.dumps({**document, field: "@@"})
    return text.replace('"@@"', f'"before{escape}after"').encode()


@pytest.mark.parametrize(
    ("field", "escape"),
    [
        ("name", "\\u0000"),  # PostgreSQL text refuses NUL
        ("purpose", "\\ud800"),  # an unpaired high surrogate: no UTF-8 for it
        ("intended_use", "\\udfff"),  # an unpaired low surrogate
    ],
)
async def test_unstorable_text_in_a_body_is_a_422_naming_where(
    settings_factory: Any, service_client: Any, mint_token: Any, field: str, escape: str
) -> None:
    qa = bearer(mint_token(Role.REGISTRY_APPROVE, sub="qa-lead")) | JSON
    async with service_client(create_app(settings_factory(RegistrySettings))) as client:
        r = await client.post(
            "/v1/inventory/systems", content=_raw(system_body(), field, escape), headers=qa
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        (reason,) = r.json()["reasons"]
        assert reason["location"] == f"body.{field}"
        assert reason["type"] == "unstorable_text"
        assert (await client.get("/v1/inventory/systems", headers=qa)).json() == []

        # A valid pair (an emoji) and the same document otherwise are stored.
        ok = await client.post(
            "/v1/inventory/systems",
            content=_raw(system_body(), field, "\\ud83d\\ude00"),
            headers=qa,
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()[field] == "before\U0001f600after"


async def test_nul_in_a_path_or_query_and_a_too_deep_document_are_422s(
    settings_factory: Any, service_client: Any, mint_token: Any
) -> None:
    qa = bearer(mint_token(Role.REGISTRY_APPROVE, sub="qa-lead"))
    async with service_client(create_app(settings_factory(RegistrySettings))) as client:
        r = await client.get("/v1/inventory/systems/weld%00seam", headers=qa)
        assert r.status_code == 422, r.text
        assert r.json()["reasons"][0]["location"] == "path"
        r = await client.get("/v1/competence", params={"system_id": "a\x00b"}, headers=qa)
        assert r.status_code == 422, r.text
        assert r.json()["reasons"][0]["location"] == "query"
        deep = b"[" * 100_000 + b"]" * 100_000
        r = await client.post("/v1/inventory/systems", content=deep, headers=qa | JSON)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        # Malformed JSON is left to the endpoint, which answers it as before.
        r = await client.post("/v1/inventory/systems", content=b'{"id": ', headers=qa | JSON)
        assert r.status_code == 422, r.text


async def test_nul_in_an_urlencoded_form_is_a_422(
    settings_factory: Any, service_client: Any
) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with service_client(create_app(settings_factory(RegistrySettings))) as client:
        r = await client.post("/v1/inventory/systems", content=b"id=a%00b", headers=form)
        assert r.status_code == 422, r.text
        assert r.json()["reasons"][0]["location"] == "body"


def test_locations_name_the_text_and_never_hold_it() -> None:
    assert unstorable_location({"a": [1, "ok", {"b": "x\x00"}]}) == "body.a.2.b"
    assert unstorable_location({"k\x00ey": 1}, root="statement") == "statement.k\\u0000ey (a key)"
    assert unstorable_location({"a": "\U0001f600", "b": ["fine"]}) is None
    # The byte test lets through only what cannot decode to such text.
    for text in (b'{"a": "\\u0000"}', b'{"a": "\\uD800"}', b'{"a": "\\udfff"}'):
        assert may_hold_unstorable(text)
        assert unstorable_location(json.loads(text)) == "body.a"
    assert may_hold_unstorable(b'{"a": "\\\\u0000"}')  # an escaped backslash: text, stored
    assert unstorable_location(json.loads(b'{"a": "\\\\u0000"}')) is None
    for text in (b'{"a": "\\u00e9"}', b'{"a": "plain"}', '{"a": "\U0001f600"}'.encode()):
        assert not may_hold_unstorable(text)
