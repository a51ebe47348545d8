"""Settings of the attestation service (``LINEGATE_*`` environment variables)."""

import json
import re
from pathlib import Path
from typing import Annotated, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from linegate.roles import Role
from linegate.settings import Environment, LinegateSettings

#: Roles a person may get from the OIDC provider's claims (a device is never a person).
OIDC_GRANTABLE_ROLES = frozenset(Role) - {Role.DEVICE}
#: A tenant id substituted into an issuer URL: one plain path segment (Entra's are GUIDs).
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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

    # ------------------------------------------------------------- portal sign-in via OIDC
    #: Issuer URL of the OpenID Connect provider people sign in to the portal with
    #: (authorization-code flow with PKCE). Unset = no "Sign in with ..." button.
    portal_oidc_issuer: str | None = None
    #: The portal's client id at the provider (the ID token's audience).
    portal_oidc_client_id: str | None = None
    #: Client secret, for a confidential client; unset = a public client (PKCE only).
    portal_oidc_client_secret: SecretStr | None = None
    #: Where the provider sends the browser back; default
    #: ``{attestation_url}/portal/login/oidc/callback``. Register exactly this at the provider.
    portal_oidc_redirect_url: str | None = None
    #: Scopes requested (space-separated); must include ``openid``.
    portal_oidc_scopes: str = "openid profile email"
    #: Shown on the sign-in button ("Sign in with Keycloak"); default the issuer's host name.
    portal_oidc_provider_name: str | None = None
    #: ID-token claim with the user's provider roles or groups (a list or a space-separated
    #: string); a dotted path reaches into objects (Keycloak: ``realm_access.roles``).
    portal_oidc_roles_claim: str = "roles"
    #: Provider role/group -> Linegate roles, e.g. ``{"lg-procurement": ["procurement"]}``
    #: (JSON in the environment). Only mapped values grant anything: no mapping, no sign-in.
    portal_oidc_role_map: dict[str, list[Role]] = Field(default_factory=dict)
    #: ID-token claim (dotted path allowed) naming the supplier a ``supplier`` user belongs to.
    portal_oidc_tenant_claim: str = "supplier"
    #: ID-token claim the portal session (and the audit log) names the user by. ``sub`` is the
    #: stable one; ``email`` or ``preferred_username`` read better where the provider keeps
    #: them unique and unchanging.
    portal_oidc_subject_claim: str = "sub"
    #: Where the provider sends the browser after signing out there (RP-initiated logout's
    #: ``post_logout_redirect_uri``); default ``{attestation_url}/portal/login``. Register
    #: exactly this at the provider.
    portal_oidc_post_logout_redirect_url: str | None = None
    #: Tenants whose users may sign in through a multi-tenant provider (opt-in). Entra ID's
    #: ``https://login.microsoftonline.com/common/v2.0`` publishes the issuer
    #: ``https://login.microsoftonline.com/{tenantid}/v2.0``: with this list an ID token's
    #: ``iss`` must be that template with the token's own ``tid`` in it, and ``tid`` one of
    #: these. Empty = the issuer must match exactly (a templated one is refused). Comma- or
    #: space-separated in the environment, or a JSON list.
    portal_oidc_allowed_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: PEM key (ES256) signing the portal's OIDC sessions and sign-in state cookies; default
    #: ``<data_dir>/keys/portal-session.pem``, made on first use. Replicas share one file.
    portal_session_key_file: Path | None = None

    @field_validator("portal_oidc_allowed_tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [t for t in re.split(r"[\s,]+", text) if t]
        return value

    @property
    def portal_oidc_enabled(self) -> bool:
        return self.portal_oidc_issuer is not None

    @property
    def portal_oidc_callback_url(self) -> str:
        return self.portal_oidc_redirect_url or (
            self.attestation_url.rstrip("/") + "/portal/login/oidc/callback"
        )

    @property
    def portal_oidc_post_logout_url(self) -> str:
        return self.portal_oidc_post_logout_redirect_url or (
            self.attestation_url.rstrip("/") + "/portal/login"
        )

    @property
    def portal_oidc_display_name(self) -> str:
        if self.portal_oidc_provider_name:
            return self.portal_oidc_provider_name
        return urlsplit(self.portal_oidc_issuer or "").hostname or "single sign-on"

    @property
    def portal_session_key_path(self) -> Path:
        return self.portal_session_key_file or self.keys_dir / "portal-session.pem"

    @model_validator(mode="after")
    def _check_portal_oidc(self) -> Self:
        if self.portal_oidc_issuer is None:
            return self
        problems = []
        if not self.portal_oidc_client_id:
            problems.append("LINEGATE_PORTAL_OIDC_CLIENT_ID is required with an issuer")
        if "openid" not in self.portal_oidc_scopes.split():
            problems.append("LINEGATE_PORTAL_OIDC_SCOPES must include openid")
        for tenant in self.portal_oidc_allowed_tenants:
            if not TENANT_ID.fullmatch(tenant):
                problems.append(
                    f"LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS: {tenant!r} is not a tenant id "
                    "(letters, digits, '.', '_', '-')"
                )
        for group, roles in self.portal_oidc_role_map.items():
            if not set(roles) <= OIDC_GRANTABLE_ROLES:
                problems.append(f"LINEGATE_PORTAL_OIDC_ROLE_MAP[{group!r}]: a person is no device")
        if self.environment is not Environment.DEVELOPMENT:
            for name, url in (
                ("LINEGATE_PORTAL_OIDC_ISSUER", self.portal_oidc_issuer),
                ("LINEGATE_PORTAL_OIDC_REDIRECT_URL", self.portal_oidc_callback_url),
                (
                    "LINEGATE_PORTAL_OIDC_POST_LOGOUT_REDIRECT_URL",
                    self.portal_oidc_post_logout_url,
                ),
            ):
                if urlsplit(url).scheme != "https":
                    problems.append(f"{name} must be an https URL outside development")
        if problems:
            raise ValueError("portal OIDC settings: " + "; ".join(problems))
        return self
