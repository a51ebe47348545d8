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

Revisions never go backwards, even when the database does: a database restored from an older
backup, or recreated, would restart revisions low and every device would refuse every new
document. So the gateway reads, at start and before it issues a revision, the highest revision
it actually published per device from the KV bucket's history (documents signed by its release
key; :class:`RevisionFloor`), and issues only above it. A device whose stored revision is below
the published one is raised above it at start, logged and audited
(``device.desired.revision_floor``), and its document re-published.

When the bucket is lost together with the database, only the devices know: each status report
carries the revision the device holds (``DeviceStatusV1.revision``), the gateway keeps the
highest one per device (``Device.reported_revision``) and issues that device only revisions
above it; a report above everything the gateway knows raises that device's counter (logged and
audited the same way) and re-publishes its desired state (:func:`record_reported_revision`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
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
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway.errors import (
    DeviceNotFound,
    DistributionRefused,
    ReleaseNotFound,
    ReleaseRevoked,
    VersionFrozen,
)
from edge_gateway.models import CompetenceRoster, DesiredState, Device, FrozenVersion, Release
from edge_gateway.registry_client import RegistryClient
from edge_gateway.settings import GatewaySettings
from linegate.audit import AuditLog
from linegate.db import Database
from linegate.errors import ServiceUnavailable
from linegate.events import Buckets, NatsClient
from linegate.modelsig import ModelSignatureError, verify_model_pinned
from linegate.objstore import put_file
from linegate.release_metadata import (
    ReleaseFile,
    ReleaseMetadataError,
    sign_release,
    verify_release,
)
from linegate.signing import load_or_create_private_key

SIGNATURE_FILE = "model.sig"
log = logging.getLogger("edge_gateway.distribution")

#: A reported revision above this is ignored: no document the gateway signed could carry it.
#: A device's revision grows by one per change of its desired state (an assignment, a rollout
#: step, an incident order, a roster change), so a billion is no device's history. A device
#: (or whoever holds its key) reporting more would otherwise lift its own counter towards the
#: end of the integer column (2**31 - 1 on PostgreSQL), where every later change of its desired
#: state would fail, and with it every batch it is part of (a line-wide incident action). At
#: this bound the column keeps as many revisions again. Other devices' counters a report never
#: touches: the device id is the subject's, which the server lets only that device publish on.
REPORTED_REVISION_MAX = 2**30


@dataclass
class RevisionFloor:
    """Per device, the highest desired-state revision found published in the KV bucket when
    the gateway started (read once, :func:`ensure_revision_floor`): new revisions go above it,
    and above the one the device reported holding (``Device.reported_revision``)."""

    published: dict[str, int] = field(default_factory=dict)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_revision(self, desired: DesiredState, reported: int = 0) -> int:
        return max(desired.revision, self.published.get(desired.device_id, 0), reported) + 1

    async def bump(
        self, session: AsyncSession, audit: AuditLog, desired: DesiredState, *, actor: str
    ) -> None:
        """Give ``desired`` its next revision, above the one its device reported holding too;
        when the published one had to lift it above what the database held (restored or
        recreated), log and audit that (a reported one was audited when it was recorded)."""
        before = desired.revision
        device = await session.get(Device, desired.device_id)
        reported = (device.reported_revision or 0) if device is not None else 0
        desired.revision = self.next_revision(desired, reported)
        published = self.published.get(desired.device_id, 0)
        if before >= published:
            return
        reason = (
            f"the database holds revision {before} but revision {published} was published: "
            f"restored or rebuilt; now {desired.revision}"
        )
        log.warning("device %s: %s", desired.device_id, reason)
        await audit.append(
            session,
            actor=actor,
            action="device.desired.revision_floor",
            subject=f"device:{desired.device_id}",
            payload={"stored": before, "published": published, "revision": desired.revision},
            reason=reason,
        )


async def record_reported_revision(
    gw: Gateway, session: AsyncSession, device: Device, reported: int, *, actor: str
) -> bool:
    """Record that ``device`` reported holding desired-state revision ``reported``; returns
    whether its desired state must be re-published (:func:`publish_desired`, after commit).

    Normally a device holds at most the revision the gateway stored for it. One above every
    revision the gateway knows of for it (stored, published, reported before) means the
    database and the ``desired`` bucket were lost or restored: the device refuses every
    document up to that revision. Its counter is raised (logged, audited as
    ``device.desired.revision_floor``); a stored desired state is re-issued above the reported
    revision, otherwise the next one assigned starts above it. Reports above
    :data:`REPORTED_REVISION_MAX` are ignored (logged)."""
    if reported <= (device.reported_revision or 0):
        return False  # what it held before, or a late report: nothing new
    if reported > REPORTED_REVISION_MAX:
        log.warning(
            "device %s reported holding desired-state revision %d, above any the gateway can "
            "have signed (%d); ignored",
            device.id,
            reported,
            REPORTED_REVISION_MAX,
        )
        return False
    floor = await ensure_revision_floor(gw)
    desired = await session.get(DesiredState, device.id)
    stored = desired.revision if desired is not None else 0
    published = floor.published.get(device.id, 0)
    known = max(stored, published, device.reported_revision or 0)
    device.reported_revision = reported
    session.add(device)
    if reported <= known:
        return False
    revision = reported + 1
    reason = (
        f"device reported holding revision {reported} but the database holds {stored} and "
        f"{published} was the highest published: the database and the desired bucket were "
        f"lost or restored; "
        + (f"now {revision}" if desired is not None else f"the next one issued is {revision}")
    )
    log.warning("device %s: %s", device.id, reason)
    if desired is not None:
        desired.revision = revision
        session.add(desired)
    await gw.audit.append(
        session,
        actor=actor,
        action="device.desired.revision_floor",
        subject=f"device:{device.id}",
        payload={
            "stored": stored,
            "published": published,
            "reported": reported,
            "revision": revision,
        },
        reason=reason,
    )
    return desired is not None


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
    base = f"/v1/models/{model}/versions/{version}"
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


async def frozen(session: AsyncSession, model: str, version: str) -> FrozenVersion | None:
    """The freeze an incident holds on ``model`` ``version``, if any."""
    return await session.get(FrozenVersion, (model, version))


async def refuse_frozen(session: AsyncSession, model: str, version: str, doing: str) -> None:
    """:class:`VersionFrozen` (409, naming the incident) while ``model`` ``version`` is frozen."""
    freeze = await frozen(session, model, version)
    if freeze is not None:
        raise VersionFrozen(
            f"cannot {doing}: {model} {version} is frozen as evidence by incident "
            f"{freeze.incident_id} ({freeze.reason})",
            extra={"incident_id": freeze.incident_id, "model": model, "version": version},
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
        await _put_unless_newer(gw, kv, desired.device_id, max(1, desired.revision), metadata)
    return len(rows)


async def _put_unless_newer(gw: Gateway, kv: Any, device_id: str, revision: int, doc: str) -> bool:
    """Write ``doc`` (at ``revision``) as ``device_id``'s desired state unless the bucket
    already holds a newer document the gateway signed: two publishes racing (a start-up or
    periodic re-publish read the database before a change committed and published) must not
    leave the older one last, where a device that has not fetched yet would install it and
    then wait for the next change. Compare-and-set on the entry's sequence, so nothing lands
    between the check and the write. An equal revision is written: the same state re-signed
    with a fresh expiry or roster."""
    for _ in range(10):
        try:
            entry = await kv.get(device_id)
        except (KeyNotFoundError, KeyDeletedError):
            entry = None
        if entry is None or not entry.value:
            try:
                await kv.create(device_id, doc.encode())
                return True
            except KeyWrongLastSequenceError:
                continue  # written meanwhile: check what it is
        if (
            _claimed_revision(entry.value) > revision
            and _verified_revision(gw, device_id, entry.value) > revision
        ):
            log.info(
                "device %s: revision %d not published, the bucket holds a newer one",
                device_id,
                revision,
            )
            return False
        try:
            await kv.update(device_id, doc.encode(), last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    raise ServiceUnavailable(f"the desired state of {device_id} kept changing while publishing")


def _verified_revision(gw: Gateway, device_id: str, raw: bytes) -> int:
    """The revision of ``raw`` if the gateway's release key signed it for ``device_id``, else 0
    (a document anyone else wrote into the bucket must not hold the gateway's back)."""
    try:
        release = verify_release(raw, [gw.release_key().public_key()], now=_EPOCH)
    except ReleaseMetadataError:
        return 0
    if release.device is None or release.device.get("id") != device_id:
        return 0
    return int(release.device["revision"])


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


#: Expiry does not matter for what was published: verify as of the epoch.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _claimed_revision(raw: bytes) -> int:
    """The revision a desired-state document says it has (before its signature is checked)."""
    try:
        revision = json.loads(raw)["signed"]["x-linegate-release"]["device"]["revision"]
    except (ValueError, KeyError, TypeError):
        return 0
    return revision if isinstance(revision, int) else 0


async def published_revisions(gw: Gateway) -> dict[str, int]:
    """Per device, the highest revision of a document signed by the gateway's release key and
    bound to that device that the ``desired`` bucket holds (every kept revision of every key):
    what devices may have applied. Documents that do not verify are not counted (anyone who
    can write the bucket could otherwise push the counter anywhere)."""
    kv = await desired_bucket(gw)
    watcher = await kv.watchall(include_history=True)
    documents: dict[str, list[bytes]] = {}
    try:
        async for entry in watcher:
            if entry is None:  # nats-py's marker: every stored entry was delivered
                break
            if entry.value:  # not a delete or purge marker
                documents.setdefault(entry.key, []).append(entry.value)
    finally:
        await watcher.stop()
    # About a millisecond per device: off the event loop, which keeps serving meanwhile.
    return await asyncio.to_thread(_highest_verified, documents, gw.release_key().public_key())


def _highest_verified(documents: dict[str, list[bytes]], key: Any) -> dict[str, int]:
    floors: dict[str, int] = {}
    unverified = 0
    for device_id, raws in documents.items():
        # Newest claim first: usually the first one verifies.
        for raw in sorted(raws, key=_claimed_revision, reverse=True):
            try:
                release = verify_release(raw, [key], now=_EPOCH)
            except ReleaseMetadataError:
                unverified += 1
                continue
            if release.device is not None and release.device["id"] == device_id:
                floors[device_id] = int(release.device["revision"])
                break
    if unverified:
        log.warning("%d desired-state document(s) in the bucket do not verify; ignored", unverified)
    return floors


async def ensure_revision_floor(gw: Gateway) -> RevisionFloor:
    """Read :func:`published_revisions` once (503 while NATS is unreachable: no revision is
    issued without knowing what was published)."""
    floor = gw.revision_floor
    if floor.loaded:
        return floor
    async with floor.lock:
        if not floor.loaded:
            if not gw.nats.connected:
                raise ServiceUnavailable(
                    "NATS is unreachable: the published desired-state revisions cannot be read"
                )
            try:
                floor.published = await published_revisions(gw)
            except (NatsError, TimeoutError) as e:
                raise ServiceUnavailable(
                    f"the published desired-state revisions cannot be read: {e!r}"
                ) from e
            floor.loaded = True
    return floor


async def raise_revision_floor(gw: Gateway, *, actor: str = "service:edge-gateway") -> list[str]:
    """Raise every device whose stored revision is below the one published for it (the
    database was restored or recreated) above it; returns those devices (audited, logged).
    Their documents are re-published by the caller (:func:`publish_desired`)."""
    floor = await ensure_revision_floor(gw)
    raised = []
    async with gw.db.session() as session:
        stmt = select(DesiredState).where(col(DesiredState.device_id).in_(list(floor.published)))
        for desired in (await session.exec(stmt)).all():
            if desired.revision >= floor.published[desired.device_id]:
                continue
            await floor.bump(session, gw.audit, desired, actor=actor)
            session.add(desired)
            raised.append(desired.device_id)
    return raised


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
