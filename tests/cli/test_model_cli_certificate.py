"""``linegate model sign|verify`` with certificates: a real root -> intermediate -> code-signing
leaf, real ONNX model folders, offline; the documented ``--public-key`` form is unchanged."""

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from typer.testing import CliRunner

from linegate.modelsig import sign_model_certificate, verify_model_certificate
from linegate.testing.onnx_models import write_model_dir
from linegate.testing.pki import CodeSigningPki, LeafFiles
from linegate_cli.main import app

CERT_VERIFIED = re.compile(
    r"verified: 3 files, manifest sha256:[0-9a-f]{64}, "
    r"certificate CN=release-signer,O=Linegate Test Plant \[release-signer@plant\.example\] "
    r"\(sha256 (?P<fp>[0-9a-f]{16})\), key [0-9a-f]{16}"
)


@pytest.fixture
def pki(tmp_path) -> CodeSigningPki:
    return CodeSigningPki.create(tmp_path / "pki")


@pytest.fixture
def leaf(pki) -> LeafFiles:
    return pki.issue_leaf()


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model_dir(tmp_path / "model")


def run(*args: str | Path):
    return CliRunner().invoke(app, ["model", *map(str, args)])


def cli_sign(model: Path, pki: CodeSigningPki, leaf: LeafFiles, signature: Path):
    return run(
        "sign", model, "--signing-key", leaf.key, "--certificate", leaf.certificate,
        "--certificate-chain", pki.chain_pem, "--signature", signature,
    )  # fmt: skip


@pytest.fixture
def signature(model, pki, leaf, tmp_path) -> Path:
    path = tmp_path / "model.sig"
    result = cli_sign(model, pki, leaf, path)
    assert result.exit_code == 0, result.output
    return path


def test_sign_with_a_certificate_then_verify_against_the_root(model, pki, leaf, tmp_path):
    path = tmp_path / "model.sig"
    result = cli_sign(model, pki, leaf, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"signed: 3 files into {path}, certificate CN=release-signer")
    # What the CLI wrote is a real certificate signature the library verifies.
    assert verify_model_certificate(model, pki.root_pem, path).certificate is not None

    result = run("verify", model, "--signature", path, "--certificate-chain", pki.root_pem)
    assert result.exit_code == 0, result.output
    match = CERT_VERIFIED.fullmatch(result.stdout.rstrip("\n"))
    assert match, result.stdout
    assert match["fp"] == leaf.cert.fingerprint(hashes.SHA256()).hex()[:16]


def test_a_changed_byte_exits_1_naming_the_file(model, pki, signature):
    onnx = model / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    result = run("verify", model, "--signature", signature, "--certificate-chain", pki.root_pem)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "changed since signing: model.onnx" in result.stderr


def test_a_leaf_from_another_ca_exits_1(model, pki, tmp_path):
    other = CodeSigningPki.create(tmp_path / "other", name="Other Plant")
    path = tmp_path / "other.sig"
    assert cli_sign(model, other, other.issue_leaf("release-signer"), path).exit_code == 0
    result = run("verify", model, "--signature", path, "--certificate-chain", pki.root_pem)
    assert result.exit_code == 1
    assert "signed under another CA" in result.stderr


def test_an_expired_leaf_exits_1(model, pki, tmp_path):
    now = datetime.now(UTC)
    expired = pki.issue_leaf(
        "expired", not_before=now - timedelta(60), not_after=now - timedelta(1)
    )
    path = tmp_path / "expired.sig"
    sign_model_certificate(
        model, path, private_key=expired.key, certificate=expired.certificate,
        certificate_chain=[pki.chain_pem], at=now - timedelta(30),
    )  # fmt: skip
    result = run("verify", model, "--signature", path, "--certificate-chain", pki.root_pem)
    assert result.exit_code == 1
    assert "expired on" in result.stderr
    # And the CLI refuses to sign with it now.
    result = cli_sign(model, pki, expired, tmp_path / "again.sig")
    assert result.exit_code == 1
    assert "expired on" in result.stderr


def test_identity_pins_the_signer_beyond_its_ca(model, pki, signature, tmp_path):
    base = ["verify", model, "--signature", signature, "--certificate-chain", pki.root_pem]
    for name in ("release-signer@plant.example", "CN=release-signer,O=Linegate Test Plant"):
        result = run(*base, "--identity", name)
        assert result.exit_code == 0, result.output
        assert CERT_VERIFIED.fullmatch(result.stdout.rstrip("\n")), result.stdout
    # Another code-signing certificate from the same CA chains to the pinned root, so only
    # the identity tells it apart from the registry's.
    path = tmp_path / "supplier.sig"
    supplier = pki.issue_leaf("supplier-ci", san_email="ci@optivision.example")
    assert cli_sign(model, pki, supplier, path).exit_code == 0
    unpinned = ["verify", model, "--signature", path, "--certificate-chain", pki.root_pem]
    assert run(*unpinned).exit_code == 0
    result = run(*unpinned, "--identity", "release-signer@plant.example")
    assert result.exit_code == 1
    assert "is not issued to the expected identity 'release-signer@plant.example'" in (
        result.stderr
    )
    assert "ci@optivision.example" in result.stderr
    public = run(
        "verify", model, "--signature", signature, "--public-key", tmp_path / "k.pem",
        "--identity", "release-signer@plant.example",
    )  # fmt: skip
    assert public.exit_code == 2


def test_a_certificate_signature_checked_with_a_public_key_exits_1(
    model, leaf, signature, tmp_path
):
    from linegate.signing import public_key_pem

    public = tmp_path / "leaf.pub.pem"
    public.write_bytes(public_key_pem(leaf.cert.public_key()))  # type: ignore[arg-type]
    result = run("verify", model, "--signature", signature, "--public-key", public)
    assert result.exit_code == 1
    assert "made with a certificate chain, not a bare key" in result.stderr


def test_verify_needs_exactly_one_trust_option(model, pki, signature, tmp_path):
    result = run("verify", model, "--signature", signature)
    assert result.exit_code == 2
    assert "give exactly one of --public-key" in result.output
    both = run(
        "verify", model, "--signature", signature, "--certificate-chain", pki.root_pem,
        "--public-key", tmp_path / "x.pem",
    )  # fmt: skip
    assert both.exit_code == 2


def test_a_chain_without_a_certificate_is_a_usage_error(model, pki, leaf, tmp_path):
    result = run(
        "sign", model, "--key", leaf.key, "--certificate-chain", pki.chain_pem,
        "--signature", tmp_path / "s.sig",
    )  # fmt: skip
    assert result.exit_code == 2
    assert not (tmp_path / "s.sig").exists()


def test_sigstore_sign_without_a_trust_config_exits_1_before_any_network(model, tmp_path):
    token = tmp_path / "token"
    token.write_text("a.b.c")
    result = run("sign", model, "--identity-token", token, "--signature", tmp_path / "s.sig")
    assert result.exit_code == 1
    assert "needs a pinned trust config" in result.stderr


def test_sigstore_verify_needs_identity_and_issuer(model, signature, tmp_path):
    result = run("verify", model, "--signature", signature, "--trust-config", tmp_path / "t.json")
    assert result.exit_code == 2
    assert "--trust-config needs --identity and --oidc-issuer" in result.output


def test_the_installed_command_prints_exactly_one_line(model, pki, signature):
    argv = [sys.executable, "-m", "linegate_cli.main", "model", "verify", model]
    argv += ["--signature", signature, "--certificate-chain", pki.root_pem]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert CERT_VERIFIED.fullmatch(result.stdout.rstrip("\n"))
    assert result.stdout.count("\n") == 1
