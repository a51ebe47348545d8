"""The ID token kept for RP-initiated logout: encrypted, bound to its portal session."""

from __future__ import annotations

import hashlib
import hmac

from attestation.portal.security import PortalSessionSigner

#: The ID token kept for RP-initiated logout: only the sign-out route receives it.
LOGOUT_HINT_COOKIE = "linegate_portal_logout"
LOGOUT_HINT_COOKIE_PATH = "/portal/logout"
LOGOUT_HINT_AUDIENCE = "linegate-portal-logout-hint"
#: Browsers keep a cookie's name and value up to 4096 bytes; the rest is for the attributes.
MAX_COOKIE_BYTES = 4000


def _session_binding(session_token: str) -> str:
    return hashlib.sha256(b"linegate-portal-logout:" + session_token.encode()).hexdigest()


def seal_logout_hint(
    signer: PortalSessionSigner, id_token: str, *, session_token: str, ttl_seconds: int
) -> str | None:
    """The logout-hint cookie's value: the ID token encrypted and bound to the portal session
    it came with; None when it would not fit in a cookie (sign-out then goes without it)."""
    value = signer.encrypt(
        LOGOUT_HINT_AUDIENCE,
        {"id_token": id_token, "session": _session_binding(session_token)},
        ttl_seconds=ttl_seconds,
    )
    return value if len(LOGOUT_HINT_COOKIE) + 1 + len(value) <= MAX_COOKIE_BYTES else None


def open_logout_hint(
    signer: PortalSessionSigner, cookie: str | None, *, session_token: str
) -> str | None:
    """The ID token the cookie keeps for this session; None if absent, forged, expired or
    another session's (a hint must name the session being ended)."""
    if not cookie:
        return None
    try:
        values = signer.decrypt(LOGOUT_HINT_AUDIENCE, cookie)
    except ValueError:
        return None
    bound, id_token = values.get("session"), values.get("id_token")
    if not isinstance(bound, str) or not isinstance(id_token, str) or not id_token:
        return None
    if not hmac.compare_digest(bound.encode(), _session_binding(session_token).encode()):
        return None
    return id_token
