"""OpenSSF model signatures (``model_signing``) with EC keys, offline.

A model version is a directory (``model.onnx``, ``preprocess.json``, ``model_card.md``, ...).
:func:`sign_model` hashes every file in it (SHA-256, streamed in 1 MiB chunks, so memory does not
grow with file size) and writes a Sigstore bundle whose DSSE envelope carries an in-toto
statement listing each file's digest; :func:`verify_model` checks the envelope against a public
key, re-hashes the directory and names any file that was added, removed or changed.

Key-based and certificate signing never reach the network. Everything in the directory is
signed, ``.git*`` paths included, except ``ignore_paths`` and the signature file itself when it
lies inside the directory; the signed statement records the ignored paths, so verification
ignores them too.

Example::

    from pathlib import Path

    from linegate.modelsig import sign_model, verify_model
    from linegate.signing import generate_private_key, private_key_pem, public_key_pem
    from linegate.testing.onnx_models import write_model_dir

    key = generate_private_key()
    Path("release.pem").write_bytes(private_key_pem(key))
    Path("release.pub.pem").write_bytes(public_key_pem(key.public_key()))
    model = write_model_dir(Path("weld-seam-inspector"))
    sign_model(model, Path("release.pem"), Path("model.sig"))
    verified = verify_model(model, Path("release.pub.pem"), Path("model.sig"))
    print(verified.manifest_sha256, [f.path for f in verified.files])

Certificates: :func:`sign_model_certificate` signs with an EC key and its code-signing
certificate (plus the intermediates, shipped in the bundle); :func:`verify_model_certificate`
verifies against a pinned chain holding the root CA (never the operating system's roots), and
checks what ``model_signing`` does not (see :mod:`linegate._modelsig_x509`): the signing
certificate and its CAs are valid *now*, and the leaf is a code-signing certificate::

    sign_model_certificate(model, Path("model.sig"), private_key=Path("signer.key.pem"),
                           certificate=Path("signer.pem"), certificate_chain=[Path("ca.pem")])
    verified = verify_model_certificate(model, Path("root-ca.pem"), Path("model.sig"))
    print(verified.certificate.subject, verified.certificate.sha256_fingerprint)

:func:`verify_signature_certificate` makes the same certificate checks and the DSSE check on a
signature alone (bytes, with the pinned chain as bytes), for evidence kept apart from the model
such as an auditor's bundle: it vouches for what was signed, not for any files on disk.

Sigstore keyless (:func:`sign_model_sigstore`, :func:`verify_model_sigstore`) needs Fulcio and
Rekor to sign, so it is online by nature; both refuse to run without a pinned trust config
(``model_signing`` would otherwise fetch the production trust root), and verification is offline
against it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
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
from linegate.signing import (
    SignatureError,
    dsse_verify,
    key_id,
    load_private_key,
    load_public_key,
)

if TYPE_CHECKING:
    from model_signing.hashing import Config as HashingConfig
    from model_signing.manifest import Manifest
    from model_signing.verifying import Config as VerifyingConfig

__all__ = [
    "KnownDigest",
    "ModelSignatureError",
    "SignatureKind",
    "SignedFile",
    "SignedStatement",
    "SigningCertificate",
    "VerifiedModel",
    "VerifiedSignature",
    "describe_signing_certificate",
    "read_signature",
    "sign_model",
    "sign_model_certificate",
    "sign_model_sigstore",
    "signature_kind",
    "signed_digests",
    "signing_identity",
    "verify_model",
    "verify_model_certificate",
    "verify_model_pinned",
    "verify_model_sigstore",
    "verify_signature_certificate",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
MODEL_SIGNATURE_PREDICATE = "https://model_signing/signature/v1.0"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ModelSignatureError(SignatureError):
    """A model could not be signed, or its signature did not verify; the message says why."""


class KnownDigest(NamedTuple):
    """A file's SHA-256 (hex) and size, computed by the caller over exactly the bytes it wrote.

    Passed to the ``sign_model*`` functions as ``known_digests`` so that a file just received
    and hashed on its way to disk (a registry upload) is not read and hashed a second time.
    """

    sha256: str
    size: int


class SignedFile(NamedTuple):
    """One file of a signed model: its POSIX path relative to the model directory, and digest."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    """What a verified signature vouches for.

    ``files`` come from the verified in-toto statement (sorted by path) and equal the digests
    just computed from the directory. ``manifest_sha256`` is the statement's subject digest
    (SHA-256 over every file digest in path order): one value that names this exact model
    version. ``key_id`` is Linegate's id of the public key that verified it
    (:func:`linegate.signing.key_id`). ``certificate`` is the signing certificate when the
    signature was verified with a certificate chain or Sigstore (``None`` for a bare key).
    """

    files: tuple[SignedFile, ...]
    manifest_sha256: str
    key_id: str
    model_name: str
    certificate: SigningCertificate | None = None


@dataclass(frozen=True, slots=True)
class _Statement:
    """The parts of a bundle's in-toto statement that Linegate reads (unverified until used)."""

    key_hint: str | None
    #: DER certificates of ``verificationMaterial.x509CertificateChain`` (leaf first).
    certificates: tuple[bytes, ...]
    #: DER of a Sigstore bundle's single ``verificationMaterial.certificate``.
    sigstore_certificate: bytes | None
    model_name: str
    manifest_sha256: str
    files: tuple[SignedFile, ...]
    algorithms: frozenset[str]
    serialization: Mapping[str, Any]


