"""Signing a push with the digests taken while it streamed in, instead of reading it back:
the statement is the one hashing makes, and verification still re-hashes."""

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.modelsig import (
    KnownDigest,
    ModelSignatureError,
    read_signature,
    sign_model,
    verify_model,
)
from linegate.signing import private_key_pem, public_key_pem
from linegate.testing.onnx_models import write_model_dir
from tests.registry.conftest import MODEL


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "release.pem", tmp_path / "release.pub.pem"
    private.write_bytes(private_key_pem(key))
    public.write_bytes(public_key_pem(key.public_key()))
    return private, public


def known_digests(folder: Path, *names: str) -> dict[str, KnownDigest]:
    return {
        n: KnownDigest(
            hashlib.sha256((folder / n).read_bytes()).hexdigest(), (folder / n).stat().st_size
        )
        for n in names
    }


def test_signing_with_known_digests_makes_the_statement_hashing_makes(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    folder = write_model_dir(tmp_path / MODEL)
    sign_model(folder, private, tmp_path / "hashed.sig")
    known = known_digests(folder, "model.onnx", "preprocess.json", "model_card.md")
    sign_model(folder, private, tmp_path / "known.sig", known_digests=known)
    hashed, given = read_signature(tmp_path / "hashed.sig"), read_signature(tmp_path / "known.sig")
    assert given == hashed
    assert verify_model(folder, public, tmp_path / "known.sig").manifest_sha256 == (
        hashed.manifest_sha256
    )


def test_known_digests_are_signed_as_given_and_verification_rehashes(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """The file is not read to sign it (a wrong digest is signed as given); verifying is what
    catches a digest that does not match the bytes, so the registry's re-verification holds."""
    private, public = keys
    folder = write_model_dir(tmp_path / MODEL)
    size = (folder / "model.onnx").stat().st_size
    wrong = {"model.onnx": KnownDigest("ab" * 32, size)}
    sign_model(folder, private, tmp_path / "model.sig", known_digests=wrong)
    files = dict(read_signature(tmp_path / "model.sig").files)
    assert files["model.onnx"] == "ab" * 32
    # Files without a known digest are hashed as usual.
    assert (
        files["model_card.md"]
        == hashlib.sha256((folder / "model_card.md").read_bytes()).hexdigest()
    )
    with pytest.raises(ModelSignatureError, match=r"changed since signing: model\.onnx"):
        verify_model(folder, public, tmp_path / "model.sig")


def test_a_known_digest_of_another_size_or_malformed_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, _ = keys
    folder = write_model_dir(tmp_path / MODEL)
    known = known_digests(folder, "model.onnx")
    grown = {"model.onnx": known["model.onnx"]._replace(size=known["model.onnx"].size - 1)}
    with pytest.raises(ModelSignatureError, match="changed after it was written"):
        sign_model(folder, private, tmp_path / "model.sig", known_digests=grown)
    bad = {"model.onnx": known["model.onnx"]._replace(sha256="not hex")}
    with pytest.raises(ModelSignatureError, match="invalid known digest"):
        sign_model(folder, private, tmp_path / "model.sig", known_digests=bad)
    outside = {"../x": known["model.onnx"]}
    with pytest.raises(ModelSignatureError, match="invalid known digest"):
        sign_model(folder, private, tmp_path / "model.sig", known_digests=outside)
    assert not (tmp_path / "model.sig").exists()


async def test_a_push_is_signed_without_reading_the_upload_back(
    registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_signing._hashing import io

    await registry.create_system()
    await registry.create_model()

    def no_rehash(self: Any) -> Any:
        raise AssertionError(f"signing re-read {self._file}")

    monkeypatch.setattr(io.SimpleFileHasher, "compute", no_rehash)
    files = registry.artefact("1.0.0")
    r = await registry.push("1.0.0", files=files)
    assert r.status_code == 201, r.text
    signed = {f["path"]: f["sha256"] for f in r.json()["files"]}
    names = {"model": "model.onnx", "preprocess": "preprocess.json", "model_card": "model_card.md"}
    assert signed == {names[p]: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    monkeypatch.undo()
    # Verification re-hashes the stored files against that signature.
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions/1.0.0/verify", headers=registry.auth()
    )
    assert r.json()["verified"] is True, r.json()
