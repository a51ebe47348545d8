"""The override roster on the device: signed in the desired state, written by the agent, and
checked by the local inference API at the moment of each override (the whole chain with a
real registry and gateway is tests/edge_gateway/test_override_competence.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from linegate.embedded import NatsServer
from linegate.events import OverrideV1, Streams, ensure_stream
from linegate.release_metadata import (
    COMPETENCE_FIELD,
    ReleaseFile,
    ReleaseMetadataError,
    sign_release,
    verify_release,
)
from linegate.signing import generate_private_key
from linegate_cli.agent import COMPETENCE_FILE, DeviceAgent, Installed
from linegate_cli.edge.inference import (
    CompetenceFile,
    ModelRunner,
    Roster,
    TelemetryBuffer,
    check_override,
    create_inference_app,
    jetstream_publisher,
)
from linegate_cli.edge.inference.competence import Training
from tests.cli.test_edge_inference import DEVICE, LINE, MODEL, ambiguous_image, install

T0 = datetime(2030, 1, 1, tzinfo=UTC)
KEY = generate_private_key()


def roster(tier: int | None = 1, *people: tuple[str, datetime, datetime]) -> dict[str, Any]:
    return {
        "system_id": "weld-seam-qa-line3",
        "nist_tier": tier,
        "as_of": T0,
        "override": [{"person": p, "trained_at": t, "valid_until": u} for p, t, u in people],
    }


def signed(
    competence: dict[str, Any] | None, *, revision: int = 1, version: str = "2.1.0"
) -> bytes:
    return sign_release(
        KEY,
        model=MODEL,
        version=version,
        security_version=1,
        manifest_sha256="ab" * 32,
        files=[ReleaseFile("model.onnx", 3, "cd" * 32)],
        expires=datetime.now(UTC) + timedelta(days=1),
        metadata_version=revision,
        device={"id": DEVICE, "revision": revision, "control": None, "shadow": None},
        competence=competence,
    )


# ------------------------------------------------------------------------------ format


def test_roster_is_signed_beside_the_release_block_and_verified() -> None:
    raw = signed(roster(2, ("olga", T0, T0 + timedelta(days=365))))
    doc = json.loads(raw)
    # Its own field of ``signed``: agents that reject unknown release or device keys never
    # see it, and TUF keeps unrecognized fields under the signature.
    assert doc["signed"][COMPETENCE_FIELD] == {
        "system_id": "weld-seam-qa-line3",
        "nist_tier": 2,
        "as_of": "2030-01-01T00:00:00Z",
        "override": [
            {
                "person": "olga",
                "trained_at": "2030-01-01T00:00:00Z",
                "valid_until": "2031-01-01T00:00:00Z",
            }
        ],
    }
    assert "competence" not in doc["signed"]["x-linegate-release"]
    release = verify_release(raw, [KEY.public_key()])
    assert release.competence is not None
    assert release.competence["override"] == [
        {"person": "olga", "trained_at": T0, "valid_until": T0 + timedelta(days=365)}
    ]
    assert verify_release(signed(None), [KEY.public_key()]).competence is None

    doc["signed"][COMPETENCE_FIELD]["override"].append(
        {
            "person": "mallory",
            "trained_at": "2030-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
        }
    )
    with pytest.raises(ReleaseMetadataError) as e:
        verify_release(json.dumps(doc).encode(), [KEY.public_key()])
    assert e.value.reason == "bad-signature"


def test_an_agent_ignores_signed_fields_it_does_not_know() -> None:
    # What keeps agents that predate the roster working: they read only x-linegate-release.
    raw = sign_release(
        KEY,
        model=MODEL,
        version="2.1.0",
        security_version=1,
        manifest_sha256="ab" * 32,
        files=[ReleaseFile("model.onnx", 3, "cd" * 32)],
        expires=datetime.now(UTC) + timedelta(days=1),
    )
    from securesystemslib.formats import encode_canonical
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
    from tuf.api.metadata import Metadata  # type: ignore[attr-defined]

    metadata = Metadata.from_bytes(raw)
    metadata.signed.unrecognized_fields["x-linegate-later"] = {"anything": [1, 2]}
    metadata.signatures.clear()
    metadata.sign(CryptoSigner(KEY))
    text = encode_canonical(metadata.to_dict())
    assert text is not None
    assert verify_release(text.encode(), [KEY.public_key()]).version == "2.1.0"


@pytest.mark.parametrize(
    ("competence", "message"),
    [
        ({**roster(), "nist_tier": 4}, "nist_tier"),
        ({**roster(), "as_of": datetime(2030, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
        (roster(1, ("olga", T0, T0)), "valid_until is not after trained_at"),
        ({**roster(), "override": [{"person": "olga"}]}, "needs exactly"),
        ({**roster(), "extra": 1}, "unknown"),
    ],
)
def test_a_malformed_roster_is_never_signed(competence: dict[str, Any], message: str) -> None:
    with pytest.raises(ReleaseMetadataError, match=message):
        signed(competence)


# ------------------------------------------------------------------------------- check


def test_check_override_at_the_moment_of_the_override() -> None:
    year = (T0, T0 + timedelta(days=365))
    tier1 = Roster(MODEL, "s", 1, (Training("olga", *year),))
    at = T0 + timedelta(days=1)

    assert check_override(tier1, "olga", model=MODEL, at=at).action is None
    assert check_override(tier1, "olga", model=None, at=at).action is None  # no model decided
    late = check_override(tier1, "olga", model=MODEL, at=T0 + timedelta(days=400))
    assert (late.standing, late.action) == ("expired", "refuse")
    early = check_override(tier1, "olga", model=MODEL, at=T0 - timedelta(days=1))
    assert (early.standing, early.action) == ("not_yet_valid", "refuse")
    assert check_override(tier1, "ulf", model=MODEL, at=at).standing == "untrained"
    other = check_override(tier1, "olga", model="paint-inspector", at=at)
    assert (other.standing, other.action) == ("other_model", "refuse")
    none = check_override(None, "olga", model=MODEL, at=at)
    assert (none.standing, none.action) == ("no_roster", "refuse")

    unclassified = Roster(MODEL, "s", None, ())
    assert check_override(unclassified, "ulf", model=MODEL, at=at).action == "refuse"
    for tier in (2, 3):
        verdict = check_override(Roster(MODEL, "s", tier, ()), "ulf", model=MODEL, at=at)
        assert (verdict.action, verdict.refused) == ("flag", False)
        assert verdict.flag is not None
        assert f"NIST tier {tier}" in verdict.flag


# ------------------------------------------------------------------------------- agent


async def test_the_agent_writes_the_roster_of_each_document_and_removes_a_missing_one(
    tmp_path: Path,
) -> None:
    reports: list[Any] = []

    async def report(status: Any) -> None:
        reports.append(status)

    agent = DeviceAgent(
        DEVICE,
        tmp_path,
        js=None,
        release_keys=[KEY.public_key()],
        model_key_paths=[],
        report=report,
    )
    # Already running 2.1.0: applying its documents installs nothing (no object store here).
    agent.state.active = Installed(MODEL, "2.1.0", 1, f"{MODEL}@2.1.0", T0.isoformat())
    path = tmp_path / COMPETENCE_FILE

    assert await agent.apply(signed(roster(1, ("olga", T0, T0 + timedelta(days=9))), revision=1))
    written = CompetenceFile(tmp_path).current()
    assert written is not None
    assert (written.model, written.nist_tier, written.revision) == (MODEL, 1, 1)
    assert written.override == (Training("olga", T0, T0 + timedelta(days=9)),)

    assert await agent.apply(signed(roster(1), revision=2))
    assert CompetenceFile(tmp_path).current().override == ()  # type: ignore[union-attr]
    # An older document (which still listed olga) is a replay: the roster stays as it is.
    assert not await agent.apply(
        signed(roster(1, ("olga", T0, T0 + timedelta(days=9))), revision=1)
    )
    assert CompetenceFile(tmp_path).current().override == ()  # type: ignore[union-attr]

    assert await agent.apply(signed(None, revision=3))
    assert not path.exists()


# --------------------------------------------------------------------------------- API


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_server.url)
    await ensure_stream(conn.jetstream(), Streams.TELEMETRY)
    yield conn
    await conn.close()


async def _override(state_dir: Path, nc: Client, operator: str) -> tuple[httpx.Response, Any]:
    sub = await nc.subscribe("linegate.telemetry.>")
    telemetry = TelemetryBuffer(jetstream_publisher(nc), line=LINE, device_id=DEVICE)
    app = create_inference_app(
        ModelRunner(state_dir),
        telemetry,
        device_id=DEVICE,
        line=LINE,
        competence=CompetenceFile(state_dir),
        clock=lambda: T0 + timedelta(days=1),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://device") as http:
            r = await http.post(
                "/v1/inference", json={"camera": "c1", "image": ambiguous_image().tolist()}
            )
            response = await http.post(
                "/v1/overrides",
                json={
                    "record_id": r.json()["record_id"],
                    "decision": "pass",
                    "reason_code": "false_reject",
                    "rationale": "Seam re-inspected under the loupe: no porosity.",
                    "operator": operator,
                },
            )
    event = None
    if response.status_code == 201:
        event = OverrideV1.model_validate(json.loads((await sub.next_msg(timeout=5)).data))
    await sub.unsubscribe()
    return response, event


async def test_without_a_roster_no_override_is_accepted(tmp_path: Path, nc: Client) -> None:
    install(tmp_path, "2.1.0")
    response, _ = await _override(tmp_path, nc, "olga")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "no_roster"


async def test_a_flagged_override_event_carries_the_flag(tmp_path: Path, nc: Client) -> None:
    install(tmp_path, "2.1.0")
    agent_roster = {
        "model": MODEL,
        "revision": 1,
        "system_id": "s",
        "nist_tier": 2,
        "as_of": T0.isoformat(),
        "override": [],
    }
    (tmp_path / COMPETENCE_FILE).write_text(json.dumps(agent_roster))
    response, event = await _override(tmp_path, nc, "ulf")
    assert response.status_code == 201, response.text
    assert response.json()["competence_flag"]
    assert event.competence_flag == response.json()["competence_flag"]
