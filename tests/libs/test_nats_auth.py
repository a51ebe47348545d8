"""Per-device NATS credentials against a real nats-server running the generated config.

Every denial is asserted twice: the operation fails (timeout, error reply or no data) and the
server reported a permissions violation naming the exact subject, so a test cannot pass
because something merely went wrong.
"""

import asyncio
import hashlib
import io
import json
import stat
from dataclasses import dataclass, field

import nats
import nkeys
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig
from pydantic import ValidationError

from linegate.embedded import NatsServer
from linegate.events import DeviceStatusV1, Streams, ensure_stream
from linegate.nats_auth import (
    DesiredEntry,
    NatsAuthError,
    connect_device,
    device_inbox_prefix,
    device_permissions,
    new_device_identity,
    read_desired,
    render_server_config,
    watch_desired,
    write_creds,
    write_server_config,
)
from linegate.objstore import download

SERVICE_USER = "linegate"
SERVICE_PASSWORD = "s3rvice-password-for-tests"
MODEL = b"onnx-bytes " * 20_000  # > one 128 KiB chunk, so chunks stream through a consumer
DENIED_WAIT = 1.0  # seconds a device waits for a reply the server will never send


# ------------------------------------------------------------------------- config, offline


def test_device_permissions_are_its_own_subjects_key_and_read_only_models():
    perms = device_permissions("dev-a", line="l3")
    assert perms["subscribe"] == {"allow": ["_INBOX.device.dev-a.>"]}
    assert perms["publish"] == {
        "allow": [
            "linegate.device.dev-a.status",
            "linegate.telemetry.l3.dev-a",
            "$JS.API.STREAM.INFO.KV_desired",
            "$JS.API.DIRECT.GET.KV_desired.$KV.desired.dev-a",
            "$JS.API.CONSUMER.CREATE.KV_desired.*.$KV.desired.dev-a",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.INFO.OBJ_models",
            "$JS.API.STREAM.MSG.GET.OBJ_models",
            "$JS.API.DIRECT.GET.OBJ_models",
            "$JS.API.DIRECT.GET.OBJ_models.>",
            "$JS.API.CONSUMER.CREATE.OBJ_models",
            "$JS.API.CONSUMER.CREATE.OBJ_models.>",
            "$JS.API.CONSUMER.MSG.NEXT.OBJ_models.*",
            "$JS.API.CONSUMER.DELETE.OBJ_models.*",
            "$JS.FC.OBJ_models.>",
        ]
    }
    assert "deny" not in perms["publish"]  # an allow list denies everything else


def test_without_a_line_telemetry_is_still_pinned_to_the_device():
    assert "linegate.telemetry.*.dev-a" in device_permissions("dev-a")["publish"]["allow"]


@pytest.mark.parametrize("bad", ["", "dev.a", "dev-*", "dev->", "dev a", "x" * 65])
def test_device_ids_that_are_not_one_subject_token_are_refused(bad):
    with pytest.raises(NatsAuthError, match=r"\[A-Za-z0-9_-\]"):
        device_permissions(bad)
    with pytest.raises(NatsAuthError):
        new_device_identity(bad)


def test_identity_is_an_nkey_user_and_the_seed_stays_out_of_repr(tmp_path):
    dev = new_device_identity("dev-a")
    assert dev.public_nkey.startswith("U")
    assert len(dev.public_nkey) == 56
    assert dev.seed.startswith(b"SU")
    assert nkeys.from_seed(bytearray(dev.seed)).public_key.decode() == dev.public_nkey
    assert dev.seed.decode() not in repr(dev)
    assert new_device_identity("dev-a").public_nkey != dev.public_nkey

    path = tmp_path / "creds" / "dev-a.nk"
    write_creds(path, dev)
    assert path.read_bytes() == dev.seed + b"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _config(**overrides):
    dev = new_device_identity("dev-a")
    kwargs = {
        "devices": [(dev.device_id, dev.public_nkey)],
        "service_user": SERVICE_USER,
        "service_password": SERVICE_PASSWORD,
    } | overrides
    return render_server_config(**kwargs)


