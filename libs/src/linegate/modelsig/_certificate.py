"""Signing with an EC key and its code-signing certificate, and verifying against a pinned chain
(a model directory, or a signature alone); :func:`verify_model_pinned` picks key or chain by the
pinned trust file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from linegate._modelsig_x509 import (
    CertificateError,
    SigningCertificate,
    check_identity,
    check_signing_certificate,
    describe,
    identity_of,
    issuer_path,
    load_certificate,
    load_certificates,
    verify_chain,
    verify_chain_to,
)
from linegate.modelsig._bundle import _check_serialization, _parse_bundle, _read_signature
from linegate.modelsig._key import _load_ec_private_key, verify_model
from linegate.modelsig._runner import _model_root, _run_signer, _run_verifier
from linegate.modelsig._types import (
    KnownDigest,
    ModelSignatureError,
    VerifiedModel,
    VerifiedSignature,
)
from linegate.signing import SignatureError, dsse_verify, key_id

if TYPE_CHECKING:
    from model_signing.verifying import Config as VerifyingConfig


def sign_model_certificate(
    model_dir: Path,
    signature_path: Path,
    *,
    private_key: Path,
    certificate: Path,
    certificate_chain: Sequence[Path],
    ignore_paths: Sequence[Path] = (),
    at: datetime | None = None,
    known_digests: Mapping[str, KnownDigest] | None = None,
) -> SigningCertificate:
    """Sign every file in ``model_dir`` with an EC key and its code-signing certificate.

    ``certificate_chain`` are PEM files with the intermediates (and, optionally, the root) that
    lead from ``certificate`` to the root a verifier pins; they travel in the bundle. Refuses a
    certificate that does not belong to the key, is not a code-signing certificate
    (``digitalSignature`` key usage and ``codeSigning`` extended key usage) or is not valid at
    ``at`` (default: now): such a signature would not verify. ``known_digests`` as for
    :func:`sign_model`. Returns the signing certificate.
    """
    root = _model_root(model_dir)
    key = _load_ec_private_key(private_key)
    moment = _moment(at)
    try:
        cert = load_certificate(certificate, "signing certificate")
        for path in certificate_chain:
            load_certificates(path, "certificate chain")
        check_signing_certificate(cert, f"cannot sign with {certificate}", moment)
    except CertificateError as e:
        raise ModelSignatureError(str(e)) from e
    if cert.public_key() != key.public_key():
        raise ModelSignatureError(
            f"signing certificate {certificate} ({cert.subject.rfc4514_string()}) is not the "
            f"certificate of private key {private_key} (key {key_id(key.public_key())[:16]})"
        )

    def use_certificate(config: Any) -> Any:
        return config.use_certificate_signer(
            private_key=private_key,
            signing_certificate=certificate,
            certificate_chain=list(certificate_chain),
        )

    _run_signer(root, signature_path, ignore_paths, use_certificate, known_digests)
    return describe(cert)


def verify_model_certificate(
    model_dir: Path,
    certificate_chain_pem_path: Path,
    signature_path: Path,
    *,
    ignore_paths: Sequence[Path] = (),
    at: datetime | None = None,
    identity: str | None = None,
) -> VerifiedModel:
    """Verify a certificate-signed ``signature_path`` over ``model_dir`` offline.

    ``certificate_chain_pem_path`` is the pinned trust: a PEM file with the root CA (and
    optionally intermediates); nothing else is trusted, never the operating system's roots.
    The signing certificate must chain to it, be a code-signing certificate, and it and its
    CAs must be valid at ``at`` (default: now; the bundle has no trusted timestamp, so a model
    must be re-signed before its certificate expires). With ``identity`` (a subject
    alternative name or the RFC 4514 subject, as ``GET /v1/signing-keys`` publishes it), the
    signing certificate must also be issued to it, so another certificate the same CA issued
    is refused. Files are checked as by :func:`verify_model`. Raises
    :class:`ModelSignatureError` saying which check failed.
    """
    root = _model_root(model_dir)
    moment = _moment(at)
    raw = _read_signature(signature_path)
    statement = _parse_bundle(raw, signature_path)
    where = f"signature {signature_path}"
    if not statement.certificates:
        raise ModelSignatureError(
            f"{where} carries no certificate chain: "
            + (
                "it was signed with a bare key; verify it with the public key"
                if statement.key_hint
                else "it was not made by certificate signing"
            )
        )
    _check_serialization(statement, signature_path)
    try:
        leaf, *intermediates = (x509.load_der_x509_certificate(c) for c in statement.certificates)
        check_signing_certificate(leaf, where, moment)
        path = verify_chain(leaf, intermediates, certificate_chain_pem_path, where, moment)
    except CertificateError as e:
        raise ModelSignatureError(str(e)) from e
    except ValueError as e:  # a DER certificate that does not parse
        raise ModelSignatureError(f"{where} holds a malformed certificate: {e}") from e
    pinned = certificate_chain_pem_path

    def use_chain(verifier: VerifyingConfig, tmp: Path) -> VerifyingConfig:
        chain_copy = tmp / "pinned-chain.pem"
        chain_copy.write_bytes(Path(pinned).read_bytes())
        return verifier.use_certificate_verifier(certificate_chain=[chain_copy])

    signer = describe(leaf, path)
    _check_identity(signer, identity, where)
    _run_verifier(
        root,
        raw,
        signature_path,
        statement,
        ignore_paths,
        use_chain,
        bad_signature=f"{where} does not verify with its signing certificate {signer.subject}: "
        "the bundle was altered",
    )
    return VerifiedModel(
        files=statement.files,
        manifest_sha256=statement.manifest_sha256,
        key_id=signer.key_id,
        model_name=statement.model_name,
        certificate=signer,
    )


def describe_signing_certificate(
    certificate: Path, certificate_chain: Path | None = None
) -> SigningCertificate:
    """Describe a signer's own certificate (one PEM) for publishing: subject, SANs, issuer,
    validity, fingerprint; ``chain`` names its issuers found by name in ``certificate_chain``
    (PEM), issuer first. Nothing is verified here (signing and verification do that)."""
    try:
        cert = load_certificate(certificate, "signing certificate")
        candidates = (
            load_certificates(certificate_chain, "certificate chain") if certificate_chain else []
        )
    except CertificateError as e:
        raise ModelSignatureError(str(e)) from e
    return describe(cert, issuer_path(cert, candidates))


def signing_identity(certificate: SigningCertificate) -> str:
    """The name to pin a certificate signer by (the ``identity`` of
    :func:`verify_model_certificate`): its first subject alternative name, else its subject."""
    return identity_of(certificate)


def verify_signature_certificate(
    signature: bytes,
    pinned_chain: bytes,
    *,
    at: datetime | None = None,
    name: str = "model.sig",
    pinned_name: str = "pinned certificate chain",
    identity: str | None = None,
) -> VerifiedSignature:
    """Verify a certificate-signed model-signing bundle on its own, offline: its signing
    certificate chains to ``pinned_chain`` (PEM with the root CA; nothing else is trusted)
    and is an EC code-signing certificate valid at ``at`` (default: now), and its DSSE
    envelope verifies with that certificate's key. For evidence kept apart from the model
    (an auditor's bundle): the statement says which files were signed, without hashing them.
    ``identity`` pins the signer as for :func:`verify_model_certificate`.
    ``name`` and ``pinned_name`` name the two inputs in messages. Raises
    :class:`ModelSignatureError` saying which check failed.
    """
    moment = _moment(at)
    where = f"signature {name}"
    statement = _parse_bundle(signature, Path(name))
    if not statement.certificates:
        raise ModelSignatureError(
            f"{where} carries no certificate chain: it was not made by certificate signing"
        )
    _check_serialization(statement, Path(name))
    try:
        pinned = x509.load_pem_x509_certificates(pinned_chain)
    except ValueError as e:
        raise ModelSignatureError(f"{pinned_name} holds no PEM certificate: {e}") from e
    try:
        leaf, *intermediates = (x509.load_der_x509_certificate(c) for c in statement.certificates)
        check_signing_certificate(leaf, where, moment)
        path = verify_chain_to(leaf, intermediates, pinned, pinned_name, where, moment)
    except CertificateError as e:
        raise ModelSignatureError(str(e)) from e
    except ValueError as e:  # a DER certificate that does not parse
        raise ModelSignatureError(f"{where} holds a malformed certificate: {e}") from e
    signer = describe(leaf, path)
    _check_identity(signer, identity, where)
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # check_signing_certificate refused others
    try:
        dsse_verify(json.loads(signature)["dsseEnvelope"], [key])
    except SignatureError as e:
        raise ModelSignatureError(
            f"{where} does not verify with its signing certificate {signer.subject}: the "
            f"bundle was altered ({e})"
        ) from e
    # _parse_bundle read the statement from this same envelope's payload: it is the signed one.
    return VerifiedSignature(
        model_name=statement.model_name,
        manifest_sha256=statement.manifest_sha256,
        files=statement.files,
        certificate=signer,
    )


def verify_model_pinned(
    model_dir: Path,
    trust_pem_path: Path,
    signature_path: Path,
    *,
    ignore_paths: Sequence[Path] = (),
    identity: str | None = None,
) -> VerifiedModel:
    """Verify against one pinned trust file, whichever kind it is: a PEM holding certificates
    (a root CA, optionally with intermediates) verifies certificate signatures with
    :func:`verify_model_certificate`; any other PEM is a public key for :func:`verify_model`.

    For verifiers that pin what the registry publishes (``GET /v1/signing-keys``: the public
    key, and with certificate signing the chain and the signer's ``identity``), so a device
    or gateway follows the registry's signing method without a setting of its own.
    ``identity`` applies to certificate signatures only (a public key is its own identity).
    """
    try:
        trust = trust_pem_path.read_bytes()
    except OSError as e:
        raise ModelSignatureError(f"cannot read pinned trust {trust_pem_path}: {e}") from e
    if b"-----BEGIN CERTIFICATE-----" in trust:
        return verify_model_certificate(
            model_dir, trust_pem_path, signature_path, ignore_paths=ignore_paths, identity=identity
        )
    return verify_model(model_dir, trust_pem_path, signature_path, ignore_paths=ignore_paths)


def _check_identity(signer: SigningCertificate, identity: str | None, where: str) -> None:
    if identity is not None:
        try:
            check_identity(signer, identity, where)
        except CertificateError as e:
            raise ModelSignatureError(str(e)) from e


def _moment(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise ModelSignatureError("the verification time must be timezone-aware")
    return at
