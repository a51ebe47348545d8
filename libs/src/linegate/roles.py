"""The roles (OAuth2 scopes) of Linegate tokens.

Kept apart from :mod:`linegate.auth` so that light processes (the CLI) can name roles without
importing FastAPI.
"""

from enum import StrEnum


class Role(StrEnum):
    SUPPLIER = "supplier"
    PROCUREMENT = "procurement"
    REGISTRY_APPROVE = "registry:approve"
    DEVICE = "device"
    RESPONDER = "responder"
    #: Line staff: report a wrong output of a model (``POST /v1/feedback``), nothing else.
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


__all__ = ["Role"]
