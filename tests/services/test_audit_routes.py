"""Every state-changing route of every service appends to its audit log (EU AI Act Art. 12).

How the check works (tests/services/audit_probe.py): each service app is created from its
factory and all its routes are walked: the OpenAPI paths and every route object, inside
included routers and mounts, including those left out of the schema (the attestation
portal's forms). Every POST/PUT/PATCH/DELETE route must be either driven below with a valid
request or listed in :data:`EXEMPT` with the reason (and still driven, so that the probe sees
it change no table). Each request is sent as a subject minted for that request alone (or, in
the portal, a client created for that browser session alone), and the probe records whether
any table of the service changed and whether an audit entry *by that subject* was appended
while the request ran. The test fails when

- a request changed tables without its caller's audit entry (success or refusal alike: a
  refusal must not leave an unaudited record behind),
- a state-changing request was accepted (2xx, or a form's 303 See Other) without its caller's
  audit entry (unless exempt),
- a state-changing route was never driven to an acceptance with its entry (a new route nobody
  taught this test fails here until a driver step is added), an exempt route was never
  driven, or an exemption names a route that no longer exists.

So an entry is not just declared: it is observed, in the same request, by the right actor.
:func:`test_the_check_catches_a_route_without_an_audit_entry` shows the check failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import RedirectResponse

from attestation.app import create_app as create_attestation
from attestation.settings import AttestationSettings
from edge_gateway.app import create_app as create_gateway
from edge_gateway.settings import GatewaySettings
from linegate.auth import Role
from linegate.embedded import NatsServer, free_port
from linegate.service import SessionDep, create_service_app
from linegate.signing import IN_TOTO_PAYLOAD_TYPE, dsse_sign, generate_private_key, public_key_pem
from registry.app import MIGRATIONS as REGISTRY_MIGRATIONS
from registry.app import create_app as create_registry
from registry.models import InventoryCandidate
from registry.settings import RegistrySettings
from tests.edge_gateway.test_rollouts import (
    DEVICES,
    PLANT,
    T0,
    Plant,
    _no_periodic_evaluator,  # noqa: F401 - autouse
    stage,
)
from tests.registry.conftest import (
    MODEL,
    SYSTEM,
    RegistryClient,
    golden_npz,
    multipart,
    system_body,
)
from tests.services.audit_probe import (
    AuditProbe,
    audit_problems,
    route_objects,
    schema_path,
    schema_routes,
    state_changing_routes,
)

#: (service, method, route) -> why the route appends no audit entry. The probe still checks
#: that the route changes no table when it is driven.
EXEMPT: dict[tuple[str, str, str], str] = {
    ("attestation", "POST", "/oauth/token"): (
        "issues a short-lived bearer token from stored client credentials; it changes no record "
        "(RFC 6749 token endpoint, form-encoded, no bearer token of its own)"
    ),
    ("attestation", "POST", "/portal/login"): (
        "portal sign-in: the client-credentials grant of /oauth/token, kept in a session "
        "cookie; it issues a short-lived token and changes no record"
    ),
    ("attestation", "POST", "/portal/logout"): (
        "portal sign-out: clears the session cookie; no record to change"
    ),
    **{
        ("attestation", method, "/portal/{rest:path}"): (
            "the portal's catch-all: a 404 page for any path it does not serve"
        )
        for method in ("POST", "PUT", "PATCH", "DELETE")
    },
    ("registry", "POST", "/v1/models/{name}/versions/{version}/verify"): (
        "re-hashes the stored files and checks the signature now; reads only (POST because the "
        "work is not cacheable)"
    ),
}

#: Routes that landed while this test was written and still need a driver step. Unlike EXEMPT,
#: these are NOT known to append to the audit log; a route listed here that the drivers prove
#: fails the test until it is removed. Any route added after this list fails the test until
#: it is driven or listed.
PENDING_DRIVER: dict[tuple[str, str, str], str] = {}

Driver = Callable[[AuditProbe], Awaitable[None]]


async def common_steps(probe: AuditProbe) -> None:
    """Routes every service has (linegate.service)."""
    await probe.call("POST", "/v1/audit/checkpoints", Role.AUDITOR, expect=201)


# ---------------------------------------------------------------------------- attestation


async def drive_attestation(probe: AuditProbe) -> None:
    key = generate_private_key()
    p = Role.PROCUREMENT
    sup = "optivision"
    body = {"id": sup, "name": "Optivision GmbH", "contacts": []}
    await probe.call("POST", "/v1/suppliers", p, json=body, expect=201)
    pem = public_key_pem(key.public_key()).decode()
    r = await probe.call("POST", f"/v1/suppliers/{sup}/keys", p, json={"public_key_pem": pem})
    assert r.status_code == 201, r.text
    key_id = r.json()["key_id"]
    identity = {"issuer": "https://token.actions.githubusercontent.com", "subject_pattern": ".*"}
    await probe.call("POST", f"/v1/suppliers/{sup}/identities", p, json=identity, expect=201)
    await probe.call("POST", f"/v1/suppliers/{sup}/clients", p, json={}, expect=201)
    sla = {
        "required_evidence": {"model": ["slsa-provenance-v1"]},
        "max_attestation_age_days": 90,
        "vulnerability_response_days": 5,
    }
    await probe.call("PUT", f"/v1/suppliers/{sup}/sla", p, json=sla, expect=200)
    digest = hashlib.sha256(b"model").hexdigest()
    artefact = {"name": "m 1.0", "kind": "model", "digest": f"sha256:{digest}"}
    await probe.call("POST", f"/v1/suppliers/{sup}/artefacts", p, json=artefact, expect=201)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model.onnx", "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {"buildType": "https://x.example/b", "externalParameters": {}},
            "runDetails": {"builder": {"id": "https://ci.example"}},
        },
    }
    envelope = dsse_sign(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, key)
    await probe.call(
        "POST",
        "/v1/attestations",
        Role.SUPPLIER,
        tenant=sup,
        content=json.dumps(envelope).encode(),
        headers={"content-type": "application/vnd.dsse.envelope.v1+json"},
        expect=201,
    )
    # A refused upload is recorded as a rejection: the record must come with its entry.
    forged = dsse_sign(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, generate_private_key())
    r = await probe.call(
        "POST",
        "/v1/attestations",
        Role.SUPPLIER,
        tenant=sup,
        content=json.dumps(forged).encode(),
        headers={"content-type": "application/vnd.dsse.envelope.v1+json"},
    )
    assert r.status_code == 422, r.text
    notice = {"kind": "vulnerability", "reference": "CVE-2026-0001"}
    r = await probe.call("POST", f"/v1/suppliers/{sup}/notices", p, json=notice, expect=201)
    await probe.call(
        "POST",
        f"/v1/suppliers/{sup}/notices/{r.json()['id']}/response",
        Role.SUPPLIER,
        tenant=sup,
        json={"response": "patched in 1.0.1"},
        expect=200,
    )
    await drive_portal(probe, sup, key, statement)
    await probe.call(
        "POST",
        f"/v1/suppliers/{sup}/keys/{key_id}/revoke",
        p,
        json={"reason": "rotated"},
        expect=200,
    )
    client = {"roles": ["auditor"], "description": "audit firm"}
    r = await probe.call("POST", "/v1/clients", Role.ADMIN, json=client, expect=201)
    creds = r.json()
    form = {
        "grant_type": "client_credentials",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
    }
    await probe.call("POST", "/oauth/token", data=form, expect=200)
    await common_steps(probe)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


@contextlib.asynccontextmanager
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar of its own: one person in the portal."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def drive_portal(probe: AuditProbe, sup: str, key: Any, statement: dict[str, Any]) -> None:
    """The portal's forms (/portal, left out of the OpenAPI schema), as a supplier's browser
    would send them. Each session is a client created for it alone, so an audit entry by
    that client can only come from that session's requests."""

    async def signed_in(web: httpx.AsyncClient) -> str:
        r = await probe.call("POST", f"/v1/suppliers/{sup}/clients", Role.PROCUREMENT, json={})
        assert r.status_code == 201, r.text
        client_id, secret = str(r.json()["client_id"]), str(r.json()["client_secret"])
        form = {"client_id": client_id, "client_secret": secret}
        nonce = csrf_of(await web.get("/portal/login"))
        # Refused sign-ins change nothing: a wrong secret, a missing nonce.
        wrong = {**form, "client_secret": secret + "x", "csrf": nonce}
        await probe.call_as(web, client_id, "POST", "/portal/login", data=wrong, expect=401)
        await probe.call_as(web, client_id, "POST", "/portal/login", data=form, expect=403)
        r = await probe.call_as(
            web, client_id, "POST", "/portal/login", data={**form, "csrf": nonce}, expect=303
        )
        assert r.headers["location"] == "/portal/", r.headers
        return client_id

    def upload(document: bytes, csrf: str | None) -> dict[str, Any]:
        return {
            "data": {"type": "auto"} | ({"csrf": csrf} if csrf else {}),
            "files": {"document": ("slsa.dsse.json", document, "application/json")},
        }

    other = {**statement, "subject": [{**statement["subject"][0], "name": "portal.onnx"}]}
    payload = json.dumps(other).encode()
    async with browser(probe.app) as web:
        # No session: sent to sign in, nothing recorded.
        r = await probe.call_as(
            web, "nobody", "POST", "/portal/upload", **upload(b"{}", None), expect=303
        )
        assert r.headers["location"].startswith("/portal/login"), r.headers
        me = await signed_in(web)
        csrf = csrf_of(await web.get("/portal/upload"))
        signed = json.dumps(dsse_sign(payload, IN_TOTO_PAYLOAD_TYPE, key)).encode()
        await probe.call_as(web, me, "POST", "/portal/upload", **upload(signed, None), expect=403)
        await probe.call_as(web, me, "POST", "/portal/upload", **upload(signed, csrf), expect=201)
    async with browser(probe.app) as web:
        # A rejected upload is recorded as a rejection, so it must bring its entry too.
        me = await signed_in(web)
        csrf = csrf_of(await web.get("/portal/upload"))
        forged = dsse_sign(payload, IN_TOTO_PAYLOAD_TYPE, generate_private_key())
        document = json.dumps(forged).encode()
        await probe.call_as(web, me, "POST", "/portal/upload", **upload(document, csrf), expect=422)
    notice = {"kind": "vulnerability", "reference": "CVE-2026-0002"}
    r = await probe.call("POST", f"/v1/suppliers/{sup}/notices", Role.PROCUREMENT, json=notice)
    assert r.status_code == 201, r.text
    url = f"/portal/notices/{r.json()['id']}/response"
    async with browser(probe.app) as web:
        me = await signed_in(web)
        csrf = csrf_of(await web.get("/portal/sla"))
        answer = {"response": "patched in 1.0.2"}
        await probe.call_as(web, me, "POST", url, data=answer, expect=403)
        r = await probe.call_as(web, me, "POST", url, data={**answer, "csrf": csrf}, expect=303)
        assert r.headers["location"] == "/portal/sla#notices", r.headers
        await probe.call_as(web, me, "POST", url, data={**answer, "csrf": csrf}, expect=409)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            await probe.call_as(web, me, method, "/portal/no-such-form", expect=404)
        await probe.call_as(web, me, "POST", "/portal/logout", data={"csrf": "forged"}, expect=403)
        r = await probe.call_as(web, me, "POST", "/portal/logout", data={"csrf": csrf}, expect=303)
        assert r.headers["location"] == "/portal/login", r.headers
        # Signed out: the cookie is gone, so the form sends the browser to sign in.
        r = await probe.call_as(web, me, "POST", url, data={**answer, "csrf": csrf}, expect=303)
        assert r.headers["location"].startswith("/portal/login"), r.headers


