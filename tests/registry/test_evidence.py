"""The evidence policy against real attestations ingested through the attestation service."""

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from attestation.app import create_app as create_attestation_app
from attestation.settings import AttestationSettings
from linegate.auth import Role
from linegate.errors import ServiceUnavailable
from linegate.signing import generate_private_key, public_key_pem
from linegate.testing.fixtures import bearer
from linegate_cli.demo import (
    dataset_provenance_predicate,
    ml_bom_predicate,
    signed_statement,
    slsa_predicate,
)
from registry import evidence
from registry.app import create_app
from tests.registry.conftest import MODEL, RegistryClient

# Tokens minted by the test fixture name the default issuer, not the moved attestation URL.
DEFAULT_ISSUER = "http://127.0.0.1:8101"
DSSE = "application/vnd.dsse.envelope.v1+json"
PREDICATES = {
    "slsa-provenance": ("https://slsa.dev/provenance/v1", slsa_predicate),
    "ml-bom": ("https://cyclonedx.org/bom/v1.6", ml_bom_predicate),
    "dataset-provenance": (
        "https://linegate.dev/attestation/dataset-provenance/v1",
        dataset_provenance_predicate,
    ),
}


class Supplier:
    def __init__(self, http: Any, mint: Any) -> None:
        self.http = http
        self.mint = mint
        self.key = generate_private_key()

    async def onboard(self) -> None:
        staff = bearer(self.mint(Role.PROCUREMENT))
        r = await self.http.post(
            "/v1/suppliers", json={"id": "optivision", "name": "Optivision"}, headers=staff
        )
        assert r.status_code == 201, r.text
        r = await self.http.post(
            "/v1/suppliers/optivision/keys",
            json={"public_key_pem": public_key_pem(self.key.public_key()).decode()},
            headers=staff,
        )
        assert r.status_code == 201, r.text

    async def attest(self, kind: str, digest: str) -> None:
        predicate_type, build = PREDICATES[kind]
        subject = {"name": "model.onnx", "digest": {"sha256": digest}}
        body = signed_statement(self.key, subject, predicate_type, build(digest))
        headers = {**bearer(self.mint(Role.SUPPLIER, tenant="optivision")), "content-type": DSSE}
        r = await self.http.post("/v1/attestations", content=body, headers=headers)
        assert r.status_code == 201, r.text


@pytest.fixture
async def stack(
    settings_factory: Any, serve_http: Any, service_client: Any, mint_token: Any, tmp_path: Any
) -> Any:
    from registry.settings import RegistrySettings

    attestation_url = serve_http(create_attestation_app(settings_factory(AttestationSettings)))
    app = create_app(
        settings_factory(
            RegistrySettings, attestation_url=attestation_url, auth_issuer=DEFAULT_ISSUER
        )
    )
    async with service_client(app) as client, httpx.AsyncClient(base_url=attestation_url) as http:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system(tier=2, category="high_risk")
        await registry.create_model()
        assert (await registry.add_golden_set()).status_code == 201
        supplier = Supplier(http, mint_token)
        await supplier.onboard()
        yield registry, supplier


