"""The AI inventory: classification rules, cadence, the gap report, release-note candidates."""

from typing import Any

import pytest

from linegate.auth import Role
from tests.registry.conftest import system_body

VENDOR_AI = {
    "id": "mes-smart-sequencer",
    "name": "MES Smart Sequencer",
    "purpose": "Re-sequences production orders from a machine-learning demand forecast",
    "intended_use": "Scheduling suggestions that planners accept or override",
    "deployment_context": "Plant MES, all lines",
    "decision_influenced": "Order of production jobs",
    "provider": "Acme MES",
    "product": "Acme MES 7.2",
}


async def test_a_system_is_classified_with_cadence_from_its_tier(registry: Any) -> None:
    system = await registry.create_system(tier=1, category="high_risk")
    assert system["monitoring_cadence"] == "real-time"
    assert system["monitoring_cadence_source"] == "tier"
    assert system["gaps"] == []
    assert system["third_party"] is False
    r = await registry.client.patch(
        f"/v1/inventory/systems/{system['id']}",
        json={"nist_tier": 3, "reason": "moved to advisory use only"},
        headers=registry.auth(),
    )
    assert r.status_code == 200
    assert r.json()["monitoring_cadence"] == "monthly"
    r = await registry.client.patch(
        f"/v1/inventory/systems/{system['id']}",
        json={
            "monitoring_cadence": "weekly",
            "monitoring_cadence_reason": "seasonal product mix",
            "reason": "QA board decision",
        },
        headers=registry.auth(),
    )
    assert r.json()["monitoring_cadence"] == "weekly"
    assert r.json()["monitoring_cadence_source"] == "override"
    entries = (
        await registry.client.get("/v1/audit/entries", headers=registry.auth(Role.AUDITOR))
    ).json()
    updates = [e for e in entries if e["action"] == "inventory.system.updated"]
    assert [e["reason"] for e in updates] == ["moved to advisory use only", "QA board decision"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"owner": {"name": "Quality Team", "email": "qa@plant.example"}}, "named person"),
        ({"owner": {"name": "Maria", "email": "maria@plant.example"}}, "named person"),
        ({"eu_category": "high_risk", "eu_basis": "it is important"}, "Annex"),
        ({"eu_category": "limited", "eu_rationale": None}, "rationale"),
        ({"monitoring_cadence": "weekly"}, "monitoring_cadence_reason"),
        ({"nist_tier": 4}, "nist_tier"),
        ({"id": "Not A Slug"}, "id"),
    ],
)
async def test_inconsistent_classifications_are_refused(
    registry: Any, change: dict[str, Any], needle: str
) -> None:
    body = {**system_body(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = await registry.client.post("/v1/inventory/systems", json=body, headers=registry.auth())
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.text


async def test_an_update_that_breaks_a_rule_is_refused_and_changes_nothing(registry: Any) -> None:
    system = await registry.create_system(category="minimal")
    r = await registry.client.patch(
        f"/v1/inventory/systems/{system['id']}",
        json={"eu_category": "high_risk", "reason": "reclassified"},
        headers=registry.auth(),
    )
    assert r.status_code == 422
    assert "Annex" in r.text
    r = await registry.client.get(f"/v1/inventory/systems/{system['id']}", headers=registry.auth())
    assert r.json()["eu_category"] == "minimal"


async def test_report_lists_systems_missing_a_consequence_or_owner_first(registry: Any) -> None:
    await registry.create_system(tier=1)
    r = await registry.client.post("/v1/inventory/systems", json=VENDOR_AI, headers=registry.auth())
    assert r.status_code == 201, r.text
    vendor = r.json()
    assert vendor["third_party"] is True
    assert vendor["gaps"] == ["consequence_if_wrong", "owner", "eu_category", "nist_tier"]
    assert vendor["monitoring_cadence"] is None
    partly = {**system_body("vision-sorter", tier=3), "consequence_if_wrong": None}
    r = await registry.client.post(
        "/v1/inventory/systems",
        json={k: v for k, v in partly.items() if v is not None},
        headers=registry.auth(),
    )
    assert r.status_code == 201, r.text

    report = (
        await registry.client.get("/v1/inventory/report", headers=registry.auth(Role.AUDITOR))
    ).json()
    assert report["total"] == 3
    assert report["with_gaps"] == 2
    assert [s["id"] for s in report["systems"]] == [
        "mes-smart-sequencer",
        "vision-sorter",
        "weld-seam-qa-line3",
    ]
    assert report["by_eu_category"] == {"unclassified": 1, "minimal": 2}


async def test_inventory_is_closed_to_suppliers_and_devices(registry: Any) -> None:
    await registry.create_system()
    supplier = {"Authorization": "Bearer " + registry.mint(Role.SUPPLIER, tenant="optivision")}
    device = {"Authorization": "Bearer " + registry.mint(Role.DEVICE, device_id="cam-1")}
    for headers in (supplier, device):
        assert (
            await registry.client.get("/v1/inventory/systems", headers=headers)
        ).status_code == 403
        r = await registry.client.post("/v1/inventory/systems", json=VENDOR_AI, headers=headers)
        assert r.status_code == 403
    r = await registry.client.post(
        "/v1/inventory/systems", json=system_body(), headers=registry.auth()
    )
    assert r.status_code == 409


async def test_release_note_candidates_are_confirmed_or_dismissed_with_a_reason(
    registry: Any,
) -> None:
    found = {
        "source": "acme-mes-7.2.md",
        "location": "line 12",
        "passage": "AI-powered scheduling automatically re-sequences orders based on a forecast.",
        "vendor": "Acme MES",
        "terms": ["AI-powered", "automatically re-sequences"],
        "suggestion": {"name": "AI-powered scheduling", "suggested_tier": 3},
    }
    r = await registry.client.post("/v1/inventory/candidates", json=found, headers=registry.auth())
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    r = await registry.client.post(
        "/v1/inventory/candidates", json={**found, "location": "line 40"}, headers=registry.auth()
    )
    second = r.json()["id"]

    r = await registry.client.post(
        f"/v1/inventory/candidates/{first}/decision",
        json={"decision": "confirm", "reason": "Real ML feature"},
        headers=registry.auth(),
    )
    assert r.status_code == 422
    assert "system_id" in r.text
    r = await registry.client.post(
        f"/v1/inventory/candidates/{first}/decision",
        json={
            "decision": "confirm",
            "reason": "Real ML feature",
            "system_id": "mes-smart-sequencer",
        },
        headers=registry.auth(),
    )
    assert r.status_code == 404  # the system must be in the inventory first
    await registry.client.post("/v1/inventory/systems", json=VENDOR_AI, headers=registry.auth())
    r = await registry.client.post(
        f"/v1/inventory/candidates/{first}/decision",
        json={
            "decision": "confirm",
            "reason": "Real ML feature",
            "system_id": "mes-smart-sequencer",
        },
        headers=registry.auth(),
    )
    assert r.status_code == 200
    assert r.json()["status"] == "confirmed"
    r = await registry.client.post(
        f"/v1/inventory/candidates/{second}/decision",
        json={"decision": "dismiss", "reason": "Same feature, repeated in the upgrade notes"},
        headers=registry.auth(),
    )
    assert r.json()["status"] == "dismissed"
    r = await registry.client.post(
        f"/v1/inventory/candidates/{second}/decision",
        json={"decision": "dismiss", "reason": "again"},
        headers=registry.auth(),
    )
    assert r.status_code == 409
    open_ = (
        await registry.client.get("/v1/inventory/candidates?status=open", headers=registry.auth())
    ).json()
    assert open_ == []
