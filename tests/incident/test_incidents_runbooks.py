"""Runbooks as versioned data: packaged JSON files recorded once per version; a recorded
version is never replaced by an edited file; the API lists and gets them; an incident keeps
the version it started with."""

from __future__ import annotations

from typing import Any

from incident.incidents.models import RunbookVersion
from incident.incidents.runbooks import Runbook, packaged_runbooks, sync_runbooks
from linegate.auth import Role
from linegate.testing.fixtures import bearer
from tests.incident.incidents_support import Desk


def test_every_packaged_runbook_is_valid_and_versions_are_unique() -> None:
    docs = packaged_runbooks()
    books = [Runbook.model_validate(d) for d in docs]
    keys = [(b.id, b.version) for b in books]
    assert len(keys) == len(set(keys))
    types = {t for b in books for t in b.applies_to}
    assert types == {
        "defect_escape",
        "scrap_spike",
        "confidence_collapse",
        "drift",
        "sensor_degradation",
        "override_cluster",
        "operator_feedback",
        "rollout_abort",
        "security",
        "pdm_alert",
    }


async def test_list_and_get_runbooks_and_their_versions(desk: Desk) -> None:
    auditor = desk.auth(Role.AUDITOR)
    listed = (await desk.client.get("/v1/runbooks", headers=auditor)).json()
    assert {(b["id"], b["version"]) for b in listed} >= {("outcome-escape", 2), ("drift", 1)}
    latest = (await desk.client.get("/v1/runbooks/outcome-escape", headers=auditor)).json()
    assert latest["version"] == 2
    assert "raise-threshold" in [s["id"] for s in latest["steps"]]
    history = (
        await desk.client.get("/v1/runbooks/outcome-escape/versions", headers=auditor)
    ).json()
    assert [b["version"] for b in history] == [1, 2]
    v1 = (await desk.client.get("/v1/runbooks/outcome-escape/versions/1", headers=auditor)).json()
    assert "raise-threshold" not in [s["id"] for s in v1["steps"]]
    supplier = bearer(desk.mint(Role.SUPPLIER, tenant="optivision", sub="ci"))
    assert (await desk.client.get("/v1/runbooks", headers=supplier)).status_code == 403
    for url in ("/v1/runbooks/nope", "/v1/runbooks/outcome-escape/versions/9"):
        r = await desk.client.get(url, headers=auditor)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


async def test_an_edited_recorded_version_is_refused_and_a_new_version_is_added(
    desk: Desk,
) -> None:
    ctx = desk.app.state.ctx
    before = (await desk.raise_signal(incident_type="drift", dedup_key="drift:a")).incident
    assert (before.runbook_id, before.runbook_version) == ("drift", 1)
    docs = packaged_runbooks()
    edited: list[dict[str, Any]] = []
    for doc in docs:
        if (doc["id"], doc["version"]) == ("drift", 1):
            edited.append({**doc, "title": "silently rewritten"})
        else:
            edited.append(doc)
    v2 = next(d for d in docs if (d["id"], d["version"]) == ("drift", 1))
    edited.append({**v2, "version": 2, "title": "Drift, version 2"})
    async with ctx.db.session() as session:
        catalogue = await sync_runbooks(session, ctx.audit, now=desk.now, documents=edited)
    recorded, newest = catalogue.get("drift", 1), catalogue.get("drift")
    assert recorded is not None
    assert newest is not None
    assert recorded.title == v2["title"]  # the recorded content stays
    assert newest.version == 2
    async with ctx.db.session() as session:
        row = await session.get(RunbookVersion, ("drift", 1))
        assert row is not None
        assert row.content["title"] == v2["title"]
    actions = await desk.audit_actions()
    assert actions.count("runbook.edit_refused") == 1
    assert "runbook.recorded" in actions

    # New incidents get the new version; one opened before keeps the one it started with.
    desk.runtime.sink.catalogue = catalogue
    desk.runtime.catalogue = catalogue
    after = (await desk.raise_signal(incident_type="drift", dedup_key="drift:b")).incident
    assert (after.runbook_id, after.runbook_version) == ("drift", 2)
    r = await desk.client.get(f"/v1/incidents/{before.id}/runbook", headers=desk.auth())
    assert (r.json()["version"], r.json()["title"]) == (1, v2["title"])
