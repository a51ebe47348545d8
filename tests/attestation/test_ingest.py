"""Group-committed ingest and the trust cache: durability, chaining, idempotency and
revocation across processes, on a real database with real signatures."""

import asyncio
import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, func, select

from attestation.app import create_app
from attestation.ingest import Ingestor, Upload, time_ordered_id
from attestation.models import Attestation, AttestationSubject
from attestation.settings import AttestationSettings
from linegate.audit import verify_log
from linegate.auth import Principal, Role
from linegate.errors import ServiceUnavailable
from linegate.events import Streams
from linegate.outbox import _PENDING_LOCKED, OutboxMessage, OutboxRelay, _mark_sent, _pending

from .conftest import DSSE, SLSA_V1, TESTDATA, Stack, sign, slsa_predicate, statement

CYCLONEDX = "application/vnd.cyclonedx+json"


def _envelope(key, i: int) -> bytes:
    digest = hashlib.sha256(f"model-{i}".encode()).hexdigest()
    subject = [{"name": f"model-{i}.onnx", "digest": {"sha256": digest}}]
    return sign(key, statement(subject, SLSA_V1, slsa_predicate()))


def _supplier(tenant: str) -> Principal:
    return Principal(f"ci@{tenant}", frozenset({Role.SUPPLIER}), tenant=tenant)


async def _warm(ingestor: Ingestor) -> None:
    await ingestor.trust.get(ingestor.db)


@pytest.fixture
def record_batches(monkeypatch):
    """The size of every batch the writer records."""
    sizes: list[int] = []
    original = Ingestor._record

    async def spy(self, batch):
        sizes.append(len(batch))
        return await original(self, batch)

    monkeypatch.setattr(Ingestor, "_record", spy)
    return sizes


async def test_concurrent_uploads_share_one_commit_and_each_is_durable_and_chained(
    stack, record_batches
):
    key = await stack.onboard("optivision")
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    bodies = [_envelope(key, i) for i in range(40)]
    results = await asyncio.gather(
        *(
            ingestor.ingest(
                Upload(DSSE, b), supplier_id="optivision", actor=_supplier("optivision")
            )
            for b in bodies
        )
    )
    assert record_batches == [40]  # all were queued before the writer ran: one transaction
    assert all(r.created and r.attestation.status == "verified" for r in results)
    # Operators see the same in the batch-size histogram: one commit of 40 (32 < 40 <= 64).
    metrics = (await stack.client.get("/metrics")).text
    name = "linegate_attestation_ingest_batch_uploads"
    assert f"{name}_count 1.0" in metrics, metrics
    assert f"{name}_sum 40.0" in metrics
    assert f'{name}_bucket{{le="32.0"}} 0.0' in metrics
    assert f'{name}_bucket{{le="64.0"}} 1.0' in metrics
    ids = {r.attestation.id for r in results}
    assert len(ids) == 40

    ctx = stack.app.state.ctx
    async with ctx.db.session() as session:
        stored = (await session.exec(select(Attestation.id))).all()
        subjects = (await session.exec(select(func.count()).select_from(AttestationSubject))).one()
        events = (
            await session.exec(
                select(OutboxMessage.body).where(
                    OutboxMessage.subject == "linegate.attestation.verified"
                )
            )
        ).all()
        report = await verify_log(session, [ctx.audit.public_key], service="attestation")
    assert set(stored) == ids
    assert subjects == 40
    assert {json.loads(e)["attestation_id"] for e in events} == ids
    assert report.ok, report.errors
    # Each upload has its own entry, chained in order after the onboarding entries.
    audited = await stack.client.get(
        "/v1/audit/entries?limit=1000", headers=stack.token(Role.AUDITOR)
    )
    uploads = [e for e in audited.json() if e["action"] == "attestation.verified"]
    assert {e["subject"] for e in uploads} == ids
    seqs = [e["seq"] for e in audited.json()]
    assert seqs == list(range(1, len(seqs) + 1))
    for i, body in enumerate(bodies):
        raw = await stack.client.get(
            f"/v1/attestations/{results[i].attestation.id}/raw", headers=stack.token(Role.AUDITOR)
        )
        assert raw.content == body


