"""Errors of the edge-gateway service."""

from linegate.errors import Conflict, NotFound, Unprocessable


class DeviceNotFound(NotFound):
    title = "Device not found"


class ReleaseNotFound(NotFound):
    title = "Release not found"


class DeviceExists(Conflict):
    title = "Device already registered"


class ReleaseRevoked(Conflict):
    title = "Release revoked"


class DistributionRefused(Unprocessable):
    title = "Release cannot be distributed"


class VersionFrozen(Conflict):
    """An incident froze the version as evidence; ``incident_id`` names it."""

    title = "Version frozen by an incident"
