"""Certificate-signed and Sigstore model signatures: a real CA -> intermediate -> code-signing
leaf (EC P-256, ``cryptography.x509``), real ONNX model folders, offline."""

import base64
import json
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from model_signing import signing, verifying

from linegate._modelsig_x509 import (
    CertificateError,
    SigningCertificate,
    check_identity,
    describe,
    identity_of,
)
from linegate.modelsig import (
    ModelSignatureError,
    SignedFile,
    sign_model,
    sign_model_certificate,
    sign_model_sigstore,
    signature_kind,
    verify_model,
    verify_model_certificate,
    verify_model_sigstore,
)
from linegate.signing import key_id, private_key_pem, public_key_pem
from linegate.testing.onnx_models import write_model_dir
from linegate.testing.pki import CodeSigningPki, LeafFiles

MODEL_FILES = ["model.onnx", "model_card.md", "preprocess.json"]
TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "sigstore"
GITHUB_IDENTITY = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DAY = timedelta(days=1)


@pytest.fixture
def pki(tmp_path) -> CodeSigningPki:
    return CodeSigningPki.create(tmp_path / "pki")


@pytest.fixture
def leaf(pki) -> LeafFiles:
    return pki.issue_leaf()


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model_dir(tmp_path / "weld-seam-inspector")


def cert_sign(model: Path, pki: CodeSigningPki, leaf: LeafFiles, signature: Path, **kw) -> None:
    sign_model_certificate(
        model,
        signature,
        private_key=leaf.key,
        certificate=leaf.certificate,
        certificate_chain=[pki.chain_pem],
        **kw,
    )


@pytest.fixture
def signed(model, pki, leaf, tmp_path) -> Path:
    signature = tmp_path / "model.sig"
    cert_sign(model, pki, leaf, signature)
    return signature


def raw_model_signing_sign(model: Path, pki: CodeSigningPki, leaf: LeafFiles, out: Path) -> Path:
    """Sign with model_signing directly, bypassing Linegate's refusals at signing time."""
    signing.Config().use_certificate_signer(
        private_key=leaf.key,
        signing_certificate=leaf.certificate,
        certificate_chain=[pki.chain_pem],
    ).set_hashing_config(_linegate_hashing()).sign(model, out)
    return out


def _linegate_hashing():
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256")
        .set_ignored_paths(paths=[], ignore_git_paths=False)
    )


