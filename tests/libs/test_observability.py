"""HTTP metrics: every request counted and timed under its route template and final status."""

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from linegate.errors import NotFound, install_problem_handlers
from linegate.observability import Metrics


def _app() -> tuple[FastAPI, Metrics]:
    app = FastAPI()
    install_problem_handlers(app)
    metrics = Metrics("probe")
    metrics.install(app)

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise NotFound("no such thing")
        return {"id": thing_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for i in range(3):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    @app.post("/echo")
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    return app, metrics


def _count(metrics: Metrics, route: str, status: str, method: str = "GET") -> float | None:
    return metrics.registry.get_sample_value(
        "linegate_http_requests_total",
        {"service": "probe", "method": method, "route": route, "status": status},
    )


def _observed(metrics: Metrics, route: str, method: str = "GET") -> float | None:
    return metrics.registry.get_sample_value(
        "linegate_http_request_seconds_count",
        {"service": "probe", "method": method, "route": route},
    )


@pytest.fixture
async def probe():
    app, metrics = _app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        yield client, metrics


async def test_requests_are_labelled_by_route_template_not_raw_path(probe):
    client, metrics = probe
    for thing in ("a", "b", "c"):
        assert (await client.get(f"/things/{thing}")).status_code == 200
    assert _count(metrics, "/things/{thing_id}", "200") == 3
    assert _observed(metrics, "/things/{thing_id}") == 3
    assert _count(metrics, "/things/a", "200") is None


async def test_error_statuses_are_the_ones_the_client_got(probe):
    client, metrics = probe
    assert (await client.get("/things/missing")).status_code == 404
    assert (await client.get("/nowhere")).status_code == 404
    assert (await client.post("/echo", json={"a": "not an int"})).status_code == 422
    assert (await client.get("/boom")).status_code == 500
    assert _count(metrics, "/things/{thing_id}", "404") == 1
    assert _count(metrics, "unmatched", "404") == 1
    assert _count(metrics, "/echo", "422", method="POST") == 1
    assert _count(metrics, "/boom", "500") == 1


async def test_bodies_pass_through_untouched(probe):
    client, metrics = probe
    streamed = await client.get("/stream")
    assert streamed.text == "chunk0;chunk1;chunk2;"
    echoed = await client.post("/echo", json={"a": 1, "b": 2})
    assert echoed.json() == {"a": 1, "b": 2}
    assert _count(metrics, "/stream", "200") == 1
    assert _count(metrics, "/echo", "200", method="POST") == 1


async def test_metrics_render_in_prometheus_text_format(probe):
    client, metrics = probe
    await client.get("/things/a")
    text = metrics.render().body.decode()
    assert (
        'linegate_http_requests_total{method="GET",route="/things/{thing_id}",'
        'service="probe",status="200"} 1.0'
    ) in text