# ------------------------------------------------------------------------------- registry


def _system(tier: int = 2) -> dict[str, Any]:
    return system_body(tier=tier)


async def drive_registry(probe: AuditProbe, *, tmp: Any) -> None:
    w = Role.REGISTRY_APPROVE
    await probe.call("POST", "/v1/inventory/systems", w, json=_system(), expect=201)
    patch = {"lines": ["line3"], "reason": "line 3 only"}
    await probe.call("PATCH", f"/v1/inventory/systems/{SYSTEM}", w, json=patch, expect=200)
    candidate = {"source": "mes-notes.txt", "passage": "AI-based scheduling assistant"}
    r = await probe.call("POST", "/v1/inventory/candidates", w, json=candidate, expect=201)
    decision = {"decision": "confirm", "reason": "it is ours", "system_id": SYSTEM}
    await probe.call(
        "POST", f"/v1/inventory/candidates/{r.json()['id']}/decision", w, json=decision, expect=200
    )
    await probe.call("POST", "/v1/competence", w, sub="qa-lead", json=_training(), expect=201)
    line = {"name": MODEL, "system_id": SYSTEM, "critical_classes": ["scratch"]}
    await probe.call("POST", "/v1/models", w, json=line, expect=201)
    await probe.call(
        "POST",
        f"/v1/models/{MODEL}/golden-sets",
        w,
        content=golden_npz(),
        headers={"content-type": "application/octet-stream"},
        expect=201,
    )
    helper = RegistryClient(client=None, app=None, mint=None, tmp=tmp)
    meta = {"version": "2.1.0", "metrics": {"accuracy": 0.99}}
    await probe.call(
        "POST",
        f"/v1/models/{MODEL}/versions",
        w,
        sub="dana-datasci",
        **multipart(meta, helper.artefact("2.1.0")),
        expect=201,
    )
    version = f"/v1/models/{MODEL}/versions/2.1.0"
    await probe.call("POST", f"{version}/verify", Role.AUDITOR, expect=200)
    await probe.call("POST", f"{version}/validate", w, expect=201)
    # Refusals change nothing: a self-approval, a rationale too short to record.
    approval = {"decision": "approve", "rationale": "Golden set reviewed, no regression found."}
    await probe.call(
        "POST", f"{version}/approvals", w, sub="dana-datasci", json=approval, expect=403
    )
    short = {"decision": "approve", "rationale": "ok"}
    await probe.call("POST", f"{version}/approvals", w, sub="bea-approver", json=short, expect=422)
    await probe.call("POST", f"{version}/approvals", w, sub="alex-approver", json=approval)
    await probe.call("POST", f"{version}/release", w, json={"note": "canary"}, expect=200)
    await probe.call("POST", f"{version}/evidence-bundle", Role.AUDITOR, expect=200)
    r = await probe.call("GET", "/v1/competence", Role.AUDITOR, expect=200)
    record = r.json()[0]["id"]
    await probe.call(
        "POST",
        f"/v1/competence/{record}/revoke",
        w,
        sub="qa-lead",
        json={"reason": "left the company"},
        expect=200,
    )
    await probe.call("POST", f"{version}/revoke", w, json={"reason": "escapes"}, expect=200)
    await common_steps(probe)