def refusal(*args, **kwargs) -> str:
    with pytest.raises(ModelSignatureError) as info:
        verify_model_certificate(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------ round trip


def test_certificate_signature_verifies_against_the_pinned_root(model, pki, leaf, signed):
    verified = verify_model_certificate(model, pki.root_pem, signed)

    assert [f.path for f in verified.files] == MODEL_FILES
    assert verified.model_name == "weld-seam-inspector"
    assert verified.key_id == key_id(leaf.cert.public_key())
    signer = verified.certificate
    assert signer is not None
    assert signer.subject == "CN=release-signer,O=Linegate Test Plant"
    assert signer.issuer == pki.intermediate.name.rfc4514_string()
    assert signer.subject_alternative_names == ("release-signer@plant.example",)
    assert signer.sha256_fingerprint == leaf.cert.fingerprint(hashes.SHA256()).hex()
    assert signer.chain == (
        pki.intermediate.name.rfc4514_string(),
        pki.root.name.rfc4514_string(),
    )


def test_bundle_carries_the_leaf_and_intermediate_and_no_public_key(pki, leaf, signed):
    material = json.loads(signed.read_bytes())["verificationMaterial"]
    assert "publicKey" not in material
    ders = [
        base64.b64decode(c["rawBytes"]) for c in material["x509CertificateChain"]["certificates"]
    ]
    from cryptography import x509

    assert [x509.load_der_x509_certificate(d) for d in ders] == [
        leaf.cert,
        pki.intermediate.certificate,
    ]
    assert signature_kind(signed) == "certificate"


def test_a_pinned_file_with_root_and_intermediate_also_verifies(model, pki, signed, tmp_path):
    both = tmp_path / "pinned.pem"
    both.write_bytes(pki.chain_pem.read_bytes() + pki.root_pem.read_bytes())
    assert len(verify_model_certificate(model, both, signed).files) == 3


def test_our_certificate_signature_verifies_with_the_model_signing_cli(model, pki, signed):
    cli = Path(sys.executable).parent / "model_signing"
    if not cli.exists():
        pytest.skip(f"the model_signing CLI is not installed beside {sys.executable}")
    args = ["verify", "certificate", "--signature", signed, "--certificate_chain", pki.root_pem]
    result = subprocess.run(
        [cli, *args, "--no-ignore-git-paths", model], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_certificate_signing_and_verifying_never_touch_the_network(
    model, pki, leaf, tmp_path, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.com", 443))

    signature = tmp_path / "offline.sig"
    cert_sign(model, pki, leaf, signature)
    assert len(verify_model_certificate(model, pki.root_pem, signature).files) == 3


# ------------------------------------------------------------------------------- refusals


def test_a_changed_byte_names_the_file(model, pki, signed):
    onnx = model / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0x01
    onnx.write_bytes(bytes(data))

    message = refusal(model, pki.root_pem, signed)
    assert "changed since signing: model.onnx" in message


def test_a_leaf_from_another_ca_is_refused(model, pki, tmp_path):
    other = CodeSigningPki.create(tmp_path / "other", name="Other Plant")
    signature = tmp_path / "other.sig"
    cert_sign(model, other, other.issue_leaf("intruder"), signature)

    message = refusal(model, pki.root_pem, signature)
    assert "does not verify against the pinned chain" in message
    assert "unable to get local issuer certificate" in message
    assert "CN=Other Plant Root CA" in message  # where the signature's chain ends
    assert "CN=Linegate Test Root CA" in message  # what is pinned
    assert "signed under another CA" in message


def test_an_expired_leaf_is_refused_although_model_signing_accepts_it(model, pki, tmp_path):
    now = datetime.now(UTC)
    expired = pki.issue_leaf("expired", not_before=now - 60 * DAY, not_after=now - 30 * DAY)
    signature = tmp_path / "expired.sig"
    # Signed while it was valid (Linegate refuses to sign with an expired certificate).
    cert_sign(model, pki, expired, signature, at=now - 45 * DAY)

    # model_signing 1.1.1 checks the chain at the leaf's notBefore: it lets this through.
    verifying.Config().use_certificate_verifier(certificate_chain=[pki.root_pem]).verify(
        model, signature
    )
    message = refusal(model, pki.root_pem, signature)
    assert "signing certificate CN=expired,O=Linegate Test Plant expired on" in message
    # An explicit verification time inside the validity period accepts it (e.g. an audit).
    assert verify_model_certificate(model, pki.root_pem, signature, at=now - 40 * DAY).files


def test_signing_with_an_expired_certificate_is_refused(model, pki, tmp_path):
    now = datetime.now(UTC)
    expired = pki.issue_leaf("expired", not_before=now - 60 * DAY, not_after=now - 30 * DAY)
    with pytest.raises(ModelSignatureError, match="expired on"):
        cert_sign(model, pki, expired, tmp_path / "expired.sig")
    assert not (tmp_path / "expired.sig").exists()


def test_a_leaf_that_is_not_valid_yet_is_refused(model, pki, tmp_path):
    now = datetime.now(UTC)
    future = pki.issue_leaf("future", not_before=now + 10 * DAY, not_after=now + 40 * DAY)
    signature = tmp_path / "future.sig"
    cert_sign(model, pki, future, signature, at=now + 20 * DAY)
    assert "is not valid until" in refusal(model, pki.root_pem, signature)


def test_a_ca_expired_at_the_verification_time_is_refused(model, pki, signed):
    later = datetime.now(UTC) + 20 * 365 * DAY  # past the leaf too: the leaf is named first
    assert "expired on" in refusal(model, pki.root_pem, signed, at=later)


def test_a_tls_server_certificate_cannot_sign_models(model, pki, tmp_path):
    server = pki.issue_leaf("tls-server", code_signing=False)
    with pytest.raises(ModelSignatureError, match="not a code-signing certificate"):
        cert_sign(model, pki, server, tmp_path / "server.sig")
    # model_signing itself signs and accepts it (digitalSignature is enough there); we do not.
    signature = raw_model_signing_sign(model, pki, server, tmp_path / "server.sig")
    verifying.Config().use_certificate_verifier(certificate_chain=[pki.root_pem]).verify(
        model, signature
    )
    assert "needs key usage digitalSignature and extended key usage codeSigning" in refusal(
        model, pki.root_pem, signature
    )


def test_a_leaf_without_digital_signature_usage_is_refused(model, pki, tmp_path):
    encipher = pki.issue_leaf("encipher-only", digital_signature=False)
    signature = raw_model_signing_sign(model, pki, encipher, tmp_path / "encipher.sig")
    assert "not a code-signing certificate" in refusal(model, pki.root_pem, signature)


def test_a_missing_pinned_chain_is_refused(model, pki, signed, tmp_path):
    message = refusal(model, tmp_path / "absent.pem", signed)
    assert f"cannot read pinned certificate chain {tmp_path / 'absent.pem'}" in message


def test_a_pinned_file_without_certificates_is_refused(model, signed, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    assert "holds no PEM certificate" in refusal(model, empty, signed)


def test_pinning_only_the_intermediate_is_refused_with_the_fix(model, pki, signed):
    message = refusal(model, pki.chain_pem, signed)
    assert "holds no self-signed root CA" in message
    assert "add the root certificate" in message


def test_a_swapped_leaf_of_the_same_ca_does_not_verify_the_envelope(model, pki, signed):
    bundle = json.loads(signed.read_bytes())
    from cryptography.hazmat.primitives import serialization

    impostor = pki.issue_leaf("impostor").cert.public_bytes(serialization.Encoding.DER)
    chain = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    chain[0]["rawBytes"] = base64.b64encode(impostor).decode()
    signed.write_text(json.dumps(bundle))

    message = refusal(model, pki.root_pem, signed)
    assert "does not verify with its signing certificate CN=impostor" in message


def test_a_key_signed_bundle_is_refused_with_the_way_to_verify_it(model, pki, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(private_key_pem(key))
    signature = tmp_path / "key.sig"
    sign_model(model, tmp_path / "k.pem", signature)
    assert signature_kind(signature) == "key"
    assert "signed with a bare key; verify it with the public key" in refusal(
        model, pki.root_pem, signature
    )


def test_the_key_verifier_points_a_certificate_bundle_to_the_chain(model, leaf, signed, tmp_path):
    public = tmp_path / "leaf.pub.pem"
    public.write_bytes(public_key_pem(leaf.cert.public_key()))  # type: ignore[arg-type]
    with pytest.raises(ModelSignatureError, match="made with a certificate chain, not a bare key"):
        verify_model(model, public, signed)


def test_signing_with_a_certificate_of_another_key_is_refused(model, pki, tmp_path):
    mine, theirs = pki.issue_leaf("mine"), pki.issue_leaf("theirs")
    with pytest.raises(ModelSignatureError, match="is not the certificate of private key"):
        sign_model_certificate(
            model,
            tmp_path / "x.sig",
            private_key=mine.key,
            certificate=theirs.certificate,
            certificate_chain=[pki.chain_pem],
        )


def test_a_naive_verification_time_is_refused(model, pki, signed):
    assert "timezone-aware" in refusal(model, pki.root_pem, signed, at=datetime(2030, 1, 1))  # noqa: DTZ001


def test_ignored_paths_work_as_with_keys(model, pki, leaf, tmp_path):
    (model / "notes.txt").write_text("scratch notes")
    signature = model / "model.sig"
    cert_sign(model, pki, leaf, signature, ignore_paths=[Path("notes.txt")])
    (model / "notes.txt").write_text("changed notes")
    verified = verify_model_certificate(model, pki.root_pem, signature)
    assert SignedFile("notes.txt", "") not in verified.files
    assert [f.path for f in verified.files] == MODEL_FILES


# -------------------------------------------------------------------------------- sigstore


def pinned_trust_config(tmp_path: Path, instance: str = "production") -> Path:
    """A ClientTrustConfig pinning a trusted root shipped with sigstore 4.5.1 (shared test data)
    and that instance's signing config from the installed sigstore package."""
    root = TESTDATA / f"trusted_root.{instance}.json"
    if not root.is_file():
        pytest.skip(f"shared test data {root} is absent")
    import sigstore

    host = {"production": "sigstore.dev", "staging": "sigstage.dev"}[instance]
    store = Path(sigstore.__file__).parent / "_store" / f"https%3A%2F%2Ftuf-repo-cdn.{host}"
    config = {
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": json.loads(root.read_text()),
        "signingConfig": json.loads((store / "signing_config.v0.2.json").read_text()),
    }
    path = tmp_path / f"trust_config.{instance}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def trust_config(tmp_path) -> Path:
    return pinned_trust_config(tmp_path)


def _jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def test_sigstore_signing_refuses_to_run_without_a_pinned_trust_config(model, tmp_path):
    token = tmp_path / "token"
    token.write_text("x.y.z")
    with pytest.raises(ModelSignatureError, match="needs a pinned trust config"):
        sign_model_sigstore(
            model,
            tmp_path / "s.sig",
            identity_token=token,
            trust_config=None,  # type: ignore[arg-type]
        )
    with pytest.raises(ModelSignatureError, match="cannot read Sigstore trust config"):
        sign_model_sigstore(
            model, tmp_path / "s.sig", identity_token=token, trust_config=tmp_path / "absent.json"
        )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trustedRoot": "nope"}))
    with pytest.raises(ModelSignatureError, match="is not a ClientTrustConfig JSON"):
        sign_model_sigstore(model, tmp_path / "s.sig", identity_token=token, trust_config=bad)
    assert not (tmp_path / "s.sig").exists()


def test_sigstore_signing_refuses_an_expired_token_before_any_network(
    model, trust_config, tmp_path, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    now = int(datetime.now(UTC).timestamp())
    token = tmp_path / "token"
    token.write_text(
        _jwt(
            {
                "iss": "https://token.actions.githubusercontent.com",
                "sub": "repo:plant/weld:ref:refs/heads/main",
                "aud": "sigstore",
                "iat": now - 7200,
                "nbf": now - 7200,
                "exp": now - 3600,
            }
        )
    )
    with pytest.raises(ModelSignatureError, match=r"identity token .* is unusable"):
        sign_model_sigstore(
            model, tmp_path / "s.sig", identity_token=token, trust_config=trust_config
        )
    with pytest.raises(ModelSignatureError, match="cannot read identity token"):
        sign_model_sigstore(
            model, tmp_path / "s.sig", identity_token=tmp_path / "nope", trust_config=trust_config
        )


def test_sigstore_verification_refuses_to_run_without_a_pinned_trust_config(model, signed):
    with pytest.raises(ModelSignatureError, match="needs a pinned trust config"):
        verify_model_sigstore(
            model,
            signed,
            identity=GITHUB_IDENTITY,
            oidc_issuer=GITHUB_ISSUER,
            trust_config=None,  # type: ignore[arg-type]
        )


def test_sigstore_verification_refuses_a_certificate_chain_bundle(model, signed, trust_config):
    with pytest.raises(ModelSignatureError, match=r"no Sigstore certificate: .* certificate chain"):
        verify_model_sigstore(
            model,
            signed,
            identity=GITHUB_IDENTITY,
            oidc_issuer=GITHUB_ISSUER,
            trust_config=trust_config,
        )


def test_a_real_sigstore_bundle_that_is_not_a_model_signature_fails_closed_offline(
    model, tmp_path, monkeypatch
):
    """No model-signing Sigstore bundle ships with model_signing 1.1.1 or in the shared test
    data, and making one needs Fulcio and Rekor. This drives the real sigstore verifier offline
    against the pinned staging root with a real Fulcio certificate and Rekor entry
    (sigstore-python's v0.3 staging bundle, a signature over a text file) wrapped around a
    model-signing statement: it must refuse."""
    trust_config = pinned_trust_config(tmp_path, "staging")
    source = TESTDATA / "bundle_v3.txt.sigstore"
    bundle = json.loads(source.read_text())
    cert_signed = tmp_path / "cert.sig"
    pki = CodeSigningPki.create(tmp_path / "pki")
    cert_sign(model, pki, pki.issue_leaf(), cert_signed)
    del bundle["messageSignature"]
    bundle["dsseEnvelope"] = json.loads(cert_signed.read_text())["dsseEnvelope"]
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(bundle))
    assert signature_kind(forged) == "sigstore"

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(ModelSignatureError, match=f"signature {forged} is invalid") as info:
        verify_model_sigstore(
            model,
            forged,
            identity="william@yossarian.net",
            oidc_issuer="https://github.com/login/oauth",
            trust_config=trust_config,
        )
    assert "DSSE: invalid signature" in str(info.value)  # certificate and log entry passed
    # The same bundle against the pinned production root fails earlier, on the certificate.
    with pytest.raises(ModelSignatureError) as info:
        verify_model_sigstore(
            model,
            forged,
            identity="william@yossarian.net",
            oidc_issuer="https://github.com/login/oauth",
            trust_config=pinned_trust_config(tmp_path, "production"),
        )
    assert "certificate chain" in str(info.value)


def test_a_certificate_signature_verifies_without_the_model_files(
    model, pki, leaf, signed, tmp_path
):
    from linegate.modelsig import verify_signature_certificate

    raw, pinned = signed.read_bytes(), pki.root_pem.read_bytes()
    verified = verify_signature_certificate(raw, pinned, name="model/2.1.0.sig")
    assert (
        verified.manifest_sha256
        == verify_model_certificate(model, pki.root_pem, signed).manifest_sha256
    )
    assert verified.certificate.subject == "CN=release-signer,O=Linegate Test Plant"
    assert [f.path for f in verified.files] == MODEL_FILES

    def refused(data: bytes, trust: bytes = pinned, **kw) -> str:
        with pytest.raises(ModelSignatureError) as e:
            verify_signature_certificate(
                data, trust, name="model/2.1.0.sig", pinned_name="ca.pem", **kw
            )
        return str(e.value)

    bundle = json.loads(raw)
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    assert "does not verify with its signing certificate" in refused(json.dumps(bundle).encode())

    statement = json.loads(base64.b64decode(json.loads(raw)["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    bundle = json.loads(raw)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    assert "the bundle was altered" in refused(json.dumps(bundle).encode())

    other = CodeSigningPki.create(tmp_path / "other", name="Other Plant")
    assert "signed under another CA" in refused(raw, other.root_pem.read_bytes())
    later = leaf.cert.not_valid_after_utc + DAY
    assert "expired on" in refused(raw, at=later)

    server = pki.issue_leaf("tls-server", code_signing=False)
    tls_signed = raw_model_signing_sign(model, pki, server, tmp_path / "tls.sig")
    assert "not a code-signing certificate" in refused(tls_signed.read_bytes())

    key_signed = tmp_path / "key.sig"
    from cryptography.hazmat.primitives.asymmetric import ec

    (tmp_path / "k.pem").write_bytes(private_key_pem(ec.generate_private_key(ec.SECP256R1())))
    sign_model(model, tmp_path / "k.pem", key_signed)
    assert "carries no certificate chain" in refused(key_signed.read_bytes())


# ------------------------------------------------------------------ the signer's identity


def _names(pki: CodeSigningPki, name: str, sans) -> SigningCertificate:
    return describe(pki.issue_leaf(name, sans=sans).cert)


def test_an_identity_matches_only_a_name_of_its_own_kind(pki):
    registry = _names(pki, "linegate-registry", [])
    subject = registry.subject  # CN=linegate-registry,O=...
    assert identity_of(registry) == subject  # no SAN: its RFC 4514 subject
    check_identity(registry, subject, "pinned")
    signer = _names(pki, "release-signer", [x509.RFC822Name("release-signer@plant.example")])
    assert identity_of(signer) == "release-signer@plant.example"
    check_identity(signer, "release-signer@plant.example", "pinned")
    check_identity(signer, "email:release-signer@plant.example", "pinned")

    # Another certificate of the same CA, with SANs spelled like the pinned names: a CA that
    # copies a request's SANs issues these. Neither passes for the registry or the signer.
    mallory = _names(
        pki,
        "mallory",
        [x509.UniformResourceIdentifier(subject), x509.DNSName("release-signer@plant.example")],
    )
    for pinned in (subject, "release-signer@plant.example", "", "subject:"):
        with pytest.raises(CertificateError, match="not issued to the expected identity"):
            check_identity(mallory, pinned, "pinned")
    # Named with their kinds, its own names do match.
    check_identity(mallory, f"uri:{subject}", "pinned")
    check_identity(mallory, "dns:release-signer@plant.example", "pinned")
    # Its published identity says the kind its shape would not.
    assert identity_of(mallory) == "dns:release-signer@plant.example"
