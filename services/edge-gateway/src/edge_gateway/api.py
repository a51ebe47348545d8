"""Routes of the edge gateway: devices, releases, desired state, the release-metadata key."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response, status
from sqlmodel import col, select

from edge_gateway import distribution
from edge_gateway.deps import AdminDep, GatewayDep, OperatorDep, ReaderDep
from edge_gateway.errors import DeviceExists, DeviceNotFound
from edge_gateway.models import DesiredState, Device, FreezeHold, Release
from edge_gateway.schemas import (
    AssignRequest,
    AssignResult,
    DeviceCreate,
    DeviceCreated,
    DeviceRead,
    FreezeHoldRead,
    FrozenVersionRead,
    ReleaseRead,
    Selector,
)
from linegate.auth import Principal, Role
from linegate.nats_auth import new_device_identity
from linegate.service import SessionDep
from linegate.signing import public_key_pem

router = APIRouter()


async def _device_read(session: Any, device: Device) -> DeviceRead:
    desired = await session.get(DesiredState, device.id)
    wanted = None
    if desired is not None:
        release = await session.get(Release, desired.release_id)
        shadow = (
            await session.get(Release, desired.shadow_release_id)
            if desired.shadow_release_id
            else None
        )
        wanted = {
            "model": release.model,
            "version": release.version,
            "reason": desired.reason,
            "rollback": desired.rollback,
            "revision": desired.revision,
            "shadow_version": shadow.version if shadow else None,
            "control": desired.control,
            "updated_at": desired.updated_at.isoformat(),
        }
    return DeviceRead(**device.model_dump(), desired=wanted)


def _confine(principal: Principal, device_id: str) -> None:
    # A device reads only its own record; to it, others do not exist.
    if (
        Role.DEVICE in principal.roles
        and not principal.has_any([Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER])
        and principal.device_id != device_id
    ):
        raise DeviceNotFound(f"no device {device_id!r}")


@router.post("/v1/devices", status_code=status.HTTP_201_CREATED, tags=["devices"])
async def register_device(
    body: DeviceCreate,
    principal: AdminDep,
    session: SessionDep,
    gateway: GatewayDep,
    request: Request,
    background: BackgroundTasks,
) -> DeviceCreated:
    """Register a device and create its NATS identity (an nkey); the seed is shown once.

    Where the gateway owns the nats-server authorisation (embedded stack), the device's user
    is added once the registration is committed (a background task after the response)."""
    if await session.get(Device, body.id) is not None:
        raise DeviceExists(f"device {body.id!r} is already registered")
    identity = new_device_identity(body.id)
    device = Device(
        **body.model_dump(),
        public_nkey=identity.public_nkey,
        created_at=datetime.now(UTC),
        created_by=principal.subject,
    )
    session.add(device)
    await gateway.audit.append(
        session,
        actor=principal.actor,
        action="device.registered",
        subject=f"device:{device.id}",
        payload={**body.model_dump(), "public_nkey": identity.public_nkey},
    )
    read = await _device_read(session, device)
    config_sync = getattr(request.app.state, "nats_config", None)
    if config_sync is not None and config_sync.enabled:
        background.add_task(config_sync.sync)
    return DeviceCreated(
        **read.model_dump(), nkey_seed=identity.seed.decode(), nats_url=gateway.settings.nats_url
    )


@router.get("/v1/devices", tags=["devices"])
async def list_devices(principal: ReaderDep, session: SessionDep) -> list[DeviceRead]:
    stmt = select(Device).order_by(col(Device.id))
    if Role.DEVICE in principal.roles and not principal.has_any(
        [Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER]
    ):
        stmt = stmt.where(Device.id == principal.device_id)
    return [await _device_read(session, d) for d in (await session.exec(stmt)).all()]


@router.get("/v1/devices/{device_id}", tags=["devices"])
async def get_device(device_id: str, principal: ReaderDep, session: SessionDep) -> DeviceRead:
    _confine(principal, device_id)
    device = await session.get(Device, device_id)
    if device is None:
        raise DeviceNotFound(f"no device {device_id!r}")
    return await _device_read(session, device)


@router.get("/v1/releases", tags=["releases"])
async def list_releases(_: ReaderDep, session: SessionDep) -> list[ReleaseRead]:
    rows = (await session.exec(select(Release).order_by(col(Release.created_at)))).all()
    return [ReleaseRead.model_validate(r, from_attributes=True) for r in rows]


@router.get("/v1/frozen-versions", tags=["releases"])
async def list_frozen_versions(_: ReaderDep, session: SessionDep) -> list[FrozenVersionRead]:
    """The versions frozen as evidence now, each with every incident's hold on it, oldest
    freeze first."""
    by_version: dict[tuple[str, str], list[FreezeHold]] = {}
    for hold in await distribution.freeze_holds(session):
        by_version.setdefault((hold.model, hold.version), []).append(hold)
    return [
        FrozenVersionRead(
            **FreezeHoldRead.model_validate(holds[0], from_attributes=True).model_dump(),
            model=model,
            version=version,
            holds=[FreezeHoldRead.model_validate(h, from_attributes=True) for h in holds],
        )
        for (model, version), holds in by_version.items()
    ]


@router.get("/v1/releases/{model}/{version}/metadata", tags=["releases"])
async def release_metadata(model: str, version: str, _: ReaderDep, session: SessionDep) -> Response:
    """The signed TUF targets metadata devices verify (the same as their desired state)."""
    release = await distribution.require_release(session, model, version)
    return Response(release.metadata_json, media_type="application/json")


@router.post("/v1/releases/{model}/{version}/distribute", tags=["releases"])
async def distribute_release(
    model: str, version: str, principal: OperatorDep, gateway: GatewayDep
) -> ReleaseRead:
    """Copy a released version into the object store now (release events do this too)."""
    release = await distribution.distribute(gateway, model, version, actor=principal.actor)
    return ReleaseRead.model_validate(release, from_attributes=True)


async def _select(gateway: GatewayDep, selector: Selector) -> list[str]:
    async with gateway.db.session() as session:
        stmt = select(Device)
        if selector.device_ids:
            stmt = stmt.where(col(Device.id).in_(selector.device_ids))
        for field in ("plant", "line", "station"):
            value = getattr(selector, field)
            if value is not None:
                stmt = stmt.where(getattr(Device, field) == value)
        devices = list((await session.exec(stmt)).all())
    wanted = set(selector.tags)
    return sorted(d.id for d in devices if wanted <= set(d.tags))


@router.post("/v1/assignments", tags=["releases"])
async def assign_release(
    body: AssignRequest, principal: OperatorDep, gateway: GatewayDep
) -> AssignResult:
    """Set the desired state of the selected devices to a distributed release."""
    selector = body.selector
    if not (
        selector.device_ids or selector.plant or selector.line or selector.station or selector.tags
    ):
        raise DeviceNotFound(
            "the selector matches no device: name devices, a plant, line, station or tags"
        )
    device_ids = await _select(gateway, selector)
    if selector.device_ids and len(device_ids) != len(set(selector.device_ids)):
        missing = sorted(set(selector.device_ids) - set(device_ids))
        raise DeviceNotFound(f"no such device(s): {', '.join(missing)}")
    assigned = await distribution.assign(
        gateway,
        model=body.model,
        version=body.version,
        device_ids=device_ids,
        actor=principal.actor,
        reason=body.reason,
    )
    return AssignResult(model=body.model, version=body.version, devices=assigned)


@router.get("/v1/release-keys", tags=["releases"])
async def release_keys(gateway: GatewayDep) -> dict[str, list[str]]:
    """Public keys (PEM) release metadata is signed with; devices pin them at provisioning."""
    return {"keys": [public_key_pem(gateway.release_key().public_key()).decode()]}
