"""Validated ID-token claims to Linegate roles and a supplier tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attestation.portal.oidc._errors import IdTokenInvalid, NoPortalRole
from attestation.portal.security import PORTAL_ROLES
from attestation.settings import AttestationSettings
from linegate.roles import Role


@dataclass(frozen=True)
class PortalIdentity:
    """Who signed in, in Linegate's terms."""

    subject: str
    roles: frozenset[Role]
    tenant: str | None


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


def map_identity(claims: dict[str, Any], settings: AttestationSettings) -> PortalIdentity:
    """Linegate roles and tenant from validated ID-token claims; :class:`NoPortalRole` for a
    user the portal has nothing for, :class:`IdTokenInvalid` for unusable claims."""
    subject = claim_at(claims, settings.portal_oidc_subject_claim)
    if not isinstance(subject, str) or not subject.strip():
        raise IdTokenInvalid(
            f"the ID token has no {settings.portal_oidc_subject_claim!r} claim to name you by"
        )
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
    return PortalIdentity(subject=subject.strip(), roles=roles, tenant=tenant)