def test_render_refuses_inventories_that_would_weaken_isolation():
    a, b = new_device_identity("dev-a"), new_device_identity("dev-b")
    with pytest.raises(NatsAuthError, match="never the seed"):
        _config(devices=[("dev-a", a.seed.decode())])
    broken = a.public_nkey[:-1] + ("A" if a.public_nkey[-1] != "A" else "B")
    with pytest.raises(NatsAuthError, match=r"checksum|base32"):
        _config(devices=[("dev-a", broken)])
    with pytest.raises(NatsAuthError, match="listed twice"):
        _config(devices=[("dev-a", a.public_nkey), ("dev-a", b.public_nkey)])
    with pytest.raises(NatsAuthError, match="reuses another device's nkey"):
        _config(devices=[("dev-a", a.public_nkey), ("dev-b", a.public_nkey)])
    with pytest.raises(NatsAuthError, match="token_urlsafe"):
        _config(service_password="short")
    with pytest.raises(NatsAuthError, match="no dots"):
        _config(devices=[("dev.a", a.public_nkey)])


def test_render_writes_jetstream_dir_and_extra_text(tmp_path):
    text = _config(jetstream_dir=tmp_path / "js", extra="max_payload: 1MB")
    assert f'jetstream {{"store_dir": "{tmp_path / "js"}"}}' in text
    assert text.rstrip().endswith("max_payload: 1MB")
    path = tmp_path / "nats.conf"
    write_server_config(path, text)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ------------------------------------------------------------------- a real secured server


@dataclass
class Device:
    """One device connection plus every asynchronous error the server sent it."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    @property
    def js(self):
        return self.nc.jetstream(timeout=DENIED_WAIT)

    async def violation(self, kind, subject, *, prefix=False):
        """Wait until the server reports a violation for ``subject`` (``kind`` is publish or
        subscription); with ``prefix``, for a subject starting with it."""
        expected = f'permissions violation for {kind} to "{subject}'.lower()
        if not prefix:
            expected += '"'
        for _ in range(40):
            if any(expected in e.lower() for e in self.errors):
                assert self.nc.is_connected  # a violation does not cost the connection
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"no violation {expected!r}; errors: {self.errors}")


@pytest.fixture
def identities():
    return {d: new_device_identity(d) for d in ("dev-a", "dev-b")}


@pytest.fixture
def secured_nats(tmp_path, identities):
    text = render_server_config(
        devices=[(i.device_id, i.public_nkey) for i in identities.values()],
        service_user=SERVICE_USER,
        service_password=SERVICE_PASSWORD,
        lines={"dev-a": "l3"},
    )
    write_server_config(tmp_path / "nats.conf", text)
    for identity in identities.values():
        write_creds(tmp_path / f"{identity.device_id}.nk", identity)
    server = NatsServer(tmp_path / "nats", config_file=tmp_path / "nats.conf").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def service(secured_nats):
    """The gateway's view: full access; seeds desired state, a model and the device streams."""
    nc = await nats.connect(secured_nats.url, user=SERVICE_USER, password=SERVICE_PASSWORD)
    js = nc.jetstream(timeout=5)
    for spec in (Streams.DEVICE, Streams.TELEMETRY):
        await ensure_stream(js, spec)
    kv = await js.create_key_value(KeyValueConfig(bucket="desired", direct=True))
    await kv.put("dev-a", b"weld-seam-inspector@2.1.0")
    await kv.put("dev-b", b"weld-seam-inspector@2.0.4")
    models = await js.create_object_store("models")
    await models.put("sha256-abc", MODEL)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def connect_as(secured_nats, service, tmp_path):
    opened = []

    async def connect(device_id, **options):
        device = Device(nc=None)

        async def on_error(e):
            device.errors.append(str(e))

        device.nc = await connect_device(
            secured_nats.url,
            tmp_path / f"{device_id}.nk",
            device_id=device_id,
            **({"error_cb": on_error, "allow_reconnect": False} | options),
        )
        opened.append(device.nc)
        return device

    yield connect
    for nc in opened:
        await nc.close()


