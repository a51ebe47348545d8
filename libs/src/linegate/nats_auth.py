"""Per-device NATS credentials: each device may use only its own subjects and desired-state key.

A device is an nkey user (``U...`` public key; the seed never leaves the device's credential
file). :func:`device_permissions` is its whole world, deny by default:

- publish its own ``linegate.device.<id>.status`` and ``linegate.telemetry.<line>.<id>``;
- read KV bucket ``desired`` key ``<id>`` only, through the two JetStream API forms that carry
  the key in the request *subject* (so subject permissions can pin it): direct get
  ``$JS.API.DIRECT.GET.KV_desired.$KV.desired.<id>`` and filtered consumer create
  ``$JS.API.CONSUMER.CREATE.KV_desired.<name>.$KV.desired.<id>`` (nats-server >= 2.10 rejects a
  request whose body filter differs from the subject's);
- read the ``models`` object store (stream names and info, message get, push and pull
  consumers on ``OBJ_models`` with their ``$JS.FC`` flow-control replies, as nats-py's
  ``ObjectStore.get`` and :func:`linegate.objstore.download` use them), never put, delete or
  purge an object;
- receive only on its own inbox prefix ``_INBOX.device.<id>``, so it cannot see replies, pub
  acks or pushed KV entries meant for anyone else (``_INBOX.>`` would leak them all).

Services log in as one user/password with full access. The embedded stack renders all of it
into one nats-server config (``authorization { users = [...] }``; JetStream works in the
global account that these users share).

Example::

    dev = new_device_identity("cam-l3-01")
    write_creds(data_dir / "cam-l3-01.nk", dev)          # ship this file to the device
    text = render_server_config(devices=[(dev.device_id, dev.public_nkey)],
                                service_user="linegate", service_password=secret)
    write_server_config(data_dir / "nats.conf", text)    # NatsServer(config_file=...)

    nc = await connect_device(url, data_dir / "cam-l3-01.nk", device_id="cam-l3-01")
    current = await read_desired(nc.jetstream(), "cam-l3-01")
    async for entry in watch_desired(nc, "cam-l3-01"):
        ...                                              # converge to entry.value

nats-py on a device: ``js.key_value("desired")`` + ``kv.get(<own id>)`` work when the bucket was
created with ``direct=True`` (otherwise nats-py uses ``STREAM.MSG.GET`` whose key sits in the
body and is therefore denied). ``kv.watch`` is always denied: nats-py creates its consumer with
the bare ``$JS.API.CONSUMER.CREATE.KV_desired`` subject, which cannot be limited to one key; use
:func:`watch_desired`. ``js.object_store("models")`` with ``get``/``get_info``/``list`` works;
``put``/``delete`` are denied. ``js.publish`` to the device's own subjects works (acks come back
on its inbox).

Limits NATS itself imposes (not fixable with subject permissions):

- Reply subjects are not authorised. A device can have the reply to its own request (a pub
  ack, an API response, a stored message from a direct get - a model chunk at worst) published
  on any subject, e.g. another device's status subject. A push consumer's deliver subject is
  not checked against its creator's permissions either (nats-server issue #8274); those
  deliveries keep the stored message's own subject but are captured by streams listening on
  the deliver subject. The bytes are the server's or stored data, never chosen freely by the
  device, so consumers of ``linegate.device.>`` / ``linegate.telemetry.>`` must validate every
  payload (the ``...V1`` models with ``extra="forbid"``) and check that its ``device_id``
  equals the subject token, and commands (e.g. incident actions) must be authenticated by a
  signature, never by the subject they arrived on.
- Stream info on ``KV_desired`` (needed by ``js.key_value``) can list which keys exist and
  their message counts - device ids, never their values.
- Consumer names are not subject-scoped, so a device may pull from or delete *another*
  device's consumer on ``OBJ_models``: it can interrupt a download (which resumes), never
  read anything it could not read anyway.

Production
----------
The same rules with decentralized auth (no server config per device): an operator and an
account ``LINEGATE`` managed with ``nsc`` (``nsc add operator --sys``, ``nsc add account``,
JetStream limits on the account, a full-access service user whose ``.creds`` the services
load via ``nats_creds``). Devices are users of that account signed by a *scoped signing key*
with role ``device`` whose permissions are the templates of :func:`device_permissions`
(``{{name()}}`` for the device id, ``{{tag(line)}}`` for the line), e.g.::

    nsc edit account LINEGATE --sk generate
    nsc edit signing-key --account LINEGATE --sk <SK> --role device \\
        --allow-pub 'linegate.device.{{name()}}.status' \\
        --allow-pub 'linegate.telemetry.{{tag(line)}}.{{name()}}' \\
        --allow-pub '$JS.API.DIRECT.GET.KV_desired.$KV.desired.{{name()}}' \\
        --allow-pub '$JS.API.CONSUMER.CREATE.KV_desired.*.$KV.desired.{{name()}}' \\
        --allow-pub <the model-store subjects of device_permissions()> \\
        --allow-sub '_INBOX.device.{{name()}}.>'
    nsc add user --account LINEGATE -K device --name cam-l3-01 --tag line:l3 \\
        --public-key <U... of the device; its seed never leaves it>
    nsc push   # to the account resolver; `nsc revocations add-user` cuts off a stolen device

The device joins the issued user JWT and its own seed into a ``.creds`` file and connects with
``user_credentials=`` instead of ``nkeys_seed=``. Each plant runs a leaf node
(``leafnodes { remotes = [{url, credentials}] }``) bound to the same account, with a JetStream
domain of its own that mirrors ``desired`` and ``models`` and sources device and telemetry
streams up to the hub under the same stream names, so devices keep working when the WAN is
down and the subjects above hold unchanged. The leaf enforces the permissions carried in each
user JWT; a device never needs the hub.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from linegate.events import Buckets, Subjects, subject_token

log = logging.getLogger("linegate.nats_auth")

JS_API = "$JS.API"
DESIRED_STREAM = f"KV_{Buckets.DESIRED}"
MODELS_STREAM = f"OBJ_{Buckets.MODELS}"
#: Inbox prefixes of devices live under this; services keep the default ``_INBOX``.
DEVICE_INBOX_ROOT = "_INBOX.device"

_KV_OPERATION = "KV-Operation"


class NatsAuthError(Exception):
    """A device credential, server config or desired-state read that cannot work as asked."""


@dataclass(frozen=True)
class DeviceIdentity:
    """One device's nkey user: the public key goes into the server config, the seed (``SU...``)
    only into the device's credential file."""

    device_id: str
    public_nkey: str
    seed: bytes = field(repr=False)


