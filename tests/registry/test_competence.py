"""The competence register: training per person, role and system; the release gate refuses
untrained approvers on tier 1 and flags them on tiers 2-3; every change is audited."""

from typing import Any

from linegate.auth import Role
from tests.registry.conftest import SYSTEM, RegistryClient


async def _audit(registry: RegistryClient) -> list[dict[str, Any]]:
    r = await registry.client.get(
        "/v1/audit/entries", params={"limit": 1000}, headers=registry.auth(Role.AUDITOR)
    )
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


async def test_a_tier1_approval_without_current_training_is_refused(
    registry: RegistryClient,
) -> None:
    await registry.create_system(tier=1, trained=("alex-approver",))
    await registry.create_model()
    assert (await registry.add_golden_set()).status_code == 201
    await registry.to_validated("2.1.0")

    r = await registry.decide("2.1.0", "bea-approver")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert "bea-approver has no current approver training" in problem["detail"]
    assert (problem["person"], problem["system_id"], problem["role"]) == (
        "bea-approver",
        SYSTEM,
        "approver",
    )
    # Nothing was recorded: no approval, no audit entry for it.
    assert (await registry.version("2.1.0"))["approvals"] == []
    assert not any(e["action"] == "model.version.approved" for e in await _audit(registry))

    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 201, r.text
    (approval,) = r.json()["approvals"]
    assert approval["competence_record_id"] is not None
    assert approval["flags"] == []


async def test_expired_revoked_and_other_system_training_do_not_count(
    registry: RegistryClient,
) -> None:
    await registry.create_system(tier=1, trained=())
    await registry.create_system(system_id="other-system", tier=1, trained=())
    await registry.create_model()
    assert (await registry.add_golden_set()).status_code == 201
    await registry.to_validated("2.1.0")
    await registry.train(
        "alex-approver", valid_until="2020-01-01T00:00:00Z", trained_at="2019-01-01T00:00:00Z"
    )
    await registry.train("alex-approver", system_id="other-system")
    await registry.train("alex-approver", role="responder")
    assert (await registry.decide("2.1.0", "alex-approver")).status_code == 403

    current = await registry.train("alex-approver")
    r = await registry.client.post(
        f"/v1/competence/{current['id']}/revoke",
        json={"reason": "certificate withdrawn"},
        headers=registry.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["current"] is False
    assert (await registry.decide("2.1.0", "alex-approver")).status_code == 403

    check = await registry.client.get(
        "/v1/competence/check",
        params={"person": "alex-approver", "system_id": SYSTEM, "role": "approver"},
        headers=registry.auth(Role.AUDITOR),
    )
    assert check.json()["current"] is False
    assert check.json()["without_training"] == "refuse"


async def test_a_tier2_approval_without_training_is_accepted_and_flagged(
    registry: RegistryClient,
) -> None:
    await registry.create_system(tier=2, trained=())
    await registry.create_model()
    assert (await registry.add_golden_set()).status_code == 201
    await registry.to_validated("2.1.0")
    r = await registry.decide("2.1.0", "alex-approver")
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "approved"
    (approval,) = r.json()["approvals"]
    assert approval["competence_record_id"] is None
    assert "no current approver training" in approval["flags"][0]
    assert (await registry.release("2.1.0")).status_code == 200
    released = await registry.version("2.1.0")
    assert released["release_evidence"]["approvals"][0]["flags"] == approval["flags"]


async def test_nobody_records_their_own_training_and_every_record_is_audited(
    registry: RegistryClient,
) -> None:
    await registry.create_system(tier=1, trained=())
    body = {
        "person": "qa-lead",
        "role": "approver",
        "system_id": SYSTEM,
        "course": "c",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    r = await registry.client.post("/v1/competence", json=body, headers=registry.auth())
    assert r.status_code == 403
    assert "may not record their own training" in r.json()["detail"]
    unknown = {**body, "person": "x", "system_id": "nope"}
    r = await registry.client.post("/v1/competence", json=unknown, headers=registry.auth())
    assert r.status_code == 404
    naive = {**body, "person": "x", "valid_until": "2099-01-01T00:00:00"}
    r = await registry.client.post("/v1/competence", json=naive, headers=registry.auth())
    assert r.status_code == 422
    # Readers cannot write the register.
    r = await registry.client.post(
        "/v1/competence", json={**body, "person": "x"}, headers=registry.auth(Role.AUDITOR)
    )
    assert r.status_code == 403

    record = await registry.train("rita-responder", role="responder")
    listed = await registry.client.get(
        "/v1/competence", params={"role": "responder"}, headers=registry.auth(Role.AUDITOR)
    )
    assert [x["id"] for x in listed.json()] == [record["id"]]
    assert listed.json()[0]["current"] is True
    entries = [e for e in await _audit(registry) if e["action"].startswith("competence.")]
    assert [(e["action"], e["subject"], e["actor"]) for e in entries] == [
        ("competence.recorded", f"competence:rita-responder@{SYSTEM}", "qa-lead")
    ]
