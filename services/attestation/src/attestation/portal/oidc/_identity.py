"""Validated ID-token claims to Linegate roles and a supplier tenant.

With one directory (a single-tenant provider) its administrator is the plant's, so the role
map and the tenant claim are taken as they come. With several
(``LINEGATE_PORTAL_OIDC_TENANTS``) every directory's administrator sets their own users'
roles and attributes, so what a user may be depends first on whose directory signed them
in: a supplier's directory yields that supplier's ``supplier`` role at most, and only the
plant's own (``staff``) directories are read as a single-tenant provider is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from attestation.portal.oidc._errors import IdTokenInvalid, NoPortalRole
from attestation.portal.security import PORTAL_ROLES
from attestation.settings import AttestationSettings, PortalOidcTenant
from linegate.roles import Role


@dataclass(frozen=True)
class PortalIdentity:
    """Who signed in, in Linegate's terms."""

    subject: str
    roles: frozenset[Role]
    tenant: str | None
    #: The directory (``tid``) of a multi-tenant provider the user signed in from.
    directory: str | None = None
    #: Roles the user's claims asked for that their directory may not grant (logged).
    withheld: frozenset[Role] = frozenset()


def claim_at(claims: dict[str, Any], path: str) -> object:
    """``claims["realm_access"]["roles"]`` for ``realm_access.roles``; None if absent. A claim
    whose own name has dots (Entra, Okta URLs) is found by its whole name first."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _subject(claims: dict[str, Any], settings: AttestationSettings) -> str:
    subject = claim_at(claims, settings.portal_oidc_subject_claim)
    if not isinstance(subject, str) or not subject.strip():
        raise IdTokenInvalid(
            f"the ID token has no {settings.portal_oidc_subject_claim!r} claim to name you by"
        )
    return subject.strip()


def _mapped_roles(claims: dict[str, Any], settings: AttestationSettings) -> frozenset[Role]:
    raw = claim_at(claims, settings.portal_oidc_roles_claim)
    if isinstance(raw, str):
        values = raw.split()
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        values = list(raw)
    elif raw is None:
        values = []
    else:
        raise IdTokenInvalid(
            f"the ID token's {settings.portal_oidc_roles_claim!r} claim is not a list of names"
        )
    roles = frozenset(r for v in values for r in settings.portal_oidc_role_map.get(v, ()))
    if not roles:
        raise NoPortalRole(
            f"your account at {settings.portal_oidc_display_name} holds no Linegate role "
            f"(claim {settings.portal_oidc_roles_claim!r}); ask procurement for access"
        )
    return roles


def _claimed_identity(
    claims: dict[str, Any], settings: AttestationSettings, subject: str
) -> PortalIdentity:
    """Roles through the role map and the supplier from the tenant claim: for a directory
    whose administrator is the plant's."""
    roles = _mapped_roles(claims, settings)
    if Role.ADMIN not in roles and not roles & set(PORTAL_ROLES):
        raise NoPortalRole("your Linegate roles include none the portal serves")
    tenant: str | None = None
    if Role.SUPPLIER in roles:
        value = claim_at(claims, settings.portal_oidc_tenant_claim)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            raise NoPortalRole(
                "a supplier user needs exactly one supplier in the ID token's "
                f"{settings.portal_oidc_tenant_claim!r} claim; ask your administrator"
            )
        tenant = value.strip()
    return PortalIdentity(subject=subject, roles=roles, tenant=tenant)


def _supplier_directory_identity(
    claims: dict[str, Any], settings: AttestationSettings, subject: str, supplier: str
) -> PortalIdentity:
    """A supplier's directory: its administrator may withhold access (no role mapped to
    ``supplier``) but never grant more than this supplier's ``supplier`` role."""
    roles = _mapped_roles(claims, settings)
    if Role.SUPPLIER not in roles:
        raise NoPortalRole(
            f"your directory is supplier {supplier}'s, which can grant the supplier role only, "
            f"and your account at {settings.portal_oidc_display_name} does not hold it "
            f"(claim {settings.portal_oidc_roles_claim!r}); ask your administrator"
        )
    return PortalIdentity(
        subject=subject,
        roles=frozenset({Role.SUPPLIER}),
        tenant=supplier,
        withheld=roles - {Role.SUPPLIER},
    )


def map_identity(claims: dict[str, Any], settings: AttestationSettings) -> PortalIdentity:
    """Linegate roles and tenant from validated ID-token claims; :class:`NoPortalRole` for a
    user the portal has nothing for, :class:`IdTokenInvalid` for unusable claims."""
    if not settings.portal_oidc_tenants:
        return _claimed_identity(claims, settings, _subject(claims, settings))
    tid = claims.get("tid")
    directory: PortalOidcTenant | None = (
        settings.portal_oidc_tenants.get(tid) if isinstance(tid, str) else None
    )
    if directory is None or not isinstance(tid, str):
        # The provider refuses these before; this keeps the mapping safe on its own.
        raise IdTokenInvalid("the ID token's tenant is not among LINEGATE_PORTAL_OIDC_TENANTS")
    # The directory's own id for the user, under the directory's id: unique across them.
    subject = f"{tid}/{_subject(claims, settings)}"
    if directory.supplier is not None:
        identity = _supplier_directory_identity(claims, settings, subject, directory.supplier)
    else:
        identity = _claimed_identity(claims, settings, subject)
    return replace(identity, directory=tid)
