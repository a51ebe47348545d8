"""Signing and verifying with a bare EC key (PEM), offline."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.modelsig._bundle import _check_serialization, _parse_bundle, _read_signature
from linegate.modelsig._runner import _model_root, _run_signer, _run_verifier
from linegate.modelsig._types import (
    KnownDigest,
    ModelSignatureError,
    VerifiedModel,
    _reason,
    _Statement,
)
from linegate.signing import SignatureError, key_id, load_private_key, load_public_key

if TYPE_CHECKING:
    from model_signing.verifying import Config as VerifyingConfig


def sign_model(
    model_dir: Path,
    private_key_pem_path: Path,
    signature_path: Path,
    *,
    ignore_paths: Sequence[Path] = (),
    known_digests: Mapping[str, KnownDigest] | None = None,
) -> None:
    """Sign every file in ``model_dir`` with an EC private key (PEM, unencrypted).

    ``ignore_paths`` are relative to ``model_dir`` (or absolute, inside it); a directory ignores
    everything under it. The signature is written atomically: a reader never sees half of it.

    ``known_digests`` maps files (POSIX paths relative to ``model_dir``) to digests the caller
    computed over exactly the bytes it wrote to them; those files are not read again (a file
    whose size differs is refused), every other file is hashed as usual. The caller vouches for
    these digests: pass only files this process wrote and nothing else changes until the
    signature is made. Which files are signed does not change: model_signing still walks the
    directory. Verification always re-hashes.

    Raises :class:`ModelSignatureError` when the key, the directory or the write fails.
    """
    root = _model_root(model_dir)
    _load_ec_private_key(private_key_pem_path)
    _run_signer(
        root,
        signature_path,
        ignore_paths,
        lambda config: config.use_elliptic_key_signer(private_key=private_key_pem_path),
        known_digests,
    )


def verify_model(
    model_dir: Path,
    public_key_pem_path: Path,
    signature_path: Path,
    *,
    ignore_paths: Sequence[Path] = (),
) -> VerifiedModel:
    """Verify ``signature_path`` over ``model_dir`` with an EC public key (PEM), offline.

    The directory must hold exactly the signed files with the signed contents, apart from the
    paths the signature says it ignored, ``ignore_paths`` (relative to ``model_dir`` or absolute
    inside it; they may not hide a signed file) and the signature file itself. Raises
    :class:`ModelSignatureError` naming the added, removed or changed files, or saying that the
    signature does not match the key.
    """
    root = _model_root(model_dir)
    public_key = _load_ec_public_key(public_key_pem_path)
    raw = _read_signature(signature_path)
    statement = _parse_bundle(raw, signature_path)
    _check_key_hint(statement, public_key, public_key_pem_path, signature_path)
    _check_serialization(statement, signature_path)

    def use_key(verifier: VerifyingConfig, tmp: Path) -> VerifyingConfig:
        key_copy = tmp / "key.pub.pem"
        key_copy.write_bytes(_spki_pem(public_key))
        return verifier.use_elliptic_key_verifier(public_key=key_copy)

    _run_verifier(
        root,
        raw,
        signature_path,
        statement,
        ignore_paths,
        use_key,
        bad_signature=f"signature {signature_path} does not verify with public key "
        f"{public_key_pem_path} (key {key_id(public_key)[:16]}): the bundle was altered "
        "or signed with a different key",
    )
    return VerifiedModel(
        files=statement.files,
        manifest_sha256=statement.manifest_sha256,
        key_id=key_id(public_key),
        model_name=statement.model_name,
    )


def _load_ec_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = load_private_key(Path(path).read_bytes())
    except (OSError, SignatureError, ValueError, TypeError) as e:
        raise ModelSignatureError(f"cannot load private key {path}: {_reason(e)}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ModelSignatureError(
            f"private key {path} is {type(key).__name__}; model signatures need an EC key "
            "(P-256, P-384 or P-521)"
        )
    _check_curve(key.curve, path)
    return key


def _load_ec_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = load_public_key(Path(path).read_bytes())
    except (OSError, SignatureError) as e:
        raise ModelSignatureError(f"cannot load public key {path}: {_reason(e)}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ModelSignatureError(
            f"public key {path} is {type(key).__name__}; model signatures need an EC key "
            "(P-256, P-384 or P-521)"
        )
    _check_curve(key.curve, path)
    return key


def _check_curve(curve: ec.EllipticCurve, path: Path) -> None:
    if not isinstance(curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
        raise ModelSignatureError(f"key {path} uses curve {curve.name}; use P-256")


def _spki_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_hint(
    statement: _Statement,
    public_key: ec.EllipticCurvePublicKey,
    public_key_path: Path,
    signature_path: Path,
) -> None:
    # model_signing (1.1 here) names the signing key by the SHA-256 of its PEM; checking it here
    # gives the clearest message for the commonest mistake, and bundles without it would make
    # model_signing print a warning on stdout, which would break the CLI's one-line output.
    if statement.key_hint is None and (statement.certificates or statement.sigstore_certificate):
        how = "a certificate chain" if statement.certificates else "Sigstore (keyless)"
        raise ModelSignatureError(
            f"signature {signature_path} was made with {how}, not a bare key: verify it with "
            "the pinned certificate chain or Sigstore trust config instead of a public key"
        )
    if statement.key_hint is None:
        raise ModelSignatureError(
            "signature has no public-key hint (it was made by an older model_signing); "
            "re-sign it with `linegate model sign` or model_signing >= 1.1"
        )
    if statement.key_hint != hashlib.sha256(_spki_pem(public_key)).hexdigest():
        raise ModelSignatureError(
            f"signature was made with a different key than public key {public_key_path} "
            f"(key {key_id(public_key)[:16]})"
        )
