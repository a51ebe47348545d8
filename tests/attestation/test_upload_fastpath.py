"""POST /v1/attestations is answered by UploadFastPath in front of FastAPI's router.

Each case is sent twice: through the app as served (the fast path) and straight to the layers
below it (FastAPI's router and the upload route), on the same database. Both answers must be
the same (status, headers that matter, problem body up to the record id), the fast path must
be the one that served the first, and a refused upload must leave no verified record.
"""

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.api.fastpath import UploadFastPath
from linegate.auth import Role, TokenIssuer
from linegate.settings import LinegateSettings

from .conftest import DSSE, MODEL_DIGEST, SLSA_V1, bearer, sign, slsa_predicate, statement


def _fastpath(app: Any) -> UploadFastPath:
    node = app.middleware_stack
    while node is not None:
        if isinstance(node, UploadFastPath):
            return node
        node = getattr(node, "app", None)
    raise AssertionError("UploadFastPath is not in the app's middleware stack")


@asynccontextmanager
async def _route_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the layers under the fast path: FastAPI's router and the upload route."""
    below = _fastpath(app).app

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = app  # what Starlette.__call__ sets before its middleware stack
        await below(scope, receive, send)

    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _subject() -> list[dict[str, Any]]:
    # A fresh subject per envelope: the two sends of a case are different bytes, so the
    # second is verified too and not answered as a re-upload of the first.
    return [{"name": f"m-{uuid.uuid4().hex[:8]}.onnx", "digest": {"sha256": MODEL_DIGEST}}]


def _envelope(key: Any) -> bytes:
    return sign(key, statement(_subject(), SLSA_V1, slsa_predicate()))


def _edit(body: bytes, **changes: Any) -> bytes:
    env = json.loads(body)
    env.update(changes)
    return json.dumps(env).encode()


def _tampered(key: Any) -> bytes:
    env = json.loads(_envelope(key))
    payload = base64.b64decode(env["payload"]).replace(MODEL_DIGEST.encode(), b"0" * 64)
    return _edit(json.dumps(env).encode(), payload=base64.b64encode(payload).decode())


def _nested(depth: int) -> bytes:
    return (
        b'{"pad": "' + uuid.uuid4().hex.encode() + b'", "x": ' + b"[" * depth + b"]" * depth + b"}"
    )


def _normalised(r: httpx.Response) -> dict[str, Any]:
    """What the two paths must agree on; the record id is per upload."""
    body = r.json()
    if "id" in body:
        body["id"] = "<id>"
        body["instance"] = str(body.get("instance", "")).replace(r.json()["id"], "<id>")
    return {
        "status": r.status_code,
        "content-type": r.headers.get("content-type"),
        "www-authenticate": r.headers.get("www-authenticate"),
        "body": body,
    }


Make = Callable[[dict[str, Any]], tuple[bytes, dict[str, str]]]


def _upload(body: bytes, token: str | None, content_type: str = DSSE) -> tuple[bytes, dict]:
    headers = {"content-type": content_type}
    if token is not None:
        headers.update(bearer(token))
    return body, headers


