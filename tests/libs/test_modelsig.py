"""OpenSSF model signatures over real ONNX model folders, with real EC keys, offline."""

import base64
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from linegate.modelsig import (
    ModelSignatureError,
    SignedFile,
    sign_model,
    signed_digests,
    verify_model,
)
from linegate.signing import SignatureError, key_id, private_key_pem, public_key_pem
from linegate.testing.onnx_models import (
    INPUT_NAME,
    build_classifier,
    build_regressing_classifier,
    labelled_batch,
    write_model_dir,
)

MODEL_FILES = ["model.onnx", "model_card.md", "preprocess.json"]


@dataclass
class KeyPair:
    private: Path
    public: Path
    key_id: str


@pytest.fixture
def make_keys(tmp_path) -> Callable[..., KeyPair]:
    def make(name: str = "release", key=None) -> KeyPair:
        key = key or ec.generate_private_key(ec.SECP256R1())
        private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        private.write_bytes(private_key_pem(key))
        public.write_bytes(public_key_pem(key.public_key()))
        return KeyPair(private, public, key_id(key.public_key()))

    return make


@pytest.fixture
def keys(make_keys) -> KeyPair:
    return make_keys()


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model_dir(tmp_path / "weld-seam-inspector")


@pytest.fixture
def signed(model, keys, tmp_path) -> Path:
    signature = tmp_path / "model.sig"
    sign_model(model, keys.private, signature)
    return signature


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statement_of(signature: Path) -> dict:
    bundle = json.loads(signature.read_bytes())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def error_of(*args, **kwargs) -> ModelSignatureError:
    with pytest.raises(ModelSignatureError) as info:
        verify_model(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------------ round trip


def test_sign_then_verify_returns_every_file_digest_from_the_statement(model, keys, signed):
    verified = verify_model(model, keys.public, signed)

    assert verified.files == tuple(SignedFile(n, sha256(model / n)) for n in MODEL_FILES)
    assert verified.key_id == keys.key_id
    assert verified.model_name == "weld-seam-inspector"
    # The subject digest is SHA-256 over the file digests in path order (model_signing v1.0).
    root = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in verified.files))
    assert verified.manifest_sha256 == root.hexdigest()


def test_the_signature_is_a_sigstore_bundle_with_a_dsse_in_toto_statement(model, signed):
    bundle = json.loads(signed.read_bytes())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    statement = statement_of(signed)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["predicate"]["serialization"]["hash_type"] == "sha256"
    resources = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert resources == {n: sha256(model / n) for n in MODEL_FILES}


def test_verify_succeeds_after_the_folder_is_moved(model, keys, signed, tmp_path):
    moved = model.rename(tmp_path / "elsewhere")
    assert len(verify_model(moved, keys.public, signed).files) == 3


def test_signed_digests_reads_the_statement_without_a_key(model, keys, signed):
    digests = signed_digests(signed)
    assert digests == {n: sha256(model / n) for n in MODEL_FILES}
    assert digests == dict(verify_model(model, keys.public, signed).files)


def test_signature_inside_the_model_folder_is_not_signed(model, keys):
    signature = model / "model.sig"
    sign_model(model, keys.private, signature)

    assert "model.sig" not in signed_digests(signature)
    assert "model.sig" in statement_of(signature)["predicate"]["serialization"]["ignore_paths"]
    assert [f.path for f in verify_model(model, keys.public, signature).files] == MODEL_FILES


def test_signing_leaves_no_temporary_file_beside_the_signature(model, keys, tmp_path):
    out = tmp_path / "sigs"
    out.mkdir()
    sign_model(model, keys.private, out / "model.sig")
    assert [p.name for p in out.iterdir()] == ["model.sig"]


def test_git_files_are_signed_like_any_other(model, keys, signed, tmp_path):
    (model / ".gitattributes").write_text("*.onnx filter=lfs\n")
    signature = tmp_path / "with-git.sig"
    sign_model(model, keys.private, signature)
    assert ".gitattributes" in signed_digests(signature)


# ---------------------------------------------------------------------------- tampering


def test_flipping_one_byte_of_the_model_fails_naming_the_file(model, keys, signed):
    onnx_path = model / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_path.write_bytes(bytes(data))

    error = error_of(model, keys.public, signed)
    assert "changed since signing: model.onnx" in str(error)
    assert "model_card.md" not in str(error)
    assert isinstance(error.__cause__, ValueError)  # model_signing's error, kept as the cause


def test_an_added_file_fails_naming_it(model, keys, signed):
    (model / "extra.bin").write_bytes(b"\x00")
    assert "not in the signature (added): extra.bin" in str(error_of(model, keys.public, signed))


def test_an_added_file_in_a_subfolder_fails_naming_it(model, keys, signed):
    (model / "calibration").mkdir()
    (model / "calibration" / "table.json").write_text("{}")
    error = error_of(model, keys.public, signed)
    assert "(added): calibration/table.json" in str(error)


