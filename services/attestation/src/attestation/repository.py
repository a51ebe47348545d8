"""All SQL of the attestation service."""

from sqlmodel.ext.asyncio.session import AsyncSession

from attestation.models import OAuthClient
from linegate.auth import ClientRecord, parse_roles


class ClientRepository:
    """OAuth2 clients; also the token endpoint's :class:`linegate.auth.ClientStore`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self.session.get(OAuthClient, client_id)

    async def add(self, client: OAuthClient) -> OAuthClient:
        self.session.add(client)
        await self.session.flush()
        return client

    async def get_client(self, client_id: str) -> ClientRecord | None:
        row = await self.get(client_id)
        if row is None:
            return None
        return ClientRecord(
            client_id=row.client_id,
            secret_hash=row.secret_hash,
            roles=parse_roles(row.roles),
            tenant=row.tenant,
            device_id=row.device_id,
            active=row.active,
        )
