"""Operator overrides on the device are checked against the registry's competence register.

The chain is the production one: a real registry (over HTTP) holds the inventory system, its
NIST tier and the ``override`` training; the gateway reads them through the registry's API and
signs the roster into each device's desired state (TUF metadata, ``x-linegate-competence``);
real agents (``agent.main``, per-device nkeys on a secured nats-server) verify it and their
local inference API refuses (tier 1) or flags (tiers 2-3) an override by someone without
current training, at the moment of the override, offline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_gateway.competence import refresh_rosters
from linegate.auth import Role
from linegate.events import OverrideV1
from linegate.release_metadata import verify_release
from linegate.signing import load_public_key
from linegate.testing.fixtures import bearer
from linegate_cli.edge.inference import (
    CompetenceFile,
    ModelRunner,
    TelemetryBuffer,
    create_inference_app,
    jetstream_publisher,
)
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings
from tests.edge_gateway.conftest import MODEL, Line, image_of, line_of, wait_for
from tests.registry.conftest import SYSTEM, RegistryClient

TRAINED = "olga-operator"
UNTRAINED = "ulf-untrained"
#: Training recorded as completed earlier: the roster carries whole seconds and rounds a start
#: up, so training "from now" would only count from the next second and race the override.
TRAINED_AT = "2026-01-05T08:00:00Z"

Chain = tuple[Line, RegistryClient]
MakeChain = Callable[..., contextlib.AbstractAsyncContextManager[Chain]]


@pytest.fixture
def competent_line(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
) -> MakeChain:
    """``async with competent_line(tier=1) as (line, registry)``: a registry whose system
    ``SYSTEM`` (that tier) deploys ``MODEL`` and where ``TRAINED`` holds override training,
    and a gateway that reads it, with two devices on line 3 (agents not started)."""

    @contextlib.asynccontextmanager
    async def make(*, tier: int = 1, **gateway_settings: Any) -> AsyncIterator[Chain]:
        registry_app = create_registry(settings_factory(RegistrySettings))
        registry_url = serve_http(registry_app)
        async with httpx.AsyncClient(base_url=registry_url) as http:
            registry = RegistryClient(client=http, app=registry_app, mint=mint_token, tmp=tmp_path)
            await registry.create_system(tier=tier)
            await registry.create_model()
            await registry.train(TRAINED, role="override", trained_at=TRAINED_AT)
            async with line_of(
                settings_factory,
                service_client,
                mint_token,
                tmp_path,
                registry_url=registry_url,
                **gateway_settings,
            ) as line:
                yield line, registry

    return make


async def running(line: Line, *device_ids: str) -> None:
    """Release 2.0.4, read its roster (as the release consumer does), assign it to line 3 and
    start ``device_ids``' agents."""
    await line.release("2.0.4", 1)
    await refresh_rosters(line.gw, [MODEL])
    assert (await line.assign("2.0.4", line="line3")).status_code == 200
    for device_id in device_ids:
        line.start_agent(device_id)
    await line.runs("2.0.4", *device_ids)


def override_body(record_id: str, operator: str) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "decision": "pass",
        "reason_code": "false_reject",
        "rationale": "Seam re-inspected under the loupe: no porosity.",
        "operator": operator,
    }


async def override(line: Line, device_id: str, operator: str) -> httpx.Response:
    """Infer on ``device_id`` and override that decision as ``operator``, over its local API."""
    record = await line.infer(device_id, "scratch")
    port = line.devices[device_id].port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        return await http.post("/v1/overrides", json=override_body(record["record_id"], operator))


def roster_of(line: Line, raw: bytes) -> dict[str, Any]:
    """The roster in a device's desired state, after verifying the gateway's signature."""
    key = load_public_key((line.tmp / "gateway.pub.pem").read_bytes())
    release = verify_release(raw, [key])  # type: ignore[list-item]
    assert release.competence is not None
    return release.competence


async def test_trained_operator_overrides_and_untrained_is_refused_on_tier_1(
    competent_line: MakeChain,
) -> None:
    async with competent_line(tier=1) as (line, _):
        await running(line, "cam-3-1")
        roster = roster_of(line, await line.desired_doc("cam-3-1"))
        assert (roster["system_id"], roster["nist_tier"]) == (SYSTEM, 1)
        assert [e["person"] for e in roster["override"]] == [TRAINED]

        telemetry = await line.service.subscribe("linegate.telemetry.line3.cam-3-1")
        accepted = await override(line, "cam-3-1", TRAINED)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["competence_flag"] is None
        while True:  # the batch of inference records may come first
            event = json.loads((await telemetry.next_msg(timeout=10)).data)
            if event["kind"] == "telemetry.override.v1":
                break
        assert OverrideV1.model_validate(event).actor == TRAINED

        refused = await override(line, "cam-3-1", UNTRAINED)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert (problem["reason"], problem["operator"]) == ("untrained", UNTRAINED)
        assert (problem["system_id"], problem["nist_tier"]) == (SYSTEM, 1)
        assert f"{UNTRAINED} has no override training" in problem["detail"]
        assert "tier 1" in problem["detail"]