async def test_the_relay_publishes_a_group_once_each_in_the_order_of_the_audit_chain(
    stack, record_batches
):
    key = await stack.onboard("optivision")
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    results = await asyncio.gather(
        *(
            ingestor.ingest(
                Upload(DSSE, _envelope(key, i)),
                supplier_id="optivision",
                actor=_supplier("optivision"),
            )
            for i in range(60)
        )
    )
    assert record_batches == [60]
    ctx = stack.app.state.ctx
    # The woken relay may be publishing the rows; flush (after it: a relay's flushes run one
    # at a time) until every row is marked sent.
    for _ in range(200):
        await ctx.outbox.flush()
        async with ctx.db.session() as session:
            unsent = (
                await session.exec(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(col(OutboxMessage.sent_at).is_(None))
                )
            ).one()
        if unsent == 0:
            break
        await asyncio.sleep(0.05)
    assert unsent == 0
    audited = await stack.client.get(
        "/v1/audit/entries?limit=1000", headers=stack.token(Role.AUDITOR)
    )
    chain_order = [e["subject"] for e in audited.json() if e["action"] == "attestation.verified"]
    assert set(chain_order) == {r.attestation.id for r in results}
    js = ctx.nats.nc.jetstream()
    sub = await js.pull_subscribe("linegate.attestation.verified", durable="order")
    published: list[str] = []
    while len(published) < 60:
        for m in await sub.fetch(60 - len(published), timeout=5):
            published.append(json.loads(m.data)["attestation_id"])
            await m.ack()
    assert published == chain_order  # each once, in the order they were recorded


@pytest.mark.postgres
async def test_a_second_relay_waits_for_the_rows_another_holds_and_keeps_the_order(stack):
    """Another replica's relay holds the oldest pending rows (locked, mid-publish) while this
    one flushes: it must wait and publish after them, not skip ahead of them."""
    ctx = stack.app.state.ctx
    if ctx.db.is_sqlite:
        pytest.skip("SQLite's flush takes no row locks (every relay starts from the oldest row)")
    key = await stack.onboard("optivision")
    await ctx.outbox.flush()  # the onboarding events
    await ctx.outbox.stop()  # no woken flush of its own: this test runs each one
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    await asyncio.gather(
        *(
            ingestor.ingest(
                Upload(DSSE, _envelope(key, i)),
                supplier_id="optivision",
                actor=_supplier("optivision"),
            )
            for i in range(20)
        )
    )
    async with ctx.db.session() as session:
        order = (
            await session.exec(
                select(OutboxMessage.event_id)
                .where(col(OutboxMessage.sent_at).is_(None))
                .order_by(col(OutboxMessage.id))
            )
        ).all()
    assert len(order) == 20

    other = OutboxRelay(ctx.db, ctx.nats)
    async with ctx.db.session() as session:
        held = await _pending(session, _PENDING_LOCKED, 5)  # the other replica's batch
        flushing = asyncio.create_task(ctx.outbox.flush())
        await asyncio.sleep(0.5)  # ample for a flush that skipped the held rows to publish
        early = [e for e in await _stream_event_ids(ctx) if e in order]
        await _mark_sent(session, await other._publish(held))
    assert await flushing == 15
    assert early == []  # nothing was published past the held rows
    assert [e for e in await _stream_event_ids(ctx) if e in order] == order