async def test_high_risk_release_waits_for_verified_evidence_over_the_digest(stack: Any) -> None:
    registry, supplier = stack
    await registry.to_validated("2.1.0")
    assert (await registry.decide("2.1.0", "alex-approver")).json()["state"] == "approved"
    digest = (await registry.version("2.1.0"))["artefact_digest"]

    r = await registry.client.get(
        f"/v1/models/{MODEL}/versions/2.1.0/evidence", headers=registry.auth()
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["satisfied"] is False
    assert {i["kind"]: i["status"] for i in report["required"]} == {
        "slsa-provenance": "missing",
        "ml-bom": "missing",
        "dataset-provenance": "missing",
    }
    r = await registry.release("2.1.0")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "evidence slsa-provenance is missing" in r.json()["reasons"]
    assert (await registry.version("2.1.0"))["state"] == "approved"

    # Evidence for another artefact does not count.
    await supplier.attest("slsa-provenance", hashlib.sha256(b"another model").hexdigest())
    await supplier.attest("slsa-provenance", digest)
    await supplier.attest("ml-bom", digest)
    r = await registry.release("2.1.0")
    assert r.status_code == 409
    assert r.json()["reasons"] == ["evidence dataset-provenance is missing"]

    await supplier.attest("dataset-provenance", digest)
    r = await registry.release("2.1.0")
    assert r.status_code == 200, r.text
    snapshot = r.json()["release_evidence"]["evidence"]
    assert snapshot["satisfied"] is True
    assert all(len(i["attestation_ids"]) == 1 for i in snapshot["required"])


async def test_release_is_refused_when_the_attestation_service_is_down(
    settings_factory: Any, service_client: Any, mint_token: Any, tmp_path: Any
) -> None:
    from linegate.embedded import free_port
    from registry.settings import RegistrySettings

    settings = settings_factory(
        RegistrySettings,
        attestation_url=f"http://127.0.0.1:{free_port()}",
        auth_issuer=DEFAULT_ISSUER,
    )
    app = create_app(settings)
    async with service_client(app) as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system(tier=2, category="high_risk")
        await registry.create_model()
        await registry.add_golden_set()
        await registry.to_validated("1.0.0")
        await registry.decide("1.0.0", "alex-approver")
        r = await registry.release("1.0.0")
        assert r.status_code == 503
        assert "unreachable" in r.json()["detail"]
        assert (await registry.version("1.0.0"))["state"] == "approved"


def attestation(
    kind: str, *, expires: datetime | None = None, status: str = "verified", **extra: Any
) -> dict[str, Any]:
    return {
        "id": f"{kind}-{status}-{expires}",
        "status": status,
        "verified": status == "verified",
        "predicate_kind": kind,
        "summary": extra,
        "expires_at": expires.isoformat() if expires else None,
    }


def test_evaluate_sorts_present_expired_missing_and_unsigned() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    found = [
        attestation("slsa-provenance-v1", expires=now - timedelta(days=1)),
        attestation("cyclonedx", models=[{"name": "weld", "modelCard": {}}]),
        attestation("linegate-dataset-provenance", status="unsigned"),
        attestation("cyclonedx", models=[]),  # an SBOM with no model is not an ML-BOM
    ]
    report = evidence.evaluate(
        "ab" * 32, "high_risk", ["slsa-provenance", "ml-bom", "dataset-provenance"], found, now=now
    )
    statuses = {i.kind: i.status for i in report.items}
    assert statuses == {
        "slsa-provenance": "expired",
        "ml-bom": "present",
        "dataset-provenance": "missing",
    }
    assert not report.satisfied
    assert any("unsigned" in r for r in report.reasons)


def test_spdx3_ai_and_dataset_profiles_count() -> None:
    spdx_ai = attestation(
        "spdx-3",
        profile_conformance=["https://spdx.org/rdf/3.0.1/terms/Core/ProfileIdentifierType/ai"],
    )
    spdx_data = attestation("spdx-3", profile_conformance=["dataset"])
    assert evidence.matches("ml-bom", spdx_ai)
    assert not evidence.matches("ml-bom", spdx_data)
    assert evidence.matches("dataset-provenance", spdx_data)
    assert evidence.matches("sbom", spdx_ai)


async def test_the_registry_can_use_oauth2_client_credentials(
    settings_factory: Any, serve_http: Any, mint_token: Any
) -> None:
    """Outside the embedded stack the registry authenticates with an OAuth2 client."""
    from pydantic import SecretStr

    from registry.settings import RegistrySettings

    url = serve_http(create_attestation_app(settings_factory(AttestationSettings)))
    admin = bearer(mint_token(Role.ADMIN, sub="admin"))
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/clients", json={"roles": ["auditor"]}, headers=admin)
        assert r.status_code == 201, r.text
        creds = r.json()
    settings = settings_factory(
        RegistrySettings,
        attestation_url=url,
        auth_issuer=DEFAULT_ISSUER,
        attestation_client_id=creds["client_id"],
        attestation_client_secret=SecretStr(creds["client_secret"]),
    )
    client = evidence.AttestationClient(settings)
    try:
        assert await client.attestations_for("ab" * 32) == []
        wrong = evidence.AttestationClient(
            settings.model_copy(update={"attestation_client_secret": SecretStr("nope")})
        )
        with pytest.raises(ServiceUnavailable, match="refused client"):
            await wrong.attestations_for("ab" * 32)
        await wrong.close()
    finally:
        await client.close()
