"""Settings of the incident service (``LINEGATE_*`` environment variables)."""

from typing import ClassVar

from linegate.settings import LinegateSettings


class IncidentSettings(LinegateSettings):
    service_name: ClassVar[str] = "incident"
    default_port: ClassVar[int] = 8104