def test_a_removed_file_fails_naming_it(model, keys, signed):
    (model / "preprocess.json").unlink()
    assert "missing (removed or ignored): preprocess.json" in str(
        error_of(model, keys.public, signed)
    )


def test_the_wrong_public_key_fails(model, signed, make_keys):
    other = make_keys("other")
    error = error_of(model, other.public, signed)
    assert "different key" in str(error)
    assert other.key_id[:16] in str(error)


def test_a_signature_from_another_key_with_a_forged_key_hint_fails(model, keys, signed, make_keys):
    # Re-sign the same statement with another key but keep the original bundle's key hint.
    other = make_keys("other")
    forged = signed.with_name("forged.sig")
    sign_model(model, other.private, forged)
    bundle = json.loads(forged.read_bytes())
    bundle["verificationMaterial"] = json.loads(signed.read_bytes())["verificationMaterial"]
    forged.write_text(json.dumps(bundle))

    error = error_of(model, keys.public, forged)
    assert "does not verify with public key" in str(error)


def test_an_edited_statement_fails_the_signature_check(model, keys, signed):
    # Point the statement at a tampered model.onnx: the DSSE signature no longer covers it.
    onnx_path = model / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\x00")
    bundle = json.loads(signed.read_bytes())
    statement = statement_of(signed)
    for resource in statement["predicate"]["resources"]:
        if resource["name"] == "model.onnx":
            resource["digest"] = sha256(onnx_path)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signed.write_text(json.dumps(bundle))

    assert "does not verify" in str(error_of(model, keys.public, signed))


def test_a_signature_of_model_a_does_not_verify_model_b(keys, tmp_path):
    model_a = write_model_dir(tmp_path / "a")
    model_b = write_model_dir(tmp_path / "b", bad_class=1)
    sig_a = tmp_path / "a.sig"
    sign_model(model_a, keys.private, sig_a)
    sign_model(model_b, keys.private, tmp_path / "b.sig")
    assert verify_model(model_a, keys.public, sig_a)

    error = error_of(model_b, keys.public, sig_a)
    assert "changed since signing: model.onnx" in str(error)
    assert "model_card.md" in str(error)  # its "Known weakness" line differs too


def test_a_symlink_in_the_folder_is_refused(model, keys, signed, tmp_path):
    (model / "weights.bin").symlink_to(tmp_path / "model.sig")
    error = error_of(model, keys.public, signed)
    assert "cannot hash model directory" in str(error)
    assert "symlink" in str(error)


# -------------------------------------------------------------------------- ignore paths


def test_paths_ignored_when_signing_are_ignored_when_verifying(model, keys, tmp_path):
    (model / "notes").mkdir()
    (model / "notes" / "a.txt").write_text("draft")
    (model / "README.local").write_text("site notes")
    signature = tmp_path / "model.sig"
    sign_model(model, keys.private, signature, ignore_paths=[Path("notes"), Path("README.local")])

    (model / "notes" / "a.txt").write_text("edited after signing")
    (model / "README.local").unlink()
    verified = verify_model(model, keys.public, signature)
    assert [f.path for f in verified.files] == MODEL_FILES


def test_paths_ignored_when_verifying_skip_local_files(model, keys, signed):
    (model / "device.log").write_text("boot\n")
    error_of(model, keys.public, signed)  # without the ignore it fails

    verified = verify_model(model, keys.public, signed, ignore_paths=[model / "device.log"])
    assert len(verified.files) == 3


def test_an_ignore_path_cannot_hide_a_signed_file(model, keys, signed):
    error = error_of(model, keys.public, signed, ignore_paths=[Path("model.onnx")])
    assert "missing (removed or ignored): model.onnx" in str(error)


@pytest.mark.parametrize(
    "outside", [Path(".."), Path("/etc/passwd"), Path()], ids=["parent", "absolute", "the-folder"]
)
def test_an_ignore_path_outside_the_folder_is_an_error(model, keys, signed, outside):
    assert "not inside the model directory" in str(
        error_of(model, keys.public, signed, ignore_paths=[outside])
    )


# ------------------------------------------------------------------------- bad inputs


def test_a_missing_signature_file_is_reported(model, keys, tmp_path):
    assert "cannot read signature" in str(error_of(model, keys.public, tmp_path / "none.sig"))


def test_a_missing_model_folder_is_reported(keys, signed, tmp_path):
    assert "does not exist" in str(error_of(tmp_path / "absent", keys.public, signed))


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[]", b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'],
    ids=["garbage", "array", "no-envelope"],
)
def test_a_file_that_is_not_a_bundle_is_reported(model, keys, tmp_path, content):
    bad = tmp_path / "bad.sig"
    bad.write_bytes(content)
    assert "is not a model-signing bundle" in str(error_of(model, keys.public, bad))
    with pytest.raises(ModelSignatureError):
        signed_digests(bad)


