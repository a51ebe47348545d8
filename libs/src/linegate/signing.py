"""Keys and DSSE envelopes on ``cryptography``.

DSSE (https://github.com/secure-systems-lab/dsse) is the one envelope Linegate signs with:
attestations, audit checkpoints, release metadata and evidence manifests. This module is a
spec-exact implementation of PAE signing and verification, because ``securesystemslib``'s
``Envelope.verify`` insists on a ``keyid`` that the DSSE spec makes optional and that real tools
omit. Verification accepts standard and URL-safe base64, an optional ``keyid`` and a threshold.

Example::

    key = generate_private_key()
    env = dsse_sign(b'{"_type": "https://in-toto.io/Statement/v1"}', IN_TOTO_PAYLOAD_TYPE, key)
    payload = dsse_verify(env, [key.public_key()]).payload
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class SignatureError(Exception):
    """A signature, key or envelope failed verification; the message says which check."""


# ------------------------------------------------------------------------------------ keys


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 key (the default everywhere: model-signing requires EC keys)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(pem: bytes | str) -> PublicKey:
    """Parse a PEM public key; only key types Linegate verifies are accepted."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SignatureError(f"not a PEM public key: {e}") from e
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise SignatureError(f"unsupported EC curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SignatureError("RSA keys under 2048 bits are refused")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise SignatureError(f"unsupported key type {type(key).__name__}")


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise SignatureError(f"unsupported private key type {type(key).__name__}")
    return key


def key_id(key: PublicKey) -> str:
    """A stable key id: hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_or_create_private_key(path: Path) -> PrivateKey:
    """Load the PEM key at ``path``, creating it (mode 0600) if absent.

    Several processes may start at once on a fresh data directory; the first to link its
    freshly written file wins and everyone loads that one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(private_key_pem(generate_private_key()))
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).chmod(0o600)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            Path(tmp).unlink()
    return load_private_key(path.read_bytes())


# ------------------------------------------------------------------------------ raw sign


def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    # The hash that goes with each curve (as securesystemslib and Sigstore pair them).
    if curve.key_size > 384:
        return hashes.SHA512()
    if curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(_ec_hash(key.curve)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(
        data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256()
    )


def verify_signature(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies under ``key`` (ECDSA, Ed25519, RSA)."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_ec_hash(key.curve)))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            try:
                key.verify(
                    signature,
                    data,
                    padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                    hashes.SHA256(),
                )
            except InvalidSignature:
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------------------ DSSE


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64decode_any(value: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not (DSSE allows either)."""
    if not isinstance(value, str):
        raise SignatureError("base64 field is not a string")
    s = value.strip()
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s.encode("ascii"))
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise SignatureError(f"invalid base64: {e}") from e


def dsse_sign(
    payload: bytes, payload_type: str, key: PrivateKey, *, with_keyid: bool = True
) -> dict[str, Any]:
    """A DSSE envelope (JSON-ready dict) over ``payload`` signed by ``key``."""
    sig = _sign(key, pae(payload_type, payload))
    entry: dict[str, str] = {"sig": base64.b64encode(sig).decode()}
    if with_keyid:
        entry["keyid"] = key_id(key.public_key())
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [entry],
    }


@dataclass(frozen=True)
class VerifiedEnvelope:
    payload_type: str
    payload: bytes
    #: key ids (see :func:`key_id`) of the keys whose signatures verified.
    signer_key_ids: tuple[str, ...]


def parse_envelope(
    envelope: Mapping[str, Any],
) -> tuple[str, bytes, list[tuple[str | None, bytes]]]:
    """Check an envelope's shape; return (payloadType, payload, [(keyid, sig)])."""
    if not isinstance(envelope, Mapping):
        raise SignatureError("DSSE envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise SignatureError("DSSE envelope has no payloadType")
    if "payload" not in envelope:
        raise SignatureError("DSSE envelope has no payload")
    payload = b64decode_any(envelope["payload"])
    raw_sigs = envelope.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise SignatureError("DSSE envelope has no signatures")
    sigs: list[tuple[str | None, bytes]] = []
    for item in raw_sigs:
        if not isinstance(item, Mapping) or "sig" not in item:
            raise SignatureError("DSSE signature entry has no 'sig'")
        keyid = item.get("keyid")
        if keyid is not None and not isinstance(keyid, str):
            raise SignatureError("DSSE signature keyid must be a string")
        sig = b64decode_any(item["sig"])
        if not sig:
            raise SignatureError("DSSE signature is empty")
        sigs.append((keyid or None, sig))
    return payload_type, payload, sigs


def dsse_verify(
    envelope: Mapping[str, Any],
    keys: Sequence[PublicKey] | Mapping[str, PublicKey],
    *,
    threshold: int = 1,
) -> VerifiedEnvelope:
    """Verify ``envelope`` against ``keys``; at least ``threshold`` distinct keys must sign.

    A signature's ``keyid``, when present, only narrows which keys are tried; it is never
    trusted on its own. ``keys`` may be given by their :func:`key_id` (a mapping, as a caller
    verifying many envelopes with the same keys keeps it), which saves hashing each key's DER
    on every call.
    """
    return dsse_verify_parsed(*parse_envelope(envelope), keys, threshold=threshold)


def dsse_verify_parsed(
    payload_type: str,
    payload: bytes,
    sigs: Sequence[tuple[str | None, bytes]],
    keys: Sequence[PublicKey] | Mapping[str, PublicKey],
    *,
    threshold: int = 1,
) -> VerifiedEnvelope:
    """:func:`dsse_verify` of an envelope already checked by :func:`parse_envelope` (its
    three results), for callers that read the payload before checking the signature."""
    message = pae(payload_type, payload)
    by_id = dict(keys) if isinstance(keys, Mapping) else {key_id(k): k for k in keys}
    verified: set[str] = set()
    for keyid, sig in sigs:
        candidates = [(keyid, by_id[keyid])] if keyid in by_id else list(by_id.items())
        for kid, key in candidates:
            if kid not in verified and verify_signature(key, sig, message):
                verified.add(kid)
                break
    if len(verified) < threshold:
        raise SignatureError(
            "no signature verifies with a trusted key"
            if not verified
            else f"{len(verified)} of {threshold} required signatures verify"
        )
    return VerifiedEnvelope(payload_type, payload, tuple(sorted(verified)))


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) for hashing and signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
