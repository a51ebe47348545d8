"""What the technical file and the evidence bundle read from other services, over HTTP only.

- the attestation service (``LINEGATE_ATTESTATION_URL``): attestation records and their raw
  bytes, suppliers' public keys, its audit log proofs and audit public key;
- the incident service (``LINEGATE_INCIDENT_URL``): incidents and monitors of a model, its
  post-market log export (streamed, capped), its audit log proofs. It may be down or not have
  an endpoint yet: every read returns either the data or a :class:`Missing` with the reason,
  which becomes a gap, never an error or boilerplate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from linegate.auth import Role
from linegate.errors import ServiceUnavailable
from linegate.service_auth import ServiceTokens
from registry.settings import RegistrySettings


@dataclass(frozen=True)
class Missing:
    """Why a source could not give what was asked."""

    reason: str


@dataclass(frozen=True)
class Capped:
    """A streamed answer read up to a size cap: whole lines only when ``truncated``."""

    content: bytes
    truncated: bool


class Sources:
    def __init__(
        self, settings: RegistrySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(timeout=15.0, transport=transport)
        self._tokens = ServiceTokens(
            settings,
            subject="service:registry",
            role=Role.AUDITOR,
            client_id=settings.attestation_client_id,
            client_secret=settings.attestation_client_secret,
            setting_prefix="LINEGATE_ATTESTATION_CLIENT",
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _url(self, service: str) -> str:
        urls = {
            "attestation": self.settings.attestation_url,
            "incident": self.settings.incident_url,
            "edge-gateway": self.settings.gateway_url,
        }
        return urls[service].rstrip("/")

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> httpx.Response | Missing:
        url = self._url(service) + path
        try:
            headers = (
                {"Authorization": f"Bearer {await self._tokens.get(self._http)}"} if auth else {}
            )
            response = await self._http.request(method, url, params=params, headers=headers)
        except httpx.HTTPError as e:
            return Missing(f"the {service} service at {self._url(service)} did not answer ({e!r})")
        except ServiceUnavailable as e:
            return Missing(f"no credentials to read the {service} service: {e.detail}")
        if response.status_code == 404 and _route_missing(response):
            return Missing(f"the {service} service has no {method} {path} endpoint (404)")
        if response.status_code >= 400:
            return Missing(
                f"the {service} service answered {response.status_code} to {method} {path}: "
                f"{response.text[:200]}"
            )
        return response

    async def json(
        self, service: str, path: str, params: dict[str, Any] | None = None
    ) -> Any | Missing:
        response = await self.request(service, "GET", path, params=params)
        if isinstance(response, Missing):
            return response
        try:
            return response.json()
        except ValueError:
            return Missing(f"the {service} service answered {path} with something not JSON")

    async def stream_capped(
        self, service: str, path: str, params: dict[str, Any], max_bytes: int
    ) -> Capped | Missing:
        """GET ``path`` streamed, keeping at most ``max_bytes``: when the answer is longer, what is
        kept ends at the last newline within the cap (the rest is never read into memory)."""
        url = self._url(service) + path
        try:
            headers = {"Authorization": f"Bearer {await self._tokens.get(self._http)}"}
            async with self._http.stream("GET", url, params=params, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    if response.status_code == 404 and _route_missing(response):
                        return Missing(f"the {service} service has no GET {path} endpoint (404)")
                    return Missing(
                        f"the {service} service answered {response.status_code} to GET {path}: "
                        f"{response.text[:200]}"
                    )
                kept = bytearray()
                async for chunk in response.aiter_bytes():
                    if len(kept) + len(chunk) > max_bytes:
                        kept += chunk[: max_bytes - len(kept)]
                        cut = kept.rfind(b"\n") + 1
                        return Capped(bytes(kept[:cut]), truncated=True)
                    kept += chunk
                return Capped(bytes(kept), truncated=False)
        except httpx.HTTPError as e:
            return Missing(f"the {service} service at {self._url(service)} did not answer ({e!r})")
        except ServiceUnavailable as e:
            return Missing(f"no credentials to read the {service} service: {e.detail}")


def _route_missing(response: httpx.Response) -> bool:
    # FastAPI's unknown route is a bare "Not Found"; a domain 404 names the missing record.
    try:
        body = response.json()
    except ValueError:
        return True
    return isinstance(body, dict) and body.get("detail") in (None, "Not Found")
