"""Attestation domain logic (no FastAPI here): onboarding and trust material; ingest is in
:mod:`attestation.ingest`.

Every change to what a supplier is trusted with (the supplier itself, its keys, its Sigstore
identities, its SLA's maximum age) calls :meth:`TrustRepository.changed` before its audit
entry, in the same transaction, so ingest's trust cache sees it at once in every process."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from attestation.errors import KeyAlreadyRegistered, SupplierExists, SupplierNotFound
from attestation.models import OAuthClient, Supplier, SupplierIdentity, SupplierKey
from attestation.repository import ClientRepository, SupplierRepository, TrustRepository
from attestation.schemas import (
    ClientCreate,
    ClientCreated,
    IdentityCreate,
    KeyCreate,
    SupplierCreate,
)
from linegate.audit import AuditLog
from linegate.auth import Principal, Role, hash_client_secret, new_client_secret
from linegate.errors import Unprocessable
from linegate.signing import SignatureError, key_id, load_public_key


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------- clients


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
            created_at=_now(),
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


# ----------------------------------------------------------------------------- suppliers


async def create_supplier(
    body: SupplierCreate, *, actor: Principal, suppliers: SupplierRepository, audit: AuditLog
) -> Supplier:
    if await suppliers.get(body.id) is not None:
        raise SupplierExists(f"supplier {body.id!r} already exists")
    supplier = Supplier(
        id=body.id,
        name=body.name,
        contacts=[c.model_dump(mode="json") for c in body.contacts],
        created_at=_now(),
        created_by=actor.actor,
    )
    await suppliers.add(supplier)
    await TrustRepository(suppliers.session).changed()
    await audit.append(
        suppliers.session,
        actor=actor.actor,
        action="supplier.create",
        subject=body.id,
        payload=body.model_dump(mode="json"),
    )
    return supplier


async def require_supplier(suppliers: SupplierRepository, supplier_id: str) -> Supplier:
    supplier = await suppliers.get(supplier_id)
    if supplier is None:
        raise SupplierNotFound(f"no supplier {supplier_id!r}")
    return supplier


async def add_key(
    supplier_id: str,
    body: KeyCreate,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    audit: AuditLog,
) -> SupplierKey:
    await require_supplier(suppliers, supplier_id)
    try:
        public = load_public_key(body.public_key_pem)
    except SignatureError as e:
        raise Unprocessable(f"public_key_pem: {e}") from e
    kid = key_id(public)
    existing = await suppliers.get_key(kid)
    if existing is not None:
        # One key, one supplier: otherwise a signature could not say who signed.
        raise KeyAlreadyRegistered(f"key {kid[:16]} is already registered")
    not_before = body.not_before or _now()
    if body.not_after is not None and body.not_after <= not_before:
        raise Unprocessable("not_after must be later than not_before")
    key = SupplierKey(
        key_id=kid,
        supplier_id=supplier_id,
        public_key_pem=body.public_key_pem.strip() + "\n",
        algorithm=_algorithm(public),
        not_before=not_before,
        not_after=body.not_after,
        created_at=_now(),
    )
    await suppliers.add(key)
    await TrustRepository(suppliers.session).changed()
    await audit.append(
        suppliers.session,
        actor=actor.actor,
        action="supplier.key.add",
        subject=f"{supplier_id}/{kid}",
        payload=body.model_dump(mode="json"),
    )
    return key


def _algorithm(public: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ecdsa-{public.curve.name}"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa-{public.key_size}"
    return type(public).__name__


async def revoke_key(
    supplier_id: str,
    kid: str,
    reason: str,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    audit: AuditLog,
) -> SupplierKey:
    key = await suppliers.get_key(kid)
    if key is None or key.supplier_id != supplier_id:
        raise SupplierNotFound(f"supplier {supplier_id!r} has no key {kid[:16]}")
    if key.revoked_at is None:
        key.revoked_at, key.revocation_reason = _now(), reason
        await suppliers.add(key)
        await TrustRepository(suppliers.session).changed()
        await audit.append(
            suppliers.session,
            actor=actor.actor,
            action="supplier.key.revoke",
            subject=f"{supplier_id}/{kid}",
            reason=reason,
        )
    return key


async def add_identity(
    supplier_id: str,
    body: IdentityCreate,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    audit: AuditLog,
) -> SupplierIdentity:
    await require_supplier(suppliers, supplier_id)
    identity = SupplierIdentity(
        id=uuid.uuid4().hex,
        supplier_id=supplier_id,
        issuer=body.issuer,
        subject=body.subject,
        subject_pattern=body.subject_pattern,
        created_at=_now(),
    )
    await suppliers.add(identity)
    await TrustRepository(suppliers.session).changed()
    await audit.append(
        suppliers.session,
        actor=actor.actor,
        action="supplier.identity.add",
        subject=f"{supplier_id}/{identity.id}",
        payload=body.model_dump(mode="json"),
    )
    return identity


async def register_supplier_client(
    supplier_id: str,
    description: str,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    clients: ClientRepository,
    audit: AuditLog,
) -> ClientCreated:
    await require_supplier(suppliers, supplier_id)
    body = ClientCreate(roles=[Role.SUPPLIER], tenant=supplier_id, description=description)
    return await register_client(body, actor=actor, clients=clients, audit=audit)
