"""Fixtures of the incident service's tests."""

from tests.incident.telemetry_support import line_factory  # noqa: F401
