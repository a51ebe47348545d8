"""The sign-in failures, each with the HTTP status the portal answers with."""

from __future__ import annotations

from linegate.errors import LinegateError, NotFound


class OidcError(LinegateError):
    """A sign-in through the OIDC provider that did not complete."""


class SignInFlowInvalid(OidcError):
    status = 400
    title = "Sign-in could not be completed"


class ProviderRefused(OidcError):
    status = 401
    title = "Sign-in refused by the identity provider"


class IdTokenInvalid(OidcError):
    status = 401
    title = "Invalid ID token"


class NoPortalRole(OidcError):
    status = 403
    title = "No portal role"


class ProviderUnavailable(OidcError):
    status = 502
    title = "Identity provider unavailable"


class OidcNotConfigured(NotFound):
    title = "Not found"