@dataclass(frozen=True)
class DesiredEntry:
    """The device's desired-state value at stream sequence ``revision``; ``value`` is ``None``
    when the key was deleted or purged."""

    device_id: str
    value: bytes | None
    revision: int


def _device_id(device_id: str) -> str:
    try:
        return subject_token(device_id)
    except ValueError as e:
        raise NatsAuthError(
            f"device id {device_id!r} cannot be a NATS subject token: use 1-64 characters "
            "from [A-Za-z0-9_-] (no dots, spaces or wildcards)"
        ) from e


def desired_subject(device_id: str) -> str:
    """The KV subject holding ``device_id``'s desired state."""
    return f"$KV.{Buckets.DESIRED}.{_device_id(device_id)}"


def device_inbox_prefix(device_id: str) -> str:
    """The inbox prefix a device must connect with (its only subscribe permission)."""
    return f"{DEVICE_INBOX_ROOT}.{_device_id(device_id)}"


def new_device_identity(device_id: str) -> DeviceIdentity:
    """A fresh ed25519 nkey user for ``device_id``."""
    device_id = _device_id(device_id)
    seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    public = bytes(nkeys.from_seed(bytearray(seed)).public_key).decode()
    return DeviceIdentity(device_id=device_id, public_nkey=public, seed=seed)