def _training() -> dict[str, Any]:
    return {
        "person": "alex-approver",
        "role": "approver",
        "system_id": SYSTEM,
        "course": "Release approval for weld-seam inspection",
        "valid_until": "2099-01-01T00:00:00Z",
    }


# --------------------------------------------------------------------------- edge gateway


async def drive_gateway(probe: AuditProbe, plant: Plant) -> None:
    ops = Role.REGISTRY_APPROVE
    for version in ("2.0.4", "2.1.0"):
        r = await probe.call("POST", f"/v1/releases/{MODEL}/{version}/distribute", ops)
        assert r.status_code == 200, r.text
    for device_id, line in DEVICES.items():
        body = {"id": device_id, "plant": PLANT, "line": line, "station": "W3"}
        await probe.call("POST", "/v1/devices", Role.ADMIN, json=body, expect=201)
    base = {"model": MODEL, "version": "2.0.4", "selector": {"plant": PLANT}, "reason": "base"}
    await probe.call("POST", "/v1/assignments", ops, json=base, expect=200)
    window = {"days": ["mon"], "start": "05:45", "end": "06:15", "tz": "Europe/Berlin"}
    calendar = {"windows": [window], "reason": "changeover"}
    for path in (f"/v1/maintenance-windows/{PLANT}/line9", f"/v1/maintenance-windows/{PLANT}x"):
        await probe.call("PUT", path, ops, json=calendar, expect=200)
        await probe.call("DELETE", path, ops, params={"reason": "not needed"}, expect=204)

    async def create(stages: list[dict[str, Any]]) -> str:
        body = {
            "model": MODEL,
            "version": "2.1.0",
            "selector": {"plant": PLANT},
            "stages": stages,
            "reason": "fewer false rejects",
        }
        r = await probe.call("POST", "/v1/rollouts", ops, json=body, expect=201)
        return str(r.json()["id"])

    async def cmd(rollout: str, action: str) -> None:
        path = f"/v1/rollouts/{rollout}/{action}"
        await probe.call("POST", path, ops, json={"reason": f"{action} now"}, expect=200)

    rollout = await create(
        [
            stage(count=1, soak_seconds=0, min_inferences=0),
            stage("percent", percent=100, soak_seconds=0, min_inferences=0, require_approval=True),
        ]
    )
    await cmd(rollout, "start")
    await plant.tick(T0)
    await plant.active(rollout, "cam-3-1")
    assert await plant.tick(T0 + timedelta(seconds=1)) == {rollout: "awaiting_approval"}
    await cmd(rollout, "pause")
    await cmd(rollout, "resume")
    await cmd(rollout, "approve-next-stage")
    await cmd(rollout, "rollback")
    other = await create([stage(line="line3")])
    await cmd(other, "start")
    await cmd(other, "abort")
    await common_steps(probe)


