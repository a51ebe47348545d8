"""Tables owned by the attestation service."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class OAuthClient(SQLModel, table=True):
    """An API client of the embedded OAuth2 issuer (client-credentials grant)."""

    __tablename__ = "oauth_client"

    client_id: str = Field(primary_key=True)
    secret_hash: str
    #: Space-separated roles (OAuth2 scopes) the client may request.
    roles: str
    tenant: str | None = Field(default=None, index=True)
    device_id: str | None = None
    description: str = ""
    active: bool = True
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    created_by: str