# ------------------------------------------------------------------------------------ sign


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


# ---------------------------------------------------------------------------------- verify


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


# ----------------------------------------------------------------------------- certificates


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


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A certificate-signed bundle whose certificate and DSSE envelope verified, WITHOUT the
    model files: ``files`` and ``manifest_sha256`` are what the signer signed, not a check
    of any directory (use :func:`verify_model_certificate` before acting on a model)."""

    model_name: str
    manifest_sha256: str
    files: tuple[SignedFile, ...]
    certificate: SigningCertificate


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


# -------------------------------------------------------------------------------- sigstore


def sign_model_sigstore(
    model_dir: Path,
    signature_path: Path,
    *,
    identity_token: Path,
    trust_config: Path,
    ignore_paths: Sequence[Path] = (),
    known_digests: Mapping[str, KnownDigest] | None = None,
) -> None:
    """Sign ``model_dir`` keyless with Sigstore: ONLINE (the OIDC issuer, Fulcio and Rekor).

    ``identity_token`` is a file holding the OIDC identity token (e.g. a CI workload token with
    audience ``sigstore``); ``trust_config`` is a pinned Sigstore ``ClientTrustConfig`` JSON
    (trusted root and signing config) naming the Fulcio, Rekor and issuer to use. Both are
    checked offline first; ``model_signing``'s own defaults (ambient credentials, a browser
    flow, the production trust fetched over TUF) are never used. ``known_digests`` as for
    :func:`sign_model`.
    """
    root = _model_root(model_dir)
    _load_trust_config(trust_config)
    token = _load_identity_token(identity_token)

    def use_sigstore(config: Any) -> Any:
        return config.use_sigstore_signer(
            use_ambient_credentials=False,
            use_staging=False,
            identity_token=token,
            trust_config=Path(trust_config),
        )

    _run_signer(root, signature_path, ignore_paths, use_sigstore, known_digests)


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


def verify_model_sigstore(
    model_dir: Path,
    signature_path: Path,
    *,
    identity: str,
    oidc_issuer: str,
    trust_config: Path,
    ignore_paths: Sequence[Path] = (),
) -> VerifiedModel:
    """Verify a Sigstore-signed ``signature_path`` offline against a pinned trust config.

    The Fulcio certificate must name ``identity`` (its SAN) and ``oidc_issuer``, chain to the
    pinned trusted root, and the bundle's Rekor entry must verify against the pinned log keys
    (``model_signing`` delegates to sigstore-python's verifier). Files are checked as by
    :func:`verify_model`.
    """
    root = _model_root(model_dir)
    if not identity or not oidc_issuer:
        raise ModelSignatureError(
            "Sigstore verification needs the expected signer identity and OIDC issuer"
        )
    pinned = _load_trust_config(trust_config)
    raw = _read_signature(signature_path)
    statement = _parse_bundle(raw, signature_path)
    where = f"signature {signature_path}"
    if statement.sigstore_certificate is None:
        raise ModelSignatureError(
            f"{where} carries no Sigstore certificate: it was signed with "
            + ("a certificate chain" if statement.certificates else "a bare key")
        )
    _check_serialization(statement, signature_path)

    def use_sigstore(verifier: VerifyingConfig, tmp: Path) -> VerifyingConfig:
        config_copy = tmp / "trust_config.json"
        config_copy.write_bytes(pinned)
        return verifier.use_sigstore_verifier(
            identity=identity, oidc_issuer=oidc_issuer, use_staging=False, trust_config=config_copy
        )

    _run_verifier(
        root,
        raw,
        signature_path,
        statement,
        ignore_paths,
        use_sigstore,
        bad_signature=f"{where} does not verify with its Sigstore certificate",
    )
    leaf = x509.load_der_x509_certificate(statement.sigstore_certificate)
    signer = describe(leaf)
    return VerifiedModel(
        files=statement.files,
        manifest_sha256=statement.manifest_sha256,
        key_id=signer.key_id,
        model_name=statement.model_name,
        certificate=signer,
    )


def _load_trust_config(path: Path | None) -> bytes:
    """The bytes of a pinned Sigstore ClientTrustConfig, after parsing them (offline)."""
    if path is None:
        raise ModelSignatureError(
            "Sigstore needs a pinned trust config (a ClientTrustConfig JSON file); Linegate "
            "never falls back to the production trust root fetched over the network"
        )
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ModelSignatureError(f"cannot read Sigstore trust config {path}: {_reason(e)}") from e
    from sigstore.models import ClientTrustConfig

    try:
        config = ClientTrustConfig.from_json(raw.decode())
        config.trusted_root  # noqa: B018  (parsing the root is the check)
    except Exception as e:  # sigstore raises pydantic, JSON and its own errors here
        raise ModelSignatureError(
            f"Sigstore trust config {path} is not a ClientTrustConfig JSON: {_reason(e)}"
        ) from e
    return raw


def _load_identity_token(path: Path | None) -> str:
    if path is None:
        raise ModelSignatureError("Sigstore signing needs an identity token file")
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelSignatureError(f"cannot read identity token {path}: {_reason(e)}") from e
    from sigstore.oidc import IdentityError, IdentityToken

    try:
        IdentityToken(token)  # checks audience, expiry and claims, offline (no signature check)
    except IdentityError as e:
        raise ModelSignatureError(f"identity token {path} is unusable: {_reason(e)}") from e
    return token


#: How a model-signing bundle was signed.
SignatureKind = Literal["key", "certificate", "sigstore"]


def signature_kind(signature_path: Path) -> SignatureKind:
    """How ``signature_path`` was signed, read WITHOUT verifying it: a bare ``key`` (public-key
    hint), a ``certificate`` chain, or ``sigstore`` (one Fulcio certificate and a log entry)."""
    statement = _parse_bundle(_read_signature(signature_path), signature_path)
    if statement.certificates:
        return "certificate"
    if statement.sigstore_certificate is not None:
        return "sigstore"
    return "key"


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """What a model-signing bundle claims (UNTRUSTED until :func:`verify_model` checks it)."""

    model_name: str
    manifest_sha256: str
    files: tuple[SignedFile, ...]


def read_signature(signature_path: Path) -> SignedStatement:
    """The statement inside a model-signing bundle, WITHOUT verifying it: for display, or for
    recording a signature this process has just made. Raises :class:`ModelSignatureError` when
    the file is not a model-signing bundle over per-file SHA-256."""
    statement = _parse_bundle(_read_signature(signature_path), signature_path)
    _check_serialization(statement, signature_path)
    return SignedStatement(statement.model_name, statement.manifest_sha256, statement.files)


def signed_digests(signature_path: Path) -> dict[str, str]:
    """Map each signed file (POSIX path relative to the model directory) to its SHA-256.

    UNTRUSTED: read from the bundle WITHOUT verifying it, for display only. Use
    :func:`verify_model` before acting on a model. Raises :class:`ModelSignatureError` when the
    file is not a model-signing bundle or hashes anything other than per-file SHA-256.
    """
    statement = _parse_bundle(_read_signature(signature_path), signature_path)
    _check_serialization(statement, signature_path)
    return {f.path: f.sha256 for f in statement.files}


# -------------------------------------------------------------------------------- internals


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


def _run_signer(
    root: Path,
    signature_path: Path,
    ignore_paths: Sequence[Path],
    configure: Callable[[Any], Any],
    known_digests: Mapping[str, KnownDigest] | None = None,
) -> None:
    """Sign ``root`` with the signer ``configure`` sets on a ``model_signing.signing.Config``."""
    from model_signing import signing

    ignored = _relative_ignore_paths(root, ignore_paths, signature_path)
    hashing_config = _hashing_config(
        ignored, _known_digests_config(root, known_digests) if known_digests else None
    )
    # model_signing writes the signature with a plain write_text; sign into a private directory
    # and move the result into place so a concurrent verifier never reads a partial bundle.
    with tempfile.TemporaryDirectory(prefix="linegate-modelsig-") as tmp:
        unsigned = Path(tmp) / "model.sig"
        try:
            # model_signing's constructors lack annotations (its methods are typed).
            signer = configure(signing.Config())  # type: ignore[no-untyped-call]
            signer.set_hashing_config(hashing_config).sign(root, unsigned)
        except Exception as e:  # any failure of the third-party signer is a signing failure
            raise ModelSignatureError(f"cannot sign model directory {root}: {_reason(e)}") from e
        _write_atomically(signature_path, unsigned.read_bytes())


def _run_verifier(
    root: Path,
    raw: bytes,
    signature_path: Path,
    statement: _Statement,
    ignore_paths: Sequence[Path],
    configure: Callable[[VerifyingConfig, Path], VerifyingConfig],
    *,
    bad_signature: str,
) -> None:
    """Run ``model_signing``'s verifier (set by ``configure``) over ``root`` and ``raw``.

    ``configure`` gets a private temporary directory for any file the verifier must read.
    Raises :class:`ModelSignatureError` with ``bad_signature`` when the envelope's signature is
    wrong, or naming the files that differ from the statement.
    """
    from model_signing import verifying

    ignored = _relative_ignore_paths(root, ignore_paths, signature_path)
    hashing_config, hashed = _recording_hashing_config(ignored)
    # model_signing re-reads its inputs from paths; hand it private copies of exactly the bytes
    # parsed by the caller, so the digests returned are the ones whose signature was checked.
    with tempfile.TemporaryDirectory(prefix="linegate-modelsig-") as tmp:
        sig_copy = Path(tmp) / "model.sig"
        sig_copy.write_bytes(raw)
        try:
            verifier = verifying.Config()  # type: ignore[no-untyped-call]
            configure(verifier, Path(tmp)).set_hashing_config(hashing_config).verify(root, sig_copy)
        except InvalidSignature as e:
            raise ModelSignatureError(bad_signature) from e
        except ModelSignatureError:
            raise
        except Exception as e:  # any other failure of the third-party verifier fails verification
            raise _explain_failure(e, root, signature_path, statement, hashed) from e

    actual = hashed.manifest
    if actual is None or _files_of(actual) != statement.files:
        # Unreachable unless model_signing's notion of a match diverges from ours: fail closed.
        raise ModelSignatureError(
            f"model directory {root} verified but its digests differ from the signed statement"
        )


def _hashing_config(ignored: Iterable[Path], config: HashingConfig | None = None) -> HashingConfig:
    """``config`` (a new ``hashing.Config`` by default) set to Linegate's one hashing scheme."""
    from model_signing import hashing

    if config is None:
        config = hashing.Config()  # type: ignore[no-untyped-call]
    # Per-file SHA-256, pinned on both sides so a signature cannot choose a weaker scheme; git
    # paths are signed like any other file, so nothing in a release folder escapes the check.
    return config.use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=list(ignored), ignore_git_paths=False
    )


