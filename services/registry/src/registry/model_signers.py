"""How the registry signs model versions, chosen by ``LINEGATE_MODEL_SIGNING_METHOD``.

- ``key`` (default): the registry's own EC key (``model_signing_key``, made on first start).
- ``certificate``: ``model_signing_key`` with its code-signing certificate
  (``model_signing_certificate``) and a chain file (``model_signing_certificate_chain``: the
  intermediates and the root CA). The key is the operator's: it must exist and be the
  certificate's (checked at start-up), and is never created. The chain travels in each
  signature and is published at ``GET /v1/signing-keys`` with the certificate's identity;
  the registry verifies against it (pinned, never the OS roots).
- ``sigstore``: keyless, ONLINE at push time (the OIDC issuer, Fulcio, Rekor) with an identity
  token file and a pinned trust config; verified offline against that trust config for the
  configured identity and issuer.

Verification follows how each stored signature was made, so versions signed before the method
changed keep verifying (a key signature with the registry key, and so on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from linegate.modelsig import (
    KnownDigest,
    ModelSignatureError,
    VerifiedModel,
    describe_signing_certificate,
    sign_model,
    sign_model_certificate,
    sign_model_sigstore,
    signature_kind,
    signing_identity,
    verify_model,
    verify_model_certificate,
    verify_model_sigstore,
)
from linegate.signing import (
    PublicKey,
    SignatureError,
    key_id,
    load_or_create_private_key,
    load_private_key,
    public_key_pem,
)
from registry.schemas import SigningKey
from registry.settings import RegistrySettings


class ModelSigner(Protocol):
    """Signs an artefact folder; ``key_id`` is what the version records as its signer.

    ``known_digests`` are the digests of files the registry hashed as it wrote them (see
    :func:`linegate.modelsig.sign_model`), so an upload is not read back to be signed.
    """

    @property
    def method(self) -> str: ...

    def sign(
        self, folder: Path, signature: Path, known_digests: Mapping[str, KnownDigest] | None = None
    ) -> None: ...

    def key_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class KeySigner:
    key: Path
    method: str = "key"

    def sign(
        self, folder: Path, signature: Path, known_digests: Mapping[str, KnownDigest] | None = None
    ) -> None:
        sign_model(folder, self.key, signature, known_digests=known_digests)

    def key_id(self) -> str:
        return key_id(load_or_create_private_key(self.key).public_key())


@dataclass(frozen=True, slots=True)
class CertificateSigner:
    key: Path
    certificate: Path
    chain: Path
    method: str = "certificate"

    def sign(
        self, folder: Path, signature: Path, known_digests: Mapping[str, KnownDigest] | None = None
    ) -> None:
        sign_model_certificate(
            folder,
            signature,
            private_key=self.key,
            certificate=self.certificate,
            certificate_chain=[self.chain],
            known_digests=known_digests,
        )

    def key_id(self) -> str:
        # The certificate's key is the signing key (start-up checked they match); the key
        # file is never read for this, let alone created.
        return key_id(certificate_public_key(self.certificate))

    def check(self) -> None:
        """Refuse to start unless the configured key exists and is the certificate's."""
        try:
            key = load_private_key(self.key.read_bytes())
        except FileNotFoundError as e:
            raise ModelSignatureError(
                f"LINEGATE_MODEL_SIGNING_KEY {self.key} does not exist: certificate signing "
                "needs the private key the certificate was issued for (it is never created)"
            ) from e
        except (OSError, ValueError, SignatureError) as e:
            raise ModelSignatureError(
                f"LINEGATE_MODEL_SIGNING_KEY {self.key} is not a readable PEM private key: {e}"
            ) from e
        if key.public_key() != certificate_public_key(self.certificate):
            raise ModelSignatureError(
                f"LINEGATE_MODEL_SIGNING_KEY {self.key} is not the key of "
                f"LINEGATE_MODEL_SIGNING_CERTIFICATE {self.certificate}"
            )


@dataclass(frozen=True, slots=True)
class SigstoreSigner:
    identity_token: Path
    trust_config: Path
    identity: str
    oidc_issuer: str
    method: str = "sigstore"

    def sign(
        self, folder: Path, signature: Path, known_digests: Mapping[str, KnownDigest] | None = None
    ) -> None:
        sign_model_sigstore(
            folder,
            signature,
            identity_token=self.identity_token,
            trust_config=self.trust_config,
            known_digests=known_digests,
        )

    def key_id(self) -> str:
        # Keyless: each signature has its own short-lived key, so the version records the
        # identity it is bound to instead (SHA-256 of "issuer identity").
        return hashlib.sha256(f"{self.oidc_issuer} {self.identity}".encode()).hexdigest()


