"""A real X.509 code-signing PKI for tests: root CA -> intermediate CA -> code-signing leaf.

Every key is EC P-256 and every certificate is signed by its issuer with ``cryptography.x509``;
nothing is mocked, so :mod:`linegate.modelsig`'s certificate path, OpenSSL's chain building and
the ``model_signing`` CLI all see ordinary certificates. Validity is relative to the current time
unless a test asks for fixed dates (an expired leaf, a leaf that is not valid yet).

Example::

    from pathlib import Path

    from linegate.testing.pki import CodeSigningPki

    pki = CodeSigningPki.create(Path("pki"))
    leaf = pki.issue_leaf("release-signer")
    # leaf.key, leaf.certificate, pki.chain (intermediate), pki.root_pem (trust anchor)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertifiedKey", "CodeSigningPki", "LeafFiles"]

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A private key and the certificate for its public half."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject


@dataclass(frozen=True, slots=True)
class LeafFiles:
    """A signer's files on disk: private key (PEM, unencrypted) and its certificate (PEM)."""

    key: Path
    certificate: Path
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Linegate Test Plant"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(
    common_name: str, issuer: CertifiedKey | None, *, not_before: datetime, not_after: datetime
) -> CertifiedKey:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    signer = issuer.key if issuer else key
    return CertifiedKey(key, builder.sign(signer, hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class CodeSigningPki:
    """A root CA and an intermediate CA that issues code-signing leaves, written under ``dir``.

    ``root_pem`` holds the root only (the pinned trust anchor a verifier is given);
    ``chain_pem`` holds the intermediate (what a signer ships in the bundle beside its leaf).
    """

    dir: Path
    root: CertifiedKey
    intermediate: CertifiedKey
    root_pem: Path
    chain_pem: Path

    @classmethod
    def create(cls, directory: Path, *, name: str = "Linegate Test") -> CodeSigningPki:
        """A fresh root and intermediate, valid from a year ago for ten years."""
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        since, until = now - 365 * DAY, now + 3650 * DAY
        root = _ca(f"{name} Root CA", None, not_before=since, not_after=until)
        intermediate = _ca(f"{name} Code Signing CA", root, not_before=since, not_after=until)
        slug = name.lower().replace(" ", "-")
        root_pem, chain_pem = directory / f"{slug}-root.pem", directory / f"{slug}-chain.pem"
        root_pem.write_bytes(_pem(root.certificate))
        chain_pem.write_bytes(_pem(intermediate.certificate))
        return cls(directory, root, intermediate, root_pem, chain_pem)

    def issue_leaf(
        self,
        name: str = "release-signer",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        code_signing: bool = True,
        digital_signature: bool = True,
        san_email: str | None = "release-signer@plant.example",
        key: ec.EllipticCurvePrivateKey | None = None,
        sans: list[x509.GeneralName] | None = None,
    ) -> LeafFiles:
        """A code-signing leaf from the intermediate, its key and certificate written as PEM.

        By default valid from a day ago for 30 days, with key usage ``digitalSignature``,
        extended key usage ``codeSigning`` and an e-mail SAN; the keywords take each away.
        ``key`` certifies an existing key (e.g. a registry's) instead of a fresh one; ``sans``
        replaces the e-mail SAN with these names (what a CA copying a request's SANs issues).
        """
        now = datetime.now(UTC)
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.intermediate.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - DAY)
            .not_valid_after(not_after or now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=False,
                    key_encipherment=not digital_signature,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        ExtendedKeyUsageOID.CODE_SIGNING
                        if code_signing
                        else ExtendedKeyUsageOID.SERVER_AUTH
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate.key.public_key()
                ),
                critical=False,
            )
        )
        names = sans if sans is not None else [x509.RFC822Name(san_email)] if san_email else []
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.intermediate.key, hashes.SHA256())
        key_path, cert_path = self.dir / f"{name}.key.pem", self.dir / f"{name}.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(_pem(cert))
        return LeafFiles(key_path, cert_path, cert)
