"""The revision floor: the lowest desired-state revision the gateway may issue each device.

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

The ``desired`` KV bucket is read (:func:`published_revisions`) and written
(:func:`_put_unless_newer`, a compare-and-set that never replaces a newer document the gateway
signed) here; :mod:`edge_gateway.distribution` re-exports what it and its callers use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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

from edge_gateway.models import DesiredState, Device
from linegate.audit import AuditLog
from linegate.errors import ServiceUnavailable
from linegate.events import Buckets
from linegate.release_metadata import ReleaseMetadataError, verify_release

if TYPE_CHECKING:
    from edge_gateway.distribution import Gateway

# The distribution module's logger, as before the floor moved here: filters and alerts on it
# keep seeing the floor's warnings.
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
#: A device's reports raise its counter at most once in this many seconds: one raise is all a
#: genuine recovery needs, while a device (or its stolen key) reporting "one more" on every
#: status message would otherwise cost a re-signed document, a KV write and an audit entry
#: each time. A report ignored for it is not recorded, so the next one after the pause raises.
REPORTED_RAISE_INTERVAL_SECONDS = 300.0


@dataclass
class RevisionFloor:
    """Per device, the highest desired-state revision found published in the KV bucket when
    the gateway started (read once, :func:`ensure_revision_floor`): new revisions go above it,
    and above the one the device reported holding (``Device.reported_revision``)."""

    published: dict[str, int] = field(default_factory=dict)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Per device, when (``time.monotonic()``) a report last raised its counter.
    raised_at: dict[str, float] = field(default_factory=dict)

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
    if reported > known:
        last = floor.raised_at.get(device.id)
        if last is not None and time.monotonic() - last < REPORTED_RAISE_INTERVAL_SECONDS:
            log.warning(
                "device %s reported holding revision %d above every one known (%d) again "
                "within %g s of the last raise; not acted on yet",
                device.id,
                reported,
                known,
                REPORTED_RAISE_INTERVAL_SECONDS,
            )
            return False
        floor.raised_at[device.id] = time.monotonic()
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
        if entry is None:
            try:
                await kv.create(device_id, doc.encode())
                return True
            except KeyWrongLastSequenceError:
                continue  # written meanwhile: check what it is
        if (
            entry.value
            and _claimed_revision(entry.value) > revision
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
