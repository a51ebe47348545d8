"""Settings of the edge-gateway service (``LINEGATE_*`` environment variables)."""

from typing import ClassVar

from linegate.settings import LinegateSettings


class GatewaySettings(LinegateSettings):
    service_name: ClassVar[str] = "edge_gateway"
    default_port: ClassVar[int] = 8103