# ------------------------------------------------------------------------------- incident


# The incident service's steps are in tests/services/incident_steps.py.


# ---------------------------------------------------------------------------------- tests


def _report(problems: list[str]) -> str:
    return "\n".join(problems)


async def test_every_attestation_route_appends_to_the_audit_log(
    settings_factory: Any, service_client: Any, mint_token: Any
) -> None:
    # The SLA evaluator writes breaches on its own schedule: kept out of the probed requests.
    settings = settings_factory(AttestationSettings, sla_evaluation_interval_seconds=86400)
    app = create_attestation(settings)
    async with service_client(app) as client:
        probe = AuditProbe("attestation", app, client, mint_token)
        await drive_attestation(probe)
    assert not (problems := audit_problems(probe, EXEMPT)), _report(problems)


async def test_every_registry_route_appends_to_the_audit_log(
    settings_factory: Any, service_client: Any, mint_token: Any, tmp_path: Any
) -> None:
    app = create_registry(settings_factory(RegistrySettings))
    async with service_client(app) as client:
        probe = AuditProbe("registry", app, client, mint_token)
        await drive_registry(probe, tmp=tmp_path)
    assert not (problems := audit_problems(probe, EXEMPT)), _report(problems)


async def test_every_gateway_route_appends_to_the_audit_log(
    settings_factory: Any,
    service_client: Any,
    serve_http: Any,
    mint_token: Any,
    nats_server: Any,
    tmp_path: Any,
) -> None:
    # The registry publishes its release events on a NATS of its own, so the gateway learns of
    # the releases only through the distribute route the probe drives.
    registry_nats = NatsServer(tmp_path / "registry-nats").start()
    try:
        registry_app = create_registry(
            settings_factory(RegistrySettings, nats_url=registry_nats.url)
        )
        url = serve_http(registry_app)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            registry = RegistryClient(client=http, app=registry_app, mint=mint_token, tmp=tmp_path)
            await registry.create_system(tier=2)
            await registry.create_model()
            assert (await registry.add_golden_set()).status_code == 201
            for version, sv in (("2.0.4", 1), ("2.1.0", 2)):
                await registry.to_validated(version, security_version=sv)
                assert (await registry.decide(version, "alex-approver")).status_code == 201
                assert (await registry.release(version)).status_code == 200
        app = create_gateway(settings_factory(GatewaySettings, registry_url=url))
        async with service_client(app) as client:
            nc = await nats.connect(nats_server.url)
            try:
                probe = AuditProbe("edge-gateway", app, client, mint_token)
                await drive_gateway(probe, Plant(client, app, mint_token, nc))
            finally:
                await nc.close()
    finally:
        registry_nats.stop()
    assert not (problems := audit_problems(probe, EXEMPT)), _report(problems)


