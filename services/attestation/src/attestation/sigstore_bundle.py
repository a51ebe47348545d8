"""Offline verification of Sigstore bundles against pinned trusted roots.

A supplier's Sigstore bundle is checked entirely offline: the trusted roots (Fulcio CAs, Rekor
and CT log keys, timestamp authorities) come from files pinned in configuration, never from TUF
or any other network source, so verification is reproducible and cannot be steered by whoever
controls the network at verify time.

Example::

    from pathlib import Path

    from attestation.sigstore_bundle import (
        IdentityPolicy,
        SigstoreVerifier,
        default_trusted_root_paths,
    )

    verifier = SigstoreVerifier.from_files(default_trusted_root_paths())
    result = verifier.verify(
        Path("rfc8785-0.1.2-py3-none-any.whl.sigstore").read_bytes(),
        [
            IdentityPolicy(
                issuer="https://token.actions.githubusercontent.com",
                subject_pattern=r"https://github\\.com/trailofbits/rfc8785\\.py/.+@refs/tags/v.+",
            )
        ],
        artifact=Path("rfc8785-0.1.2-py3-none-any.whl").read_bytes(),
    )
    print(result.identity, result.artifact_sha256, result.signed_at)

sigstore is imported inside functions so that importing this module (and so starting a service)
does not pay for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import VerificationPolicy

__all__ = [
    "SUPPORTED_MEDIA_TYPES",
    "IdentityPolicy",
    "SigstoreBundleError",
    "SigstoreVerifier",
    "VerifiedBundle",
    "default_trusted_root_paths",
]

SUPPORTED_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        # The pre-standard spelling of v0.3; sigstore-python and sigstore-go accept it too.
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)

# Fulcio certificate extensions (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md).
_OIDC_ISSUER_OID = "1.3.6.1.4.1.57264.1.1"  # raw string bytes (deprecated, still issued)
_OIDC_ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"  # DER UTF8String
_OTHERNAME_OID = "1.3.6.1.4.1.57264.1.7"  # Sigstore's "other name" SAN (e.g. CI identities)

_PRODUCTION_TUF_STORE = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"


class SigstoreBundleError(Exception):
    """A Sigstore bundle was rejected; the message says which check failed and why."""


@dataclass(frozen=True)
class IdentityPolicy:
    """Who may have signed: an OIDC issuer plus the certificate's SAN, exact or by regex.

    `subject_pattern` must match the whole SAN (`re.fullmatch`), so an unanchored pattern cannot
    accidentally accept `https://github.com/evil/repo/...` for `github.com/good/repo`.
    """

    issuer: str
    subject: str | None = None
    subject_pattern: str | None = None
    _compiled: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("IdentityPolicy.issuer must be a non-empty OIDC issuer URL")
        if (self.subject is None) == (self.subject_pattern is None):
            raise ValueError("IdentityPolicy needs exactly one of subject or subject_pattern")
        if self.subject is not None and not self.subject:
            raise ValueError("IdentityPolicy.subject must not be empty")
        if self.subject_pattern is not None:
            try:
                compiled = re.compile(self.subject_pattern)
            except re.error as e:
                raise ValueError(f"invalid IdentityPolicy.subject_pattern: {e}") from e
            object.__setattr__(self, "_compiled", compiled)

    def _matching_san(self, sans: Sequence[str], issuer: str | None) -> str | None:
        """The first of `sans` this policy accepts under `issuer`, or None."""
        if issuer != self.issuer:
            return None
        for san in sans:
            if self.subject is not None and san == self.subject:
                return san
            if self._compiled is not None and self._compiled.fullmatch(san):
                return san
        return None

    def _describe(self) -> str:
        """A short human-readable form for error messages."""
        if self.subject is not None:
            return f"subject={self.subject!r} issuer={self.issuer!r}"
        return f"subject_pattern={self.subject_pattern!r} issuer={self.issuer!r}"


@dataclass(frozen=True)
class VerifiedBundle:
    """What a bundle proved once every check passed."""

    media_type: str
    identity: str
    issuer: str
    payload_type: str | None
    payload: bytes | None
    artifact_sha256: str | None
    signed_at: datetime | None


class _SubjectPatternPolicy:
    """A sigstore `VerificationPolicy`: issuer exact, some SAN full-matching a regex.

    sigstore ships only exact-SAN `Identity`; this mirrors it (same SAN kinds, same issuer
    extension) with `re.fullmatch` in place of equality.
    """

    def __init__(self, *, issuer: str, pattern: re.Pattern[str]) -> None:
        self._issuer = issuer
        self._pattern = pattern

    def verify(self, cert: Certificate) -> None:
        from sigstore.errors import VerificationError
        from sigstore.verify.policy import OIDCIssuer

        OIDCIssuer(self._issuer).verify(cert)
        sans = _certificate_sans(cert)
        if not any(self._pattern.fullmatch(san) for san in sans):
            raise VerificationError(
                f"no certificate SAN matches {self._pattern.pattern!r}; actual SANs: {sans}"
            )


class _ExplainedPolicy:
    """Wraps the composed policy so a mismatch names the identity that actually signed."""

    def __init__(self, inner: VerificationPolicy, policies: Sequence[IdentityPolicy]) -> None:
        self._inner = inner
        self._policies = policies

    def verify(self, cert: Certificate) -> None:
        from sigstore.errors import VerificationError

        try:
            self._inner.verify(cert)
        except VerificationError as e:
            wanted = "; ".join(p._describe() for p in self._policies)
            raise VerificationError(
                f"signing certificate identity {_certificate_sans(cert)} with issuer "
                f"{_certificate_issuer(cert)!r} matches none of the identity policies ({wanted})"
            ) from e


def _certificate_sans(cert: Certificate) -> list[str]:
    """Every SAN sigstore treats as an identity: emails, URIs and Sigstore other names."""
    from cryptography.x509 import (
        ExtensionNotFound,
        ObjectIdentifier,
        OtherName,
        RFC822Name,
        SubjectAlternativeName,
        UniformResourceIdentifier,
    )

    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except ExtensionNotFound:
        return []
    sans: list[str] = list(san.get_values_for_type(RFC822Name))
    sans += san.get_values_for_type(UniformResourceIdentifier)
    other = ObjectIdentifier(_OTHERNAME_OID)
    sans += [on.value.decode() for on in san.get_values_for_type(OtherName) if on.type_id == other]
    return sans


def _certificate_issuer(cert: Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded in the certificate (the extension policies check)."""
    from cryptography.hazmat import asn1
    from cryptography.x509 import ExtensionNotFound, ObjectIdentifier, UnrecognizedExtension

    try:
        ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(_OIDC_ISSUER_OID)).value
    except ExtensionNotFound:
        pass
    else:
        if isinstance(ext, UnrecognizedExtension):
            return ext.value.decode(errors="replace")
    try:
        ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(_OIDC_ISSUER_V2_OID)).value
    except ExtensionNotFound:
        return None
    if isinstance(ext, UnrecognizedExtension):
        try:
            return asn1.decode_der(str, ext.value)
        except ValueError:
            return None
    return None


