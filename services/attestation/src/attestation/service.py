"""Attestation domain logic (no FastAPI here): onboarding, ingest, queries."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from sqlmodel.ext.asyncio.session import AsyncSession

from attestation.errors import KeyAlreadyRegistered, SupplierExists, SupplierNotFound
from attestation.models import (
    Attestation,
    Blob,
    OAuthClient,
    Supplier,
    SupplierIdentity,
    SupplierKey,
)
from attestation.repository import (
    AttestationRepository,
    ClientRepository,
    SlaRepository,
    SupplierRepository,
)
from attestation.schemas import (
    ClientCreate,
    ClientCreated,
    IdentityCreate,
    KeyCreate,
    SupplierCreate,
)
from attestation.sigstore_bundle import SigstoreVerifier
from attestation.verification import Outcome, TrustContext, verify_upload
from linegate.audit import AuditLog
from linegate.auth import Principal, Role, hash_client_secret, new_client_secret
from linegate.db import Database
from linegate.errors import Unprocessable
from linegate.events import AttestationRejectedV1, AttestationVerifiedV1, SubjectDigest, Subjects
from linegate.outbox import enqueue
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


# -------------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class Upload:
    content_type: str
    data: bytes

    @cached_property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class IngestResult:
    attestation: Attestation
    created: bool
    malformed: bool = False


async def _trust_context(
    session: AsyncSession, supplier_id: str, *, max_age: timedelta, clock_skew: timedelta
) -> TrustContext:
    keys = await SupplierRepository(session).all_keys()
    terms = await SlaRepository(session).sla(supplier_id)
    return TrustContext(
        supplier_id=supplier_id,
        keys=[k for k in keys if k.supplier_id == supplier_id],
        other_keys=[k for k in keys if k.supplier_id != supplier_id],
        identities=await SupplierRepository(session).identities(supplier_id),
        max_age=timedelta(days=terms.max_attestation_age_days) if terms is not None else max_age,
        now=_now(),
        clock_skew=clock_skew,
    )


async def ingest(
    upload: Upload,
    *,
    supplier_id: str,
    actor: Principal,
    db: Database,
    audit: AuditLog,
    sigstore: SigstoreVerifier,
    max_age: timedelta,
    max_depth: int,
    clock_skew: timedelta,
) -> IngestResult:
    """Verify and record one upload (accepted or rejected) with its audit entry and event.

    Two short units of work around the verification rather than one long one: the trust
    material is read, the upload verified with no transaction open (a large SBOM takes
    seconds), then the record, its audit entry and its event commit together. The second
    unit re-checks for the same bytes, so a concurrent identical upload still yields one record.
    """
    raw_digest = upload.digest
    async with db.session() as session:
        await require_supplier(SupplierRepository(session), supplier_id)
        existing = await AttestationRepository(session).by_raw_digest(supplier_id, raw_digest)
        if existing is not None:
            return IngestResult(existing, created=False)
        trust = await _trust_context(session, supplier_id, max_age=max_age, clock_skew=clock_skew)
    # CPU-bound (schema validation of a large SBOM): keep it off the event loop.
    outcome = await asyncio.to_thread(
        verify_upload,
        upload.content_type,
        upload.data,
        trust,
        sigstore=sigstore,
        max_depth=max_depth,
    )
    async with db.session() as session:
        attestations = AttestationRepository(session)
        existing = await attestations.by_raw_digest(supplier_id, raw_digest)
        if existing is not None:
            return IngestResult(existing, created=False)
        return await _record(upload, outcome, trust, supplier_id, actor, attestations, audit)


async def _record(
    upload: Upload,
    outcome: Outcome,
    trust: TrustContext,
    supplier_id: str,
    actor: Principal,
    attestations: AttestationRepository,
    audit: AuditLog,
) -> IngestResult:
    raw_digest = upload.digest
    now = trust.now
    record = Attestation(
        id=uuid.uuid4().hex,
        supplier_id=supplier_id,
        status=outcome.status,
        verified=outcome.verified,
        content_type=upload.content_type,
        envelope=outcome.envelope,
        raw_digest=raw_digest,
        raw_size=len(upload.data),
        predicate_type=outcome.predicate_type,
        predicate_kind=outcome.predicate_kind,
        recognised=outcome.recognised,
        signer=outcome.signer,
        subjects=outcome.subjects,
        summary=outcome.summary,
        reasons=outcome.reasons,
        issued_at=outcome.issued_at,
        expires_at=outcome.expires_at,
        created_at=now,
        uploaded_by=actor.actor,
    )
    await attestations.add(record, Blob(digest=raw_digest, size=len(upload.data), data=upload.data))
    await audit.append(
        attestations.session,
        actor=actor.actor,
        action=f"attestation.{outcome.status}",
        subject=record.id,
        payload=upload.data,
        reason="; ".join(outcome.reasons) or None,
    )
    if outcome.status == "rejected":
        await enqueue(
            attestations.session,
            Subjects.ATTESTATION_REJECTED,
            AttestationRejectedV1(
                attestation_id=record.id,
                supplier=supplier_id,
                reasons=outcome.reasons,
                actor=actor.actor,
            ),
        )
    else:
        await enqueue(
            attestations.session,
            Subjects.ATTESTATION_VERIFIED,
            AttestationVerifiedV1(
                attestation_id=record.id,
                supplier=supplier_id,
                predicate_type=outcome.predicate_type,
                subjects=[SubjectDigest(**s) for s in outcome.subjects],
                expires_at=outcome.expires_at,
                verified=outcome.verified,
                actor=actor.actor,
            ),
        )
    return IngestResult(record, created=True, malformed=outcome.malformed)
