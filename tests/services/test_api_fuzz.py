"""Every operation of every service, fed requests generated from its own OpenAPI document.

Schemathesis builds requests for each operation, both valid ones (``positive``: what the schema
allows) and invalid ones (``negative``: wrong types, missing fields, out-of-range numbers,
strings in paths that need encoding), and they are sent over real HTTP to the service running
with its real lifespan (NATS, database). Whatever the request, the answer must not be a server
error: 500 is a bug (it is what an unhandled exception becomes). The one 5xx allowed is 503,
which services answer when a service they depend on cannot be reached: here no other service
runs, so e.g. the incident service cannot ask the registry. Every 4xx must be problem+json.

Generation is derandomised (the same requests every run, so CI does not flake on a new find)
and bounded per operation; the exploring is done ad hoc with ``st run`` against ``make run``,
and what it finds is fixed and kept here by the seed-independent examples of each fix's test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from attestation.app import create_app as create_attestation
from attestation.settings import AttestationSettings
from edge_gateway.app import create_app as create_gateway
from edge_gateway.settings import GatewaySettings
from incident.app import create_app as create_incident
from incident.settings import IncidentSettings
from linegate.auth import Role
from linegate.testing.fixtures import bearer
from registry.app import create_app as create_registry
from registry.settings import RegistrySettings

SERVICES: dict[str, tuple[Callable[[Any], Any], type[Any]]] = {
    "attestation": (create_attestation, AttestationSettings),
    "registry": (create_registry, RegistrySettings),
    "edge-gateway": (create_gateway, GatewaySettings),
    "incident": (create_incident, IncidentSettings),
}
#: Requests per operation and generation mode.
EXAMPLES = 6


def _fuzz(url: str, headers: dict[str, str], operation: Any, mode: Any, found: list[str]) -> None:
    where = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        try:
            r = case.call(base_url=url, headers=headers, timeout=60)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL):
            return  # requests refused to send it: nothing reached the service
        content_type = next(iter(r.headers.get("content-type") or [""]))  # a list of values
        if r.status_code >= 500 and r.status_code != 503:
            found.append(f"{where}: {r.status_code} for {case.as_curl_command()}")
        elif r.status_code >= 400 and content_type != "application/problem+json":
            found.append(f"{where}: {r.status_code} as {content_type!r}")

    # Unsatisfiable: nothing of this mode to generate (e.g. no parameters to make invalid).
    with contextlib.suppress(Unsatisfiable):
        run()


def _problems(url: str, headers: dict[str, str]) -> list[str]:
    found: list[str] = []
    for result in schemathesis.openapi.from_url(url + "/openapi.json").get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(url, headers, result.ok(), mode, found)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_no_generated_request_gets_a_server_error(
    service: str, settings_factory: Any, serve_http: Any, mint_token: Any
) -> None:
    create, settings_class = SERVICES[service]
    url = serve_http(create(settings_factory(settings_class)))
    headers = bearer(mint_token(Role.ADMIN, sub="fuzz-admin"))
    problems = _problems(url, headers)
    assert not problems, "\n".join(sorted(set(problems)))
