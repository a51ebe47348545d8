"""The supplier and procurement portal (/portal): sign-in with real OAuth2 client credentials,
tenancy, uploads through the real ingest path, CSRF, sessions, escaping and headers. Each test
drives the real app (SQLite and PostgreSQL) through httpx, one cookie jar per browser."""

import base64
import hashlib
import html
import json
import re
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import markupsafe
import pytest

from attestation.app import create_app
from attestation.settings import AttestationSettings
from attestation.verification import aware_utc
from linegate.auth import Role

from .conftest import DSSE, MODEL_SUBJECT, SLSA_V1, Stack, sign, slsa_predicate, statement

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def browser(stack, scheme="http"):
    """A separate client with its own cookie jar (one signed-in user)."""
    transport = httpx.ASGITransport(app=stack.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://testserver") as client:
        yield client


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


async def supplier_client(stack, supplier_id):
    r = await stack.client.post(
        f"/v1/suppliers/{supplier_id}/clients", headers=stack.token(Role.PROCUREMENT)
    )
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


async def staff_client(stack, role=Role.PROCUREMENT):
    r = await stack.client.post(
        "/v1/clients", json={"roles": [role.value]}, headers=stack.token(Role.ADMIN)
    )
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


async def sign_in(client, client_id, secret):
    form = await client.get("/portal/login")
    assert form.status_code == 200
    return await client.post(
        "/portal/login",
        data={"csrf": csrf_of(form), "client_id": client_id, "client_secret": secret},
    )


def subject(name: str):
    return [{"name": name, "digest": {"sha256": hashlib.sha256(name.encode()).hexdigest()}}]


def envelope(key, subjects=MODEL_SUBJECT):
    return sign(key, statement(subjects, SLSA_V1, slsa_predicate()))


async def upload_form(client, document: bytes, *, csrf: str | None, doc_type="auto"):
    data = {"type": doc_type}
    if csrf is not None:
        data["csrf"] = csrf
    return await client.post(
        "/portal/upload",
        data=data,
        files={"document": ("slsa.dsse.json", document, "application/json")},
    )


# ---------------------------------------------------------------------------- sign-in


async def test_sign_in_with_client_credentials_then_sign_out(stack):
    await stack.onboard("optivision")
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        r = await sign_in(client, client_id, secret)
        assert r.status_code == 303
        assert r.headers["location"] == "/portal/"
        cookie = next(
            h for h in r.headers.get_list("set-cookie") if h.startswith("linegate_portal=")
        )
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/portal"} <= attributes
        assert "secure" not in attributes  # plain http here; https sets Secure
        token = client.cookies["linegate_portal"]
        # The cookie is an access token of the issuer, good for the API too.
        who = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert (who.json()["tenant"], who.json()["roles"]) == ("optivision", ["supplier"])

        home = await client.get("/portal/")
        assert (home.status_code, home.headers["location"]) == (303, "/portal/attestations")
        page = await client.get("/portal/attestations")
        assert page.status_code == 200
        assert "My attestations" in page.text

        out = await client.post("/portal/logout", data={"csrf": csrf_of(page)})
        assert (out.status_code, out.headers["location"]) == (303, "/portal/login")
        assert "linegate_portal" not in client.cookies
        again = await client.get("/portal/attestations")
        assert again.status_code == 303
        assert again.headers["location"].startswith("/portal/login")


async def test_over_https_the_session_cookie_is_secure(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack, scheme="https") as client:
        r = await sign_in(client, client_id, secret)
        cookie = next(
            h for h in r.headers.get_list("set-cookie") if h.startswith("linegate_portal=")
        )
        assert "secure" in {a.strip().lower() for a in cookie.split(";")[1:]}
        assert (await client.get("/portal/attestations")).status_code == 200


@pytest.mark.parametrize("which", ["wrong-secret", "unknown-client", "empty"])
async def test_sign_in_refuses_bad_credentials(stack, which):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    client_id, secret = {
        "wrong-secret": (client_id, secret + "x"),
        "unknown-client": ("nobody-123", secret),
        "empty": ("", ""),
    }[which]
    async with browser(stack) as client:
        r = await sign_in(client, client_id, secret)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("text/html")
        assert "Sign-in refused" in r.text
        assert "linegate_portal" not in client.cookies
        assert (await client.get("/portal/attestations")).status_code == 303


async def test_sign_in_form_needs_its_csrf_nonce(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await client.get("/portal/login")
        for csrf in (None, "forged"):
            data = {"client_id": client_id, "client_secret": secret}
            if csrf:
                data["csrf"] = csrf
            r = await client.post("/portal/login", data=data)
            assert r.status_code == 403
            assert r.headers["content-type"].startswith("text/html")
            assert "linegate_portal" not in client.cookies


async def test_a_pasted_token_signs_in_during_development(stack):
    async with browser(stack) as client:
        form = await client.get("/portal/login")
        token = stack.mint(Role.PROCUREMENT)
        r = await client.post("/portal/login", data={"csrf": csrf_of(form), "token": token})
        assert (r.status_code, client.cookies["linegate_portal"]) == (303, token)
        assert (await client.get("/portal/suppliers")).status_code == 200
        form = await client.get("/portal/login")
        bad = await client.post("/portal/login", data={"csrf": csrf_of(form), "token": "x.y.z"})
        assert bad.status_code == 401
        device = stack.mint(Role.DEVICE, device_id="cam-1")
        form = await client.get("/portal/login")
        r = await client.post("/portal/login", data={"csrf": csrf_of(form), "token": device})
        assert r.status_code == 403


@pytest.mark.parametrize("cookie", ["garbage", "expired", "foreign-issuer"])
async def test_an_invalid_session_cookie_sends_the_browser_to_sign_in(stack, cookie, tmp_path):
    from linegate.auth import TokenIssuer
    from linegate.settings import LinegateSettings

    await stack.onboard("optivision", key=False)
    value = {
        "garbage": "not-a-jwt",
        # Issued two hours ago with the default 15-minute lifetime.
        "expired": stack.mint(Role.SUPPLIER, tenant="optivision", now=time.time() - 7200),
        "foreign-issuer": TokenIssuer.embedded(LinegateSettings(data_dir=tmp_path / "other")).issue(
            "x", [Role.PROCUREMENT]
        )[0],
    }[cookie]
    async with browser(stack) as client:
        # The same cookie with a valid token is a session (so the redirect below is the
        # token's doing). Cookie jars file a dotless host's cookies under "<host>.local".
        good = stack.mint(Role.SUPPLIER, tenant="optivision")
        client.cookies.set("linegate_portal", good, domain="testserver.local", path="/portal")
        assert (await client.get("/portal/attestations")).status_code == 200
        client.cookies.set("linegate_portal", value, domain="testserver.local", path="/portal")
        r = await client.get("/portal/attestations?status=verified")
        assert r.status_code == 303
        assert (
            r.headers["location"]
            == "/portal/login?next=%2Fportal%2Fattestations%3Fstatus%3Dverified"
        )
        assert "linegate_portal" not in client.cookies  # the bad cookie is cleared
        # A form POST with it is not carried out either.
        client.cookies.set("linegate_portal", value, domain="testserver.local", path="/portal")
        r = await client.post("/portal/notices/n1/response", data={"response": "x"})
        assert r.status_code == 303


# ---------------------------------------------------------------------------- tenancy


@pytest.fixture
async def two_suppliers(stack):
    opti = await stack.onboard("optivision")
    acme = await stack.onboard("acme")
    mine = await stack.upload("optivision", envelope(opti, subject("opti-model.onnx")))
    theirs = await stack.upload("acme", envelope(acme, subject("acme-secret-model.onnx")))
    assert mine.status_code == theirs.status_code == 201
    return stack, mine.json()["id"], theirs.json()["id"]


async def test_a_supplier_sees_only_its_own_attestations(two_suppliers):
    stack, mine, theirs = two_suppliers
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        assert (await sign_in(client, client_id, secret)).status_code == 303
        for url in (
            "/portal/attestations",
            "/portal/attestations?supplier=acme",  # not a way to widen the view
            "/portal/attestations?status=verified",
        ):
            page = await client.get(url)
            assert page.status_code == 200
            assert mine in page.text
            assert theirs not in page.text
            assert "acme-secret-model" not in page.text
        assert (await client.get(f"/portal/attestations/{mine}")).status_code == 200
        for url in (
            f"/portal/attestations/{theirs}",
            f"/portal/attestations/{theirs}/raw",
            "/portal/suppliers/acme",
        ):
            r = await client.get(url)
            assert r.status_code == 404, url
            assert r.headers["content-type"].startswith("text/html")
            assert "acme-secret-model" not in r.text
        assert (await client.get("/portal/suppliers")).status_code == 403


async def test_detail_and_raw_download_are_the_uploaded_record(two_suppliers):
    stack, mine, _ = two_suppliers
    client_id, secret = await supplier_client(stack, "optivision")
    api = await stack.client.get(
        f"/v1/attestations/{mine}/raw", headers=stack.token(Role.SUPPLIER, tenant="optivision")
    )
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        detail = await client.get(f"/portal/attestations/{mine}")
        assert "opti-model.onnx" in detail.text
        assert f'href="/portal/attestations/{mine}/raw"' in detail.text
        raw = await client.get(f"/portal/attestations/{mine}/raw")
        assert raw.status_code == 200
        assert raw.content == api.content
        assert raw.headers["content-disposition"].startswith("attachment")


async def test_filters_and_pages(stack):
    key = await stack.onboard("optivision")
    ids = []
    for i in range(3):
        r = await stack.upload("optivision", envelope(key, subject(f"model-{i}.onnx")))
        ids.append(r.json()["id"])
    rejected = await stack.upload("optivision", b'{"payloadType": 1}')
    assert rejected.status_code == 400
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        first = await client.get("/portal/attestations?status=verified&limit=2")
        assert [i for i in ids if i in first.text] == ids[1:]  # newest first
        match = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert match
        older = await client.get(html.unescape(match.group(1)))
        assert [i for i in ids if i in older.text] == ids[:1]
        assert rejected.json()["id"] not in first.text + older.text

        only_rejected = await client.get("/portal/attestations?status=rejected")
        assert rejected.json()["id"] in only_rejected.text
        assert not any(i in only_rejected.text for i in ids)
        digest = MODEL_SUBJECT[0]["digest"]["sha256"]
        by_digest = await client.get(
            "/portal/attestations",
            params={"subject_digest": "sha256:" + subject("model-1.onnx")[0]["digest"]["sha256"]},
        )
        assert [i for i in ids if i in by_digest.text] == [ids[1]]
        none = await client.get(
            "/portal/attestations", params={"subject_digest": f"sha256:{digest}"}
        )
        assert "No attestations match" in none.text
        by_type = await client.get(
            "/portal/attestations", params={"predicate_type": SLSA_V1, "status": ""}
        )
        assert all(i in by_type.text for i in ids)
        bad = await client.get("/portal/attestations?status=bogus")
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("text/html")


# ----------------------------------------------------------------------------- upload


async def test_upload_of_a_signed_envelope_verifies(stack):
    key = await stack.onboard("optivision")
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        form = await client.get("/portal/upload")
        assert form.status_code == 200
        document = envelope(key)
        r = await upload_form(client, document, csrf=csrf_of(form))
        assert r.status_code == 201, r.text
        assert "Recorded." in r.text
        assert 'status-verified">verified' in r.text
        again = await upload_form(client, document, csrf=csrf_of(form))
        assert again.status_code == 200  # same bytes: the earlier record
        assert "uploaded before" in again.text
    listing = await stack.client.get(
        "/v1/attestations", headers=stack.token(Role.SUPPLIER, tenant="optivision")
    )
    [record] = listing.json()["items"]
    assert record["status"] == "verified"
    assert record["raw_digest"] == "sha256:" + hashlib.sha256(document).hexdigest()
    assert record["id"] in r.text


async def test_a_tampered_upload_shows_every_reason_and_is_recorded_as_rejected(stack):
    key = await stack.onboard("optivision")
    await stack.onboard("acme")
    doc = json.loads(envelope(key))
    # Another statement under the original signature.
    doc["payload"] = base64.b64encode(
        statement(subject("swapped.onnx"), SLSA_V1, slsa_predicate())
    ).decode()
    tampered = json.dumps(doc).encode()
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        form = await client.get("/portal/upload")
        r = await upload_form(
            client, tampered, csrf=csrf_of(form), doc_type="application/vnd.dsse.envelope.v1+json"
        )
        assert r.status_code == 422
        assert "Rejected" in r.text
    listing = await stack.client.get(
        "/v1/attestations?status=rejected", headers=stack.token(Role.PROCUREMENT)
    )
    [record] = listing.json()["items"]
    assert record["supplier"] == "optivision"
    assert record["reasons"]
    for reason in record["reasons"]:
        assert f"<li>{markupsafe.escape(reason)}</li>" in r.text


async def test_upload_without_the_csrf_token_is_refused_and_records_nothing(stack):
    key = await stack.onboard("optivision")
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        for csrf in (None, "0" * 64):
            r = await upload_form(client, envelope(key), csrf=csrf)
            assert r.status_code == 403
            assert r.headers["content-type"].startswith("text/html")
    listing = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert listing.json()["items"] == []


async def test_upload_of_an_unknown_document_or_type_is_refused_with_a_page(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        csrf = csrf_of(await client.get("/portal/upload"))
        r = await upload_form(client, b"just some text", csrf=csrf)
        assert r.status_code == 422
        assert "choose its type" in r.text
        r = await upload_form(client, b"{}", csrf=csrf, doc_type="text/plain")
        assert r.status_code == 415


@pytest.fixture
async def small_stack(settings_factory, service_client, mint_token):
    app = create_app(settings_factory(AttestationSettings, attestation_max_bytes=2048))
    async with service_client(app) as client:
        yield Stack(client=client, app=app, mint=mint_token)


@pytest.mark.parametrize(
    "size",
    [
        4096,  # the form fits its own bound; the API refuses the file
        200 * 1024,  # refused from the form's declared length, before it is read
    ],
)
async def test_upload_over_the_size_limit_is_refused(small_stack, size):
    stack = small_stack
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        csrf = csrf_of(await client.get("/portal/upload"))
        document = b'{"payloadType": "' + b"a" * size + b'"}'
        r = await upload_form(client, document, csrf=csrf, doc_type=DSSE)
        assert r.status_code == 413
        assert "2048-byte limit" in r.text
    listing = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert listing.json()["items"] == []


# ------------------------------------------------------------------------ SLA, notices


async def test_supplier_sla_scorecard_and_notice_response(stack):
    await stack.onboard("optivision", key=False)
    staff = stack.token(Role.PROCUREMENT)
    terms = {"required_evidence": {"model": ["slsa-provenance-v1"]}, "max_attestation_age_days": 90}
    assert (
        await stack.client.put("/v1/suppliers/optivision/sla", json=terms, headers=staff)
    ).status_code == 200
    digest = MODEL_SUBJECT[0]["digest"]["sha256"]
    r = await stack.client.post(
        "/v1/suppliers/optivision/artefacts",
        json={"name": "weld-seam-inspector 2.1.0", "kind": "model", "digest": f"sha256:{digest}"},
        headers=staff,
    )
    assert r.status_code == 201
    notice = await stack.client.post(
        "/v1/suppliers/optivision/notices",
        json={"kind": "vulnerability", "reference": "CVE-2026-1234"},
        headers=staff,
    )
    notice_id = notice.json()["id"]
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        page = await client.get("/portal/sla?expiring_within_days=10")
        assert page.status_code == 200
        assert "no verified slsa-provenance-v1 for weld-seam-inspector 2.1.0" in page.text
        assert "Coverage: <strong>0%</strong>" in page.text
        assert "CVE-2026-1234" in page.text
        assert f'action="/portal/notices/{notice_id}/response"' in page.text

        url = f"/portal/notices/{notice_id}/response"
        forged = await client.post(url, data={"response": "patched"})
        assert forged.status_code == 403
        answered = await client.post(url, data={"response": "patched", "csrf": csrf_of(page)})
        assert (answered.status_code, answered.headers["location"]) == (303, "/portal/sla#notices")
        twice = await client.post(url, data={"response": "again", "csrf": csrf_of(page)})
        assert twice.status_code == 409
        assert twice.headers["content-type"].startswith("text/html")
        page = await client.get("/portal/sla")
        assert "Answered" in page.text
        assert f'action="/portal/notices/{notice_id}/response"' not in page.text
    notices = await stack.client.get("/v1/suppliers/optivision/notices", headers=staff)
    assert notices.json()[0]["response"] == "patched"


async def test_a_supplier_cannot_answer_another_suppliers_notice(stack):
    await stack.onboard("optivision", key=False)
    await stack.onboard("acme", key=False)
    notice = await stack.client.post(
        "/v1/suppliers/acme/notices",
        json={"kind": "incident", "reference": "INC-7"},
        headers=stack.token(Role.PROCUREMENT),
    )
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        csrf = csrf_of(await client.get("/portal/sla"))
        r = await client.post(
            f"/portal/notices/{notice.json()['id']}/response",
            data={"response": "not mine", "csrf": csrf},
        )
        assert r.status_code == 404
    notices = await stack.client.get(
        "/v1/suppliers/acme/notices", headers=stack.token(Role.PROCUREMENT)
    )
    assert notices.json()[0]["responded_at"] is None


# ------------------------------------------------------------------------ procurement


async def test_procurement_sees_every_scorecard_most_behind_first(two_suppliers):
    stack, mine, theirs = two_suppliers
    staff = stack.token(Role.PROCUREMENT)
    # optivision (alphabetically last) is behind: its model has SLSA provenance but no SBOM.
    # acme has no SLA at all.
    terms = {
        "required_evidence": {"model": ["slsa-provenance-v1", "cyclonedx|spdx-3"]},
        "max_attestation_age_days": 90,
        "performance_commitments": [{"metric": "recall", "model": "opti", "min": 0.98}],
    }
    r = await stack.client.put("/v1/suppliers/optivision/sla", json=terms, headers=staff)
    assert r.status_code == 200, r.text
    digest = subject("opti-model.onnx")[0]["digest"]["sha256"]
    r = await stack.client.post(
        "/v1/suppliers/optivision/artefacts",
        json={"name": "opti model", "kind": "model", "digest": f"sha256:{digest}"},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    r = await stack.client.post(
        "/v1/suppliers/optivision/identities",
        json={"issuer": "https://token.actions.githubusercontent.com", "subject_pattern": "^x$"},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    client_id, secret = await staff_client(stack)
    async with browser(stack) as client:
        r = await sign_in(client, client_id, secret)
        assert (await client.get(r.headers["location"])).headers["location"] == "/portal/suppliers"
        page = await client.get("/portal/suppliers")
        assert page.status_code == 200
        assert page.text.index('href="/portal/suppliers/optivision"') < page.text.index(
            'href="/portal/suppliers/acme"'
        )
        assert "50% (1/2)" in page.text
        record = await stack.client.get(f"/v1/attestations/{mine}", headers=staff)
        left = aware_utc(datetime.fromisoformat(record.json()["expires_at"])) - datetime.now(UTC)
        detail = await client.get(
            f"/portal/suppliers/optivision?expiring_within_days={left.days + 2}"
        )
        assert detail.status_code == 200
        assert "no verified cyclonedx|spdx-3 for opti model" in detail.text
        assert f"sha256:{digest}#slsa-provenance-v1" in detail.text  # in the expiring list
        assert "recall (opti) ≥ 0.98" in detail.text
        assert "https://token.actions.githubusercontent.com" in detail.text
        assert mine in detail.text
        assert theirs not in detail.text
        keys = await stack.client.get("/v1/suppliers/optivision/keys", headers=staff)
        assert keys.json()[0]["key_id"][:16] in detail.text
        soon = await client.get("/portal/suppliers/optivision?expiring_within_days=0")
        assert f"sha256:{digest}#slsa-provenance-v1" not in soon.text
        everything = await client.get("/portal/attestations")
        assert mine in everything.text
        assert theirs in everything.text
        only_acme = await client.get("/portal/attestations?supplier=acme")
        assert theirs in only_acme.text
        assert mine not in only_acme.text
        assert (await client.get("/portal/suppliers/nobody")).status_code == 404
        assert (await client.get("/portal/upload")).status_code == 403


async def test_auditors_read_but_devices_cannot_sign_in(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await staff_client(stack, Role.AUDITOR)
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        assert (await client.get("/portal/suppliers")).status_code == 200
        assert (await client.get("/portal/suppliers/optivision")).status_code == 200
    r = await stack.client.post(
        "/v1/clients",
        json={"roles": ["device"], "device_id": "cam-1"},
        headers=stack.token(Role.ADMIN),
    )
    async with browser(stack) as client:
        refused = await sign_in(client, r.json()["client_id"], r.json()["client_secret"])
        assert refused.status_code == 403
        assert "linegate_portal" not in client.cookies


# --------------------------------------------------------------- escaping and headers


async def test_names_are_escaped(stack):
    evil = '<script>alert("x")</script>'
    r = await stack.client.post(
        "/v1/suppliers",
        json={"id": "evilcorp", "name": evil},
        headers=stack.token(Role.PROCUREMENT),
    )
    assert r.status_code == 201
    client_id, secret = await staff_client(stack)
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        for url in ("/portal/suppliers", "/portal/suppliers/evilcorp"):
            page = await client.get(url)
            assert page.status_code == 200
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
            assert "<script" not in page.text


async def test_security_headers_on_every_kind_of_portal_response(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        responses = [
            await client.get("/portal/login"),
            await client.get("/portal/attestations"),  # redirect to sign-in
            await client.get("/portal/static/portal.css"),
        ]
        await sign_in(client, client_id, secret)
        responses += [
            await client.get("/portal/attestations"),
            await client.get("/portal/attestations/nope"),  # 404 page
            await client.get("/portal/no/such/page"),
        ]
    assert [r.status_code for r in responses] == [200, 303, 200, 200, 404, 404]
    for r in responses:
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "script-src" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert responses[2].headers["content-type"].startswith("text/css")
    assert "<script" not in responses[3].text


async def test_sign_in_only_returns_to_portal_pages(stack):
    await stack.onboard("optivision", key=False)
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        form = await client.get("/portal/login?next=//evil.example/x")
        assert 'name="next" value="/portal/"' in form.text
        r = await client.post(
            "/portal/login",
            data={
                "csrf": csrf_of(form),
                "client_id": client_id,
                "client_secret": secret,
                "next": "https://evil.example/",
            },
        )
        assert r.headers["location"] == "/portal/"


async def test_portal_writes_are_audited_as_the_signed_in_client(stack):
    # tests/services/test_audit_routes.py walks the OpenAPI paths, which leave the portal
    # out; its two writes are checked here: each appends its entry by the client signed in.
    key = await stack.onboard("optivision")
    notice = await stack.client.post(
        "/v1/suppliers/optivision/notices",
        json={"kind": "vulnerability", "reference": "CVE-2026-9"},
        headers=stack.token(Role.PROCUREMENT),
    )
    client_id, secret = await supplier_client(stack, "optivision")
    async with browser(stack) as client:
        await sign_in(client, client_id, secret)
        csrf = csrf_of(await client.get("/portal/upload"))
        assert (await upload_form(client, envelope(key), csrf=csrf)).status_code == 201
        r = await client.post(
            f"/portal/notices/{notice.json()['id']}/response",
            data={"response": "fixed", "csrf": csrf},
        )
        assert r.status_code == 303
    entries = await stack.client.get(
        "/v1/audit/entries?limit=1000", headers=stack.token(Role.AUDITOR)
    )
    by_client = [e["action"] for e in entries.json() if e["actor"].split(" ")[0] == client_id]
    assert by_client == ["attestation.verified", "sla.notice.respond"]