@dataclass(slots=True)
class _HashRecord:
    """What model_signing's hashing of the directory produced: a manifest or an error."""

    manifest: Manifest | None = None
    error: BaseException | None = None


def _recording_hashing_config(ignored: Iterable[Path]) -> tuple[HashingConfig, _HashRecord]:
    """:func:`_hashing_config` that also keeps the manifest it computes (or the error it hit).

    ``model_signing`` reports a mismatch as one formatted string; keeping the directory's
    manifest lets the error name each file without hashing the model a second time.
    """
    from model_signing import hashing

    record = _HashRecord()

    # Defined here because importing model_signing costs over a second (it pulls in sigstore).
    class RecordingConfig(hashing.Config):
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]

        def hash(
            self,
            model_path: hashing.PathLike,
            *,
            files_to_hash: Iterable[hashing.PathLike] | None = None,
        ) -> Manifest:
            try:
                record.manifest = super().hash(model_path, files_to_hash=files_to_hash)
            except BaseException as e:
                record.error = e
                raise
            return record.manifest

    return _hashing_config(ignored, RecordingConfig()), record


def _known_digests_config(root: Path, known: Mapping[str, KnownDigest]) -> HashingConfig:
    """A ``hashing.Config`` whose per-file hasher returns ``known`` digests instead of reading.

    Only the file hasher changes: model_signing still walks ``root``, applies the ignore paths
    and the symlink rule, and builds the manifest and its serialization description itself, so
    the signed statement is the one hashing would have produced (tests compare the two).
    """
    from model_signing import hashing
    from model_signing._hashing import hashing as engines
    from model_signing._hashing import io

    by_path = {root / Path(name): digest for name, digest in known.items()}
    for path, digest in by_path.items():
        if not path.resolve().is_relative_to(root) or not _SHA256_HEX.fullmatch(digest.sha256):
            raise ModelSignatureError(f"invalid known digest for {path}: {digest}")

    class KnownFileHasher(io.FileHasher):
        def __init__(self, path: Path, digest: KnownDigest, digest_name: str) -> None:
            self._path = path
            self._known = digest
            self._name = digest_name

        @property
        def digest_name(self) -> str:
            return self._name

        @property
        def digest_size(self) -> int:
            return 32

        def compute(self) -> engines.Digest:
            size = self._path.stat().st_size
            if size != self._known.size:
                raise ModelSignatureError(
                    f"{self._path} has {size} bytes, not the {self._known.size} whose digest "
                    "was given: it changed after it was written"
                )
            return engines.Digest(self._name, bytes.fromhex(self._known.sha256))

    class KnownDigestsConfig(hashing.Config):
        # Called by hashing.Config.__init__ and use_file_serialization(); wraps the stock
        # factory so that the digest name and every unknown file are exactly model_signing's.
        def _build_file_hasher_factory(self, *args: Any, **kwargs: Any) -> Any:
            inner = super()._build_file_hasher_factory(*args, **kwargs)

            def factory(path: Path) -> io.FileHasher:
                hasher = inner(path)
                digest = by_path.get(Path(path))
                if digest is None or not isinstance(hasher, io.SimpleFileHasher):
                    return hasher
                if hasher.digest_name != "sha256":
                    raise ModelSignatureError("known digests are SHA-256; the hashing is not")
                return KnownFileHasher(Path(path), digest, hasher.digest_name)

            return factory

    return KnownDigestsConfig()  # type: ignore[no-untyped-call]