async def test_every_incident_route_appends_to_the_audit_log(
    settings_factory: Any, service_client: Any, mint_token: Any, nats_server: Any
) -> None:
    # Imported here so a half-built incident package cannot stop the other services' checks.
    from incident.app import create_app as create_incident
    from incident.settings import IncidentSettings
    from tests.services.incident_steps import drain_outbox, drive_incident, settings_for_probe

    # Nothing listens on the registry's port: monitors take the configured default tier.
    settings = settings_for_probe(registry_url=f"http://127.0.0.1:{free_port()}")
    app = create_incident(settings_factory(IncidentSettings, **settings))
    async with service_client(app) as client:
        nc = await nats.connect(nats_server.url)
        try:
            probe = AuditProbe("incident", app, client, mint_token)
            await drive_incident(probe, nc)
            await common_steps(probe)
            await drain_outbox(app)
        finally:
            await nc.close()
    problems = audit_problems(probe, EXEMPT, PENDING_DRIVER)
    assert not problems, _report(problems)


async def test_the_check_catches_a_route_without_an_audit_entry(
    settings_factory: Any, service_client: Any, mint_token: Any
) -> None:
    router = APIRouter()

    @router.post("/v1/sneaky", status_code=201)
    async def sneaky(session: SessionDep) -> dict[str, str]:
        # A record written with no audit entry: exactly what the check exists to catch.
        row = _candidate("c1")
        session.add(row)
        return {"id": row.id}

    @router.put("/v1/untested")
    async def untested() -> dict[str, str]:
        return {}

    @router.delete("/v1/silent", status_code=204)
    async def silent() -> None:
        return None  # accepted, changes nothing, and says nothing of it in the log

    # A form left out of the schema, in a router inside a router (as the portal's are).
    forms = APIRouter(prefix="/forms", include_in_schema=False)

    @forms.post("/note")
    async def note(session: SessionDep) -> Response:
        session.add(_candidate("c2"))
        return RedirectResponse("/portal/forms/done", status_code=303)

    portal = APIRouter(prefix="/portal")
    portal.include_router(forms)

    settings = settings_factory(RegistrySettings)
    app: FastAPI = create_service_app(
        settings, title="t", routers=[router, portal], migrations=REGISTRY_MIGRATIONS
    )
    assert ("POST", "/v1/sneaky") in state_changing_routes(app)
    assert ("POST", "/portal/forms/note") in state_changing_routes(app)
    assert ("POST", "/portal/forms/note") not in schema_routes(app)
    async with service_client(app) as client:
        probe = AuditProbe("registry", app, client, mint_token)
        await probe.call("POST", "/v1/sneaky", expect=201)
        await probe.call("DELETE", "/v1/silent", expect=204)
        await probe.call("POST", "/portal/forms/note", expect=303)
        await common_steps(probe)
    problems = audit_problems(probe, {})
    for expected in (
        "POST /v1/sneaky -> 201 changed ['inventory_candidate'] without an audit entry",
        "POST /portal/forms/note -> 303 changed ['inventory_candidate'] without an audit entry",
        "DELETE /v1/silent -> 204 was accepted without an audit entry by its caller",
        "PUT /v1/untested is not known to append",
        "POST /v1/sneaky is not known to append",
        "POST /portal/forms/note is not known to append",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert not any("/v1/audit/checkpoints" in p for p in problems), problems
    # Exemptions are checked too: one never driven, one for a route that is gone, and a
    # pending route that meanwhile audits.
    exempt = {("registry", "PUT", "/v1/untested"): "r", ("registry", "POST", "/v1/gone"): "r"}
    pending = {("registry", "POST", "/v1/audit/checkpoints"): "r"}
    problems = audit_problems(probe, exempt, pending)
    for expected in (
        "PUT /v1/untested is exempt but never driven",
        "exemption for POST /v1/gone, a route it lacks",
        "POST /v1/audit/checkpoints is pending a driver but now proven",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert not any("PUT /v1/untested is not known" in p for p in problems), problems


def _candidate(row_id: str) -> InventoryCandidate:
    return InventoryCandidate(
        id=row_id,
        source="s",
        location="",
        passage="p",
        created_at=datetime.now(UTC),
        created_by="x",
    )


@pytest.mark.parametrize(
    "module", ["attestation.app", "registry.app", "edge_gateway.app", "incident.app"]
)
def test_routes_are_found_without_starting_the_app(module: str) -> None:
    # Walking the routes needs only the factory (nothing is built at import or creation time).
    app = importlib.import_module(module).create_app()
    assert ("POST", "/v1/audit/checkpoints") in state_changing_routes(app)
    # The walk over route objects sees at least what the schema sees (so it looks inside
    # the included routers), and more where routes are left out of the schema.
    objects = {(m, schema_path(p)) for m, p in route_objects(app)}
    assert schema_routes(app) <= objects, schema_routes(app) - objects
    if module == "attestation.app":
        hidden = {("POST", "/portal/upload"), ("POST", "/portal/notices/{notice_id}/response")}
        assert hidden <= route_objects(app) - schema_routes(app)
