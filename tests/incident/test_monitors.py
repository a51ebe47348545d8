"""The monitors on synthetic production runs: a day of stable production is the reference,
the next day is judged shift by shift (real-time cadence: the latest shift)."""

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
    wait_for,
)

OUTCOME_KEY = f"outcome:{MODEL}:{VERSION}:{LINE}"


async def test_a_stable_line_raises_nothing(line_factory: Any) -> None:
    run = production_run(day(STABLE) + day(shifted(STABLE, escapes=1)))
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        state = await line.evaluate()
        assert line.sink.signals == []
        statuses = {name: s["status"] for name, s in state["by_monitor"].items()}
        assert statuses == {
            "confidence_drift": "ok",
            "confidence_level": "ok",
            "reject_rate": "ok",
            "override_rate": "ok",
            "input_drift:cam-3-1/cam0": "ok",
            "input_drift:cam-3-2/cam0": "ok",
            "outcome": "ok",
            "scrap": "ok",
            "feedback": "ok",
        }
        # Unreachable registry: the configured default tier, and the state says why.
        assert state["tier"] == 1
        assert state["cadence"] == "real-time"
        assert state["tier_source"].startswith("default tier 1: registry unreachable")
        drift = state["by_monitor"]["confidence_drift"]["values"]
        assert drift["psi"] < 0.2
        assert drift["window"]["latest_shift_start"] == "2026-11-03T22:00:00+00:00"


async def test_confident_but_wrong_fires_the_outcome_monitor_not_drift(line_factory: Any) -> None:
    """Escapes found at incoming inspection rise on the night shift while the model passes as
    many parts, as confidently as before."""
    bad_night = shifted(STABLE, escapes=24)
    run = production_run([*day(STABLE), STABLE, STABLE, bad_night])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        state = await line.evaluate()
        monitors = state["by_monitor"]
        assert monitors["outcome"]["status"] == "firing"
        assert monitors["confidence_drift"]["status"] == "ok"
        assert monitors["confidence_level"]["status"] == "ok"
        assert monitors["reject_rate"]["status"] == "ok"
        values = monitors["outcome"]["values"]
        assert values["confident_but_wrong"] is True
        assert values["escapes"] == 24
        assert values["escape_rate"] == 0.04
        assert values["shift"] == "night"

        [signal] = line.sink.signals
        assert signal.incident_type == "defect_escape"
        assert signal.dedup_key == OUTCOME_KEY
        assert signal.severity == "critical"  # tier 1, and the model did not notice
        assert (signal.model, signal.version, signal.line) == (MODEL, VERSION, LINE)
        assert "confident but wrong" in signal.summary
        assert signal.evidence["escape_rate"] == 0.04

        # The same cause evaluated again: no second signal.
        await line.evaluate()
        assert len(line.sink.signals) == 1
        # Still wrong on the next shift: raised again under the same key (one incident).
        nxt = production_run([bad_night], seed=11, start=run.messages[-1][1].occurred_at)
        await line.publish_run(nxt)
        await wait_for(lambda: _kpis(line, 7), "the next shift's KPIs")
        await wait_for(lambda: _inferences(line, 4200), "the next shift's telemetry")
        await line.evaluate()
        assert [s.dedup_key for s in line.sink.signals] == [OUTCOME_KEY, OUTCOME_KEY]

        audit = await line.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=line.auth(Role.AUDITOR)
        )
        fired = [e for e in audit.json() if e["action"] == "monitor.fired"]
        assert [e["subject"] for e in fired] == [f"monitor:{OUTCOME_KEY}"]


async def _kpis(line: Any, n: int) -> bool:
    return (await line.totals())[2] >= n


async def _inferences(line: Any, n: int) -> bool:
    return (await line.totals())[0] >= n


async def test_a_confidence_distribution_shift_fires_drift(line_factory: Any) -> None:
    run = production_run(
        [*day(STABLE), STABLE, STABLE, shifted(STABLE, confidence_mean=0.82, confidence_sd=0.05)]
    )
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        monitors = (await line.evaluate())["by_monitor"]
        drift = monitors["confidence_drift"]
        assert drift["status"] == "firing"
        assert drift["values"]["psi"] > 0.2
        assert drift["values"]["ks"] > 0.15
        assert drift["values"]["wasserstein"] > 0.05
        assert monitors["confidence_level"]["status"] == "firing"
        assert monitors["outcome"]["status"] == "ok"
        types = sorted(s.incident_type for s in line.sink.signals)
        assert types == ["confidence_collapse", "drift"]
        keys = {s.dedup_key for s in line.sink.signals}
        assert f"confidence_drift:{MODEL}:{VERSION}:{LINE}" in keys


async def test_lighting_degrades_input_drift_per_camera(line_factory: Any) -> None:
    run = production_run([*day(STABLE), STABLE, STABLE, shifted(STABLE, brightness=0.4)])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        monitors = (await line.evaluate())["by_monitor"]
        cam = monitors["input_drift:cam-3-1/cam0"]
        assert cam["status"] == "firing"
        assert cam["values"]["brightness"]["shift_sd"] > 5
        assert cam["values"]["contrast"]["shift_sd"] < 1
        sensors = line.sink.of("sensor_degradation")
        assert sorted(s.device_id for s in sensors) == ["cam-3-1", "cam-3-2"]
        assert monitors["confidence_drift"]["status"] == "ok"


async def test_an_override_cluster_fires(line_factory: Any) -> None:
    run = production_run([*day(STABLE), STABLE, STABLE, shifted(STABLE, overrides=30)])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        monitors = (await line.evaluate())["by_monitor"]
        assert monitors["override_rate"]["status"] == "firing"
        assert monitors["override_rate"]["values"]["to_pass"] == 30
        assert [s.incident_type for s in line.sink.signals] == ["override_cluster"]


async def test_the_background_runner_raises_in_real_time(line_factory: Any) -> None:
    run = production_run([*day(STABLE), shifted(STABLE, confidence_mean=0.8, confidence_sd=0.05)])
    async with line_factory(monitor_interval_seconds=0.05) as line:
        await line.publish_run(run)

        async def drift_raised() -> bool:
            return bool(line.sink.of("drift"))

        await wait_for(drift_raised, "a drift signal")
        assert line.sink.of("drift")[0].dedup_key == f"confidence_drift:{MODEL}:{VERSION}:{LINE}"


async def test_kpis_attributed_to_a_version_judge_only_that_version(line_factory: Any) -> None:
    """A canary: two versions decide on line 3; the MES knows which parts each passed."""
    old = production_run([*day(STABLE)] * 2, seed=1, version="2.0.4", attribute_kpis=True)
    new = production_run(
        [*day(STABLE), STABLE, STABLE, shifted(STABLE, escapes=24)],
        seed=2,
        attribute_kpis=True,
    )
    run = old + new
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        monitors = (await line.evaluate())["by_monitor"]
        assert monitors["outcome"]["status"] == "firing"
        assert monitors["outcome"]["values"]["produced"] == 600  # 2.1.0's parts only
        r = await line.client.get(
            f"/v1/monitors/{MODEL}/2.0.4/{LINE}", headers=line.auth(Role.AUDITOR)
        )
        old_outcome = {s["monitor"]: s for s in r.json()["states"]}["outcome"]
        assert old_outcome["status"] == "ok"
        assert [s.version for s in line.sink.of("defect_escape")] == [VERSION]
