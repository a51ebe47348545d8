"""The model-signing error, what a signature vouches for, and the bundle format it is read from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from linegate._modelsig_x509 import SigningCertificate
from linegate.signing import SignatureError

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
MODEL_SIGNATURE_PREDICATE = "https://model_signing/signature/v1.0"


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
class VerifiedSignature:
    """A certificate-signed bundle whose certificate and DSSE envelope verified, WITHOUT the
    model files: ``files`` and ``manifest_sha256`` are what the signer signed, not a check
    of any directory (use :func:`verify_model_certificate` before acting on a model)."""

    model_name: str
    manifest_sha256: str
    files: tuple[SignedFile, ...]
    certificate: SigningCertificate


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """What a model-signing bundle claims (UNTRUSTED until :func:`verify_model` checks it)."""

    model_name: str
    manifest_sha256: str
    files: tuple[SignedFile, ...]


#: How a model-signing bundle was signed.
SignatureKind = Literal["key", "certificate", "sigstore"]


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


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