async def test_a_device_without_a_listed_key_cannot_connect(secured_nats, tmp_path):
    write_creds(tmp_path / "rogue.nk", new_device_identity("dev-a"))  # right id, wrong key
    with pytest.raises(nats.errors.Error, match=r"[Aa]uthorization"):
        await connect_device(
            secured_nats.url, tmp_path / "rogue.nk", device_id="dev-a", allow_reconnect=False
        )
    with pytest.raises(NatsAuthError, match="write_creds"):
        await connect_device(secured_nats.url, tmp_path / "absent.nk", device_id="dev-a")


async def test_a_device_reads_its_own_desired_state(connect_as):
    dev = await connect_as("dev-a")
    entry = await read_desired(dev.js, "dev-a")
    assert entry == DesiredEntry("dev-a", b"weld-seam-inspector@2.1.0", 1)
    # stock nats-py works too, because the bucket allows direct get
    kv = await dev.js.key_value("desired")
    assert (await kv.get("dev-a")).value == b"weld-seam-inspector@2.1.0"
    assert dev.errors == []


async def test_a_device_watches_only_its_own_key(connect_as, service):
    dev = await connect_as("dev-a")
    kv = await service.jetstream().key_value("desired")
    watch = watch_desired(dev.nc, "dev-a", heartbeat=0.5)
    try:
        first = await asyncio.wait_for(anext(watch), 2)
        assert first.value == b"weld-seam-inspector@2.1.0"
        await kv.put("dev-b", b"weld-seam-inspector@9.9.9")  # another device's change
        await kv.put("dev-a", b"weld-seam-inspector@2.1.1")
        second = await asyncio.wait_for(anext(watch), 2)
        assert (second.value, second.revision) == (b"weld-seam-inspector@2.1.1", 4)
        await kv.delete("dev-a")
        assert (await asyncio.wait_for(anext(watch), 2)).value is None
    finally:
        await watch.aclose()
    assert await read_desired(dev.js, "dev-a") is None  # deleted reads as "no desired state"
    assert dev.errors == []


async def test_a_watch_resumes_after_a_server_restart(connect_as, secured_nats):
    dev = await connect_as("dev-a", allow_reconnect=True, reconnect_time_wait=0.1)
    watch = watch_desired(dev.nc, "dev-a", heartbeat=0.3)
    try:
        assert (await asyncio.wait_for(anext(watch), 2)).revision == 1
        secured_nats.stop()  # drops the in-memory consumer with it
        secured_nats.start()
        gateway = await nats.connect(secured_nats.url, user=SERVICE_USER, password=SERVICE_PASSWORD)
        try:
            kv = await gateway.jetstream().key_value("desired")
            await kv.put("dev-a", b"weld-seam-inspector@2.1.2")
        finally:
            await gateway.close()
        entry = await asyncio.wait_for(anext(watch), 5)
        assert (entry.value, entry.revision) == (b"weld-seam-inspector@2.1.2", 3)
    finally:
        await watch.aclose()


async def test_a_device_cannot_get_another_devices_key(connect_as):
    dev = await connect_as("dev-a")
    other = "$JS.API.DIRECT.GET.KV_desired.$KV.desired.dev-b"
    with pytest.raises(NatsAuthError, match="denies this device that key"):
        await read_desired(dev.js, "dev-b")
    await dev.violation("publish", other)

    kv = await dev.js.key_value("desired")
    with pytest.raises(NatsTimeoutError):
        await kv.get("dev-b")
    # a wildcard key or a body that names another key does not get past the subject pin
    with pytest.raises(NatsTimeoutError):
        await dev.nc.request("$JS.API.DIRECT.GET.KV_desired.$KV.desired.*", b"", DENIED_WAIT)
    await dev.violation("publish", "$JS.API.DIRECT.GET.KV_desired.$KV.desired.*")
    reply = await dev.nc.request(
        "$JS.API.DIRECT.GET.KV_desired.$KV.desired.dev-a",
        json.dumps({"last_by_subj": "$KV.desired.dev-b"}).encode(),
        DENIED_WAIT,
    )
    assert reply.headers["Status"] == "408"
    assert reply.data == b""


