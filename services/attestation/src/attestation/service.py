"""Attestation domain logic (no FastAPI here)."""

import secrets
from datetime import UTC, datetime

from attestation.models import OAuthClient
from attestation.repository import ClientRepository
from attestation.schemas import ClientCreate, ClientCreated
from linegate.audit import AuditLog
from linegate.auth import Principal, hash_client_secret, new_client_secret


async def register_client(
    body: ClientCreate, *, actor: Principal, clients: ClientRepository, audit: AuditLog
) -> ClientCreated:
    """Create an API client; the secret is returned once and only its hash is kept."""
    prefix = body.tenant or body.device_id or body.roles[0].value.replace(":", "-")
    client_id = f"{prefix}-{secrets.token_hex(6)}"
    secret = new_client_secret()
    await clients.add(
        OAuthClient(
            client_id=client_id,
            secret_hash=hash_client_secret(secret),
            roles=" ".join(r.value for r in body.roles),
            tenant=body.tenant,
            device_id=body.device_id,
            description=body.description,
            created_at=datetime.now(UTC),
            created_by=actor.actor,
        )
    )
    await audit.append(
        clients.session,
        actor=actor.actor,
        action="client.create",
        subject=client_id,
        payload=body.model_dump(mode="json"),
    )
    return ClientCreated(
        client_id=client_id,
        client_secret=secret,
        roles=body.roles,
        tenant=body.tenant,
        device_id=body.device_id,
    )
