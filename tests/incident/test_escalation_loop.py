"""The periodic escalation task as it runs: the app's lifespan starts it with a short
interval, the service's clock (``desk.now``) lets the owner's deadline pass without sleeping
through it, and the escalation arrives through the loop on the real nats-server and in the
audit log; a pass that fails is logged and the loop carries on."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from incident.incidents.models import RoutingRule
from linegate.events import Subjects
from tests.incident.incidents_support import (
    Desk,
    MaintenanceKeys,
    desk_settings,
    open_desk,
    wait_for,
)

FAILED = "escalation pass failed"


@pytest.fixture
async def running_desk(
    settings_factory: Any,
    service_client: Any,
    mint_token: Any,
    nats_server: Any,
    maintenance_keys: MaintenanceKeys,
) -> AsyncIterator[Desk]:
    settings = desk_settings(settings_factory, maintenance_keys, escalation_interval_seconds=0.05)
    async with open_desk(settings, service_client, mint_token, nats_server.url) as d:
        yield d


async def set_escalation(desk: Desk, rule_id: str, levels: list[dict[str, Any]]) -> None:
    """Write the rule's chain in its table, behind the API (which refuses a level without an
    owner): how a bad migration or a hand edit would leave it."""
    async with desk.app.state.ctx.db.session() as session:
        rule = await session.get(RoutingRule, rule_id)
        assert rule is not None
        rule.escalation = levels
        session.add(rule)


async def test_the_running_loop_escalates_and_a_failing_pass_does_not_stop_it(
    running_desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    desk = running_desk
    caplog.set_level(logging.ERROR, logger="incident.incidents")
    rule = await desk.rule(escalation=[{"owner": "Jonas Weber", "acknowledge_within_minutes": 30}])
    notices = await desk.nc.subscribe(Subjects.incident_assigned("qa"))
    incident_id = (await desk.raise_signal()).incident.id
    routed = json.loads((await notices.next_msg(timeout=10)).data)
    assert (routed["incident_id"], routed["reason"], routed["owner"]) == (
        incident_id,
        "routed",
        "Maria Keller",
    )

    # The chain's next level lost its owner: every pass over this incident now raises and
    # rolls back. Then Maria's 15 minutes pass on the service's clock.
    await set_escalation(desk, rule["id"], [{"acknowledge_within_minutes": 30}])
    desk.later(minutes=15)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(FAILED)]

    async def failed_twice() -> bool:
        return len(failures()) >= 2

    await wait_for(failed_twice, "two failed escalation passes", timeout=10)
    assert all(r.exc_info and r.exc_info[0] is KeyError for r in failures())
    [assignment] = (await desk.incident(incident_id))["assignments"]
    assert (assignment["owner"], assignment["level"]) == ("Maria Keller", 0)  # rolled back
    assert "incident.escalate" not in await desk.audit_actions()

    # Repaired: the same running loop escalates at its next pass, and says so on NATS.
    await set_escalation(
        desk, rule["id"], [{"owner": "Jonas Weber", "acknowledge_within_minutes": 30}]
    )
    escalated = json.loads((await notices.next_msg(timeout=10)).data)
    assert {k: escalated[k] for k in ("incident_id", "reason", "owner", "previous_owner")} == {
        "incident_id": incident_id,
        "reason": "escalated",
        "owner": "Jonas Weber",
        "previous_owner": "Maria Keller",
    }
    assert escalated["level"] == 1
    [assignment] = (await desk.incident(incident_id))["assignments"]
    assert (assignment["owner"], assignment["level"]) == ("Jonas Weber", 1)
    # Jonas's deadline is 30 minutes after the escalation, itself timed by the service's clock.
    assert assignment["escalate_at"].startswith("2026-11-02T23:00")
    assert (await desk.audit_actions()).count("incident.escalate") == 1
    await notices.unsubscribe()
