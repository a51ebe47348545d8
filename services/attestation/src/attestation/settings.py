"""Settings of the attestation service (``LINEGATE_*`` environment variables)."""

from typing import ClassVar

from linegate.settings import LinegateSettings


class AttestationSettings(LinegateSettings):
    service_name: ClassVar[str] = "attestation"
    default_port: ClassVar[int] = 8101