def model_signer(settings: RegistrySettings) -> ModelSigner:
    """The signer ``settings.model_signing_method`` selects (its settings are validated)."""
    if settings.model_signing_method == "certificate":
        assert settings.model_signing_certificate is not None  # the settings validated these
        assert settings.model_signing_certificate_chain is not None
        return CertificateSigner(
            settings.signing_key_path,
            settings.model_signing_certificate,
            settings.model_signing_certificate_chain,
        )
    if settings.model_signing_method == "sigstore":
        s = settings
        assert s.model_signing_identity_token is not None  # the settings validated these
        assert s.model_signing_trust_config is not None
        assert s.model_signing_sigstore_identity is not None
        assert s.model_signing_sigstore_oidc_issuer is not None
        return SigstoreSigner(
            s.model_signing_identity_token,
            s.model_signing_trust_config,
            s.model_signing_sigstore_identity,
            s.model_signing_sigstore_oidc_issuer,
        )
    return KeySigner(settings.signing_key_path)


def certificate_public_key(certificate: Path) -> ec.EllipticCurvePublicKey:
    """The EC public key of the signing certificate (one PEM certificate) at ``certificate``."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (OSError, ValueError) as e:
        raise ModelSignatureError(f"cannot read signing certificate {certificate}: {e}") from e
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ModelSignatureError(
            f"signing certificate {certificate} has a {type(key).__name__}; model signatures "
            "need an EC key"
        )
    return key


def check_signing(settings: RegistrySettings) -> None:
    """Refuse a configuration that cannot sign: in certificate mode the operator's key must
    exist and be the certificate's (it is never created). Reads files, changes nothing."""
    signer = model_signer(settings)
    if isinstance(signer, CertificateSigner):
        signer.check()


def prepare_signing(settings: RegistrySettings) -> None:
    """At start-up, outside certificate mode: make the registry's own key on first start, so
    its public half is published before anything is signed (with Sigstore it verifies the
    versions key-signed before the switch). Certificate mode creates no key."""
    if settings.model_signing_method != "certificate":
        load_or_create_private_key(settings.signing_key_path)


def signing_public_key(settings: RegistrySettings) -> PublicKey:
    """The public key key-signed versions verify with: the certificate's key in certificate
    mode (the key file is the operator's and is not created), else the registry's key."""
    if settings.model_signing_method == "certificate":
        assert settings.model_signing_certificate is not None  # the settings validated it
        return certificate_public_key(settings.model_signing_certificate)
    return load_or_create_private_key(settings.signing_key_path).public_key()


def verify_stored_signature(
    settings: RegistrySettings, folder: Path, signature: Path, public_key: Path
) -> VerifiedModel:
    """Verify a stored version the way its signature was made, with the registry's pinned
    trust: its public key, its certificate chain, or its Sigstore trust config and identity."""
    kind = signature_kind(signature)
    if kind == "certificate":
        chain = settings.model_signing_certificate_chain
        if chain is None:
            raise ModelSignatureError(
                "the version is certificate-signed but no LINEGATE_MODEL_SIGNING_CERTIFICATE_CHAIN"
                " is configured to verify it against"
            )
        return verify_model_certificate(folder, chain, signature)
    if kind == "sigstore":
        s = settings
        if not (
            s.model_signing_trust_config
            and s.model_signing_sigstore_identity
            and s.model_signing_sigstore_oidc_issuer
        ):
            raise ModelSignatureError(
                "the version is Sigstore-signed but no pinned trust config, identity and issuer "
                "are configured to verify it against"
            )
        return verify_model_sigstore(
            folder,
            signature,
            identity=s.model_signing_sigstore_identity,
            oidc_issuer=s.model_signing_sigstore_oidc_issuer,
            trust_config=s.model_signing_trust_config,
        )
    return verify_model(folder, public_key, signature)


def _algorithm(key: PublicKey) -> str:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return type(key).__name__
    bits = key.curve.key_size
    # The hash model-signing pairs with each curve (as linegate.signing does).
    return f"ecdsa-p{bits}-sha{256 if bits <= 256 else 384 if bits <= 384 else 512}"


def published_signing_keys(settings: RegistrySettings) -> list[SigningKey]:
    """What ``GET /v1/signing-keys`` publishes: the public key that verifies key signatures
    and, with certificate signing, that key's certificate, the pinned chain (PEM) and the
    certificate described (identity, issuer, validity, fingerprint); with Sigstore, the
    identity and OIDC issuer the signatures are bound to."""
    key = signing_public_key(settings)
    entry = SigningKey(
        key_id=key_id(key),
        algorithm=_algorithm(key),
        public_key_pem=public_key_pem(key).decode(),
    )
    s = settings
    if s.model_signing_method == "certificate":
        assert s.model_signing_certificate is not None  # the settings validated these
        assert s.model_signing_certificate_chain is not None
        described = describe_signing_certificate(
            s.model_signing_certificate, s.model_signing_certificate_chain
        )
        entry.method = entry.verify_method = "certificate"
        entry.certificate_pem = s.model_signing_certificate.read_text()
        entry.certificate_chain_pem = s.model_signing_certificate_chain.read_text()
        entry.certificate = described
        entry.identity = signing_identity(described)
    elif s.model_signing_method == "sigstore":
        entry.method = entry.verify_method = "sigstore"
        entry.identity = s.model_signing_sigstore_identity
        entry.oidc_issuer = s.model_signing_sigstore_oidc_issuer
    return [entry]