async def test_untrained_override_is_flagged_on_tier_2(competent_line: MakeChain) -> None:
    async with competent_line(tier=2) as (line, _):
        await running(line, "cam-3-1")
        telemetry = await line.service.subscribe("linegate.telemetry.line3.cam-3-1")
        flagged = await override(line, "cam-3-1", UNTRAINED)
        assert flagged.status_code == 201, flagged.text
        flag = flagged.json()["competence_flag"]
        assert f"{UNTRAINED} has no override training" in flag
        assert "NIST tier 2" in flag
        assert "flagged" in flag
        trained = await override(line, "cam-3-1", TRAINED)
        assert (trained.status_code, trained.json()["competence_flag"]) == (201, None)

        events = []
        while len(events) < 2:
            event = json.loads((await telemetry.next_msg(timeout=10)).data)
            if event["kind"] == "telemetry.override.v1":
                events.append(OverrideV1.model_validate(event))
        assert [e.actor for e in events] == [UNTRAINED, TRAINED]
        # Whether the event carries the flag: tests/cli/test_edge_competence.py.


async def test_training_that_ends_while_the_device_is_offline_is_refused(
    competent_line: MakeChain, tmp_path: Path
) -> None:
    async with competent_line(tier=1) as (line, registry):
        ends = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        await registry.train(
            UNTRAINED,
            role="override",
            trained_at=TRAINED_AT,
            valid_until=f"{ends:%Y-%m-%dT%H:%M:%SZ}",
        )
        await running(line, "cam-3-1")
        await line.stop_agent("cam-3-1")  # offline from now on: no new document can arrive
        state_dir = line.devices["cam-3-1"].state_dir

        async def override_at(at: datetime) -> httpx.Response:
            # The device's own API over what the agent verified, with the clock moved on.
            telemetry = TelemetryBuffer(
                jetstream_publisher(line.service), line="line3", device_id="cam-3-1"
            )
            app = create_inference_app(
                ModelRunner(state_dir),
                telemetry,
                device_id="cam-3-1",
                line="line3",
                competence=CompetenceFile(state_dir),
                clock=lambda: at,
            )
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://dev") as http:
                    r = await http.post(
                        "/v1/inference", json={"camera": "w3", "image": image_of("scratch")}
                    )
                    assert r.status_code == 200, r.text
                    body = override_body(r.json()["record_id"], UNTRAINED)
                    return await http.post("/v1/overrides", json=body)

        before = await override_at(ends - timedelta(hours=1))
        after = await override_at(ends + timedelta(hours=1))
        assert before.status_code == 201, before.text
        assert after.status_code == 403, after.text
        assert after.json()["reason"] == "expired"
        assert f"ended at {ends:%Y-%m-%dT%H:%M:%SZ}" in after.json()["detail"]


async def test_roster_changes_reach_a_running_agent(competent_line: MakeChain) -> None:
    async with competent_line(tier=1, competence_refresh_seconds=0.2) as (line, registry):
        await running(line, "cam-3-1")
        first = line.release_block(await line.desired_doc("cam-3-1"))["device"]["revision"]
        assert (await override(line, "cam-3-1", UNTRAINED)).status_code == 403

        # Training recorded in the registry: the gateway re-issues the document, the agent
        # applies it, and the next override is accepted.
        record = await registry.train(UNTRAINED, role="override", trained_at=TRAINED_AT)

        async def accepted() -> bool:
            return (await override(line, "cam-3-1", UNTRAINED)).status_code == 201

        await wait_for(accepted, "the recorded training to reach the device")
        listing = await line.desired_doc("cam-3-1")
        assert line.release_block(listing)["device"]["revision"] > first
        assert UNTRAINED in {e["person"] for e in roster_of(line, listing)["override"]}

        # Revoked: refused again, from a newer revision.
        r = await registry.client.post(
            f"/v1/competence/{record['id']}/revoke",
            json={"reason": "left the line-3 team"},
            headers=registry.auth(),
        )
        assert r.status_code == 200, r.text

        async def refused() -> bool:
            return (await override(line, "cam-3-1", UNTRAINED)).status_code == 403

        await wait_for(refused, "the revocation to reach the device")
        revoked = await line.desired_doc("cam-3-1")
        assert (
            line.release_block(revoked)["device"]["revision"]
            > line.release_block(listing)["device"]["revision"]
        )
        assert [e["person"] for e in roster_of(line, revoked)["override"]] == [TRAINED]

        # Replaying the signed document that still listed the training does not restore it.
        kv = await line.service.jetstream().key_value("desired")
        await kv.put("cam-3-1", listing)

        async def replay_refused() -> bool:
            device = await line.device_record("cam-3-1")
            return device["last_state"] == "refused" and "replay" in (device["last_detail"] or "")

        await wait_for(replay_refused, "the agent to refuse the replayed document")
        assert (await override(line, "cam-3-1", UNTRAINED)).status_code == 403

        audit = await line.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=bearer(line.mint(Role.AUDITOR))
        )
        entries = [(e["action"], e["subject"]) for e in audit.json()]
        assert entries.count(("device.competence.set", "device:cam-3-1")) >= 2
        assert ("competence.roster.updated", f"model:{MODEL}") in entries
