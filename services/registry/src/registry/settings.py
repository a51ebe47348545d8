"""Settings of the registry service (``LINEGATE_*`` environment variables)."""

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator

from linegate.settings import LinegateSettings

MiB = 1024 * 1024

#: Evidence every version of a system must have before release, by EU AI Act category. Names are
#: the evidence kinds of :mod:`registry.evidence`.
DEFAULT_EVIDENCE_POLICY: dict[str, list[str]] = {
    "high_risk": ["slsa-provenance", "ml-bom", "dataset-provenance"],
    "limited": ["ml-bom"],
    "minimal": [],
}


class RegistrySettings(LinegateSettings):
    service_name: ClassVar[str] = "registry"
    default_port: ClassVar[int] = 8102

    #: Content-addressed storage for artefacts; default ``<data_dir>/registry/blobs``.
    model_storage_dir: Path | None = None
    #: Largest ONNX file a push accepts.
    model_max_bytes: int = Field(default=8 * 1024 * MiB, ge=1)
    #: Largest preprocessing config, model card or metadata part.
    model_sidecar_max_bytes: int = Field(default=1 * MiB, ge=1)
    #: Largest golden dataset (.npz).
    golden_set_max_bytes: int = Field(default=512 * MiB, ge=1)
    #: ONNX files up to this size are also loaded by onnxruntime at push time; larger ones are
    #: checked structurally (bounded memory) and first run by onnxruntime in validation.
    onnx_runtime_check_max_bytes: int = Field(default=256 * MiB, ge=0)
    #: EC private key (PEM) the registry signs model versions with; created on first start.
    model_signing_key: Path | None = None
    #: How versions are signed (see registry.model_signers): ``key`` (the key above),
    #: ``certificate`` (the key above, which must then be set, with its code-signing
    #: certificate and a chain file holding the intermediates and the root CA, pinned for
    #: verification) or ``sigstore`` (keyless and online: identity token file and a pinned
    #: ClientTrustConfig; verified for the identity and OIDC issuer below).
    model_signing_method: Literal["key", "certificate", "sigstore"] = "key"
    model_signing_certificate: Path | None = None
    model_signing_certificate_chain: Path | None = None
    model_signing_identity_token: Path | None = None
    model_signing_trust_config: Path | None = None
    model_signing_sigstore_identity: str | None = None
    model_signing_sigstore_oidc_issuer: str | None = None
    #: OAuth2 client credentials for reading evidence from the attestation service. Unset in
    #: the embedded stack, where the registry mints its own auditor token.
    attestation_client_id: str | None = None
    attestation_client_secret: SecretStr | None = None
    evidence_policy: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_EVIDENCE_POLICY.items()}
    )
    #: Largest post-market log segment (``incidents/postmarket.jsonl``, JSON lines from the
    #: incident service) an evidence bundle carries; a longer log is cut at the last whole
    #: event below it and the bundle's manifest says so.
    evidence_postmarket_max_bytes: int = Field(default=64 * MiB, ge=1)
    #: Shortest written rationale an approval or rejection accepts.
    min_rationale_chars: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _require_the_signing_method_settings(self) -> Self:
        needed = {
            "key": (),
            "certificate": (
                "model_signing_key",
                "model_signing_certificate",
                "model_signing_certificate_chain",
            ),
            "sigstore": (
                "model_signing_identity_token",
                "model_signing_trust_config",
                "model_signing_sigstore_identity",
                "model_signing_sigstore_oidc_issuer",
            ),
        }[self.model_signing_method]
        if missing := [f"LINEGATE_{n.upper()}" for n in needed if getattr(self, n) is None]:
            raise ValueError(
                f"LINEGATE_MODEL_SIGNING_METHOD={self.model_signing_method} needs "
                + ", ".join(missing)
            )
        return self

    @property
    def storage_dir(self) -> Path:
        return self.model_storage_dir or self.data_dir / "registry" / "blobs"

    @property
    def signing_key_path(self) -> Path:
        return self.model_signing_key or self.keys_dir / "model-signing.pem"
