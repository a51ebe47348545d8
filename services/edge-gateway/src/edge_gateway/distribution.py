"""Distribution: released versions into the object store, signed release metadata, desired state.

When the registry releases a version, the gateway downloads its artefact folder and model-signing
bundle, verifies the bundle against the registry's published key (a tampered artefact never
enters the object store), puts every file into the JetStream object store ``models`` under its
sha256 (never overwritten: earlier versions stay for rollback), and signs TUF targets metadata
(length, sha256, security_version, expiry) with its own key. A device's desired state is that
signed metadata, in the KV bucket ``desired`` under the device id; the database holds the same and
is the source the KV bucket is reconciled from.

A revocation moves every device whose desired release was revoked back to the newest release of
the same model that is still good; when that one has a lower security_version, its metadata is
re-signed with a rollback instruction naming the revocation, the only way devices accept it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway.errors import DeviceNotFound, DistributionRefused, ReleaseNotFound, ReleaseRevoked
from edge_gateway.models import DesiredState, Device, Release
from edge_gateway.registry_client import RegistryClient
from edge_gateway.settings import GatewaySettings
from linegate.audit import AuditLog
from linegate.db import Database
from linegate.events import Buckets, NatsClient
from linegate.modelsig import ModelSignatureError, verify_model
from linegate.objstore import put_file
from linegate.release_metadata import ReleaseFile, sign_release
from linegate.signing import load_or_create_private_key

SIGNATURE_FILE = "model.sig"


@dataclass
class Gateway:
    """What the gateway's domain code needs at run time (``app.state.gateway``)."""

    settings: GatewaySettings
    db: Database
    audit: AuditLog
    nats: NatsClient
    registry: RegistryClient

    def release_key(self) -> Any:
        return load_or_create_private_key(self.settings.release_key_path)


# ------------------------------------------------------------------------------ distribute


async def _fetch_and_verify(
    gw: Gateway, model: str, version: str, info: dict[str, Any], folder: Path
) -> Path:
    base = f"/v1/models/{model}/versions/{version}"
    for f in info["files"]:
        await gw.registry.download(
            f"{base}/files/{f['path']}", folder / f["path"], sha256=f["sha256"]
        )
    signature = folder.parent / SIGNATURE_FILE
    await gw.registry.download(f"{base}/signature", signature)
    keys = await gw.registry.signing_keys()
    errors = []
    for i, pem in enumerate(keys):
        key_file = folder.parent / f"registry-{i}.pub.pem"
        key_file.write_text(pem)
        try:
            await asyncio.to_thread(verify_model, folder, key_file, signature)
            return signature
        except ModelSignatureError as e:
            errors.append(str(e))
    raise DistributionRefused(
        f"{model} {version} does not verify against the registry's keys: " + "; ".join(errors)
    )


def _sign(
    gw: Gateway,
    release: Release,
    *,
    metadata_version: int,
    rollback: dict[str, Any] | None = None,
) -> tuple[str, datetime]:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(
        hours=gw.settings.release_metadata_ttl_hours
    )
    raw = sign_release(
        gw.release_key(),
        model=release.model,
        version=release.version,
        security_version=release.security_version,
        manifest_sha256=release.manifest_digest,
        files=[ReleaseFile(f["path"], f["length"], f["sha256"]) for f in release.files],
        expires=expires,
        metadata_version=metadata_version,
        rollback=rollback,
    )
    return raw.decode(), expires


async def distribute(gw: Gateway, model: str, version: str, *, actor: str) -> Release:
    """Copy a released version into the object store and sign its release metadata (once)."""
    async with gw.db.session() as session:
        existing = await _release(session, model, version)
        if existing is not None:
            return existing
    info = await gw.registry.version(model, version)
    if info["state"] != "released":
        raise DistributionRefused(f"{model} {version} is {info['state']}, not released")
    gw.settings.staging_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=gw.settings.staging_dir))
    try:
        folder = staging / model
        folder.mkdir()
        signature = await _fetch_and_verify(gw, model, version, info, folder)
        files = [(folder / f["path"], f["path"]) for f in info["files"]] + [
            (signature, SIGNATURE_FILE)
        ]
        entries = []
        for path, name in files:
            digest = await asyncio.to_thread(_sha256, path)
            await put_file(
                gw.nats.js,
                Buckets.MODELS,
                digest,
                path,
                chunk_size=gw.settings.object_chunk_bytes,
                window=gw.settings.object_put_window,
            )
            entries.append({"path": name, "length": path.stat().st_size, "sha256": digest})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    release = Release(
        id=uuid.uuid4().hex,
        model=model,
        version=version,
        security_version=int(info["security_version"]),
        artefact_digest=info["artefact_digest"],
        manifest_digest=info["manifest_digest"],
        files=entries,
        metadata_json="",
        expires_at=datetime.now(UTC),
        created_at=datetime.now(UTC),
    )
    release.metadata_json, release.expires_at = _sign(gw, release, metadata_version=1)
    async with gw.db.session() as session:
        existing = await _release(session, model, version)
        if existing is not None:  # a concurrent delivery of the same event won
            return existing
        session.add(release)
        await gw.audit.append(
            session,
            actor=actor,
            action="release.distributed",
            subject=f"model:{model}@{version}",
            payload={"files": entries, "security_version": release.security_version},
        )
    return release


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


