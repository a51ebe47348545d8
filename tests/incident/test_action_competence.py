"""Approvals of corrective actions against the registry's competence register (issue 7, item 6):
a real registry served over HTTP holds the inventory and the training records; the incident
service asks it at every approval. Without current responder training the approval is refused
on a tier-1 system and accepted with a flag on a tier-2 one; a revoked or expired record counts
as none, and a model the inventory does not list cannot be checked, which refuses by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from incident.settings import IncidentSettings
from linegate.audit import AuditEntry, payload_digest
from linegate.events import Subjects
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings
from tests.incident.incidents_support import MODEL, Desk, MaintenanceKeys, open_desk
from tests.incident.test_actions import approve, propose
from tests.registry.conftest import RegistryClient

TIER1_SYSTEM = "weld-seam-qa-line3"
TIER2_MODEL, TIER2_SYSTEM = "paint-gloss-grader", "paint-gloss-line5"


@dataclass
class Plant:
    desk: Desk
    registry: RegistryClient


@pytest.fixture
async def plant(
    settings_factory: Any,
    service_client: Any,
    serve_http: Any,
    mint_token: Any,
    nats_server: Any,
    maintenance_keys: MaintenanceKeys,
    tmp_path: Any,
) -> AsyncIterator[Plant]:
    registry_app = create_registry(settings_factory(RegistrySettings))
    url = serve_http(registry_app)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        registry = RegistryClient(client=http, app=registry_app, mint=mint_token, tmp=tmp_path)
        await registry.create_system(system_id=TIER1_SYSTEM, tier=1, trained=())
        await registry.create_model(MODEL, system_id=TIER1_SYSTEM)
        await registry.create_system(system_id=TIER2_SYSTEM, tier=2, trained=())
        await registry.create_model(TIER2_MODEL, system_id=TIER2_SYSTEM)
        settings = settings_factory(
            IncidentSettings,
            escalation_interval_seconds=0,
            monitor_interval_seconds=0,
            maintenance_public_key=maintenance_keys.public_pem,
            registry_url=url,
        )
        async with open_desk(settings, service_client, mint_token, nats_server.url) as desk:
            yield Plant(desk, registry)


async def proposed(desk: Desk, model: str = MODEL) -> tuple[str, str]:
    signal = {"model": model, "dedup_key": f"outcome:{model}:2.1.0:line3"}
    incident_id = (await desk.raise_signal(**signal)).incident.id
    r = await propose(desk, incident_id, action="manual_inspection")
    assert r.status_code == 201, r.text
    return incident_id, r.json()["id"]


async def approvals(desk: Desk, incident_id: str) -> list[dict[str, Any]]:
    r = await desk.client.get(f"/v1/incidents/{incident_id}/actions", headers=desk.auth())
    assert r.status_code == 200, r.text
    (action,) = r.json()
    return action["approvals"]  # type: ignore[no-any-return]


async def audited_approvals(desk: Desk) -> list[str]:
    """Payload digests of the audit log's approval entries, oldest first."""
    async with desk.app.state.ctx.db.session() as session:
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.action == "incident.action.approve")
            .order_by(col(AuditEntry.seq))
        )
        return [e.payload_digest for e in (await session.exec(stmt)).all()]


def approval_digest(action_id: str, approval: dict[str, Any]) -> str:
    """The digest an approval's audit entry carries: the competence is bound into it."""
    return payload_digest(
        {"action_id": action_id, "approvals": 1, "competence": approval["competence"]}
    )


async def test_tier_1_refuses_an_untrained_responder_and_accepts_a_trained_one(
    plant: Plant,
) -> None:
    desk, registry = plant.desk, plant.registry
    trained = await registry.train("sam-responder", system_id=TIER1_SYSTEM, role="responder")
    # Approver training for the release gate is not responder training.
    await registry.train("ute-responder", system_id=TIER1_SYSTEM, role="approver")
    incident_id, action_id = await proposed(desk)

    r = await approve(desk, incident_id, action_id, "ute-responder")
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert "ute-responder has no current responder training" in problem["detail"]
    assert (problem["person"], problem["system_id"]) == ("ute-responder", TIER1_SYSTEM)
    assert await approvals(desk, incident_id) == []
    assert await audited_approvals(desk) == []
    assert await desk.last_on(Subjects.incident_action("manual_inspection")) is None

    r = await approve(desk, incident_id, action_id, "sam-responder")
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "sent"
    (approval,) = r.json()["approvals"]
    assert approval["competence"] == {
        "person": "sam-responder",
        "role": "responder",
        "systems": {TIER1_SYSTEM: trained["id"]},
        "flags": [],
    }
    assert await audited_approvals(desk) == [approval_digest(action_id, approval)]


async def test_revoked_and_expired_training_count_as_none(plant: Plant) -> None:
    desk, registry = plant.desk, plant.registry
    record = await registry.train("sam-responder", system_id=TIER1_SYSTEM, role="responder")
    await registry.train(
        "ute-responder",
        system_id=TIER1_SYSTEM,
        role="responder",
        trained_at="2024-01-10T00:00:00Z",
        valid_until="2025-01-10T00:00:00Z",
    )
    r = await registry.client.post(
        f"/v1/competence/{record['id']}/revoke",
        json={"reason": "left the responder rota"},
        headers=registry.auth(),
    )
    assert r.status_code == 200, r.text
    incident_id, action_id = await proposed(desk)
    for person in ("sam-responder", "ute-responder"):
        r = await approve(desk, incident_id, action_id, person)
        assert r.status_code == 403, (person, r.text)
        assert f"{person} has no current responder training" in r.json()["detail"]
    assert await approvals(desk, incident_id) == []


async def test_tier_2_accepts_an_untrained_responder_with_a_flag(plant: Plant) -> None:
    desk = plant.desk
    incident_id, action_id = await proposed(desk, TIER2_MODEL)
    r = await approve(desk, incident_id, action_id, "ute-responder")
    assert r.status_code == 201, r.text
    (approval,) = r.json()["approvals"]
    assert approval["competence"]["systems"] == {TIER2_SYSTEM: None}
    (flag,) = approval["competence"]["flags"]
    assert flag.startswith("ute-responder has no current responder training for AI system")
    assert "NIST tier 2" in flag
    notes = [e for e in await desk.timeline(incident_id) if e["kind"] == "action_approved"]
    assert "[flagged: ute-responder has no current responder training" in notes[0]["detail"]
    assert await audited_approvals(desk) == [approval_digest(action_id, approval)]


async def test_a_model_the_inventory_does_not_list_cannot_be_checked_and_is_refused(
    plant: Plant,
) -> None:
    desk = plant.desk
    incident_id, action_id = await proposed(desk, "unlisted-vendor-model")
    r = await approve(desk, incident_id, action_id, "sam-responder")
    # The registry answered: 409 (the inventory must change), not 503 (retry later).
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert "inventory lists no active AI system for unlisted-vendor-model" in detail
    # Said once, with what to do (the registry did answer: retrying alone would not help).
    assert detail.count("could not be checked") == 1, detail
    assert detail.endswith("list the model in an active inventory entry of the registry first")
    assert await approvals(desk, incident_id) == []
