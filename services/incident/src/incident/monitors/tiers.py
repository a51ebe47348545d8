"""Risk tier and monitoring cadence of a model on a line, from the registry's AI inventory.

The registry is asked over HTTP (``GET /v1/inventory/systems``, auditor role); the inventory
entry that lists the model (and the line, when it names lines) gives the NIST tier and the
cadence (the tier's, or an override recorded with its reason). When the registry cannot be
reached, or no entry lists the model, the configured default tier applies and the source says
why, so a monitor never runs on a silently guessed tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from incident.monitors.schemas import CADENCE_BY_TIER, CADENCE_PERIOD
from incident.registry_client import RegistryClient, systems_listing
from incident.settings import IncidentSettings
from linegate.errors import ServiceUnavailable


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
    """Reads tiers from the registry's inventory (cached by :class:`RegistryClient`)."""

    def __init__(self, settings: IncidentSettings, client: RegistryClient | None = None) -> None:
        self.default_tier = settings.monitor_default_tier
        self._own_client = client is None
        self.client = client or RegistryClient(settings)

    async def close(self) -> None:
        if self._own_client:
            await self.client.close()

    def _default(self, why: str) -> TierInfo:
        tier = self.default_tier
        return TierInfo(
            tier, CADENCE_BY_TIER[tier], f"default tier {tier}: {why}", from_registry=False
        )

    async def tier(self, model: str, line: str) -> TierInfo:
        try:
            systems = await self.client.inventory()
        except ServiceUnavailable as e:
            return self._default(e.detail)
        best: TierInfo | None = None
        for s in systems_listing(systems, model, line):
            tier = s.get("nist_tier")
            if tier not in CADENCE_BY_TIER:
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
