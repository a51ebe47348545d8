"""``POST /v1/feedback``: operators' reports of wrong outputs, counted by the monitors."""

from __future__ import annotations

from typing import Any

from linegate.auth import Role
from tests.incident.telemetry_support import (
    DEVICES,
    LINE,
    MODEL,
    STABLE,
    VERSION,
    day,
    production_run,
)


async def test_feedback_names_a_record_and_feeds_the_monitor(line_factory: Any) -> None:
    run = production_run([*day(STABLE), STABLE])
    async with line_factory() as line:
        await line.publish_run(run)
        await line.wait_ingested(run)
        # r-3-*: records of the fourth shift (the current window); the service finds the
        # model version, device and time in the post-market log.
        for j in (1, 3, 5):
            r = await line.client.post(
                "/v1/feedback",
                json={
                    "line": LINE,
                    "record_id": f"r-3-{j}",
                    "problem": "false_pass",
                    "expected_decision": "reject",
                    "comment": "porosity visible at the seam end, passed by the camera",
                },
                headers=line.auth(Role.OPERATOR, sub="lena-line-lead"),
            )
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["counted"] is True
            assert (body["model"], body["version"], body["device_id"]) == (
                MODEL,
                VERSION,
                DEVICES[1],
            )
            assert body["reported_by"] == "lena-line-lead"
        monitors = (await line.evaluate())["by_monitor"]
        assert monitors["feedback"]["status"] == "firing"
        assert monitors["feedback"]["values"]["reports"] == 3
        [signal] = line.sink.of("operator_feedback")
        assert signal.dedup_key == f"feedback:{MODEL}:{VERSION}:{LINE}"

        listed = await line.client.get(
            "/v1/feedback", params={"line": LINE}, headers=line.auth(Role.AUDITOR)
        )
        assert [f["record_id"] for f in listed.json()] == ["r-3-5", "r-3-3", "r-3-1"]
        audit = await line.client.get(
            "/v1/audit/entries", params={"limit": 1000}, headers=line.auth(Role.AUDITOR)
        )
        assert [e["action"] for e in audit.json()].count("feedback.create") == 3
        log = await line.client.get(
            "/v1/postmarket/events", params={"kind": "feedback"}, headers=line.auth(Role.AUDITOR)
        )
        assert len(log.json()["items"]) == 3


async def test_feedback_without_a_model_version_is_kept_but_not_counted(line_factory: Any) -> None:
    async with line_factory() as line:
        r = await line.client.post(
            "/v1/feedback",
            json={"line": LINE, "problem": "other", "comment": "camera housing fogged up"},
            headers=line.auth(Role.ADMIN),
        )
        assert r.status_code == 201, r.text
        assert r.json()["counted"] is False


async def test_feedback_refuses_bad_input_and_other_roles(line_factory: Any) -> None:
    async with line_factory() as line:
        body = {"line": LINE, "problem": "false_reject", "comment": "fine part rejected"}
        auditor = await line.client.post("/v1/feedback", json=body, headers=line.auth(Role.AUDITOR))
        assert auditor.status_code == 403
        assert auditor.headers["content-type"] == "application/problem+json"
        anonymous = await line.client.post("/v1/feedback", json=body)
        assert anonymous.status_code == 401
        for bad in (
            {**body, "comment": ""},
            {**body, "problem": "bad_vibes"},
            {**body, "line": "line 3; drop"},
            {**body, "unexpected": 1},
        ):
            r = await line.client.post("/v1/feedback", json=bad, headers=line.auth())
            assert r.status_code == 422, bad
            assert r.headers["content-type"] == "application/problem+json"
        listed = await line.client.get("/v1/feedback", headers=line.auth(Role.AUDITOR))
        assert listed.json() == []
        # Line staff report; they read nothing and change nothing else.
        operator = line.auth(Role.OPERATOR, sub="lena-line-lead")
        for method, path in (
            ("GET", "/v1/feedback"),
            ("GET", "/v1/postmarket/events"),
            ("GET", "/v1/monitors"),
            ("GET", "/v1/incidents"),
        ):
            r = await line.client.request(method, path, headers=operator)
            assert r.status_code == 403, path
