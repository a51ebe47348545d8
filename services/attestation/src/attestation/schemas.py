"""Request and response bodies of the attestation service."""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linegate.auth import Role


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(min_length=1)
    tenant: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _claims_match_roles(self) -> "ClientCreate":
        if Role.SUPPLIER in self.roles and not self.tenant:
            raise ValueError("a supplier client needs a tenant")
        if Role.DEVICE in self.roles and not self.device_id:
            raise ValueError("a device client needs a device_id")
        return self


class ClientCreated(BaseModel):
    """Returned once: the secret is not stored and cannot be shown again."""

    client_id: str
    client_secret: str
    roles: list[Role]
    tenant: str | None
    device_id: str | None
