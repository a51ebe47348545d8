"""Risk tier and monitoring cadence of a model on a line, from the registry's AI inventory.

The registry is asked over HTTP (``GET /v1/inventory/systems``, auditor role); the inventory
entry that lists the model (and the line, when it names lines) gives the NIST tier and the
cadence (the tier's, or an override recorded with its reason). When the registry cannot be
reached, or no entry lists the model, the configured default tier applies and the source says
why, so a monitor never runs on a silently guessed tier.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from incident.monitors.schemas import CADENCE_BY_TIER, CADENCE_PERIOD
from incident.settings import IncidentSettings
from linegate.errors import ServiceUnavailable
from linegate.roles import Role
from linegate.service_auth import ServiceTokens

log = logging.getLogger("incident.monitors.tiers")
#: After a failed read of the inventory, the default tier is used this long before asking again.
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class TierInfo:
    tier: int
    cadence: str
    source: str
    #: False when this is the configured default rather than the registry's answer.
    from_registry: bool


class TierSource(Protocol):
    async def tier(self, model: str, line: str) -> TierInfo: ...


class FixedTiers:
    """Every model at one tier (the configured default; also what tests use)."""

    def __init__(self, tier: int, source: str = "default: configured") -> None:
        self._info = TierInfo(tier, CADENCE_BY_TIER[tier], source, from_registry=False)

    async def tier(self, model: str, line: str) -> TierInfo:
        return self._info

    async def close(self) -> None:
        return None


class RegistryTiers:
    """Reads tiers from the registry's inventory, caching the list for ``refresh`` seconds."""

    def __init__(self, settings: IncidentSettings, *, timeout: float = 3.0) -> None:
        self.settings = settings
        self.default_tier = settings.monitor_default_tier
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

    async def _inventory(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._systems is not None and now - self._fetched < self.refresh:
            return self._systems
        if self._failure is not None and now < self._retry_at:
            # Not asked again at every evaluation: an unreachable host would add its
            # connect timeout to each real-time verdict.
            raise ServiceUnavailable(self._failure)
        try:
            body = await self._fetch()
        except ServiceUnavailable as e:
            self._failure, self._retry_at = e.detail, now + RETRY_SECONDS
            log.warning("registry inventory: %s; asking again in %.0fs", e.detail, RETRY_SECONDS)
            if self._systems is not None:
                return self._systems  # the last answer stands until the registry is back
            raise
        self._systems, self._fetched, self._failure = body, now, None
        return body

    async def _fetch(self) -> list[dict[str, Any]]:
        try:
            token = await self._tokens.get(self._http)
            r = await self._http.get(
                "/v1/inventory/systems", headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"registry unreachable ({type(e).__name__})") from e
        if r.status_code != 200:
            raise ServiceUnavailable(f"registry answered {r.status_code}")
        body = r.json()
        if not isinstance(body, list):
            raise ServiceUnavailable("registry inventory is not a list")
        return body

    def _default(self, why: str) -> TierInfo:
        tier = self.default_tier
        return TierInfo(
            tier, CADENCE_BY_TIER[tier], f"default tier {tier}: {why}", from_registry=False
        )

    async def tier(self, model: str, line: str) -> TierInfo:
        try:
            systems = await self._inventory()
        except ServiceUnavailable as e:
            return self._default(e.detail)
        best: TierInfo | None = None
        for s in systems:
            if s.get("status", "active") != "active" or model not in (s.get("models") or []):
                continue
            lines = s.get("lines") or []
            tier = s.get("nist_tier")
            if (lines and line not in lines) or tier not in CADENCE_BY_TIER:
                continue
            cadence = s.get("monitoring_cadence") or CADENCE_BY_TIER[tier]
            if cadence not in CADENCE_PERIOD:
                cadence = CADENCE_BY_TIER[tier]
            how = "cadence override" if s.get("monitoring_cadence_source") == "override" else "tier"
            info = TierInfo(
                int(tier),
                str(cadence),
                f"registry: system {s.get('id')} ({how})",
                from_registry=True,
            )
            # Several entries may list the model: the strictest wins.
            if best is None or CADENCE_PERIOD[info.cadence] < CADENCE_PERIOD[best.cadence]:
                best = info
        return best or self._default("the registry's inventory lists no active system for it")