CASES: dict[str, tuple[Make, int, str | None]] = {
    # name: (make(ctx) -> (body, headers), status, text in detail or None)
    "malformed-json": (
        lambda c: _upload(b"{not json " + uuid.uuid4().bytes.hex().encode(), c["own"]),
        400,
        "not valid JSON",
    ),
    "wrong-payload-type": (
        lambda c: _upload(sign(c["key"], b"{}", "application/json"), c["own"]),
        422,
        "payloadType must be",
    ),
    "bad-base64": (
        lambda c: _upload(_edit(_envelope(c["key"]), payload="%%%not-base64%%%"), c["own"]),
        400,
        "base64",
    ),
    "empty-signatures": (
        lambda c: _upload(_edit(_envelope(c["key"]), signatures=[]), c["own"]),
        400,
        "no signatures",
    ),
    "foreign-key": (
        lambda c: _upload(_envelope(c["other_key"]), c["own"]),
        422,
        "registered to another supplier",
    ),
    "unknown-key": (
        lambda c: _upload(_envelope(ec.generate_private_key(ec.SECP256R1())), c["own"]),
        422,
        "no signature verifies",
    ),
    "tampered-payload": (lambda c: _upload(_tampered(c["key"]), c["own"]), 422, "no signature"),
    "deep-nesting": (lambda c: _upload(_nested(200), c["own"]), 400, "nested deeper than 64"),
    "oversized": (
        lambda c: _upload(b" " * (4 * 1024 * 1024 + 1), c["own"]),
        413,
        "exceeds the",
    ),
    "wrong-content-type": (
        lambda c: _upload(_envelope(c["key"]), c["own"], "application/json"),
        415,
        "unsupported Content-Type",
    ),
    "no-content-type": (
        lambda c: (_envelope(c["key"]), bearer(c["own"])),
        415,
        "Content-Type is required",
    ),
    "empty-body": (lambda c: _upload(b"", c["own"]), 422, "empty body"),
    "no-token": (lambda c: _upload(_envelope(c["key"]), None), 401, "missing bearer token"),
    "not-bearer": (
        lambda c: (_envelope(c["key"]), {"content-type": DSSE, "authorization": "Basic eDp5"}),
        401,
        "must be 'Bearer",
    ),
    "token-of-another-issuer": (
        lambda c: _upload(_envelope(c["key"]), c["forged"]),
        401,
        "invalid token",
    ),
    "expired-token": (lambda c: _upload(_envelope(c["key"]), c["expired"]), 401, "invalid token"),
    "device-token": (lambda c: _upload(_envelope(c["key"]), c["device"]), 403, "supplier role"),
    "other-tenants-token": (
        lambda c: _upload(_envelope(c["key"]), c["other"]),
        422,
        "registered to another supplier",
    ),
    "never-onboarded-tenant": (
        lambda c: _upload(_envelope(c["key"]), c["ghost"]),
        404,
        "no supplier 'ghost'",
    ),
}

#: Refused before anything is recorded (no rejection record either).
NOT_RECORDED = {
    "oversized",
    "wrong-content-type",
    "no-content-type",
    "empty-body",
    "no-token",
    "not-bearer",
    "token-of-another-issuer",
    "expired-token",
    "device-token",
    "never-onboarded-tenant",
}


@pytest.fixture
async def ctx(stack, tmp_path) -> dict[str, Any]:
    key = await stack.onboard("optivision")
    other_key = await stack.onboard("acme")
    foreign = TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path / "elsewhere"))
    return {
        "key": key,
        "other_key": other_key,
        "own": stack.mint(Role.SUPPLIER, tenant="optivision"),
        "other": stack.mint(Role.SUPPLIER, tenant="acme"),
        "ghost": stack.mint(Role.SUPPLIER, tenant="ghost"),
        "device": stack.mint(Role.DEVICE, device_id="cam1"),
        "expired": stack.mint(Role.SUPPLIER, tenant="optivision", now=1_000_000_000),
        "forged": foreign.issue("ci", [Role.SUPPLIER], tenant="optivision")[0],
    }


async def _records(stack) -> list[dict[str, Any]]:
    r = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_an_upload_is_served_by_the_fast_path_with_the_routes_answer(stack, ctx):
    fast = _fastpath(stack.app)
    served = fast.served
    r = await stack.client.post(
        "/v1/attestations",
        content=_envelope(ctx["key"]),
        headers={"content-type": DSSE, **bearer(ctx["own"])},
    )
    assert r.status_code == 201, r.text
    assert fast.served == served + 1
    assert r.headers["location"] == f"/v1/attestations/{r.json()['id']}"
    assert r.headers["content-type"] == "application/json"
    async with _route_client(stack.app) as route:
        body = _envelope(ctx["key"])
        headers = {"content-type": DSSE, **bearer(ctx["own"])}
        via_route = await route.post("/v1/attestations", content=body, headers=headers)
        assert fast.served == served + 1  # the route served this one
        again = await stack.client.post("/v1/attestations", content=body, headers=headers)
        assert fast.served == served + 2
        again_via_route = await route.post("/v1/attestations", content=body, headers=headers)
    assert (via_route.status_code, again.status_code, again_via_route.status_code) == (
        201,
        200,
        200,
    )
    assert again.json() == again_via_route.json()
    assert again.json()["id"] == via_route.json()["id"]
    for header in ("location", "content-type", "content-length"):
        assert again.headers[header] == again_via_route.headers[header]
    assert set(r.json()) == set(via_route.json())
    assert {
        k: v
        for k, v in r.json().items()
        if k not in ("id", "subjects", "raw_digest", "raw_size") and "_at" not in k
    } == {
        k: v
        for k, v in via_route.json().items()
        if k not in ("id", "subjects", "raw_digest", "raw_size") and "_at" not in k
    }