def _rejections() -> tuple[type[Exception], ...]:
    """Exceptions that mean "this untrusted bundle is bad", from sigstore or below it.

    sigstore raises its own `Error` for the checks it makes, but a malformed certificate or log
    entry can fail underneath it first: pydantic, base64 and ASN.1 parsing raise ValueError, and
    cryptography parses certificate extensions lazily with exceptions of its own.
    """
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.x509 import (
        DuplicateExtension,
        ExtensionNotFound,
        InvalidVersion,
        UnsupportedGeneralNameType,
    )
    from sigstore.errors import Error as SigstoreError

    return (
        SigstoreError,
        ValueError,
        TypeError,
        InvalidSignature,
        UnsupportedAlgorithm,
        DuplicateExtension,
        ExtensionNotFound,
        InvalidVersion,
        UnsupportedGeneralNameType,
    )


def _build_policy(policies: Sequence[IdentityPolicy]) -> VerificationPolicy:
    from sigstore.verify.policy import AnyOf, Identity

    children: list[VerificationPolicy] = []
    for p in policies:
        if p.subject is not None:
            children.append(Identity(identity=p.subject, issuer=p.issuer))
        else:
            assert p._compiled is not None  # set in __post_init__ whenever subject is None
            children.append(_SubjectPatternPolicy(issuer=p.issuer, pattern=p._compiled))
    return _ExplainedPolicy(AnyOf(children), policies)