def test_a_bundle_without_a_key_hint_is_refused_with_advice(model, keys, signed):
    bundle = json.loads(signed.read_bytes())
    del bundle["verificationMaterial"]["publicKey"]["hint"]
    signed.write_text(json.dumps(bundle))
    assert "re-sign" in str(error_of(model, keys.public, signed))


def test_a_blake2_signature_is_refused(model, keys, tmp_path):
    from model_signing import hashing, signing

    signature = tmp_path / "blake2.sig"
    signing.Config().use_elliptic_key_signer(private_key=keys.private).set_hashing_config(
        hashing.Config().use_file_serialization(hashing_algorithm="blake2")
    ).sign(model, signature)

    assert "per-file sha256 only" in str(error_of(model, keys.public, signature))


def test_a_model_error_is_a_signature_error():
    assert issubclass(ModelSignatureError, SignatureError)


def test_signing_with_an_rsa_key_is_refused(model, make_keys, tmp_path):
    rsa_keys = make_keys("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(ModelSignatureError, match="need an EC key"):
        sign_model(model, rsa_keys.private, tmp_path / "model.sig")


def test_signing_into_a_missing_folder_is_reported(model, keys, tmp_path):
    with pytest.raises(ModelSignatureError, match="cannot write signature"):
        sign_model(model, keys.private, tmp_path / "no" / "such" / "model.sig")


def test_a_p384_key_works_too(model, make_keys, tmp_path):
    p384 = make_keys("p384", ec.generate_private_key(ec.SECP384R1()))
    signature = tmp_path / "p384.sig"
    sign_model(model, p384.private, signature)
    assert verify_model(model, p384.public, signature).key_id == p384.key_id


# -------------------------------------------------------------------------------- offline


def test_signing_and_verifying_never_touch_the_network(model, keys, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.com", 443))  # the guard is in place

    signature = tmp_path / "offline.sig"
    sign_model(model, keys.private, signature)
    assert len(verify_model(model, keys.public, signature).files) == 3


# ------------------------------------------------------------------- interoperability


def _model_signing_cli() -> Path:
    cli = Path(sys.executable).parent / "model_signing"
    if not cli.exists():
        pytest.skip(f"the model_signing CLI is not installed beside {sys.executable}")
    return cli


def test_our_signature_verifies_with_the_model_signing_cli(model, keys, signed):
    result = subprocess.run(
        [
            _model_signing_cli(),
            "verify",
            "key",
            "--signature",
            signed,
            "--public_key",
            keys.public,
            model,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_model_signing_cli_signature_verifies_with_ours(model, keys):
    signature = model / "model.sig"
    result = subprocess.run(
        [
            _model_signing_cli(),
            "sign",
            "key",
            "--private_key",
            keys.private,
            "--signature",
            signature,
            model,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [f.path for f in verify_model(model, keys.public, signature).files] == MODEL_FILES


# -------------------------------------------------------------------------- ONNX models


def _predict(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: images})[0]


def test_the_tiny_classifier_runs_in_onnxruntime_and_is_accurate(tmp_path):
    images, labels = labelled_batch(20)
    probabilities = _predict(build_classifier(tmp_path / "c.onnx"), images)
    assert probabilities.shape == (60, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() == 1.0


def test_the_regressing_classifier_is_worse_on_its_class_only(tmp_path):
    images, labels = labelled_batch(20)
    good = _predict(build_classifier(tmp_path / "good.onnx"), images).argmax(axis=1)
    bad = _predict(build_regressing_classifier(tmp_path / "bad.onnx", bad_class=2), images)
    bad = bad.argmax(axis=1)

    def accuracy(predicted, k):
        return (predicted[labels == k] == k).mean()

    assert accuracy(good, 2) == 1.0
    assert accuracy(bad, 2) <= 0.1
    assert accuracy(bad, 0) == accuracy(bad, 1) == 1.0


def test_weights_control_the_classifier(tmp_path):
    images, _ = labelled_batch(5)
    always_dent = np.zeros((3, 3), dtype=np.float32)
    path = build_classifier(tmp_path / "dent.onnx", weights=always_dent, bias=[0.0, 0.0, 5.0])
    assert (_predict(path, images).argmax(axis=1) == 2).all()


def test_the_model_folder_holds_a_runnable_model_and_its_preprocessing(model):
    assert sorted(p.name for p in model.iterdir()) == MODEL_FILES
    preprocess = json.loads((model / "preprocess.json").read_text())
    images, labels = labelled_batch(3)
    assert preprocess["input"] == INPUT_NAME
    predicted = _predict(model / "model.onnx", images).argmax(axis=1)
    assert [preprocess["labels"][i] for i in predicted] == [preprocess["labels"][i] for i in labels]


def test_the_classifier_refuses_weights_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="weights must be"):
        build_classifier(tmp_path / "x.onnx", weights=np.zeros((2, 3)))