async def test_other_requests_are_left_to_fastapi(stack, ctx):
    fast = _fastpath(stack.app)
    served = fast.served
    headers = {"content-type": DSSE, **bearer(ctx["own"])}
    listed = await stack.client.get("/v1/attestations", headers=headers)
    assert listed.status_code == 200
    slash = await stack.client.post(
        "/v1/attestations/", content=_envelope(ctx["key"]), headers=headers
    )
    assert slash.status_code in (307, 404, 405)
    put = await stack.client.put("/v1/attestations", content=b"{}", headers=headers)
    assert put.status_code == 405
    assert put.headers["content-type"] == "application/problem+json"
    assert fast.served == served


@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_upload_is_refused_alike_by_the_fast_path_and_the_route(stack, ctx, case):
    make, status, detail = CASES[case]
    fast = _fastpath(stack.app)
    before = await _records(stack)
    served = fast.served
    body, headers = make(ctx)
    r = await stack.client.post("/v1/attestations", content=body, headers=headers)
    assert fast.served == served + 1
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if detail is not None:
        assert detail in r.json()["detail"], r.json()
    async with _route_client(stack.app) as route:
        body, headers = make(ctx)
        via_route = await route.post("/v1/attestations", content=body, headers=headers)
    assert fast.served == served + 1
    assert _normalised(r) == _normalised(via_route)
    after = await _records(stack)
    assert not [a for a in after if a["status"] != "rejected"]
    if case in NOT_RECORDED:
        assert after == before
    else:  # recorded as a rejection with every reason, as the API says
        assert len(after) == len(before) + 2
        own = {a["id"]: a for a in after}[r.json()["id"]]
        assert own["reasons"] == r.json()["reasons"]


async def test_an_oversized_streamed_body_is_refused_mid_stream(stack, ctx):
    fast = _fastpath(stack.app)
    served = fast.served
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(80):  # 5 MiB in 64 KiB chunks, no Content-Length
            sent += 1
            yield b" " * 65536

    r = await stack.client.post(
        "/v1/attestations",
        content=chunks(),
        headers={"content-type": DSSE, **bearer(ctx["own"])},
    )
    assert fast.served == served + 1
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "body exceeds the 4194304-byte limit"
    assert await _records(stack) == []


async def test_fast_path_uploads_are_counted_in_the_metrics_under_the_route(stack, ctx):
    headers = {"content-type": DSSE, **bearer(ctx["own"])}
    ok = await stack.client.post("/v1/attestations", content=_envelope(ctx["key"]), headers=headers)
    refused = await stack.client.post(
        "/v1/attestations",
        content=b"{}",
        headers={"content-type": "text/plain", **bearer(ctx["own"])},
    )
    assert (ok.status_code, refused.status_code) == (201, 415)
    text = (await stack.client.get("/metrics")).text
    for status in ("201", "415"):
        line = (
            'linegate_http_requests_total{method="POST",route="/v1/attestations",'
            f'service="attestation",status="{status}"}} 1.0'
        )
        assert line in text, text


async def test_an_unexpected_error_is_a_problem_500_with_a_trace_id(stack, ctx, monkeypatch):
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(stack.app.state.ingestor, "ingest", broken)
    r = await stack.client.post(
        "/v1/attestations",
        content=_envelope(ctx["key"]),
        headers={"content-type": DSSE, **bearer(ctx["own"])},
    )
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "trace_id" in r.json()
    assert "boom" not in r.text


async def test_the_fast_path_is_the_outermost_layer_of_the_middleware_stack(stack, ctx):
    # Outside ServerErrorMiddleware and the layers FastAPI adds around every app: an upload
    # passes through none of them (what the fast path is for).
    await stack.client.get("/healthz")  # the stack is built on the first request
    assert isinstance(stack.app.middleware_stack, UploadFastPath)