def _check_user_nkey(public_nkey: str, device_id: str) -> str:
    """``public_nkey`` if it is a well-formed nkey *user* public key (``U...``, valid CRC)."""
    problem = None
    try:
        raw = base64.b32decode(public_nkey)
    except (binascii.Error, ValueError):
        problem = "is not base32"
    else:
        if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
            problem = "is not an nkey user public key (56 characters starting with 'U')"
        elif nkeys.crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            problem = "has a bad checksum"
    if problem is not None:
        raise NatsAuthError(
            f"public nkey {public_nkey!r} of device {device_id!r} {problem}; use "
            "DeviceIdentity.public_nkey from new_device_identity() (never the seed)"
        )
    return public_nkey


def device_permissions(device_id: str, *, line: str | None = None) -> dict[str, Any]:
    """nats-server permissions for one device: its own subjects and key, read-only models.

    ``line`` pins telemetry to ``linegate.telemetry.<line>.<id>``; without it the device may
    report for any line (the device id is still pinned).
    """
    device_id = _device_id(device_id)
    telemetry = (
        Subjects.telemetry(line, device_id)
        if line is not None
        else f"linegate.telemetry.*.{device_id}"
    )
    key = desired_subject(device_id)
    return {
        "publish": {
            "allow": [
                Subjects.device_status(device_id),
                telemetry,
                # desired state: this key only, by forms that name it in the subject
                f"{JS_API}.STREAM.INFO.{DESIRED_STREAM}",
                f"{JS_API}.DIRECT.GET.{DESIRED_STREAM}.{key}",
                f"{JS_API}.CONSUMER.CREATE.{DESIRED_STREAM}.*.{key}",
                # model artefacts: everything readable, nothing writable. nats-py's
                # ObjectStore.get looks its chunk stream up by subject (names only).
                f"{JS_API}.STREAM.NAMES",
                f"{JS_API}.STREAM.INFO.{MODELS_STREAM}",
                f"{JS_API}.STREAM.MSG.GET.{MODELS_STREAM}",
                f"{JS_API}.DIRECT.GET.{MODELS_STREAM}",
                f"{JS_API}.DIRECT.GET.{MODELS_STREAM}.>",
                f"{JS_API}.CONSUMER.CREATE.{MODELS_STREAM}",
                f"{JS_API}.CONSUMER.CREATE.{MODELS_STREAM}.>",
                # pull consumers of linegate.objstore.download (the agent's resumable fetch)
                f"{JS_API}.CONSUMER.MSG.NEXT.{MODELS_STREAM}.*",
                f"{JS_API}.CONSUMER.DELETE.{MODELS_STREAM}.*",
                f"$JS.FC.{MODELS_STREAM}.>",
            ]
        },
        "subscribe": {"allow": [f"{device_inbox_prefix(device_id)}.>"]},
    }


