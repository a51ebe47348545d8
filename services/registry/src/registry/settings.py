"""Settings of the registry service (``LINEGATE_*`` environment variables)."""

from typing import ClassVar

from linegate.settings import LinegateSettings


class RegistrySettings(LinegateSettings):
    service_name: ClassVar[str] = "registry"
    default_port: ClassVar[int] = 8102