def _stated_sha256(doc: dict[str, Any]) -> bytes:
    """The SHA-256 digest a message-signature bundle says it signed."""
    digest = doc["messageSignature"].get("messageDigest")
    if not isinstance(digest, dict):
        raise SigstoreBundleError(
            "bundle states no messageDigest; pass the artifact bytes to verify it"
        )
    if digest.get("algorithm") != "SHA2_256":
        raise SigstoreBundleError(
            f"unsupported messageDigest algorithm {digest.get('algorithm')!r}; expected SHA2_256"
        )
    try:
        raw = base64.b64decode(str(digest.get("digest", "")), validate=True)
    except binascii.Error as e:
        raise SigstoreBundleError(f"messageDigest.digest is not valid base64: {e}") from e
    if len(raw) != hashlib.sha256().digest_size:
        raise SigstoreBundleError(
            f"messageDigest.digest is {len(raw)} bytes; a SHA-256 digest is 32 bytes"
        )
    return raw


def _signed_at(doc: dict[str, Any]) -> datetime | None:
    """Rekor's integrated time, only when an inclusion promise (verified by sigstore) binds it.

    Rekor v2 entries carry no integrated time (their time comes from a timestamp authority), and
    without a signed entry timestamp the field is just an unauthenticated number in the JSON.
    """
    entries = doc["verificationMaterial"].get("tlogEntries") or []
    if len(entries) != 1 or not entries[0].get("inclusionPromise"):
        return None
    try:
        seconds = int(entries[0].get("integratedTime") or 0)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds > 0 else None


