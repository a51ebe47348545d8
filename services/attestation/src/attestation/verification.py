"""Verification of one upload, independent of HTTP and storage.

``verify_upload`` takes the exact bytes, their media type and what this supplier is trusted
with (:class:`TrustContext`) and returns an :class:`Outcome` listing every reason it was
rejected, or what was verified. Order: media type -> JSON (size and depth bounded) ->
envelope shape -> signature by a key / Sigstore identity of *this* supplier -> in-toto
Statement -> predicate (validated by its library) -> validity window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from attestation.models import SupplierIdentity, SupplierKey
from attestation.predicates import validate_document, validate_predicate
from attestation.sigstore_bundle import IdentityPolicy, SigstoreBundleError, SigstoreVerifier
from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    PublicKey,
    SignatureError,
    dsse_verify_parsed,
    key_id,
    load_public_key,
    parse_envelope,
)
from linegate.storable import may_hold_unstorable, unstorable_location

MEDIA_DSSE = "application/vnd.dsse.envelope.v1+json"
MEDIA_SIGSTORE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
MEDIA_SIGSTORE_LEGACY = "application/vnd.dev.sigstore.bundle+json"
MEDIA_CYCLONEDX = "application/vnd.cyclonedx+json"
MEDIA_SPDX = "application/spdx+json"
ACCEPTED_MEDIA_TYPES = (
    MEDIA_DSSE,
    MEDIA_SIGSTORE_V03,
    f"{MEDIA_SIGSTORE_LEGACY};version=0.1",
    f"{MEDIA_SIGSTORE_LEGACY};version=0.2",
    MEDIA_CYCLONEDX,
    MEDIA_SPDX,
)
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1",)
_DIGEST_LENGTHS = {
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
    "sha3_256": 64,
    "sha3_384": 96,
    "sha3_512": 128,
}
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class UnsupportedMedia(Exception):
    """The Content-Type is not one this endpoint ingests."""


@dataclass
class Outcome:
    envelope: str
    status: str = "rejected"  # verified | unsigned | rejected
    malformed: bool = False  # rejected before any signature check (400 rather than 422)
    predicate_type: str | None = None
    predicate_kind: str | None = None
    recognised: bool = True
    signer: str | None = None
    subjects: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    issued_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    def reject(self, reason: str, *, malformed: bool = False) -> Outcome:
        self.status = "rejected"
        self.malformed = self.malformed or malformed
        self.reasons.append(reason)
        return self


@dataclass(frozen=True)
class TrustContext:
    supplier_id: str
    keys: list[SupplierKey]
    other_keys: list[SupplierKey]
    identities: list[SupplierIdentity]
    max_age: timedelta
    now: datetime
    clock_skew: timedelta = timedelta(minutes=5)


def media_type(content_type: str | None) -> str:
    """Normalise a Content-Type; raise :class:`UnsupportedMedia` if not ingested here."""
    if not content_type:
        raise UnsupportedMedia(
            "a Content-Type is required; accepted: " + ", ".join(ACCEPTED_MEDIA_TYPES)
        )
    base, *params = [p.strip() for p in content_type.split(";")]
    base = base.lower()
    version = next(
        (p.split("=", 1)[1].strip('"') for p in params if p.lower().startswith("version=")), None
    )
    if base == MEDIA_SIGSTORE_LEGACY:
        if version in ("0.1", "0.2", "0.3"):
            return f"{base};version={version}"
        raise UnsupportedMedia("Sigstore bundle media type needs version=0.1, 0.2 or 0.3")
    if base in (MEDIA_DSSE, MEDIA_SIGSTORE_V03, MEDIA_CYCLONEDX, MEDIA_SPDX):
        return base
    raise UnsupportedMedia(
        f"unsupported Content-Type {base!r}; accepted: " + ", ".join(ACCEPTED_MEDIA_TYPES)
    )


def _unstorable(text: bytes, doc: Any, root: str) -> str | None:
    """Why ``doc`` (parsed from ``text``) cannot be recorded, or None: a string in it holds
    U+0000 or an unpaired surrogate, which no database column can store (on PostgreSQL the
    insert fails). The byte test keeps the walk off the path of every ordinary upload."""
    if not may_hold_unstorable(text):
        return None
    where = unstorable_location(doc, root)
    if where is None:
        return None
    return f"{where} holds U+0000 or an unpaired surrogate, which cannot be stored"


def parse_json(data: bytes, max_depth: int) -> Any:
    """``json.loads`` bounded in depth (a bracket bomb is refused, not a RecursionError), of
    text that can be stored (see :func:`_unstorable`)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON: {str(e)[:200]}") from e
    if (why := _unstorable(data, doc, "document")) is not None:
        raise ValueError(why)
    if data.count(b"[") + data.count(b"{") < max_depth:
        # Every level but the innermost value's opens a bracket, so no deeper document has
        # this few (brackets inside strings only raise the count): an envelope's base64
        # payload has none.
        return doc
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return doc


