"""Sigstore keyless signing (online) and verification (offline), against a pinned trust config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from linegate._modelsig_x509 import describe
from linegate.modelsig._bundle import _check_serialization, _parse_bundle, _read_signature
from linegate.modelsig._runner import _model_root, _run_signer, _run_verifier
from linegate.modelsig._types import KnownDigest, ModelSignatureError, VerifiedModel, _reason

if TYPE_CHECKING:
    from model_signing.verifying import Config as VerifyingConfig


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
