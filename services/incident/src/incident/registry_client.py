"""The incident service's reads of the registry API: the AI inventory and the competence register.

Both are read with an auditor-role service token (``LINEGATE_REGISTRY_CLIENT_*``, or a token
minted with the embedded issuer in the embedded stack). The inventory changes rarely and is
cached for ``monitor_tier_refresh_seconds``; competence checks are never cached, so a training
record revoked in the registry stops the next approval at once. Every failure to get an answer
is a :class:`~linegate.errors.ServiceUnavailable` whose detail says why.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from incident.settings import IncidentSettings
from linegate.errors import ServiceUnavailable
from linegate.roles import Role
from linegate.service_auth import ServiceTokens

log = logging.getLogger("incident.registry")
#: After a failed read of the inventory, it is not asked again for this long.
RETRY_SECONDS = 30.0


def systems_listing(
    systems: list[dict[str, Any]], model: str, line: str | None
) -> list[dict[str, Any]]:
    """The active inventory entries that list ``model``, on ``line`` when they name lines."""
    found = []
    for s in systems:
        if s.get("status", "active") != "active" or model not in (s.get("models") or []):
            continue
        lines = s.get("lines") or []
        if lines and line is not None and line not in lines:
            continue
        found.append(s)
    return found


class RegistryClient:
    def __init__(self, settings: IncidentSettings, *, timeout: float = 3.0) -> None:
        self.refresh = settings.monitor_tier_refresh_seconds
        self._http = httpx.AsyncClient(base_url=settings.registry_url, timeout=timeout)
        self._tokens = ServiceTokens(
            settings,
            subject="service:incident",
            role=Role.AUDITOR,
            client_id=settings.registry_client_id,
            client_secret=settings.registry_client_secret,
            setting_prefix="LINEGATE_REGISTRY_CLIENT",
        )
        self._systems: list[dict[str, Any]] | None = None
        self._fetched = 0.0
        self._failure: str | None = None
        self._retry_at = 0.0

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **params: str) -> Any:
        try:
            token = await self._tokens.get(self._http)
            r = await self._http.get(
                path, params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"registry unreachable ({type(e).__name__})") from e
        if r.status_code != 200:
            raise ServiceUnavailable(f"registry answered {r.status_code} to {path}")
        try:
            return r.json()
        except ValueError as e:
            raise ServiceUnavailable(f"registry answered {path} with something not JSON") from e

    async def inventory(self) -> list[dict[str, Any]]:
        """``GET /v1/inventory/systems``, cached; the last good answer stands while the
        registry is away, and a failure is not retried for :data:`RETRY_SECONDS` (an
        unreachable host would otherwise add its connect timeout to every caller)."""
        now = time.monotonic()
        if self._systems is not None and now - self._fetched < self.refresh:
            return self._systems
        if self._failure is not None and now < self._retry_at:
            if self._systems is not None:
                return self._systems
            raise ServiceUnavailable(self._failure)
        try:
            body = await self._systems_list()
        except ServiceUnavailable as e:
            self._failure, self._retry_at = e.detail, now + RETRY_SECONDS
            log.warning("registry inventory: %s; asking again in %.0fs", e.detail, RETRY_SECONDS)
            if self._systems is not None:
                return self._systems
            raise
        self._systems, self._fetched, self._failure = body, now, None
        return body

    async def _systems_list(self) -> list[dict[str, Any]]:
        body = await self._get("/v1/inventory/systems")
        if not isinstance(body, list):
            raise ServiceUnavailable("registry inventory is not a list")
        return body

    async def competence_check(self, person: str, system_id: str, role: str) -> dict[str, Any]:
        """``GET /v1/competence/check``: ``current``, ``record_id``, ``valid_until``,
        ``nist_tier`` and ``without_training`` (``refuse`` or ``flag``)."""
        body = await self._get(
            "/v1/competence/check", person=person, system_id=system_id, role=role
        )
        if not isinstance(body, dict) or "current" not in body:
            raise ServiceUnavailable("registry competence check answered an unexpected body")
        return body
