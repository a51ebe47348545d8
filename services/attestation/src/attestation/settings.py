"""Settings of the attestation service (``LINEGATE_*`` environment variables)."""

import json
import re
from pathlib import Path
from typing import Annotated, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from attestation.schemas import SUPPLIER_ID
from linegate.roles import Role
from linegate.settings import Environment, LinegateSettings

#: Roles a person may get from the OIDC provider's claims (a device is never a person).
OIDC_GRANTABLE_ROLES = frozenset(Role) - {Role.DEVICE}
#: A tenant id substituted into an issuer URL: one plain path segment (Entra's are GUIDs).
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


#: Subject claims a multi-tenant session may name its user by: the directory's own ids,
#: which its administrator cannot hand to another user (an email or username they can).
TENANT_SUBJECT_CLAIMS = ("sub", "oid")


class PortalOidcTenant(BaseModel):
    """One directory of a multi-tenant provider and what its users may be in Linegate:
    exactly one of a supplier's (``{"supplier": "optivision"}``) or the plant's own
    (``{"staff": true}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The supplier whose directory this is: its users can only ever be this supplier's
    #: ``supplier`` users, whatever their claims say.
    supplier: str | None = Field(default=None, pattern=SUPPLIER_ID)
    #: The plant's own (home) directory: the role map and tenant claim apply in full, so
    #: its users may be procurement, auditors, admins (or suppliers by the tenant claim).
    staff: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.supplier is None) == (not self.staff):
            raise ValueError('name either the directory\'s "supplier" or "staff": true')
        return self


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
    #: With :attr:`portal_oidc_tenants` it grants in full only to a ``staff`` directory.
    portal_oidc_role_map: dict[str, list[Role]] = Field(default_factory=dict)
    #: ID-token claim (dotted path allowed) naming the supplier a ``supplier`` user belongs to.
    #: Not read for a supplier's directory of :attr:`portal_oidc_tenants` (the setting names it).
    portal_oidc_tenant_claim: str = "supplier"
    #: ID-token claim the portal session (and the audit log) names the user by. ``sub`` is the
    #: stable one; ``email`` or ``preferred_username`` read better where the provider keeps
    #: them unique and unchanging. With :attr:`portal_oidc_tenants` only ``sub`` or ``oid``,
    #: prefixed with the token's ``tid`` (``<tid>/<sub>``).
    portal_oidc_subject_claim: str = "sub"
    #: Where the provider sends the browser after signing out there (RP-initiated logout's
    #: ``post_logout_redirect_uri``); default ``{attestation_url}/portal/login``. Register
    #: exactly this at the provider.
    portal_oidc_post_logout_redirect_url: str | None = None
    #: The directories (tenants) whose users may sign in, for a multi-tenant provider
    #: (opt-in), each with what its users may be: ``{"<tid>": {"supplier": "optivision"},
    #: "<home tid>": {"staff": true}}`` (JSON in the environment). Entra ID's
    #: ``https://login.microsoftonline.com/common/v2.0`` publishes the issuer
    #: ``https://login.microsoftonline.com/{tenantid}/v2.0``: with this setting an ID token's
    #: ``iss`` must be that template with the token's own ``tid`` in it, and ``tid`` one of
    #: these. Each tenant's administrator controls its users' roles and attributes, so a
    #: supplier's directory only ever yields the ``supplier`` role for the supplier named here
    #: (its users' role claim must map to ``supplier``; any other role it names is not
    #: granted, and the tenant claim is not read). Only a ``staff`` directory (the plant's
    #: own) goes through the role map and tenant claim as a single-tenant provider does. The
    #: session names the user ``<tid>/<sub>`` (or ``<tid>/<oid>``). Empty = single-tenant:
    #: the issuer must match exactly (a templated one is refused).
    portal_oidc_tenants: dict[str, PortalOidcTenant] = Field(default_factory=dict)
    #: Replaced by :attr:`portal_oidc_tenants` (a bare list let any allowed directory's
    #: administrator grant any role and supplier); refused when set, with a pointer.
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

    def _portal_oidc_tenant_problems(self) -> list[str]:
        problems = []
        if self.portal_oidc_allowed_tenants:
            problems.append(
                "LINEGATE_PORTAL_OIDC_ALLOWED_TENANTS is replaced by LINEGATE_PORTAL_OIDC_TENANTS, "
                "which says what each directory's users may be: "
                '{"<tid>": {"supplier": "<supplier id>"}, "<home tid>": {"staff": true}}'
            )
        for tenant in self.portal_oidc_tenants:
            if not TENANT_ID.fullmatch(tenant):
                problems.append(
                    f"LINEGATE_PORTAL_OIDC_TENANTS: {tenant!r} is not a tenant id "
                    "(letters, digits, '.', '_', '-')"
                )
        if self.portal_oidc_tenants and self.portal_oidc_subject_claim not in TENANT_SUBJECT_CLAIMS:
            problems.append(
                "LINEGATE_PORTAL_OIDC_SUBJECT_CLAIM must be sub or oid with "
                f"LINEGATE_PORTAL_OIDC_TENANTS, not {self.portal_oidc_subject_claim!r}: each "
                "directory's administrator sets their users' emails and usernames, so a "
                "multi-tenant session names its user <tid>/<sub> (or <tid>/<oid>)"
            )
        return problems

    @model_validator(mode="after")
    def _check_portal_oidc(self) -> Self:
        if self.portal_oidc_issuer is None:
            return self
        problems = []
        if not self.portal_oidc_client_id:
            problems.append("LINEGATE_PORTAL_OIDC_CLIENT_ID is required with an issuer")
        if "openid" not in self.portal_oidc_scopes.split():
            problems.append("LINEGATE_PORTAL_OIDC_SCOPES must include openid")
        problems.extend(self._portal_oidc_tenant_problems())
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
