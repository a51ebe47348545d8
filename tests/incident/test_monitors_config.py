"""Monitor configuration: the risk tier and cadence from the registry's inventory over real
HTTP (or the configured default, saying why), thresholds changed through the API with an
audit entry, and the real incident sink opening one incident for one cause."""

from __future__ import annotations

from typing import Any

from linegate.auth import Role
from tests.incident.telemetry_support import (
    LINE,
    MODEL,
    STABLE,
    VERSION,
    day,
    production_run,
    shifted,
)

PATH = f"/v1/monitors/{MODEL}/{VERSION}/{LINE}"


def _system(tier: int) -> dict[str, Any]:
    return {
        "id": "weld-seam-qa-line3",
        "name": "Weld seam inspection, line 3",
        "purpose": "Detect porosity and cracks in weld seams from camera crops",
        "intended_use": "Automated part release on line 3, with manual re-inspection of rejects",
        "deployment_context": "Line 3 end-of-line camera station, three shifts",
        "decision_influenced": "Whether a welded part is released to the next station",
        "consequence_if_wrong": "A defective seam ships",
        "eu_category": "minimal",
        "eu_rationale": "Cosmetic seams only in this test",
        "nist_tier": tier,
        "owner": {"name": "Maria Keller", "email": "maria.keller@plant.example"},
        "lines": [LINE],
    }


async def test_tier_and_cadence_come_from_the_registry(
    line_factory: Any, settings_factory: Any, serve_http: Any, mint_token: Any
) -> None:
    import httpx

    from registry.app import create_app as create_registry
    from registry.settings import RegistrySettings

    registry_url = serve_http(create_registry(settings_factory(RegistrySettings)))
    qa = {"Authorization": f"Bearer {mint_token(Role.REGISTRY_APPROVE, sub='qa-lead')}"}
    async with httpx.AsyncClient(base_url=registry_url) as http:
        r = await http.post("/v1/inventory/systems", json=_system(tier=2), headers=qa)
        assert r.status_code == 201, r.text
        r = await http.post(
            "/v1/models",
            json={"name": MODEL, "system_id": "weld-seam-qa-line3", "critical_classes": []},
            headers=qa,
        )
        assert r.status_code == 201, r.text

    run = production_run([*day(STABLE), STABLE, STABLE, shifted(STABLE, escapes=30)])
    async with line_factory(registry_url=registry_url) as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        state = await line.evaluate()
        assert state["tier"] == 2
        assert state["cadence"] == "daily"
        assert state["tier_source"] == "registry: system weld-seam-qa-line3 (tier)"
        # Daily: new telemetry schedules the evaluation instead of running it.
        assert state["states"] == []
        assert state["next_due_at"] is not None
        assert line.sink.signals == []
        # A responder investigating runs it now; a daily window is the last 24 h of shifts.
        r = await line.client.post(f"{PATH}/evaluate", headers=line.auth())
        assert r.status_code == 200, r.text
        monitors = {s["monitor"]: s for s in r.json()["states"]}
        assert monitors["outcome"]["status"] == "firing"
        window = monitors["outcome"]["values"]["window"]
        assert window["current_from"] == "2026-11-03T06:00:00+00:00"
        [signal] = line.sink.signals
        assert signal.severity == "high"  # tier 2 starts at medium; confident but wrong: +1


