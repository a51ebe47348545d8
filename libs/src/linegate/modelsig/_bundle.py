"""Reading a model-signing bundle without verifying it: its statement, signer kind and digests."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from linegate.modelsig._types import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    MODEL_SIGNATURE_PREDICATE,
    STATEMENT_V1,
    ModelSignatureError,
    SignatureKind,
    SignedFile,
    SignedStatement,
    _reason,
    _Statement,
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


def signature_kind(signature_path: Path) -> SignatureKind:
    """How ``signature_path`` was signed, read WITHOUT verifying it: a bare ``key`` (public-key
    hint), a ``certificate`` chain, or ``sigstore`` (one Fulcio certificate and a log entry)."""
    statement = _parse_bundle(_read_signature(signature_path), signature_path)
    if statement.certificates:
        return "certificate"
    if statement.sigstore_certificate is not None:
        return "sigstore"
    return "key"


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
