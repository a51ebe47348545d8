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

What a device finds under its key is the release's metadata re-signed for that device: bound to
its id and to the desired state's ``revision`` (bumped on every change, so a device refuses an
older document), with the ``control`` an incident ordered (manual inspection, a threshold) and
the ``shadow`` candidate of a shadow stage (that release's own signed metadata, verified on its
own by the device). A version an incident froze as evidence is never assigned
(:class:`~edge_gateway.errors.VersionFrozen`). It also carries the override roster of the
model's AI system (:mod:`edge_gateway.competence`), which the device checks operator overrides
against.

Revisions never go backwards, even when the database does, nor when the ``desired`` bucket is
lost with it: :mod:`edge_gateway.revision_floor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway.errors import (
    DeviceNotFound,
    DistributionRefused,
    ReleaseNotFound,
    ReleaseRevoked,
    VersionFrozen,
)
from edge_gateway.models import CompetenceRoster, DesiredState, Device, FreezeHold, Release
from edge_gateway.registry_client import RegistryClient, segment
from edge_gateway.revision_floor import (
    REPORTED_REVISION_MAX,
    RevisionFloor,
    _put_unless_newer,
    desired_bucket,
    ensure_revision_floor,
    published_revisions,
    raise_revision_floor,
    record_reported_revision,
)
from edge_gateway.settings import GatewaySettings
from linegate.audit import AuditLog
from linegate.db import Database
from linegate.errors import ServiceUnavailable
from linegate.events import Buckets, NatsClient
from linegate.modelsig import ModelSignatureError, verify_model_pinned
from linegate.objstore import put_file
from linegate.release_metadata import ReleaseFile, sign_release
from linegate.signing import load_or_create_private_key

# The revision floor's names stay importable from here, as before it moved to its own module.
__all__ = [
    "REPORTED_REVISION_MAX",
    "SIGNATURE_FILE",
    "Gateway",
    "MetadataRefresher",
    "Periodic",
    "RevisionFloor",
    "assign",
    "desired_bucket",
    "distribute",
    "ensure_revision_floor",
    "freeze_holds",
    "frozen",
    "publish_desired",
    "published_revisions",
    "raise_revision_floor",
    "record_reported_revision",
    "refuse_frozen",
    "require_release",
    "revoke",
    "roster_block",
    "set_control",
    "set_shadow",
]

SIGNATURE_FILE = "model.sig"
log = logging.getLogger("edge_gateway.distribution")


@dataclass
class Gateway:
    """What the gateway's domain code needs at run time (``app.state.gateway``)."""

    settings: GatewaySettings
    db: Database
    audit: AuditLog
    nats: NatsClient
    registry: RegistryClient
    #: Publish what was just queued in the outbox now rather than at its next poll.
    outbox_wake: Callable[[], None] | None = None
    revision_floor: RevisionFloor = field(default_factory=RevisionFloor)

    def release_key(self) -> Any:
        return load_or_create_private_key(self.settings.release_key_path)


# ------------------------------------------------------------------------------ distribute


async def _fetch_and_verify(
    gw: Gateway, model: str, version: str, info: dict[str, Any], folder: Path
) -> Path:
    base = f"/v1/models/{segment(model)}/versions/{segment(version)}"
    for f in info["files"]:
        await gw.registry.download(
            f"{base}/files/{f['path']}", folder / f["path"], sha256=f["sha256"]
        )
    signature = folder.parent / SIGNATURE_FILE
    await gw.registry.download(f"{base}/signature", signature)
    keys = await gw.registry.signing_keys()
    errors = []
    for i, (pem, identity) in enumerate(keys):
        key_file = folder.parent / f"registry-{i}.trust.pem"
        key_file.write_text(pem)
        try:
            await asyncio.to_thread(
                functools.partial(verify_model_pinned, identity=identity),
                folder,
                key_file,
                signature,
            )
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
    device: dict[str, Any] | None = None,
    competence: dict[str, Any] | None = None,
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
        device=device,
        competence=competence,
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


async def freeze_holds(
    session: AsyncSession,
    model: str | None = None,
    version: str | None = None,
    *,
    lock: bool = False,
) -> list[FreezeHold]:
    """The incidents' holds on ``model`` ``version`` (every version's when not given), oldest
    first: the version is frozen while it has one. ``lock``: row locks until the transaction
    ends, so two incidents' releases of the last holds cannot each see the other's."""
    stmt = select(FreezeHold).with_for_update() if lock else select(FreezeHold)
    if model is not None:
        stmt = stmt.where(FreezeHold.model == model)
    if version is not None:
        stmt = stmt.where(FreezeHold.version == version)
    stmt = stmt.order_by(col(FreezeHold.frozen_at), col(FreezeHold.incident_id))
    return list((await session.exec(stmt)).all())


async def frozen(session: AsyncSession, model: str, version: str) -> FreezeHold | None:
    """The oldest hold an incident has on ``model`` ``version``; ``None`` when not frozen."""
    holds = await freeze_holds(session, model, version)
    return holds[0] if holds else None


async def refuse_frozen(session: AsyncSession, model: str, version: str, doing: str) -> None:
    """:class:`VersionFrozen` (409) while an incident holds ``model`` ``version``, naming the
    oldest hold's incident (``incident_id``) and every holding one (``incident_ids``)."""
    holds = await freeze_holds(session, model, version)
    if holds:
        by = ", ".join(f"incident {h.incident_id} ({h.reason})" for h in holds)
        raise VersionFrozen(
            f"cannot {doing}: {model} {version} is frozen as evidence by {by}",
            extra={
                "incident_id": holds[0].incident_id,
                "incident_ids": [h.incident_id for h in holds],
                "model": model,
                "version": version,
            },
        )


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
    await ensure_revision_floor(gw)
    async with gw.db.session() as session:
        release = await require_release(session, model, version)
        if release.state == "revoked":
            raise ReleaseRevoked(f"{model} {version} was revoked: {release.revoked_reason}")
        await refuse_frozen(session, model, version, f"assign {model} {version}")
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
            if desired.shadow_release_id == release.id:
                desired.shadow_release_id = None  # the candidate now decides: no shadow of it
            desired.updated_at, desired.updated_by = now, actor
            await gw.revision_floor.bump(session, gw.audit, desired, actor=actor)
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
        shadow_ids = [d.shadow_release_id for d, _ in rows if d.shadow_release_id]
        shadow_rows = (
            await session.exec(select(Release).where(col(Release.id).in_(shadow_ids)))
        ).all()
        shadows: dict[str, Release] = {r.id: r for r in shadow_rows}
        models = list({release.model for _, release in rows})
        rosters: dict[str, CompetenceRoster] = {
            r.model: r
            for r in (
                await session.exec(
                    select(CompetenceRoster).where(col(CompetenceRoster.model).in_(models))
                )
            ).all()
        }
    if not rows:
        return 0
    kv = await desired_bucket(gw)
    failures: list[Exception] = []
    for desired, release in rows:
        shadow = shadows.get(desired.shadow_release_id or "")
        metadata, _ = _sign(
            gw,
            release,
            metadata_version=max(1, desired.revision),
            rollback=desired.rollback,
            device={
                "id": desired.device_id,
                "revision": max(1, desired.revision),
                "control": desired.control,
                # Re-signed with a fresh expiry: the device verifies the shadow on its own.
                "shadow": _sign(gw, shadow, metadata_version=1)[0] if shadow else None,
            },
            # The roster of the model that decides (a shadow never does). Without one the
            # device refuses every override: nobody's training can be checked.
            competence=roster_block(rosters.get(release.model)),
        )
        try:
            await _put_unless_newer(gw, kv, desired.device_id, max(1, desired.revision), metadata)
        except (ServiceUnavailable, NatsError) as e:
            # The other devices are still published; the first failure is raised after them.
            log.warning("desired state of %s not published: %s", desired.device_id, e)
            failures.append(e)
    if failures:
        raise failures[0]
    return len(rows)


def roster_block(roster: CompetenceRoster | None) -> dict[str, Any] | None:
    """The override roster as signed into a device's desired state (``x-linegate-competence``)."""
    if roster is None:
        return None
    fetched = roster.fetched_at
    return {
        "system_id": roster.system_id,
        "nist_tier": roster.nist_tier,
        # SQLite hands back naive datetimes; every time the gateway stores is UTC.
        "as_of": fetched if fetched.tzinfo else fetched.replace(tzinfo=UTC),
        "override": list(roster.override),
    }


async def _change_desired(
    gw: Gateway,
    device_ids: Sequence[str],
    *,
    actor: str,
    reason: str,
    action: str,
    change: Any,
    payload: dict[str, Any],
) -> list[str]:
    """Apply ``change(desired)`` to each device's desired state (devices without one are
    skipped and not returned), audit it, then publish the re-signed documents."""
    changed = []
    await ensure_revision_floor(gw)
    async with gw.db.session() as session:
        now = datetime.now(UTC)
        for device_id in device_ids:
            desired = await session.get(DesiredState, device_id)
            if desired is None:
                continue
            change(desired)
            await gw.revision_floor.bump(session, gw.audit, desired, actor=actor)
            desired.updated_at, desired.updated_by = now, actor
            session.add(desired)
            await gw.audit.append(
                session,
                actor=actor,
                action=action,
                subject=f"device:{device_id}",
                payload=payload,
                reason=reason,
            )
            changed.append(device_id)
    if changed:
        await publish_desired(gw, changed)
    return changed


async def set_shadow(
    gw: Gateway,
    device_ids: Sequence[str],
    release_id: str | None,
    *,
    actor: str,
    reason: str,
    only_if: str | None = None,
) -> list[str]:
    """Make ``device_ids`` run ``release_id`` in shadow (``None``: stop shadowing; with
    ``only_if``, only devices whose shadow is that release)."""
    async with gw.db.session() as session:
        shadow = await session.get(Release, release_id) if release_id else None
        if release_id and (shadow is None or shadow.state == "revoked"):
            raise ReleaseRevoked(f"release {release_id} is revoked or unknown: no shadow of it")
        if shadow is not None:
            await refuse_frozen(session, shadow.model, shadow.version, "shadow it")
        wanted = (
            list(device_ids)
            if only_if is None
            else [
                d.device_id
                for d in (
                    await session.exec(
                        select(DesiredState).where(
                            col(DesiredState.device_id).in_(list(device_ids)),
                            DesiredState.shadow_release_id == only_if,
                        )
                    )
                ).all()
            ]
        )

    def change(desired: DesiredState) -> None:
        desired.shadow_release_id = release_id

    what = f"{shadow.model}@{shadow.version}" if shadow else None
    return await _change_desired(
        gw,
        wanted,
        actor=actor,
        reason=reason,
        action="device.shadow.set" if shadow else "device.shadow.cleared",
        change=change,
        payload={"shadow": what},
    )


async def set_control(
    gw: Gateway,
    device_ids: Sequence[str],
    *,
    mode: str | None,
    threshold: float | None,
    incident_id: str,
    action_id: str,
    approved_by: Sequence[str],
    actor: str,
    reason: str,
) -> list[str]:
    """Order ``device_ids`` into ``mode`` (``None``: keep theirs) and/or to ``threshold``
    (``None``: keep theirs), on behalf of an approved incident action."""

    def change(desired: DesiredState) -> None:
        old = desired.control or {}
        desired.control = {
            "mode": mode or old.get("mode", "automatic"),
            "threshold": f"{threshold:g}" if threshold is not None else old.get("threshold"),
            "incident_id": incident_id,
            "action_id": action_id,
            "approved_by": list(approved_by),
            "reason": reason,
        }

    return await _change_desired(
        gw,
        device_ids,
        actor=actor,
        reason=reason,
        action="device.control.set",
        change=change,
        payload={"mode": mode, "threshold": threshold, "incident_id": incident_id},
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


class Periodic:
    """Runs :meth:`step` every ``interval`` seconds (0: never) until :meth:`stop`; a failed
    step is logged and retried at the next interval."""

    name = "periodic"

    def __init__(self, gw: Gateway, *, interval: float) -> None:
        self.gw = gw
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except Exception:
                log.exception("%s failed; will retry", self.name)


class MetadataRefresher(Periodic):
    """Re-signs every device's desired state every ``interval`` seconds (0: never), so that no
    document a device holds expires while the gateway runs: devices refuse expired metadata
    (the freeze defence), and a device that was offline for longer than the metadata lifetime
    must still find a valid document when it reconnects."""

    name = "metadata-refresh"

    async def step(self) -> None:
        count = await publish_desired(self.gw)
        log.info("re-signed the desired state of %d device(s)", count)
