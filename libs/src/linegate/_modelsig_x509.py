"""X.509 checks for certificate-signed model signatures (used by :mod:`linegate.modelsig`).

``model_signing``'s certificate verifier (1.1.1) checks less than a release gate needs, so
Linegate checks the bundle's certificates itself first, offline, against a pinned chain:

- it validates the chain with OpenSSL at the *signing certificate's notBefore*, not at the
  time of verification, so an expired signing certificate (or a CA expired since) still passes;
  here the whole path must be valid at the verification time (default: now). The bundles carry
  no trusted timestamp, so "now" is the only time that can be trusted;
- it accepts a leaf whose key usage has ``digitalSignature`` *or* whose extended key usage has
  ``codeSigning``, so a TLS server certificate signs models; here the leaf needs both, and must
  not be a CA;
- without a chain it trusts the operating system's roots (``certifi``); here a pinned chain is
  required, and it must hold the self-signed root (OpenSSL does not stop at an intermediate).

This module does not import ``model_signing`` (it costs a second to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from linegate.signing import SignatureError, key_id

#: OpenSSL verify error codes that mean "this chain does not lead to a pinned root".
#: 2, 20: unable to get (local) issuer certificate; 21: unable to verify the leaf; 19: the
#: signature's own chain ends in a self-signed root that is not pinned.
_UNKNOWN_ISSUER = {2, 19, 20, 21}


class CertificateError(SignatureError):
    """A certificate, chain or pinned trust anchor was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class SigningCertificate:
    """The certificate a model signature was verified with.

    ``subject`` and ``issuer`` are RFC 4514 strings; ``subject_alternative_names`` lists the
    e-mail, DNS and URI names (a Sigstore certificate's identity is one of them);
    ``sha256_fingerprint`` is the hex SHA-256 of the DER certificate; ``chain`` names the
    verified path from the signing certificate's issuer up to the pinned root.
    """

    subject: str
    issuer: str
    subject_alternative_names: tuple[str, ...]
    sha256_fingerprint: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    key_id: str
    chain: tuple[str, ...] = ()
    #: Every name the certificate is issued to, with its kind: ``("subject", RFC 4514)`` and
    #: ``("email" | "dns" | "uri", value)`` per subject alternative name.
    typed_names: tuple[tuple[str, str], ...] = ()


def describe(cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> SigningCertificate:
    """A :class:`SigningCertificate` for ``cert`` (``chain``: its verified issuers)."""
    names: list[str] = []
    typed: list[tuple[str, str]] = [("subject", cert.subject.rfc4514_string())]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        for kind, general_name in _SAN_KINDS:
            values = [str(v) for v in san.get_values_for_type(general_name)]
            names.extend(values)
            typed.extend((kind, v) for v in values)
    return SigningCertificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        subject_alternative_names=tuple(names),
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        serial_number=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_id=key_id(cert.public_key()),  # type: ignore[arg-type]  # checked EC by callers
        chain=tuple(c.subject.rfc4514_string() for c in chain),
        typed_names=tuple(typed),
    )


#: The subject alternative name kinds an identity can be, by the prefix that names them.
_SAN_KINDS: tuple[
    tuple[str, type[x509.RFC822Name] | type[x509.DNSName] | type[x509.UniformResourceIdentifier]],
    ...,
] = (
    ("email", x509.RFC822Name),
    ("dns", x509.DNSName),
    ("uri", x509.UniformResourceIdentifier),
)
IDENTITY_KINDS = ("subject", *(kind for kind, _ in _SAN_KINDS))


def typed_identity(identity: str) -> tuple[str, str]:
    """``(kind, value)`` of a pinned identity: ``email:``, ``dns:``, ``uri:`` or ``subject:``
    names the kind; a plain value is read by its shape (``://`` a URI, ``@`` an e-mail
    address, ``=`` an RFC 4514 subject, else a DNS name). A name only ever matches a
    certificate's name of the same kind, so a SAN spelled like another name's value (a URI
    SAN ``CN=linegate-registry``, a DNS SAN ``release-signer@plant.example``) matches nothing."""
    kind, sep, value = identity.partition(":")
    if sep and kind in IDENTITY_KINDS:
        return kind, value
    if "://" in identity:
        return "uri", identity
    if "@" in identity:
        return "email", identity
    if "=" in identity:
        return "subject", identity
    return "dns", identity


def identity_of(cert: SigningCertificate) -> str:
    """The one name a verifier pins a signer by: the first subject alternative name (a
    Sigstore certificate's identity is its SAN), else the RFC 4514 subject; plain when its
    shape says its kind (:func:`typed_identity`), else with the kind's prefix."""
    kind, value = next(
        (name for name in cert.typed_names if name[0] != "subject"),
        ("subject", cert.subject),
    )
    return value if typed_identity(value) == (kind, value) else f"{kind}:{value}"


