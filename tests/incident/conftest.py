"""Fixtures of the incident service's tests."""

from tests.incident.incidents_support import desk, maintenance_keys  # noqa: F401
from tests.incident.telemetry_support import line_factory  # noqa: F401