@lru_cache(maxsize=4096)
def _public_key(pem: str) -> tuple[str, PublicKey]:
    """A registered key, parsed, with its :func:`key_id` (computed here, not read from the
    row): both cost more than the signature check, and keys are few."""
    key = load_public_key(pem)
    return key_id(key), key


#: ``parse_envelope``'s results: (payloadType, payload, [(keyid, sig)]).
_Parsed = tuple[str, bytes, list[tuple[str | None, bytes]]]


def aware_utc(t: datetime) -> datetime:
    """SQLite returns naive datetimes; every Linegate time is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _key_active(key: SupplierKey, now: datetime) -> bool:
    if key.revoked_at is not None and aware_utc(key.revoked_at) <= now:
        return False
    if aware_utc(key.not_before) > now:
        return False
    return key.not_after is None or now < aware_utc(key.not_after)


def _signs(envelope: _Parsed, key: SupplierKey) -> bool:
    try:
        dsse_verify_parsed(*envelope, dict([_public_key(key.public_key_pem)]))
    except SignatureError:
        return False
    return True


def _check_dsse_signature(envelope: _Parsed, trust: TrustContext, out: Outcome) -> bool:
    active = [k for k in trust.keys if _key_active(k, trust.now)]
    if active:
        try:
            verified = dsse_verify_parsed(
                *envelope, dict(_public_key(k.public_key_pem) for k in active)
            )
        except SignatureError:
            pass
        else:
            out.signer = verified.signer_key_ids[0]
            return True
    for key in trust.keys:
        if key in active or not _signs(envelope, key):
            continue
        if key.revoked_at is not None and aware_utc(key.revoked_at) <= trust.now:
            out.reject(
                f"signed by key {key.key_id[:16]}, revoked on {key.revoked_at.date()}: "
                f"{key.revocation_reason}"
            )
        else:
            out.reject(f"signed by key {key.key_id[:16]} outside its validity window")
        return False
    if any(_signs(envelope, key) for key in trust.other_keys):
        out.reject("signed by a key registered to another supplier: impersonation is refused")
        return False
    out.reject(f"no signature verifies with a key registered to supplier {trust.supplier_id!r}")
    return False


def _check_statement(payload: bytes, out: Outcome) -> dict[str, Any] | None:
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        out.reject("payload is not a JSON in-toto Statement")
        return None
    if (why := _unstorable(payload, statement, "statement")) is not None:
        out.reject(why)  # before any of it is read into the record
        return None
    if not isinstance(statement, dict):
        out.reject("payload is not a JSON object")
        return None
    if statement.get("_type") not in STATEMENT_TYPES:
        out.reject(f"_type must be {STATEMENT_TYPES[0]}, got {statement.get('_type')!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        out.reject("statement has no subject")
    else:
        for i, subject in enumerate(subjects):
            out.subjects.extend(_check_subject(i, subject, out))
    predicate_type = statement.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        out.reject("statement has no predicateType")
    else:
        out.predicate_type = predicate_type
    if "predicate" in statement and not isinstance(statement["predicate"], dict):
        out.reject("predicate must be a JSON object")
    return statement


def _check_subject(i: int, subject: Any, out: Outcome) -> list[dict[str, Any]]:
    if not isinstance(subject, dict):
        out.reject(f"subject[{i}] is not an object")
        return []
    name = subject.get("name", "")
    digest = subject.get("digest")
    if not isinstance(digest, dict) or not digest:
        out.reject(f"subject[{i}] ({name}) has no digest")
        return []
    clean: dict[str, str] = {}
    for algorithm, value in digest.items():
        expected = _DIGEST_LENGTHS.get(algorithm)
        if (
            not isinstance(value, str)
            or not value
            or (expected is not None and len(value) != expected)
        ):
            out.reject(f"subject[{i}] ({name}) digest {algorithm} is malformed")
        elif expected is not None and not _HEX.match(value):
            out.reject(f"subject[{i}] ({name}) digest {algorithm} is not hexadecimal")
        else:
            clean[algorithm] = value.lower() if expected is not None else value
    return [{"name": str(name), "digest": clean}] if clean else []


def _predicate_time(kind: str | None, predicate: Any) -> tuple[datetime | None, datetime | None]:
    """(issued, valid-until) the predicate itself states, where its format has them."""
    if not isinstance(predicate, dict):
        return None, None
    candidates: list[Any] = []
    if kind == "slsa-provenance-v1":
        meta = (predicate.get("runDetails") or {}).get("metadata") or {}
        candidates = [meta.get("finishedOn"), meta.get("startedOn")]
    elif kind == "cyclonedx":
        candidates = [(predicate.get("metadata") or {}).get("timestamp")]
    elif kind == "spdx-2":
        candidates = [(predicate.get("creationInfo") or {}).get("created")]
    else:
        candidates = [predicate.get("issuedAt"), predicate.get("issued_at")]
    until_raw = predicate.get("validUntil") or predicate.get("valid_until")
    return _first_time(candidates), _first_time([until_raw])


def _first_time(values: list[Any]) -> datetime | None:
    for value in values:
        if isinstance(value, str):
            try:
                return aware_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                continue
    return None


def _apply_predicate(predicate_type: str, predicate: Any, out: Outcome) -> None:
    result = validate_predicate(predicate_type, predicate if predicate is not None else {})
    out.predicate_kind = result.kind
    out.recognised = result.recognised
    out.summary = dict(result.summary)
    if not result.recognised:
        out.summary["note"] = (
            "unrecognised predicate: stored with its signature verified, not validated"
        )
    for error in result.errors:
        out.reject(f"predicate ({result.kind}) invalid: {error}")


def _apply_validity(
    trust: TrustContext, out: Outcome, issued: datetime | None, until: datetime | None
) -> None:
    """An attestation that says it has expired is refused. One merely older than the maximum
    age is kept (it is still true history) but expires at once, so it never counts as
    current evidence."""
    issued = issued or trust.now
    if issued > trust.now + trust.clock_skew:
        out.reject(f"issued in the future ({issued.isoformat()})")
    if until is not None and until <= trust.now:
        out.reject(f"expired on {until.isoformat()} (its own validUntil)")
    expires = issued + trust.max_age
    if until is not None:
        expires = min(expires, until)
    out.issued_at, out.expires_at = issued, expires
    if expires <= trust.now:
        out.summary["stale"] = (
            f"issued {issued.date()}, older than the maximum age of {trust.max_age.days} days: "
            "stored, but not current evidence"
        )


def verify_upload(
    content_type: str,
    data: bytes,
    trust: TrustContext,
    *,
    sigstore: SigstoreVerifier,
    max_depth: int = 64,
) -> Outcome:
    """Verify one upload; never raises for bad input (only :class:`UnsupportedMedia`)."""
    media = media_type(content_type)
    kind = {MEDIA_DSSE: "dsse", MEDIA_CYCLONEDX: "cyclonedx", MEDIA_SPDX: "spdx"}.get(
        media, "sigstore-bundle"
    )
    out = Outcome(envelope=kind)
    try:
        doc = parse_json(data, max_depth)
    except ValueError as e:
        return out.reject(str(e), malformed=True)
    if kind == "dsse":
        _verify_dsse(doc, trust, out)
    elif kind == "sigstore-bundle":
        _verify_sigstore(data, doc, trust, sigstore, out)
    else:
        _verify_sbom(media, doc, trust, out)
    if not out.reasons and out.status == "rejected":
        out.status = "verified"
    return out


def _verify_dsse(doc: Any, trust: TrustContext, out: Outcome) -> None:
    try:
        parsed = parse_envelope(doc)
    except SignatureError as e:
        out.reject(f"malformed DSSE envelope: {e}", malformed=True)
        return
    payload_type, payload, _ = parsed
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        out.reject(f"payloadType must be {IN_TOTO_PAYLOAD_TYPE}, got {payload_type!r}")
        return
    if not _check_dsse_signature(parsed, trust, out):
        return
    statement = _check_statement(payload, out)
    if statement is None or out.predicate_type is None:
        return
    _apply_predicate(out.predicate_type, statement.get("predicate"), out)
    _apply_validity(trust, out, *_predicate_time(out.predicate_kind, statement.get("predicate")))


def _verify_sigstore(
    data: bytes, doc: Any, trust: TrustContext, verifier: SigstoreVerifier, out: Outcome
) -> None:
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(
        MEDIA_SIGSTORE_LEGACY[:-5]
    ):
        out.reject("not a Sigstore bundle (no bundle mediaType)", malformed=True)
        return
    now = trust.now
    policies = [
        IdentityPolicy(issuer=i.issuer, subject=i.subject, subject_pattern=i.subject_pattern)
        for i in trust.identities
        if i.revoked_at is None or aware_utc(i.revoked_at) > now
    ]
    if not policies:
        out.reject(f"supplier {trust.supplier_id!r} has no Sigstore identity registered")
        return
    try:
        verified = verifier.verify(data, policies)
    except SigstoreBundleError as e:
        out.reject(f"Sigstore bundle does not verify for this supplier's identities: {e}")
        return
    out.signer = f"{verified.issuer} {verified.identity}"
    if verified.payload is None:
        out.subjects = [{"name": "artifact", "digest": {"sha256": verified.artifact_sha256 or ""}}]
        out.predicate_kind = "sigstore-message-signature"
        out.summary = {"note": "signature over an artefact digest; no in-toto predicate"}
        _apply_validity(trust, out, verified.signed_at, None)
        return
    if verified.payload_type != IN_TOTO_PAYLOAD_TYPE:
        out.reject(f"payloadType must be {IN_TOTO_PAYLOAD_TYPE}, got {verified.payload_type!r}")
        return
    statement = _check_statement(verified.payload, out)
    if statement is None or out.predicate_type is None:
        return
    _apply_predicate(out.predicate_type, statement.get("predicate"), out)
    stated_issued, until = _predicate_time(out.predicate_kind, statement.get("predicate"))
    _apply_validity(trust, out, verified.signed_at or stated_issued, until)


def _verify_sbom(media: str, doc: Any, trust: TrustContext, out: Outcome) -> None:
    result = validate_document(media, doc)
    out.predicate_kind = result.kind
    out.summary = dict(result.summary)
    for error in result.errors:
        out.reject(f"SBOM ({result.kind}) invalid: {error}")
    if out.reasons:
        return
    out.subjects = _sbom_subjects(doc)
    _apply_validity(trust, out, *_predicate_time(result.kind, doc))
    if not out.reasons:
        out.status = "unsigned"


def _sbom_subjects(doc: Any) -> list[dict[str, Any]]:
    """Artefacts an SBOM describes, where it gives their SHA-256."""
    subjects: list[dict[str, Any]] = []
    if not isinstance(doc, dict):
        return subjects
    component = (doc.get("metadata") or {}).get("component") if "bomFormat" in doc else None
    if isinstance(component, dict):
        for h in component.get("hashes") or []:
            if (
                isinstance(h, dict)
                and h.get("alg") == "SHA-256"
                and isinstance(h.get("content"), str)
            ):
                subjects.append(
                    {
                        "name": str(component.get("name", "")),
                        "digest": {"sha256": h["content"].lower()},
                    }
                )
    described = set(doc.get("documentDescribes") or [])
    for package in doc.get("packages") or []:
        if not isinstance(package, dict) or package.get("SPDXID") not in described:
            continue
        for c in package.get("checksums") or []:
            if (
                isinstance(c, dict)
                and c.get("algorithm") == "SHA256"
                and isinstance(c.get("checksumValue"), str)
            ):
                subjects.append(
                    {
                        "name": str(package.get("name", "")),
                        "digest": {"sha256": c["checksumValue"].lower()},
                    }
                )
    return subjects