def check_identity(cert: SigningCertificate, identity: str, where: str) -> None:
    """Refuse ``cert`` unless it is issued to ``identity``: a name of the same kind with the
    same value (:func:`typed_identity`). The chain proves which CA issued it, this pins whom
    it was issued to."""
    kind, value = typed_identity(identity)
    names = cert.typed_names or (
        ("subject", cert.subject),
        *((typed_identity(n)[0], n) for n in cert.subject_alternative_names),
    )
    if value and (kind, value) in names:
        return
    listed = ", ".join(f"{k}:{v}" for k, v in names)
    raise CertificateError(
        f"{where}: signing certificate {cert.subject} (sha256 {cert.sha256_fingerprint[:16]}) "
        f"is not issued to the expected identity {identity!r} (a {kind} name); it names {listed}"
    )


def issuer_path(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The issuers of ``leaf`` found among ``candidates`` by name, its issuer first, up to a
    self-signed root or the first issuer missing. Names only, nothing verified: for
    describing a configured chain, never for trusting one (that is :func:`verify_chain`)."""
    by_subject = {c.subject: c for c in candidates}
    path: list[x509.Certificate] = []
    current = leaf
    while current.subject != current.issuer:
        issuer = by_subject.get(current.issuer)
        if issuer is None or issuer in path:
            break
        path.append(issuer)
        current = issuer
    return path


def load_certificate(path: Path, what: str) -> x509.Certificate:
    """The one PEM certificate in ``path``."""
    certs = load_certificates(path, what)
    if len(certs) != 1:
        raise CertificateError(f"{what} {path} holds {len(certs)} certificates, expected one")
    return certs[0]


def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``; refuses a file without any."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertificateError(f"{what} {path} holds no PEM certificate: {e}") from e


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_signing_certificate(cert: x509.Certificate, where: str, at: datetime) -> None:
    """Refuse a leaf that is not an EC code-signing certificate valid at ``at``."""
    subject = _name(cert)
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise CertificateError(
            f"{where}: signing certificate {subject} has a {type(cert.public_key()).__name__}; "
            "model signatures need an EC key (P-256, P-384 or P-521)"
        )
    if at < cert.not_valid_before_utc:
        raise CertificateError(
            f"{where}: signing certificate {subject} is not valid until "
            f"{_when(cert.not_valid_before_utc)}"
        )
    if at > cert.not_valid_after_utc:
        raise CertificateError(
            f"{where}: signing certificate {subject} expired on {_when(cert.not_valid_after_utc)}"
        )
    ext = cert.extensions
    try:
        if ext.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateError(f"{where}: signing certificate {subject} is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage_ok = ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    except x509.ExtensionNotFound:
        usage_ok = False
    try:
        eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        code_signing = ExtendedKeyUsageOID.CODE_SIGNING in eku
    except x509.ExtensionNotFound:
        code_signing = False
    if not (usage_ok and code_signing):
        raise CertificateError(
            f"{where}: signing certificate {subject} is not a code-signing certificate: it "
            "needs key usage digitalSignature and extended key usage codeSigning"
        )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    pinned_path: Path,
    where: str,
    at: datetime,
) -> list[x509.Certificate]:
    """Build and check the path from ``leaf`` to a root in ``pinned_path`` at time ``at``.

    Only the pinned file's certificates are trusted; ``intermediates`` (from the signature) may
    fill the path. Returns the verified path from the leaf's issuer to the root.
    """
    pinned = load_certificates(pinned_path, "pinned certificate chain")
    return verify_chain_to(leaf, intermediates, pinned, str(pinned_path), where, at)


def verify_chain_to(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    pinned: Sequence[x509.Certificate],
    pinned_name: str,
    where: str,
    at: datetime,
) -> list[x509.Certificate]:
    """:func:`verify_chain` against pinned certificates already loaded (``pinned_name`` names
    where they come from in messages)."""
    from OpenSSL import crypto

    roots = [c for c in pinned if c.subject == c.issuer]
    if not roots:
        raise CertificateError(
            f"pinned certificate chain {pinned_name} holds no self-signed root CA "
            f"({', '.join(map(_name, pinned))}): add the root certificate the chain ends in"
        )
    store = crypto.X509Store()
    for cert in pinned:
        store.add_cert(crypto.X509.from_cryptography(cert))
    store.set_time(at.astimezone(UTC))
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in intermediates],
    )
    try:
        path = [c.to_cryptography() for c in context.get_verified_chain()]
    except crypto.X509StoreContextError as e:
        failed = _name(e.certificate.to_cryptography())
        code = e.errors[0] if e.errors and isinstance(e.errors[0], int) else None
        message = (
            f"{where}: certificate chain of {_name(leaf)} does not verify against the pinned "
            f"chain {pinned_name}: {e} (at {failed})"
        )
        if code in _UNKNOWN_ISSUER:
            top = intermediates[-1] if intermediates else leaf
            message += (
                f"; the signature's chain ends at issuer {top.issuer.rfc4514_string()}, the "
                f"pinned roots are {', '.join(map(_name, roots))}: it was signed under another CA"
            )
        raise CertificateError(message) from e
    return path[1:]
