"""The registry's signing method (LINEGATE_MODEL_SIGNING_METHOD): key by default, certificate
with a real root -> intermediate -> code-signing leaf (the operator's key, never created), and
Sigstore's settings validation; what GET /v1/signing-keys tells verifiers in each mode."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import ValidationError

from linegate.modelsig import (
    ModelSignatureError,
    signature_kind,
    verify_model,
    verify_model_certificate,
)
from linegate.signing import key_id, load_or_create_private_key
from linegate.testing.pki import CodeSigningPki, LeafFiles
from registry.app import create_app
from registry.settings import RegistrySettings
from tests.registry.conftest import MODEL, RegistryClient

FILES = ["model.onnx", "model_card.md", "preprocess.json"]


@pytest.fixture
def pki(tmp_path: Path) -> CodeSigningPki:
    return CodeSigningPki.create(tmp_path / "pki")


@pytest.fixture
def pinned_chain(pki: CodeSigningPki, tmp_path: Path) -> Path:
    """What the operator configures: the intermediate the bundle ships, and the root."""
    path = tmp_path / "chain.pem"
    path.write_bytes(pki.chain_pem.read_bytes() + pki.root_pem.read_bytes())
    return path


@pytest.fixture
def pinned_chain_pem(pinned_chain: Path) -> str:
    return pinned_chain.read_text()


@pytest.fixture
def start(registry_settings: Any, service_client: Any, mint_token: Any, tmp_path: Path) -> Any:
    def run(**settings: Any) -> Any:
        app = create_app(registry_settings(**settings))
        return app, service_client(app)

    return run


def certificate_settings(leaf: LeafFiles, chain: Path) -> dict[str, Any]:
    return {
        "model_signing_method": "certificate",
        "model_signing_key": leaf.key,
        "model_signing_certificate": leaf.certificate,
        "model_signing_certificate_chain": chain,
    }


async def download(registry: RegistryClient, version: str, into: Path) -> tuple[Path, Path]:
    headers = registry.auth()
    v = await registry.version(version)
    folder = into / MODEL
    folder.mkdir(parents=True)
    for f in v["files"]:
        got = await registry.client.get(
            f"/v1/models/{MODEL}/versions/{version}/files/{f['path']}", headers=headers
        )
        (folder / f["path"]).write_bytes(got.content)
    sig = await registry.client.get(
        f"/v1/models/{MODEL}/versions/{version}/signature", headers=headers
    )
    (into / "model.sig").write_bytes(sig.content)
    return folder, into / "model.sig"


async def test_a_certificate_configured_registry_signs_pushes_with_its_certificate(
    start: Any,
    mint_token: Any,
    pki: CodeSigningPki,
    pinned_chain: Path,
    pinned_chain_pem: str,
    tmp_path: Path,
) -> None:
    leaf = pki.issue_leaf("registry-release")
    app, client_cm = start(**certificate_settings(leaf, pinned_chain))
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system()
        await registry.create_model()
        r = await registry.push("2.1.0")
        assert r.status_code == 201, r.text
        assert r.json()["signing_key_id"] == key_id(leaf.cert.public_key())  # type: ignore[arg-type]

        published = (await client.get("/v1/signing-keys")).json()["keys"]
        assert len(published) == 1
        assert published[0]["method"] == published[0]["verify_method"] == "certificate"
        assert published[0]["key_id"] == r.json()["signing_key_id"]
        assert x509.load_pem_x509_certificate(published[0]["certificate_pem"].encode()) == leaf.cert
        assert published[0]["certificate_chain_pem"] == pinned_chain_pem
        # The signing identity, described for verifiers that pin more than the CA.
        described = published[0]["certificate"]
        assert described["subject"] == "CN=registry-release,O=Linegate Test Plant"
        assert described["subject_alternative_names"] == ["release-signer@plant.example"]
        assert published[0]["identity"] == "release-signer@plant.example"
        assert described["issuer"] == pki.intermediate.name.rfc4514_string()
        assert described["sha256_fingerprint"] == leaf.cert.fingerprint(hashes.SHA256()).hex()
        assert described["serial_number"] == f"{leaf.cert.serial_number:x}"
        assert datetime.fromisoformat(described["not_before"]) == leaf.cert.not_valid_before_utc
        assert datetime.fromisoformat(described["not_after"]) == leaf.cert.not_valid_after_utc
        assert described["key_id"] == published[0]["key_id"]
        assert described["chain"] == [
            pki.intermediate.name.rfc4514_string(),
            pki.root.name.rfc4514_string(),
        ]
        assert published[0]["oidc_issuer"] is None

        folder, signature = await download(registry, "2.1.0", tmp_path / "download")
        assert signature_kind(signature) == "certificate"
        # A device or auditor pins the root out of band and verifies offline, pinning the
        # published identity too; the fingerprint is the one verification reports.
        verified = verify_model_certificate(
            folder, pki.root_pem, signature, identity=published[0]["identity"]
        )
        assert [f.path for f in verified.files] == FILES
        assert verified.certificate is not None
        assert verified.certificate.subject == "CN=registry-release,O=Linegate Test Plant"
        assert verified.certificate.sha256_fingerprint == described["sha256_fingerprint"]
        with pytest.raises(ModelSignatureError, match="not issued to the expected identity"):
            verify_model_certificate(
                folder, pki.root_pem, signature, identity="supplier@optivision.example"
            )

        r = await client.post(f"/v1/models/{MODEL}/versions/2.1.0/verify", headers=registry.auth())
        result = r.json()
        assert result["verified"] is True, result
        assert result["key_id"] == key_id(leaf.cert.public_key())  # type: ignore[arg-type]
        cert = result["certificate"]
        assert cert["sha256_fingerprint"] == leaf.cert.fingerprint(hashes.SHA256()).hex()
        assert cert["subject_alternative_names"] == ["release-signer@plant.example"]
        assert cert["chain"] == [
            pki.intermediate.name.rfc4514_string(),
            pki.root.name.rfc4514_string(),
        ]

        # Tamper detection on the stored artefact, through the certificate path.
        model = next(f for f in (await registry.version("2.1.0"))["files"] if f["path"] == FILES[0])
        path = app.state.registry.store.path(model["sha256"])
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        r = await client.post(f"/v1/models/{MODEL}/versions/2.1.0/verify", headers=registry.auth())
        assert r.json()["verified"] is False
        assert "changed since signing: model.onnx" in r.json()["reason"]


async def test_an_expired_registry_certificate_refuses_the_push_and_stores_nothing(
    start: Any, mint_token: Any, pki: CodeSigningPki, pinned_chain: Path, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    expired = pki.issue_leaf(
        "registry-old", not_before=now - timedelta(60), not_after=now - timedelta(1)
    )
    app, client_cm = start(**certificate_settings(expired, pinned_chain))
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system()
        await registry.create_model()
        r = await registry.push("2.1.0")
        assert r.status_code == 422, r.text
        assert "could not sign the artefact" in r.text
        assert "expired on" in r.text
        r = await client.get(f"/v1/models/{MODEL}/versions", headers=registry.auth())
        assert r.status_code == 200
        assert r.json() == []
        blobs = app.state.registry.store.root / "sha256"
        assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


async def test_versions_signed_by_key_still_verify_after_switching_to_a_certificate(
    start: Any, mint_token: Any, pki: CodeSigningPki, pinned_chain: Path, tmp_path: Path
) -> None:
    app, client_cm = start()
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system()
        await registry.create_model()
        assert (await registry.push("1.0.0")).status_code == 201
        published = (await client.get("/v1/signing-keys")).json()["keys"]
        assert published[0]["method"] == published[0]["verify_method"] == "key"
        assert published[0]["certificate_chain_pem"] is None
        assert published[0]["certificate"] is None
        assert published[0]["identity"] is None
        key_path = app.state.registry.settings.signing_key_path

    # The CA certifies the registry's existing key; the registry restarts in certificate mode.
    key = load_or_create_private_key(key_path)
    leaf = pki.issue_leaf("registry-release", key=key)  # type: ignore[arg-type]
    app, client_cm = start(
        **certificate_settings(leaf, pinned_chain) | {"model_signing_key": key_path}
    )
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        assert (await registry.push("1.1.0")).status_code == 201
        for version, kind in (("1.0.0", "key"), ("1.1.0", "certificate")):
            r = await client.post(
                f"/v1/models/{MODEL}/versions/{version}/verify", headers=registry.auth()
            )
            assert r.json()["verified"] is True, (version, r.json())
            assert r.json()["key_id"] == key_id(key.public_key())
            folder, signature = await download(registry, version, tmp_path / f"dl-{version}")
            assert signature_kind(signature) == kind
        # The key-signed version verifies with the published key, as devices do today.
        published = (await client.get("/v1/signing-keys")).json()["keys"][0]
        (tmp_path / "published.pem").write_text(published["public_key_pem"])
        folder = tmp_path / "dl-1.0.0" / MODEL
        assert verify_model(folder, tmp_path / "published.pem", tmp_path / "dl-1.0.0" / "model.sig")


async def test_a_certificate_registry_uses_the_operators_key_and_creates_none(
    start: Any, mint_token: Any, pki: CodeSigningPki, pinned_chain: Path, tmp_path: Path
) -> None:
    leaf = pki.issue_leaf("registry-release")
    configured = leaf.key.read_bytes()
    app, client_cm = start(**certificate_settings(leaf, pinned_chain))
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        settings = app.state.registry.settings
        await registry.create_system()
        await registry.create_model()
        r = await registry.push("2.1.0")
        assert r.status_code == 201, r.text
        r = await client.post(f"/v1/models/{MODEL}/versions/2.1.0/verify", headers=registry.auth())
        assert r.json()["verified"] is True, r.json()
        assert r.json()["key_id"] == key_id(leaf.cert.public_key())  # type: ignore[arg-type]
        published = (await client.get("/v1/signing-keys")).json()["keys"][0]
        assert published["key_id"] == r.json()["key_id"]
    # No model-signing key of the registry's own in its data directory, and the operator's
    # key file is untouched.
    assert not settings.keys_dir.joinpath("model-signing.pem").exists()
    assert not list(settings.data_dir.rglob("model-signing*"))
    assert leaf.key.read_bytes() == configured

    # A configured key that is missing, or is not the certificate's, refuses to start
    # (before connecting anything), and no key is made in its place.
    missing = tmp_path / "absent" / "release.key.pem"
    with pytest.raises(ModelSignatureError, match="does not exist"):
        start(**certificate_settings(leaf, pinned_chain) | {"model_signing_key": missing})
    assert not missing.exists()
    other = pki.issue_leaf("other-signer")
    with pytest.raises(ModelSignatureError, match="is not the key of"):
        start(**certificate_settings(leaf, pinned_chain) | {"model_signing_key": other.key})


def test_the_signing_method_settings_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="LINEGATE_MODEL_SIGNING_CERTIFICATE_CHAIN"):
        RegistrySettings(
            data_dir=tmp_path,
            model_signing_method="certificate",
            model_signing_key=tmp_path / "k.pem",
            model_signing_certificate=tmp_path / "c.pem",
        )
    with pytest.raises(ValidationError, match="LINEGATE_MODEL_SIGNING_TRUST_CONFIG"):
        RegistrySettings(
            data_dir=tmp_path,
            model_signing_method="sigstore",
            model_signing_identity_token=tmp_path / "token",
            model_signing_sigstore_identity="ci@plant.example",
            model_signing_sigstore_oidc_issuer="https://issuer.plant.example",
        )
    with pytest.raises(ValidationError, match="model_signing_method"):
        RegistrySettings(data_dir=tmp_path, model_signing_method="gpg")
    assert RegistrySettings(data_dir=tmp_path).model_signing_method == "key"


async def test_a_sigstore_registry_without_a_usable_trust_config_refuses_the_push_offline(
    start: Any, mint_token: Any, tmp_path: Path
) -> None:
    token, trust = tmp_path / "token", tmp_path / "trust_config.json"
    token.write_text("a.b.c")
    trust.write_text(json.dumps({"mediaType": "not a trust config"}))
    app, client_cm = start(
        model_signing_method="sigstore",
        model_signing_identity_token=token,
        model_signing_trust_config=trust,
        model_signing_sigstore_identity="ci@plant.example",
        model_signing_sigstore_oidc_issuer="https://issuer.plant.example",
    )
    async with client_cm as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system()
        await registry.create_model()
        r = await registry.push("2.1.0")
        assert r.status_code == 422, r.text
        assert "is not a ClientTrustConfig JSON" in r.text
        # What a verifier needs to expect: the identity and issuer signatures are bound to.
        published = (await client.get("/v1/signing-keys")).json()["keys"][0]
        assert published["method"] == published["verify_method"] == "sigstore"
        assert published["identity"] == "ci@plant.example"
        assert published["oidc_issuer"] == "https://issuer.plant.example"
        assert published["certificate"] is None