def _files_of(manifest: Manifest) -> tuple[SignedFile, ...]:
    return tuple(
        SignedFile(str(rd.identifier), str(rd.digest.digest_hex))
        for rd in manifest.resource_descriptors()
    )


def _explain_failure(
    error: Exception,
    root: Path,
    signature_path: Path,
    statement: _Statement,
    hashed: _HashRecord,
) -> ModelSignatureError:
    if hashed.error is not None:
        return ModelSignatureError(f"cannot hash model directory {root}: {_reason(error)}")
    if hashed.manifest is None:
        # The verifier failed before hashing: the envelope or statement itself is bad.
        return ModelSignatureError(f"signature {signature_path} is invalid: {_reason(error)}")
    signed = dict(statement.files)
    found = {f.path: f.sha256 for f in _files_of(hashed.manifest)}
    problems = []
    if changed := sorted(p for p in signed.keys() & found.keys() if signed[p] != found[p]):
        problems.append("changed since signing: " + ", ".join(changed))
    if added := sorted(found.keys() - signed.keys()):
        problems.append("not in the signature (added): " + ", ".join(added))
    if removed := sorted(signed.keys() - found.keys()):
        problems.append("signed but missing (removed or ignored): " + ", ".join(removed))
    if not problems:
        return ModelSignatureError(f"model directory {root} failed verification: {_reason(error)}")
    return ModelSignatureError(
        f"model directory {root} does not match signature {signature_path}: " + "; ".join(problems)
    )


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _model_root(model_dir: Path) -> Path:
    # Resolved once so ignore paths, the signature path and model_signing's walk all agree.
    root = Path(model_dir).resolve()
    if not root.is_dir():
        raise ModelSignatureError(f"model directory {model_dir} does not exist or is not a folder")
    return root


