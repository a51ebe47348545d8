"""Request and response bodies of the attestation service."""

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from linegate.auth import Role

SUPPLIER_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------- clients


class ClientCreate(Strict):
    roles: list[Role] = Field(min_length=1)
    tenant: str | None = Field(default=None, pattern=SUPPLIER_ID)
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _claims_match_roles(self) -> Self:
        if Role.SUPPLIER in self.roles and not self.tenant:
            raise ValueError("a supplier client needs a tenant")
        if Role.DEVICE in self.roles and not self.device_id:
            raise ValueError("a device client needs a device_id")
        return self


class SupplierClientCreate(Strict):
    description: str = Field(default="", max_length=500)


class ClientCreated(BaseModel):
    """Returned once: the secret is not stored and cannot be shown again."""

    client_id: str
    client_secret: str
    roles: list[Role]
    tenant: str | None
    device_id: str | None


# -------------------------------------------------------------------------------- suppliers


class Contact(Strict):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    role: str = Field(default="", max_length=100)


class SupplierCreate(Strict):
    id: str = Field(pattern=SUPPLIER_ID)
    name: str = Field(min_length=1, max_length=200)
    contacts: list[Contact] = Field(default_factory=list, max_length=50)


class SupplierRead(BaseModel):
    id: str
    name: str
    contacts: list[dict[str, Any]]
    created_at: datetime


class KeyCreate(Strict):
    public_key_pem: str = Field(min_length=1, max_length=20_000)
    not_before: datetime | None = None
    not_after: datetime | None = None


class KeyRead(BaseModel):
    key_id: str
    supplier_id: str
    algorithm: str
    not_before: datetime
    not_after: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None
    public_key_pem: str


class KeyRevoke(Strict):
    reason: str = Field(min_length=1, max_length=1000)


class IdentityCreate(Strict):
    issuer: str = Field(min_length=1, max_length=500)
    subject: str | None = Field(default=None, min_length=1, max_length=1000)
    subject_pattern: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_subject_form(self) -> Self:
        if (self.subject is None) == (self.subject_pattern is None):
            raise ValueError("give exactly one of subject or subject_pattern")
        if self.subject_pattern is not None:
            import re

            try:
                re.compile(self.subject_pattern)
            except re.error as e:
                raise ValueError(f"subject_pattern is not a valid regular expression: {e}") from e
        return self


class IdentityRead(BaseModel):
    id: str
    supplier_id: str
    issuer: str
    subject: str | None
    subject_pattern: str | None
    revoked_at: datetime | None


# ----------------------------------------------------------------------------- attestations


class SubjectRead(BaseModel):
    name: str
    digest: dict[str, str]


class AttestationRead(BaseModel):
    id: str
    status: Literal["verified", "unsigned", "rejected"]
    verified: bool
    supplier: str
    envelope: str
    content_type: str
    predicate_type: str | None
    predicate_kind: str | None
    recognised: bool
    signer: str | None
    subjects: list[SubjectRead]
    summary: dict[str, Any]
    reasons: list[str]
    raw_digest: str
    raw_size: int
    issued_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class AttestationPage(BaseModel):
    items: list[AttestationRead]
    next_cursor: str | None