async def test_a_device_cannot_watch_another_devices_key(connect_as):
    dev = await connect_as("dev-a")
    with pytest.raises(NatsAuthError, match="denies this device that key"):
        await anext(watch_desired(dev.nc, "dev-b", timeout=DENIED_WAIT))
    await dev.violation("publish", "$JS.API.CONSUMER.CREATE.KV_desired.dev-b-", prefix=True)

    # the permitted subject with another filter in the body: the server refuses the mismatch
    inbox = dev.nc.new_inbox()
    sub = await dev.nc.subscribe(inbox)
    for config in (
        {"filter_subject": "$KV.desired.dev-b"},
        {"filter_subject": "$KV.desired.>"},
        {},
        {"filter_subjects": ["$KV.desired.dev-a", "$KV.desired.dev-b"]},
    ):
        reply = await dev.nc.request(
            "$JS.API.CONSUMER.CREATE.KV_desired.sneaky.$KV.desired.dev-a",
            json.dumps(
                {
                    "stream_name": "KV_desired",
                    "config": {"name": "sneaky", "deliver_subject": inbox, **config},
                }
            ).encode(),
            DENIED_WAIT,
        )
        assert json.loads(reply.data)["error"]["err_code"] in (10131, 10137), config
    with pytest.raises(NatsTimeoutError):
        await sub.next_msg(timeout=0.3)  # nothing was delivered

    # nats-py's own watch uses the unfiltered create subject, so it is denied even for dev-a
    kv = await dev.js.key_value("desired")
    with pytest.raises(NatsTimeoutError):
        await kv.watch("dev-a")
    await dev.violation("publish", "$JS.API.CONSUMER.CREATE.KV_desired")


async def test_a_device_reads_models_but_cannot_write_them(connect_as, service):
    dev = await connect_as("dev-a")
    models = await dev.js.object_store("models")
    assert (await models.get_info("sha256-abc")).size == len(MODEL)
    assert (await models.get("sha256-abc")).data == MODEL
    sink = io.BytesIO()
    await models.get("sha256-abc", writeinto=sink)
    assert sink.getvalue() == MODEL
    assert [o.name for o in await models.list()] == ["sha256-abc"]
    assert dev.errors == []

    with pytest.raises(NatsTimeoutError):
        await models.put("sha256-evil", b"tampered")
    await dev.violation("publish", "$O.models.C.", prefix=True)
    with pytest.raises(NatsTimeoutError):
        await models.delete("sha256-abc")
    await dev.violation("publish", "$JS.API.STREAM.PURGE.OBJ_models")
    served = await service.jetstream().object_store("models")
    assert (await served.get("sha256-abc")).data == MODEL
    assert [o.name for o in await served.list()] == ["sha256-abc"]


async def test_the_agents_resumable_download_works_within_the_device_permissions(
    connect_as, tmp_path
):
    dev = await connect_as("dev-a")
    digest = hashlib.sha256(MODEL).hexdigest()
    dest = tmp_path / "agent" / "model.onnx"
    await download(
        dev.nc.jetstream(timeout=5),
        "models",
        "sha256-abc",
        dest,
        expected_size=len(MODEL),
        expected_sha256=digest,
        timeout=5,
    )
    assert dest.read_bytes() == MODEL
    assert dev.errors == []


async def test_a_device_publishes_its_own_status_and_telemetry_only(connect_as, service):
    dev = await connect_as("dev-a")
    seen = await service.subscribe("linegate.device.*.status")
    await service.flush()
    status = DeviceStatusV1(device_id="dev-a", state="online").model_dump_json().encode()

    ack = await dev.js.publish("linegate.device.dev-a.status", status)
    assert ack.stream == "LINEGATE_DEVICE"
    await dev.nc.publish("linegate.device.dev-a.status", status)  # core NATS too
    assert (await dev.js.publish("linegate.telemetry.l3.dev-a", b"{}")).stream == (
        "LINEGATE_TELEMETRY"
    )
    for _ in range(2):
        assert (await seen.next_msg(timeout=2)).subject == "linegate.device.dev-a.status"

    with pytest.raises(NatsTimeoutError):
        await dev.js.publish("linegate.device.dev-b.status", status)
    await dev.violation("publish", "linegate.device.dev-b.status")
    with pytest.raises(NatsTimeoutError):
        await dev.js.publish("linegate.telemetry.l4.dev-a", b"{}")  # not its line
    await dev.violation("publish", "linegate.telemetry.l4.dev-a")
    with pytest.raises(NatsTimeoutError):
        await seen.next_msg(timeout=0.3)
    info = await service.jetstream().stream_info("LINEGATE_DEVICE")
    assert info.state.messages == 2  # the JetStream and the core publish, nothing as dev-b