async def _release(session: AsyncSession, model: str, version: str) -> Release | None:
    stmt = select(Release).where(Release.model == model, Release.version == version)
    return (await session.exec(stmt)).first()


async def require_release(session: AsyncSession, model: str, version: str) -> Release:
    release = await _release(session, model, version)
    if release is None:
        raise ReleaseNotFound(f"{model} {version} has not been distributed (is it released?)")
    return release


# -------------------------------------------------------------------------------- desired


async def assign(
    gw: Gateway,
    *,
    model: str,
    version: str,
    device_ids: Sequence[str],
    actor: str,
    reason: str,
    rollback: dict[str, Any] | None = None,
) -> list[str]:
    """Make ``device_ids`` want ``model`` ``version``; returns the devices assigned."""
    async with gw.db.session() as session:
        release = await require_release(session, model, version)
        if release.state == "revoked":
            raise ReleaseRevoked(f"{model} {version} was revoked: {release.revoked_reason}")
        now = datetime.now(UTC)
        for device_id in device_ids:
            if await session.get(Device, device_id) is None:
                raise DeviceNotFound(f"no device {device_id!r}")
            desired = await session.get(DesiredState, device_id) or DesiredState(
                device_id=device_id,
                release_id=release.id,
                reason=reason,
                updated_at=now,
                updated_by=actor,
            )
            desired.release_id, desired.reason, desired.rollback = release.id, reason, rollback
            desired.updated_at, desired.updated_by = now, actor
            session.add(desired)
            await gw.audit.append(
                session,
                actor=actor,
                action="device.desired.set",
                subject=f"device:{device_id}",
                payload={"model": model, "version": version, "rollback": rollback},
                reason=reason,
            )
    await publish_desired(gw, list(device_ids))
    return list(device_ids)


async def publish_desired(gw: Gateway, device_ids: Sequence[str] | None = None) -> int:
    """Write the signed desired state of ``device_ids`` (default: every device) to the KV
    bucket from the database: idempotent, so it also repairs the bucket after an outage."""
    async with gw.db.session() as session:
        stmt = select(DesiredState, Release).where(DesiredState.release_id == Release.id)
        if device_ids is not None:
            stmt = stmt.where(col(DesiredState.device_id).in_(list(device_ids)))
        rows = list((await session.exec(stmt)).all())
    if not rows:
        return 0
    kv = await desired_bucket(gw)
    for desired, release in rows:
        metadata = (
            release.metadata_json
            if desired.rollback is None
            else _sign(
                gw,
                release,
                metadata_version=release.metadata_version + 1,
                rollback=desired.rollback,
            )[0]
        )
        await kv.put(desired.device_id, metadata.encode())
    return len(rows)


async def desired_bucket(gw: Gateway) -> Any:
    js = gw.nats.js
    try:
        return await js.key_value(Buckets.DESIRED)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=Buckets.DESIRED,
                history=5,
                replicas=gw.settings.nats_stream_replicas,
                # Devices read their key with a direct get: the only read the server can
                # confine to one key (linegate.nats_auth).
                direct=True,
            )
        )


# ------------------------------------------------------------------------------- revoke


async def revoke(gw: Gateway, model: str, version: str, reason: str, *, actor: str) -> list[str]:
    """Mark a release revoked and move its devices back to the newest good release."""
    async with gw.db.session() as session:
        release = await _release(session, model, version)
        if release is None or release.state == "revoked":
            return []
        release.state, release.revoked_reason = "revoked", reason
        session.add(release)
        stmt = select(DesiredState).where(DesiredState.release_id == release.id)
        affected = [d.device_id for d in (await session.exec(stmt)).all()]
        older = (
            await session.exec(
                select(Release)
                .where(Release.model == model, Release.state != "revoked", Release.id != release.id)
                .order_by(col(Release.security_version).desc(), col(Release.created_at).desc())
            )
        ).first()
        await gw.audit.append(
            session,
            actor=actor,
            action="release.revoked",
            subject=f"model:{model}@{version}",
            payload={"devices": affected, "fallback": older.version if older else None},
            reason=reason,
        )
    if not affected or older is None:
        return []
    rollback = None
    if older.security_version < release.security_version:
        rollback = {
            "reason": f"{model} {version} revoked: {reason}",
            "approved_by": [actor],
            "from_security_version": release.security_version,
            "incident_id": f"revocation:{model}@{version}",
        }
    return await assign(
        gw,
        model=model,
        version=older.version,
        device_ids=affected,
        actor=actor,
        reason=f"revocation of {version}: {reason}",
        rollback=rollback,
    )