def _parse(bundle_json: bytes) -> tuple[dict[str, Any], Bundle]:
    from sigstore.models import Bundle

    try:
        doc = json.loads(bundle_json)
    # RecursionError: pathologically nested JSON, which no bundle is.
    except (ValueError, TypeError, RecursionError) as e:
        raise SigstoreBundleError(f"bundle is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict):
        raise SigstoreBundleError(
            "not a Sigstore bundle: expected a JSON object with mediaType and verificationMaterial"
        )
    media_type = doc.get("mediaType")
    if media_type not in SUPPORTED_MEDIA_TYPES:
        raise SigstoreBundleError(
            f"unsupported Sigstore bundle mediaType {media_type!r}; "
            f"expected one of {sorted(SUPPORTED_MEDIA_TYPES)}"
        )
    has_dsse = isinstance(doc.get("dsseEnvelope"), dict)
    has_message = isinstance(doc.get("messageSignature"), dict)
    if has_dsse == has_message:
        raise SigstoreBundleError(
            "not a Sigstore bundle: expected exactly one of dsseEnvelope or messageSignature"
        )
    try:
        bundle = Bundle.from_json(bundle_json)
        # Parse every certificate extension now, so a mangled certificate is reported as
        # malformed here rather than as an odd failure halfway through verification.
        _ = bundle.signing_certificate.extensions
    except _rejections() as e:
        raise SigstoreBundleError(f"malformed Sigstore bundle: {e}") from e
    return doc, bundle


def default_trusted_root_paths() -> list[Path]:
    """The public-good (production) trusted root shipped inside the installed `sigstore`.

    It is the snapshot sigstore bundles to bootstrap TUF, so it changes only when the `sigstore`
    dependency is upgraded in the lock file: pinned by the lock, not fetched. Add the staging
    root, or your own instance's root, through `SigstoreVerifier.from_files`.
    """
    root = resources.files("sigstore") / "_store" / _PRODUCTION_TUF_STORE / "trusted_root.json"
    path = Path(str(root))
    if not path.is_file():
        raise SigstoreBundleError(
            f"the installed sigstore package ships no trusted root at {path}; "
            "configure trusted-root files explicitly"
        )
    return [path]


class SigstoreVerifier:
    """Verifies Sigstore bundles offline under one or more pinned trusted roots.

    A bundle is accepted if it verifies under any of the roots (e.g. production and staging):
    each root is a complete, independent trust domain, so accepting either is an OR of two
    full verifications, never a mix of material from both.
    """

    def __init__(
        self, trusted_roots: Sequence[TrustedRoot], *, names: Sequence[str] | None = None
    ) -> None:
        """`names` label each root in error messages (default: `trusted root #i`)."""
        from sigstore.errors import Error as SigstoreError
        from sigstore.verify import Verifier

        if not trusted_roots:
            raise SigstoreBundleError("no trusted root configured; refusing to verify anything")
        if names is not None and len(names) != len(trusted_roots):
            raise ValueError("names must label every trusted root")
        self._names = (
            list(names) if names else [f"trusted root #{i}" for i in range(len(trusted_roots))]
        )
        self._verifiers: list[Verifier] = []
        for name, root in zip(self._names, trusted_roots, strict=True):
            try:
                self._verifiers.append(Verifier(trusted_root=root))
            except SigstoreError as e:
                raise SigstoreBundleError(f"unusable trusted root {name}: {e}") from e

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> SigstoreVerifier:
        """Load pinned trusted-root JSON files (`TrustedRoot.from_file`); nothing is fetched."""
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import TrustedRoot

        roots: list[TrustedRoot] = []
        for path in paths:
            try:
                roots.append(TrustedRoot.from_file(str(path)))
            except (OSError, ValueError, SigstoreError) as e:
                raise SigstoreBundleError(f"cannot load trusted root {path}: {e}") from e
        return cls(roots, names=[Path(p).name for p in paths])

    def verify(
        self,
        bundle_json: bytes,
        policies: Sequence[IdentityPolicy],
        *,
        artifact: bytes | None = None,
    ) -> VerifiedBundle:
        """Verify `bundle_json` and return what it proves, or raise `SigstoreBundleError`.

        Message-signature bundles: with `artifact`, its SHA-256 must be what was signed. Without
        it, the bundle is verified against the digest it states itself. That is sound because the
        signature is over that digest (hashedrekord signs the prehash) and the transparency-log
        entry records the same digest, so a passing bundle proves "this identity signed
        sha256:<digest>" and nothing about any particular file. The caller must then treat the
        returned `artifact_sha256` as the attestation's subject and match artefacts by digest.

        DSSE bundles: the envelope signature is verified and `(payload_type, payload)` returned
        unchecked; the caller must accept the payloadType before trusting the payload. An
        `artifact` is refused: a DSSE signature covers the payload, not a file, so the caller
        must match the artefact against the in-toto Statement's subjects.
        """
        from sigstore.hashes import Hashed
        from sigstore_models.common.v1 import HashAlgorithm

        if not policies:
            raise ValueError("at least one IdentityPolicy is required")
        doc, bundle = _parse(bundle_json)
        is_dsse = isinstance(doc.get("dsseEnvelope"), dict)
        if is_dsse and artifact is not None:
            raise SigstoreBundleError(
                "this is a DSSE bundle: its signature covers the envelope payload, not an "
                "artifact; match the artifact's digest against the payload's subjects instead"
            )
        digest: bytes | None = None
        if not is_dsse:
            digest = (
                hashlib.sha256(artifact).digest() if artifact is not None else _stated_sha256(doc)
            )
        policy = _build_policy(policies)

        failures: list[str] = []
        last_error: Exception | None = None
        for name, verifier in zip(self._names, self._verifiers, strict=True):
            try:
                if is_dsse:
                    payload_type, payload = verifier.verify_dsse(bundle, policy)
                else:
                    assert digest is not None
                    # Given bytes, sigstore would hash them into exactly this `Hashed` itself.
                    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest)
                    verifier.verify_artifact(hashed, bundle, policy)
                    payload_type, payload = None, None
            except _rejections() as e:
                failures.append(f"{name}: {e}")
                last_error = e
                continue
            cert = bundle.signing_certificate
            return VerifiedBundle(
                media_type=str(doc["mediaType"]),
                identity=_matched_identity(cert, policies),
                issuer=_certificate_issuer(cert) or "",
                payload_type=payload_type,
                payload=payload,
                artifact_sha256=digest.hex() if digest is not None else None,
                signed_at=_signed_at(doc),
            )
        raise SigstoreBundleError(
            f"bundle did not verify under any pinned trusted root: {' | '.join(failures)}"
        ) from last_error


def _matched_identity(cert: Certificate, policies: Sequence[IdentityPolicy]) -> str:
    sans = _certificate_sans(cert)
    issuer = _certificate_issuer(cert)
    for p in policies:
        if (san := p._matching_san(sans, issuer)) is not None:
            return san
    # Unreachable once sigstore accepted the policy; say so rather than return a guess.
    raise SigstoreBundleError(f"verified certificate SANs {sans} match no identity policy")