def render_server_config(
    *,
    devices: Sequence[tuple[str, str]],
    service_user: str,
    service_password: str,
    jetstream_dir: Path | None = None,
    extra: str = "",
    lines: dict[str, str] | None = None,
) -> str:
    """nats-server config text: one full-access service user and one nkey user per device.

    ``devices`` are ``(device_id, public_nkey)`` pairs; ``lines`` optionally maps a device id
    to its line (see :func:`device_permissions`). ``extra`` is appended verbatim (listen,
    cluster, leafnodes ...). Every value is written as a JSON string, which the nats-server
    config parser reads literally (no ``$variable`` expansion inside quotes).
    """
    if not service_user:
        raise NatsAuthError("service_user is empty: name the user the services log in as")
    if len(service_password) < 16:
        raise NatsAuthError(
            "service_password is shorter than 16 characters: generate one with "
            "secrets.token_urlsafe(24) and give it to the services as nats_password"
        )
    users: list[dict[str, Any]] = [{"user": service_user, "password": service_password}]
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for raw_id, public_nkey in devices:
        device_id = _device_id(raw_id)
        _check_user_nkey(public_nkey, device_id)
        if device_id in seen_ids:
            raise NatsAuthError(f"device {device_id!r} is listed twice; keep one entry per id")
        if public_nkey in seen_keys:
            raise NatsAuthError(
                f"device {device_id!r} reuses another device's nkey; every device needs its "
                "own identity (new_device_identity)"
            )
        seen_ids.add(device_id)
        seen_keys.add(public_nkey)
        line = (lines or {}).get(device_id)
        users.append({"nkey": public_nkey, "permissions": device_permissions(device_id, line=line)})
    parts = [
        "# Generated by linegate.nats_auth: regenerate from the device inventory, do not edit.",
        "authorization " + json.dumps({"users": users}, indent=2),
    ]
    if jetstream_dir is not None:
        parts.append("jetstream " + json.dumps({"store_dir": str(jetstream_dir)}))
    if extra:
        parts.append(extra)
    return "\n".join(parts) + "\n"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o600)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_creds(path: Path, identity: DeviceIdentity) -> None:
    """Write the device's nkey seed file (mode 0600).

    The file holds the seed alone (``SU...`` and a newline), the format nats-py reads with
    ``nats.connect(nkeys_seed=path)`` and nats-server's tools with ``--nkey``. It is not a
    ``.creds`` file: those (``user_credentials=``) also carry a user JWT and belong to the
    decentralized setup described under *Production*.
    """
    _write_private(path, identity.seed + b"\n")


def write_server_config(path: Path, text: str) -> None:
    """Write a rendered server config (it holds the service password) with mode 0600."""
    _write_private(path, text.encode())


async def connect_device(
    url: str, creds_path: Path, *, device_id: str, **options: Any
) -> NatsConnection:
    """Connect as ``device_id`` with the seed file at ``creds_path``.

    Sets the device's inbox prefix, without which every request (and every JetStream call)
    waits on an ``_INBOX`` the device may not subscribe to. ``options`` go to
    :func:`nats.connect` (e.g. ``error_cb``, ``max_reconnect_attempts``).
    """
    options.setdefault("name", f"device-{_device_id(device_id)}")
    nc = NatsConnection()
    try:
        await nc.connect(
            url,
            nkeys_seed=str(creds_path),
            inbox_prefix=device_inbox_prefix(device_id),
            **options,
        )
    except BaseException as e:
        # nats-py leaves the socket of a refused connection open; close it ourselves
        with contextlib.suppress(Exception):
            await nc.close()
        if isinstance(e, FileNotFoundError):
            raise NatsAuthError(
                f"no nkey seed file at {creds_path}: provision the device with write_creds()"
            ) from e
        raise
    return nc


def _unavailable(device_id: str, e: Exception) -> NatsAuthError:
    if isinstance(e, NoRespondersError):
        hint = (
            f"no responder for direct get on {DESIRED_STREAM}: the bucket "
            f"{Buckets.DESIRED!r} is missing or was created without direct=True"
        )
    else:
        hint = (
            "no reply in time: the server denies this device that key (a device reads only "
            "its own), the device did not connect with connect_device() (its inbox "
            "prefix), or NATS is unreachable"
        )
    return NatsAuthError(f"cannot read desired state of {device_id!r}: {hint} ({e!r})")


async def read_desired(js: JetStreamContext, device_id: str) -> DesiredEntry | None:
    """The current desired state of ``device_id``, ``None`` if it has none (never set or
    deleted). A direct get with the key in the request subject, the one get a device may do;
    it waits at most the context's timeout (``nc.jetstream(timeout=...)``)."""
    device_id = _device_id(device_id)
    try:
        msg = await js.get_msg(DESIRED_STREAM, subject=desired_subject(device_id), direct=True)
    except NotFoundError:
        return None
    except (NatsError, TimeoutError) as e:
        raise _unavailable(device_id, e) from e
    if (msg.headers or {}).get(_KV_OPERATION) in ("DEL", "PURGE"):
        return None
    assert msg.seq is not None, "direct get replies carry Nats-Sequence"
    return DesiredEntry(device_id, msg.data or b"", msg.seq)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


