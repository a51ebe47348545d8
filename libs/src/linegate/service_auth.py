"""Bearer tokens for one Linegate service calling another's API.

With an OAuth2 client configured (``client_id`` / ``client_secret`` of an API client at the
attestation service's token endpoint) the client-credentials grant is used; in the embedded stack
(no external issuer) the service mints its own token with the embedded issuer's key from the
shared data directory. Tokens are cached until 30 s before they expire.

Example::

    tokens = ServiceTokens(settings, subject="service:registry", role=Role.AUDITOR)
    headers = {"Authorization": f"Bearer {await tokens.get(http)}"}
"""

from __future__ import annotations

import time

import httpx
from pydantic import SecretStr

from linegate.auth import TokenIssuer
from linegate.errors import ServiceUnavailable
from linegate.roles import Role
from linegate.settings import LinegateSettings


class ServiceTokens:
    def __init__(
        self,
        settings: LinegateSettings,
        *,
        subject: str,
        role: Role,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
        setting_prefix: str = "LINEGATE_<SERVICE>_CLIENT",
    ) -> None:
        self.settings = settings
        self.subject = subject
        self.role = role
        self.client_id = client_id
        self.client_secret = client_secret
        self.setting_prefix = setting_prefix
        self._token: str | None = None
        self._expiry = 0.0

    async def get(self, http: httpx.AsyncClient) -> str:
        """A valid bearer token; fetched or minted only when the cached one is about to expire."""
        if self._token is not None and time.monotonic() < self._expiry - 30:
            return self._token
        if self.client_id and self.client_secret:
            token, ttl = await self._client_credentials(http, self.client_id, self.client_secret)
        elif not self.settings.external_issuer:
            token, ttl = TokenIssuer.embedded(self.settings).issue(self.subject, [self.role])
        else:
            raise ServiceUnavailable(
                f"no credentials to call another service: set {self.setting_prefix}_ID and "
                f"{self.setting_prefix}_SECRET (an OAuth2 client with the {self.role.value} role)"
            )
        self._token, self._expiry = token, time.monotonic() + ttl
        return token

    async def _client_credentials(
        self, http: httpx.AsyncClient, client_id: str, secret: SecretStr
    ) -> tuple[str, int]:
        try:
            response = await http.post(
                f"{self.settings.attestation_url.rstrip('/')}/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret.get_secret_value(),
                    "scope": self.role.value,
                },
            )
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"the token endpoint is unreachable: {e}") from e
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"the token endpoint refused client {client_id} ({response.status_code}); "
                f"check {self.setting_prefix}_ID and _SECRET"
            )
        body = response.json()
        return str(body["access_token"]), int(body.get("expires_in", 300))
