"""The reference scenario on real services: the attestation service and the registry served over
HTTP on a real NATS and database, seeded by the same code as ``linegate up`` (Optivision
onboarded and attesting weld-seam-inspector 2.1.0; the system registered; the version pushed,
signed, validated, approved by two trained people, released). The incident service is not
running: its URL points at a closed port, as while it is being built.

Use it by importing the fixture: ``from tests.registry.demo_stack import demo_stack``. Other
configurations (the incident service running, a certificate-signing registry) use
:func:`start_demo_stack`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from attestation.app import create_app as create_attestation
from attestation.settings import AttestationSettings
from linegate.auth import Role, TokenIssuer
from linegate.embedded import free_port
from linegate.settings import LinegateSettings
from linegate.testing.fixtures import bearer
from linegate_cli import demo
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings

MODEL, VERSION = demo.MODEL_NAME, demo.MODEL_VERSION


@dataclass
class DemoStack:
    attestation_url: str
    registry_url: str
    incident_url: str
    data_dir: Path
    issuer: TokenIssuer

    def token(self, role: Role = Role.AUDITOR, sub: str = "ivo.auditor") -> str:
        return self.issuer.issue(sub, [role])[0]

    def auth(self, role: Role = Role.AUDITOR, sub: str = "ivo.auditor") -> dict[str, str]:
        return bearer(self.token(role, sub))

    def registry(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.registry_url, timeout=60, headers=self.auth())

    def attestation(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.attestation_url, timeout=60, headers=self.auth())


async def start_demo_stack(
    settings_factory: Any,
    serve_http: Any,
    *,
    registry: dict[str, Any] | None = None,
    incident: Callable[[dict[str, Any], int], Awaitable[None]] | None = None,
) -> DemoStack:
    """Serve the attestation service and the registry (with ``registry`` settings on top) and
    seed steps 1-3. ``await incident(common_settings, port)`` serves the incident service on
    ``port`` before seeding; without it nothing listens there."""
    ports = {"attestation": free_port(), "registry": free_port(), "incident": free_port()}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    common = {
        "attestation_url": urls["attestation"],
        "registry_url": urls["registry"],
        "incident_url": urls["incident"],
    }
    attestation = settings_factory(AttestationSettings, **common)
    serve_http(create_attestation(attestation), ports["attestation"])
    registry_settings = settings_factory(RegistrySettings, **common, **(registry or {}))
    serve_http(create_registry(registry_settings), ports["registry"])
    if incident is not None:
        await incident(common, ports["incident"])
    settings = LinegateSettings(data_dir=attestation.data_dir, **common)
    issuer = TokenIssuer.embedded(settings)
    # Steps 1-3 only: no gateway runs here (demo.seed would also register a device).
    done = await asyncio.to_thread(
        lambda: demo.seed_supplier(settings, issuer) + demo.seed_registry(settings, issuer)
    )
    assert any("released" in line for line in done), done
    return DemoStack(
        urls["attestation"], urls["registry"], urls["incident"], attestation.data_dir, issuer
    )


@pytest.fixture
async def demo_stack(settings_factory: Any, serve_http: Any) -> DemoStack:
    return await start_demo_stack(settings_factory, serve_http)