def _relative_ignore_paths(
    root: Path, ignore_paths: Sequence[Path], signature_path: Path
) -> list[Path]:
    relative: list[Path] = []
    for given in ignore_paths:
        full = (root / given).resolve()  # an absolute ``given`` replaces ``root``
        if not full.is_relative_to(root) or full == root:
            raise ModelSignatureError(
                f"ignore path {given} is not inside the model directory {root}"
            )
        relative.append(full.relative_to(root))
    signature = Path(signature_path).resolve()
    if signature.is_relative_to(root) and signature != root:
        relative.append(signature.relative_to(root))
    return sorted(set(relative))


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


def _read_signature(signature_path: Path) -> bytes:
    try:
        return Path(signature_path).read_bytes()
    except OSError as e:
        raise ModelSignatureError(f"cannot read signature {signature_path}: {_reason(e)}") from e


def _parse_bundle(raw: bytes, signature_path: Path) -> _Statement:
    """Read the statement out of a model-signing bundle without verifying anything."""

    def invalid(why: str) -> ModelSignatureError:
        return ModelSignatureError(
            f"signature {signature_path} is not a model-signing bundle: {why}"
        )

    try:
        bundle = json.loads(raw)
        if not isinstance(bundle, dict):
            raise invalid("not a JSON object")
        if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise invalid(f"media type {bundle.get('mediaType')!r}, expected {BUNDLE_MEDIA_TYPE}")
        material = bundle["verificationMaterial"]
        hint = (material.get("publicKey") or {}).get("hint") or None
        chain = (material.get("x509CertificateChain") or {}).get("certificates") or []
        certificates = tuple(base64.b64decode(c["rawBytes"], validate=True) for c in chain)
        single = (material.get("certificate") or {}).get("rawBytes")
        sigstore_certificate = base64.b64decode(single, validate=True) if single else None
        envelope = bundle["dsseEnvelope"]
        if envelope["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
            raise invalid(f"payload type {envelope['payloadType']!r}")
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        if statement["_type"] != STATEMENT_V1:
            raise invalid(f"statement type {statement['_type']!r}")
        if statement["predicateType"] != MODEL_SIGNATURE_PREDICATE:
            raise invalid(
                f"predicate type {statement['predicateType']!r}, expected "
                f"{MODEL_SIGNATURE_PREDICATE} (model_signing >= 1.0)"
            )
        (subject,) = statement["subject"]
        predicate = statement["predicate"]
        resources = predicate["resources"]
        files = tuple(sorted(SignedFile(str(r["name"]), str(r["digest"])) for r in resources))
        return _Statement(
            key_hint=str(hint) if hint else None,
            certificates=certificates,
            sigstore_certificate=sigstore_certificate,
            model_name=str(subject["name"]),
            manifest_sha256=str(subject["digest"]["sha256"]),
            files=files,
            algorithms=frozenset(str(r["algorithm"]) for r in resources),
            serialization=dict(predicate["serialization"]),
        )
    except ModelSignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        # ValueError covers bad JSON and a subject list that is not exactly one entry.
        raise invalid(f"{type(e).__name__}: {e}") from e


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


def _check_serialization(statement: _Statement, signature_path: Path) -> None:
    method = statement.serialization.get("method")
    hash_type = statement.serialization.get("hash_type")
    if method != "files" or hash_type != "sha256" or not statement.algorithms <= {"sha256"}:
        raise ModelSignatureError(
            f"signature {signature_path} hashes {method!r} with {hash_type!r}; Linegate signs "
            "and verifies per-file sha256 only (model_signing's default)"
        )
    if not statement.files:
        raise ModelSignatureError(f"signature {signature_path} covers no files")


def _write_atomically(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
    except OSError as e:
        raise ModelSignatureError(f"cannot write signature {path}: {_reason(e)}") from e