async def _create_desired_consumer(
    nc: NatsConnection, device_id: str, deliver: str, *, heartbeat: float, timeout: float
) -> None:
    subject = desired_subject(device_id)
    name = f"{device_id}-{uuid.uuid4().hex[:12]}"
    config = {
        "name": name,
        "deliver_subject": deliver,
        "filter_subject": subject,
        "deliver_policy": "last_per_subject",
        "ack_policy": "none",
        "max_deliver": 1,
        "idle_heartbeat": _ns(heartbeat),
        # a device may not delete consumers: the server drops this one once no one listens
        "inactive_threshold": _ns(max(30.0, heartbeat * 6)),
        "mem_storage": True,
        "num_replicas": 1,
    }
    request = f"{JS_API}.CONSUMER.CREATE.{DESIRED_STREAM}.{name}.{subject}"
    body = json.dumps({"stream_name": DESIRED_STREAM, "config": config}).encode()
    try:
        reply = await nc.request(request, body, timeout=timeout)
    except (NatsError, TimeoutError) as e:
        raise _unavailable(device_id, e) from e
    error = json.loads(reply.data).get("error")
    if error is not None:
        raise NatsAuthError(
            f"cannot watch desired state of {device_id!r}: {error.get('description')} "
            f"(JetStream error {error.get('err_code')})"
        )


def _entry_from_push(device_id: str, msg: Msg) -> DesiredEntry:
    headers = msg.headers or {}
    deleted = headers.get(_KV_OPERATION) in ("DEL", "PURGE")
    return DesiredEntry(device_id, None if deleted else msg.data, msg.metadata.sequence.stream)


async def watch_desired(
    nc: NatsConnection, device_id: str, *, heartbeat: float = 5.0, timeout: float = 5.0
) -> AsyncIterator[DesiredEntry]:
    """Yield ``device_id``'s desired state now (if set) and on every change, forever.

    A push consumer filtered to the device's key, created with the filter in the request
    subject so the server can hold the device to it. When heartbeats stop (server restart,
    lost connection) the consumer is created again from the latest value; revisions already
    yielded are skipped, so the caller sees each change once and in order. The first creation
    failing raises :class:`NatsAuthError`; later ones are retried every ``heartbeat``.
    """
    last = 0
    first = True
    while True:
        sub = await nc.subscribe(nc.new_inbox())
        try:
            try:
                await _create_desired_consumer(
                    nc, device_id, sub.subject, heartbeat=heartbeat, timeout=timeout
                )
            except NatsAuthError:
                if first:
                    raise
                log.warning("re-creating desired-state watch failed, retrying", exc_info=True)
                await _sleep_or_closed(nc, heartbeat)
                continue
            first = False
            while True:
                try:
                    msg = await sub.next_msg(timeout=heartbeat * 3)
                except TimeoutError:
                    log.warning("desired-state watch missed heartbeats, re-creating it")
                    break
                status = (msg.headers or {}).get("Status")
                if status == "100":
                    continue  # idle heartbeat
                if status is not None:
                    log.warning("desired-state watch got status %s, re-creating it", status)
                    break
                entry = _entry_from_push(device_id, msg)
                if entry.revision > last:
                    last = entry.revision
                    yield entry
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()


async def _sleep_or_closed(nc: NatsConnection, seconds: float) -> None:
    if nc.is_closed:
        raise ConnectionClosedError
    await asyncio.sleep(seconds)


__all__ = [
    "DESIRED_STREAM",
    "DEVICE_INBOX_ROOT",
    "MODELS_STREAM",
    "DesiredEntry",
    "DeviceIdentity",
    "NatsAuthError",
    "connect_device",
    "desired_subject",
    "device_inbox_prefix",
    "device_permissions",
    "new_device_identity",
    "read_desired",
    "render_server_config",
    "watch_desired",
    "write_creds",
    "write_server_config",
]
