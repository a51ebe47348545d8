"""Settings of the attestation service (``LINEGATE_*`` environment variables)."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from linegate.settings import LinegateSettings


class AttestationSettings(LinegateSettings):
    service_name: ClassVar[str] = "attestation"
    default_port: ClassVar[int] = 8101

    #: Largest attestation or SBOM accepted, in bytes (real SBOMs reach a few MB).
    attestation_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Deepest JSON nesting accepted (CycloneDX nests components; attackers nest brackets).
    attestation_max_json_depth: int = Field(default=64, ge=8, le=512)
    #: Pinned Sigstore trusted roots (trusted_root.json); empty = the production root that
    #: ships inside the installed sigstore package. Never fetched at verify time.
    sigstore_trusted_roots: list[Path] = Field(default_factory=list)
    #: Age after which an attestation expires when the supplier has no SLA saying otherwise.
    attestation_default_max_age_days: int = Field(default=365, ge=1)
    #: How far in the future an attestation's own timestamp may be (clock skew).
    attestation_clock_skew_seconds: int = Field(default=300, ge=0)
    #: How often SLA terms are evaluated for new breaches.
    sla_evaluation_interval_seconds: float = Field(default=60.0, gt=0)
    #: Most uploads recorded in one transaction (group commit); 1 records each on its own.
    attestation_ingest_batch_max: int = Field(default=256, ge=1, le=10_000)
    #: Uploads up to this size are verified on the event loop (about a millisecond each);
    #: larger ones in a worker thread so the service keeps answering during a large SBOM.
    attestation_inline_verify_max_bytes: int = Field(default=64 * 1024, ge=0)
    #: Uploads from this size are looked up as re-uploads before verification, so the same
    #: large SBOM is not verified twice; smaller ones are found to be re-uploads at commit.
    attestation_duplicate_precheck_min_bytes: int = Field(default=64 * 1024, ge=0)
    #: Run SQLite calls on the event loop's thread rather than aiosqlite's, saving two thread
    #: switches per call (about half of an upload's cost). Right for one process per database
    #: file, the embedded default. Set it false when several processes share the file
    #: (``uvicorn --workers``): a write waiting for another process's lock would block the loop.
    database_sqlite_inline: bool = True
