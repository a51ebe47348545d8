"""Predictive maintenance: a device's MaintenanceAlertV1 on real NATS opens a PdM incident and a
maintenance ticket at the chain level its score warrants; the ticket's context is a real JWE
that only the maintenance team's private key opens; unacknowledged, it climbs the chain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from incident.incidents.pdm import MaintenanceChain, TicketEncrypter, load_public_key
from linegate.auth import Role
from linegate.events import MaintenanceAlertV1, Subjects
from tests.incident.incidents_support import Desk, MaintenanceKeys, wait_for

DIGEST = "sha256:" + "ab" * 32


def alert(asset: str = "press-3-spindle", ewma: float = 0.62, threshold: float = 0.5) -> Any:
    return MaintenanceAlertV1(
        actor="device:cam-3-1",
        asset=asset,
        ewma=ewma,
        threshold=threshold,
        last_score=0.71,
        windows=412,
        model_digest=DIGEST,
    )


async def tickets(desk: Desk, **params: Any) -> list[dict[str, Any]]:
    r = await desk.client.get("/v1/maintenance-tickets", params=params, headers=desk.auth())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_alert_opens_an_incident_and_an_encrypted_ticket_the_team_decrypts(
    desk: Desk, maintenance_keys: MaintenanceKeys
) -> None:
    event = alert()
    await desk.publish(Subjects.maintenance(event.asset), event)
    [ticket] = await wait_for(lambda: tickets(desk), "the maintenance ticket")
    assert ticket["asset"] == "press-3-spindle"
    assert ticket["level"] == "line_maintenance"  # 0.62 / 0.5 = 1.24
    assert ticket["status"] == "open"
    assert ticket["delivery"].startswith("encrypted for ")

    # Delivered to its level over NATS as the same ciphertext, nothing in the clear beside it.
    delivered = await desk.last_on(Subjects.maintenance_ticket("line_maintenance"))
    assert delivered is not None
    assert (delivered["ticket_id"], delivered["reason"]) == (ticket["id"], "opened")
    assert (delivered["jwe"], delivered["recipient_kid"]) == (
        ticket["jwe"],
        ticket["recipient_kid"],
    )
    assert "press-3-spindle" not in json.dumps(delivered)
    opened = jwe.decrypt_compact(ticket["jwe"], maintenance_keys.private)
    assert opened.protected["alg"] == "ECDH-ES+A256KW"
    assert opened.protected["enc"] == "A256GCM"
    assert opened.protected["kid"] == ticket["recipient_kid"]
    context = json.loads(opened.plaintext or b"")
    assert context == {
        "ticket_id": ticket["id"],
        "incident_id": ticket["incident_id"],
        "asset": "press-3-spindle",
        "device_id": "cam-3-1",
        "line": None,
        "station": "press-3-spindle",
        "raised_by": "device",
        "raised_at": context["raised_at"],
        "ewma": 0.62,
        "threshold": 0.5,
        "last_score": 0.71,
        "windows": 412,
        "model_digest": DIGEST,
    }
    # Another key cannot open it.
    with pytest.raises(JoseError):
        jwe.decrypt_compact(ticket["jwe"], ECKey.generate_key("P-256"))

    incident = await desk.incident(ticket["incident_id"])
    assert (incident["incident_type"], incident["severity"]) == ("pdm_alert", "medium")
    assert incident["runbook_id"] == "pdm-maintenance"
    # The same asset alarming again joins the open incident: no second ticket.
    await desk.publish(Subjects.maintenance(event.asset), alert(ewma=0.7))
    await wait_for(
        lambda: _signal_count(desk, ticket["incident_id"], 2), "the second alert to join"
    )
    assert len(await tickets(desk)) == 1
    assert "maintenance_ticket.open" in await desk.audit_actions()


async def test_malformed_alerts_are_dropped_and_the_consumer_carries_on(desk: Desk) -> None:
    subject = Subjects.maintenance("press-4")
    await desk.js.publish(subject, b"not json at all")
    await desk.js.publish(subject, b'["a", "list"]')
    await desk.js.publish(subject, b'{"kind": "maintenance.alert.v1", "asset": "press-4"}')
    await desk.publish(subject, alert("press-4"))
    [ticket] = await wait_for(lambda: tickets(desk, asset="press-4"), "the valid alert's ticket")
    assert ticket["level"] == "line_maintenance"
    assert len(await desk.incidents()) == 1


async def _signal_count(desk: Desk, incident_id: str, n: int) -> bool:
    return bool((await desk.incident(incident_id))["signal_count"] == n)


async def test_a_high_score_starts_higher_and_an_unacknowledged_ticket_climbs(
    desk: Desk,
) -> None:
    start = desk.now
    await desk.publish(Subjects.maintenance("oven-2"), alert("oven-2", ewma=1.1, threshold=0.5))
    [high] = await wait_for(lambda: tickets(desk, asset="oven-2"), "the oven ticket")
    assert high["level"] == "plant_maintenance"
    assert (await desk.incident(high["incident_id"]))["severity"] == "high"

    desk.now = start
    outcome = await desk.raise_signal(
        incident_type="pdm_alert",
        dedup_key="pdm:conveyor-1",
        severity="medium",
        evidence={"asset": "conveyor-1", "ewma": 0.55, "threshold": 0.5},
        summary="conveyor-1 bearing",
    )
    [low] = await tickets(desk, asset="conveyor-1")
    assert low["level"] == "line_maintenance"
    assert low["incident_id"] == outcome.incident.id
    assert (await desk.runtime.escalate(desk.later(minutes=59)))["tickets"] == 0
    assert (await desk.runtime.escalate(desk.later(minutes=1)))["tickets"] == 1
    [low] = await tickets(desk, asset="conveyor-1")
    assert low["level"] == "plant_maintenance"
    delivered = await desk.last_on(Subjects.maintenance_ticket("plant_maintenance"))
    assert delivered is not None
    assert (delivered["ticket_id"], delivered["reason"]) == (low["id"], "escalated")

    r = await desk.client.post(
        f"/v1/maintenance-tickets/{low['id']}/acknowledge",
        json={"note": "Kai takes it"},
        headers=desk.auth(Role.AUDITOR),
    )
    assert r.status_code == 403
    r = await desk.client.post(
        f"/v1/maintenance-tickets/{low['id']}/acknowledge",
        json={"note": "Kai takes it"},
        headers=desk.auth(sub="kai-maintenance"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_by"] == "kai-maintenance"
    assert (await desk.runtime.escalate(desk.later(days=2)))["tickets"] == 0
    r = await desk.client.post(
        f"/v1/maintenance-tickets/{low['id']}/acknowledge", json={}, headers=desk.auth()
    )
    assert r.status_code == 409
    r = await desk.client.get("/v1/maintenance-tickets/mt-nope", headers=desk.auth())
    assert r.status_code == 404
    timeline = await desk.timeline(low["incident_id"])
    assert any("escalated to plant_maintenance" in e["detail"] for e in timeline)
    r = await desk.status(low["incident_id"], "closed", reason="bearing replaced")
    assert r.status_code == 200, r.text
    [low] = await tickets(desk, asset="conveyor-1")
    assert low["status"] == "closed"
    [high] = await tickets(desk, asset="oven-2")
    assert high["status"] == "open"  # another incident's ticket


def test_rsa_and_jwk_keys_and_the_chain_as_data() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    encrypter = TicketEncrypter(load_public_key(pem))
    token = encrypter.encrypt({"asset": "press-1"})
    assert encrypter.alg == "RSA-OAEP-256"
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert json.loads(
        jwe.decrypt_compact(
            token, RSAKey.import_key(private_pem), algorithms=["RSA-OAEP-256", "A256GCM"]
        ).plaintext
        or b""
    ) == {"asset": "press-1"}

    ec_private = ECKey.generate_key("P-256")
    as_jwk = json.dumps(ec_private.as_dict(private=False))
    token = TicketEncrypter(load_public_key(as_jwk)).encrypt({"asset": "press-2"})
    assert json.loads(jwe.decrypt_compact(token, ec_private).plaintext or b"") == {
        "asset": "press-2"
    }
    with pytest.raises(ValueError, match="usable"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")

    chain = MaintenanceChain.packaged()
    assert [level.level for level in chain.levels] == [
        "line_maintenance",
        "plant_maintenance",
        "maintenance_management",
    ]
    assert (chain.start_level(1.0), chain.start_level(1.99), chain.start_level(2.0)) == (0, 0, 1)


async def test_without_a_team_key_the_ticket_is_withheld_not_stored_in_the_clear(
    desk: Desk,
) -> None:
    desk.runtime.tickets.encrypter = None  # as when LINEGATE_MAINTENANCE_PUBLIC_KEY is unset
    await desk.raise_signal(
        incident_type="pdm_alert",
        dedup_key="pdm:press-9",
        evidence={"asset": "press-9", "ewma": 0.9, "threshold": 0.5, "windows": 7},
    )
    [ticket] = await tickets(desk)
    assert ticket["jwe"] is None
    assert ticket["delivery"].startswith("withheld")
    assert await desk.last_on(Subjects.maintenance_ticket("line_maintenance")) is None
