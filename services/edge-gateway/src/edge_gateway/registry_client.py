"""Reads released versions from the registry's public API (never its tables)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from edge_gateway.errors import DistributionRefused
from edge_gateway.settings import GatewaySettings
from linegate.errors import ServiceUnavailable
from linegate.roles import Role
from linegate.service_auth import ServiceTokens

log = logging.getLogger("edge_gateway.registry_client")


def segment(value: str) -> str:
    """``value`` as one path segment of a registry URL, whatever it holds.

    Model names and versions arrive from the gateway's own API paths: a ``?``, ``#``, ``/``,
    control character or dot segment spliced in raw would make httpx refuse the URL (a 500) or
    ask the registry for another path than meant, with the gateway's token. Percent-encoded,
    the registry sees exactly the name given and answers 404 for one it does not have.
    """
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


class RegistryClient:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(base_url=settings.registry_url, timeout=60.0)
        self._tokens = ServiceTokens(
            settings,
            subject="service:edge-gateway",
            role=Role.AUDITOR,
            client_id=settings.registry_client_id,
            client_secret=settings.registry_client_secret,
            setting_prefix="LINEGATE_REGISTRY_CLIENT",
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._tokens.get(self._http)}"}

    async def _get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = await self._http.get(path, params=params, headers=await self._headers())
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"the registry is unreachable: {e}") from e
        if response.status_code == 404:
            raise DistributionRefused(f"the registry has no {path}")
        if response.status_code != 200:
            raise ServiceUnavailable(f"the registry answered {response.status_code} to {path}")
        return response.json()

    async def version(self, model: str, version: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._get_json(
            f"/v1/models/{segment(model)}/versions/{segment(version)}"
        )
        return body

    async def model_line(self, model: str) -> dict[str, Any]:
        """The model line (``system_id``: the inventory system it is deployed for)."""
        body: dict[str, Any] = await self._get_json(f"/v1/models/{segment(model)}")
        return body

    async def system(self, system_id: str) -> dict[str, Any]:
        """An inventory system (``nist_tier``)."""
        body: dict[str, Any] = await self._get_json(f"/v1/inventory/systems/{segment(system_id)}")
        return body

    async def competence(self, system_id: str, role: str) -> list[dict[str, Any]]:
        """Every competence record of ``role`` on ``system_id`` (revoked and expired too)."""
        body: list[dict[str, Any]] = await self._get_json(
            "/v1/competence", {"system_id": system_id, "role": role}
        )
        return body

    async def competence_check(self, person: str, system_id: str, role: str) -> dict[str, Any]:
        """``GET /v1/competence/check``: ``current``, ``record_id``, ``nist_tier``,
        ``without_training`` (never cached: a revocation counts at the next decision)."""
        body: dict[str, Any] = await self._get_json(
            "/v1/competence/check", {"person": person, "system_id": system_id, "role": role}
        )
        return body

    async def signing_keys(self) -> list[tuple[str, str | None]]:
        """What release signatures verify against, as ``(PEM, identity)``: each published public
        key (``identity`` None: a key is its own identity) and, where the registry signs with a
        certificate, the CA chain it pins with the signer identity it publishes, so another
        certificate issued by the same CA does not pass for the registry's."""
        body = await self._get_json("/v1/signing-keys")
        trust: list[tuple[str, str | None]] = []
        for k in body["keys"]:
            trust.append((str(k["public_key_pem"]), None))
            if k.get("certificate_chain_pem"):
                identity = k.get("identity")
                if not identity:
                    # Without the signer's identity the chain would let any certificate of
                    # that CA pass for the registry's: not trusted (fails closed).
                    log.warning(
                        "the registry publishes a certificate chain without the signer "
                        "identity: certificate-signed releases will not verify"
                    )
                    continue
                trust.append((str(k["certificate_chain_pem"]), str(identity)))
        return trust

    async def download(self, path: str, dest: Path, *, sha256: str | None = None) -> str:
        """Stream ``path`` to ``dest``; returns its sha256 and refuses a different one."""
        digest = hashlib.sha256()
        try:
            async with self._http.stream("GET", path, headers=await self._headers()) as response:
                if response.status_code != 200:
                    raise DistributionRefused(
                        f"the registry answered {response.status_code} to {path}"
                    )
                with dest.open("wb") as f:
                    async for chunk in response.aiter_bytes(1024 * 1024):
                        digest.update(chunk)
                        f.write(chunk)
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"the registry is unreachable: {e}") from e
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise DistributionRefused(f"{path} has sha256 {actual}, the registry recorded {sha256}")
        return actual