async def test_thresholds_change_through_the_api_and_are_audited(line_factory: Any) -> None:
    run = production_run([*day(STABLE), STABLE])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        await line.evaluate()
        body = {"thresholds": {"psi": 0.1, "min_samples": 300}, "reason": "tighter after CAPA-12"}
        auditor = await line.client.patch(PATH, json=body, headers=line.auth(Role.AUDITOR))
        assert auditor.status_code == 403
        r = await line.client.patch(PATH, json=body, headers=line.auth(sub="rita-responder"))
        assert r.status_code == 200, r.text
        assert r.json()["threshold_overrides"] == {"psi": 0.1, "min_samples": 300}
        assert r.json()["thresholds"]["psi"] == 0.1
        assert r.json()["thresholds"]["ks"] == 0.15  # the tier's default still applies
        assert r.json()["updated_by"] == "rita-responder"

        for bad in (
            {"thresholds": {"psi": -1}, "reason": "x"},
            {"thresholds": {"no_such_threshold": 1}, "reason": "x"},
            {"thresholds": {"psi": 0.3}},
            {"reference_from": "2026-11-02T06:00:00Z", "reason": "half a window"},
        ):
            r = await line.client.patch(PATH, json=bad, headers=line.auth())
            assert r.status_code == 422, (bad, r.text)
            assert r.headers["content-type"] == "application/problem+json"

        r = await line.client.patch(
            PATH,
            json={"thresholds": {"psi": None}, "reason": "back to the tier default"},
            headers=line.auth(Role.ADMIN, sub="ada-admin"),
        )
        assert r.json()["threshold_overrides"] == {"min_samples": 300}

        audit = await line.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=line.auth(Role.AUDITOR)
        )
        changes = [e for e in audit.json() if e["action"] == "monitor.configure"]
        assert [(e["actor"], e["reason"]) for e in changes] == [
            ("rita-responder", "tighter after CAPA-12"),
            ("ada-admin", "back to the tier default"),
        ]
        missing = await line.client.get(
            f"/v1/monitors/{MODEL}/0.0.1/{LINE}", headers=line.auth(Role.AUDITOR)
        )
        assert missing.status_code == 404


async def test_one_cause_opens_one_incident_through_the_incident_module(
    line_factory: Any,
) -> None:
    """The real sink (the incident module's), not the recording double."""
    bad_night = shifted(STABLE, escapes=24)
    run = production_run([*day(STABLE), STABLE, STABLE, bad_night])
    async with line_factory(record_signals=False) as line:
        assert getattr(line.app.state, "signal_sink", None) is not None
        await line.publish_run(run)
        await line.wait_ingested(run)
        await line.evaluate()
        await line.evaluate()
        r = await line.client.get("/v1/incidents", headers=line.auth())
        assert r.status_code == 200, r.text
        incidents = [i for i in r.json() if i["incident_type"] == "defect_escape"]
        assert len(incidents) == 1
        assert incidents[0]["line"] == LINE
        assert incidents[0]["model"] == MODEL
        # The registry is unreachable here, so the default tier (1) applies: its corrective
        # actions will need two approvers.
        assert incidents[0]["risk_tier"] == 1


async def test_an_explicit_reference_window_replaces_the_first_day(line_factory: Any) -> None:
    odd_morning = shifted(STABLE, confidence_mean=0.82, confidence_sd=0.05)
    run = production_run([*day(STABLE), odd_morning, STABLE, STABLE])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        # Against the first day, the night shift is fine.
        assert (await line.evaluate())["by_monitor"]["confidence_drift"]["status"] == "ok"
        # The odd morning as the reference (given in CET; stored and compared in UTC).
        r = await line.client.patch(
            PATH,
            json={
                "reference_from": "2026-11-03T07:00:00+01:00",
                "reference_to": "2026-11-03T15:00:00+01:00",
                "reason": "compare with the shift after the lens change",
            },
            headers=line.auth(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["reference_from"].startswith("2026-11-03T06:00:00")
        drift = (await line.evaluate())["by_monitor"]["confidence_drift"]
        assert drift["status"] == "firing", drift
        assert drift["values"]["window"]["reference_from"] == "2026-11-03T06:00:00+00:00"
        assert drift["values"]["reference_n"] == 600
        r = await line.client.patch(
            PATH,
            json={"clear_reference": True, "reason": "back to the first day"},
            headers=line.auth(),
        )
        assert r.json()["reference_from"] is None
        assert (await line.evaluate())["by_monitor"]["confidence_drift"]["status"] == "ok"