async def _stream_event_ids(ctx) -> list[str]:
    """Every event in the attestation stream, in stream order (their Nats-Msg-Id)."""
    js = ctx.nats.nc.jetstream()
    info = await js.stream_info(Streams.ATTESTATION.name)
    if info.state.messages == 0:
        return []
    return [
        (await js.get_msg(Streams.ATTESTATION.name, seq)).headers["Nats-Msg-Id"]
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def test_the_relay_deletes_rows_sent_before_the_retention_and_never_a_pending_one(stack):
    key = await stack.onboard("optivision")
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    for i in range(3):
        await ingestor.ingest(
            Upload(DSSE, _envelope(key, i)), supplier_id="optivision", actor=_supplier("optivision")
        )
    ctx = stack.app.state.ctx
    relay = ctx.outbox
    assert relay.retention == timedelta(hours=24)  # LINEGATE_OUTBOX_RETENTION_HOURS
    for _ in range(200):
        await relay.flush()
        async with ctx.db.session() as session:
            rows = (await session.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        if all(r.sent_at is not None for r in rows):
            break
        await asyncio.sleep(0.05)
    ids = [r.id for r in rows]
    assert len(ids) >= 3  # the three uploads' events, and any of the onboarding
    await relay.stop()  # the test drives the relay from here (stop publishes what is pending)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    async with ctx.db.session() as session:
        earlier = col(OutboxMessage.id).in_(ids[:-1])
        for r in (await session.exec(select(OutboxMessage).where(earlier))).all():
            r.sent_at = long_ago
            session.add(r)
        # A row the relay could not publish for days (NATS down): pending, never deleted.
        session.add(
            OutboxMessage(
                event_id=uuid.uuid4().hex,
                subject="linegate.attestation.verified",
                event_type="AttestationVerifiedV1",
                body="{}",
                created_at=long_ago,
            )
        )
    assert await relay.prune() == len(ids) - 1
    async with ctx.db.session() as session:
        left = (await session.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    assert len(left) == 2
    assert left[0].id == ids[-1]  # sent within the retention: kept
    assert left[1].sent_at is None  # the pending one
    relay.retention = None  # LINEGATE_OUTBOX_RETENTION_HOURS=0: sent rows are kept for ever
    assert await relay.prune() == 0


async def test_the_same_bytes_twice_in_one_batch_make_one_record(stack, record_batches):
    key = await stack.onboard("optivision")
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    body = _envelope(key, 1)
    first, second = await asyncio.gather(
        *(
            ingestor.ingest(
                Upload(DSSE, body), supplier_id="optivision", actor=_supplier("optivision")
            )
            for _ in range(2)
        )
    )
    assert record_batches == [2]
    assert (first.created, second.created) == (True, False)
    assert second.attestation.id == first.attestation.id
    listed = await stack.client.get("/v1/attestations", headers=stack.token(Role.PROCUREMENT))
    assert [a["id"] for a in listed.json()["items"]] == [first.attestation.id]


async def test_two_suppliers_uploading_the_same_sbom_in_one_batch_share_its_bytes(
    stack, record_batches
):
    await stack.onboard("optivision", key=False)
    await stack.onboard("acme", key=False)
    ingestor: Ingestor = stack.app.state.ingestor
    # Both inline and without the pre-check (this SBOM is larger than the defaults), so the
    # two uploads are queued together.
    ingestor.limits = dataclasses.replace(
        ingestor.limits, inline_verify_max_bytes=1 << 24, duplicate_precheck_min_bytes=1 << 24
    )
    await _warm(ingestor)
    sbom = (TESTDATA / "cyclonedx" / "valid-machine-learning-1.6.json").read_bytes()
    a, b = await asyncio.gather(
        ingestor.ingest(
            Upload(CYCLONEDX, sbom), supplier_id="optivision", actor=_supplier("optivision")
        ),
        ingestor.ingest(Upload(CYCLONEDX, sbom), supplier_id="acme", actor=_supplier("acme")),
    )
    assert record_batches == [2]
    assert a.created
    assert b.created
    assert a.attestation.id != b.attestation.id
    for tenant, result in (("optivision", a), ("acme", b)):
        raw = await stack.client.get(
            f"/v1/attestations/{result.attestation.id}/raw",
            headers=stack.token(Role.SUPPLIER, tenant=tenant),
        )
        assert raw.content == sbom
    # Tenancy still holds for the shared bytes: each sees only its own record.
    other = await stack.client.get(
        f"/v1/attestations/{b.attestation.id}",
        headers=stack.token(Role.SUPPLIER, tenant="optivision"),
    )
    assert other.status_code == 404


async def test_a_key_revoked_through_another_process_is_refused_at_once(
    settings_factory, service_client, mint_token
):
    """Two app instances on one database stand for two workers or replicas: the second has
    verified with its cached trust material before the first revokes the key."""
    roots = [TESTDATA / "sigstore" / "trusted_root.production.json"]
    # Like two processes on one SQLite file: each waits for the other's lock off its loop.
    settings = settings_factory(
        AttestationSettings, sigstore_trusted_roots=roots, database_sqlite_inline=False
    )
    app_a, app_b = create_app(settings), create_app(settings)
    async with service_client(app_a) as client_a, service_client(app_b) as client_b:
        a = Stack(client=client_a, app=app_a, mint=mint_token)
        b = Stack(client=client_b, app=app_b, mint=mint_token)
        key = await a.onboard("optivision")
        warm = await b.upload("optivision", _envelope(key, 0))
        assert warm.status_code == 201, warm.text  # b's cache now holds the key as active
        keys = (
            await a.client.get("/v1/suppliers/optivision/keys", headers=a.token(Role.PROCUREMENT))
        ).json()
        revoke = await a.client.post(
            f"/v1/suppliers/optivision/keys/{keys[0]['key_id']}/revoke",
            json={"reason": "laptop stolen"},
            headers=a.token(Role.PROCUREMENT),
        )
        assert revoke.status_code == 200
        r = await b.upload("optivision", _envelope(key, 1))
        assert r.status_code == 422, r.text
        assert "revoked" in r.json()["detail"]
        assert "laptop stolen" in r.json()["detail"]
        stored = await b.client.get(
            f"/v1/attestations/{r.json()['id']}", headers=b.token(Role.AUDITOR)
        )
        assert stored.json()["status"] == "rejected"
        # And a key trusted through the other process verifies at once too.
        new_key = await _add_key(a, "optivision")
        ok = await b.upload("optivision", _envelope(new_key, 2))
        assert ok.status_code == 201, ok.text


async def _add_key(stack: Stack, supplier_id: str):
    from cryptography.hazmat.primitives.asymmetric import ec

    from linegate.signing import public_key_pem

    private = ec.generate_private_key(ec.SECP256R1())
    r = await stack.client.post(
        f"/v1/suppliers/{supplier_id}/keys",
        json={"public_key_pem": public_key_pem(private.public_key()).decode()},
        headers=stack.token(Role.PROCUREMENT),
    )
    assert r.status_code == 201, r.text
    return private


async def test_a_supplier_onboarded_through_another_process_can_upload(
    settings_factory, service_client, mint_token
):
    settings = settings_factory(AttestationSettings, database_sqlite_inline=False)
    app_a, app_b = create_app(settings), create_app(settings)
    async with service_client(app_a) as client_a, service_client(app_b) as client_b:
        a = Stack(client=client_a, app=app_a, mint=mint_token)
        b = Stack(client=client_b, app=app_b, mint=mint_token)
        await a.onboard("optivision")
        key = await a.onboard("acme")
        assert (await b.upload("acme", _envelope(key, 0))).status_code == 201
        never = await b.upload("nobody", _envelope(key, 0))
        assert never.status_code == 404


async def test_stopping_records_what_is_queued_then_refuses(stack):
    key = await stack.onboard("optivision")
    ingestor: Ingestor = stack.app.state.ingestor
    await _warm(ingestor)
    tasks = [
        asyncio.create_task(
            ingestor.ingest(
                Upload(DSSE, _envelope(key, i)),
                supplier_id="optivision",
                actor=_supplier("optivision"),
            )
        )
        for i in range(5)
    ]
    await asyncio.sleep(0)  # each task verifies and queues its upload
    await ingestor.stop()
    results = await asyncio.gather(*tasks)
    assert all(r.created for r in results)
    with pytest.raises(ServiceUnavailable):
        await ingestor.ingest(
            Upload(DSSE, _envelope(key, 9)), supplier_id="optivision", actor=_supplier("optivision")
        )
    await ingestor.start()  # the fixture's shutdown stops it again
    async with stack.app.state.ctx.db.session() as session:
        stored = (await session.exec(select(func.count()).select_from(Attestation))).one()
    assert stored == 5


async def test_large_uploads_are_verified_off_the_loop_and_found_before_verification(
    settings_factory, service_client, mint_token
):
    # Thresholds at zero: every upload takes the worker-thread and pre-check paths.
    settings = settings_factory(
        AttestationSettings,
        attestation_inline_verify_max_bytes=0,
        attestation_duplicate_precheck_min_bytes=0,
    )
    app = create_app(settings)
    async with service_client(app) as client:
        stack = Stack(client=client, app=app, mint=mint_token)
        key = await stack.onboard("optivision")
        body = _envelope(key, 0)
        first = await stack.upload("optivision", body)
        again = await stack.upload("optivision", body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        tampered = json.loads(body)
        tampered["signatures"][0]["sig"] = tampered["signatures"][0]["sig"][::-1]
        bad = await stack.upload("optivision", json.dumps(tampered).encode())
        assert bad.status_code in (400, 422)
        assert bad.json()["id"]


def test_record_ids_are_uuid7_hex_in_creation_order():
    ids = [time_ordered_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value  # the same 32-hex-digit form as uuid4().hex
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    # Ids of different milliseconds sort as created (within one, they are random).
    millis = [int(value[:12], 16) for value in ids]
    assert millis == sorted(millis)