async def test_a_device_cannot_write_desired_state(connect_as, service):
    dev = await connect_as("dev-a")
    kv = await dev.js.key_value("desired")
    with pytest.raises(NatsTimeoutError):
        await kv.put("dev-a", b"evil@0.0.1")
    await dev.violation("publish", "$KV.desired.dev-a")
    served = await service.jetstream().key_value("desired")
    assert (await served.get("dev-a")).value == b"weld-seam-inspector@2.1.0"


@pytest.mark.parametrize(
    "subject",
    ["linegate.device.>", "linegate.device.dev-b.status", "$KV.desired.dev-b", "_INBOX.>"],
)
async def test_a_device_cannot_listen_to_others(connect_as, service, subject):
    dev = await connect_as("dev-a")
    sub = await dev.nc.subscribe(subject)
    await dev.violation("subscription", subject)
    await service.publish("linegate.device.dev-b.status", b"{}")
    kv = await service.jetstream().key_value("desired")
    await kv.put("dev-b", b"weld-seam-inspector@2.0.5")  # $KV subject + a pub ack on _INBOX
    with pytest.raises(NatsTimeoutError):
        await sub.next_msg(timeout=0.3)


async def test_a_device_cannot_create_consumers_or_manage_streams(connect_as):
    dev = await connect_as("dev-a")
    with pytest.raises(NatsTimeoutError):
        await dev.js.subscribe("linegate.device.>", stream="LINEGATE_DEVICE")
    await dev.violation("publish", "$JS.API.CONSUMER.CREATE.LINEGATE_DEVICE")
    with pytest.raises(NatsTimeoutError):
        await dev.js.add_consumer("LINEGATE_TELEMETRY", durable_name="spy")
    await dev.violation("publish", "$JS.API.CONSUMER.DURABLE.CREATE.LINEGATE_TELEMETRY.spy")
    with pytest.raises(NatsTimeoutError):
        await dev.js.delete_stream("KV_desired")
    await dev.violation("publish", "$JS.API.STREAM.DELETE.KV_desired")


async def test_a_device_that_ignores_its_inbox_prefix_gets_no_replies(
    secured_nats, service, tmp_path
):
    errors = []

    async def on_error(e):
        errors.append(str(e).lower())

    nc = await nats.connect(
        secured_nats.url,
        nkeys_seed=str(tmp_path / "dev-a.nk"),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        with pytest.raises(NatsTimeoutError):
            await nc.request("$JS.API.DIRECT.GET.KV_desired.$KV.desired.dev-a", b"", 0.5)
        assert any('subscription to "_inbox.' in e for e in errors), errors
        assert device_inbox_prefix("dev-a") == "_INBOX.device.dev-a"
    finally:
        await nc.close()


async def test_reply_subjects_are_not_authorised_by_nats(connect_as, service):
    """Documents the NATS limit in the module docstring: a device can aim a server reply at a
    subject it may not publish to. The bytes are the server's, so payload validation holds."""
    dev = await connect_as("dev-a")
    seen = await service.subscribe("linegate.device.dev-b.status")
    await service.flush()
    await dev.nc.publish(
        "linegate.device.dev-a.status", b"{}", reply="linegate.device.dev-b.status"
    )
    reflected = await seen.next_msg(timeout=2)
    assert reflected.subject == "linegate.device.dev-b.status"
    assert json.loads(reflected.data) == {"stream": "LINEGATE_DEVICE", "seq": 1}
    with pytest.raises(ValidationError):
        DeviceStatusV1.model_validate_json(reflected.data)
