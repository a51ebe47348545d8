"""Design invariant 5 for the group-committed ingest: an upload answered 2xx survives a SIGKILL
of the service right after the answer. The service runs as its own uvicorn process; every
upload of a concurrent burst is answered, the process is killed at once, and a restarted one
serves every record (with its exact bytes), an intact audit chain, and one event per upload on
NATS (the outbox publishes what the killed process had not)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from linegate.auth import Role
from linegate.embedded import free_port
from tests.attestation.conftest import (
    DSSE,
    MODEL_SUBJECT,
    SLSA_V1,
    bearer,
    sign,
    slsa_predicate,
    statement,
)

BURST = 24


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "attestation.app:create_app", "--factory"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        assert proc.poll() is None, tail(log)
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the attestation service did not become ready: " + tail(log))


@pytest.mark.timeout(240)
async def test_every_answered_upload_survives_a_kill_right_after_its_answer(
    tmp_path: Path, nats_server: Any, database_settings: dict[str, Any], mint_token: Any
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from linegate.signing import public_key_pem

    env = dict(os.environ)
    env.update(
        {
            "LINEGATE_DATA_DIR": str(tmp_path / "data"),
            "LINEGATE_NATS_URL": nats_server.url,
            "LINEGATE_LOG_FORMAT": "text",
        }
    )
    if database_settings:
        env["LINEGATE_DATABASE_URL"] = database_settings["database_url"]
        env["LINEGATE_DATABASE_SCHEMA_PREFIX"] = database_settings["database_schema_prefix"]
    port, log = free_port(), tmp_path / "attestation.log"
    procurement = bearer(mint_token(Role.PROCUREMENT))
    supplier = {**bearer(mint_token(Role.SUPPLIER, tenant="acme")), "content-type": DSSE}
    key = ec.generate_private_key(ec.SECP256R1())
    bodies = [
        sign(
            key,
            statement([{**MODEL_SUBJECT[0], "name": f"model-{i}.onnx"}], SLSA_V1, slsa_predicate()),
        )
        for i in range(BURST)
    ]

    proc = serve(env, port, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await ready(http, proc, log)
            r = await http.post(
                "/v1/suppliers", json={"id": "acme", "name": "Acme"}, headers=procurement
            )
            assert r.status_code == 201, r.text
            pem = public_key_pem(key.public_key()).decode()
            r = await http.post(
                "/v1/suppliers/acme/keys", json={"public_key_pem": pem}, headers=procurement
            )
            assert r.status_code == 201, r.text
            answers = await asyncio.gather(
                *(http.post("/v1/attestations", content=b, headers=supplier) for b in bodies)
            )
            os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook, no final flush
            proc.wait(30)
        assert [a.status_code for a in answers] == [201] * BURST, [a.text for a in answers]
        accepted = {a.json()["id"]: body for a, body in zip(answers, bodies, strict=True)}

        proc = serve(env, port, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await ready(http, proc, log)
            for attestation_id, body in accepted.items():
                r = await http.get(f"/v1/attestations/{attestation_id}", headers=procurement)
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "verified"
                raw = await http.get(f"/v1/attestations/{attestation_id}/raw", headers=procurement)
                assert raw.content == body
            auditor = bearer(mint_token(Role.AUDITOR))
            verify = (await http.get("/v1/audit/verify", headers=auditor)).json()
            assert verify["ok"] is True, verify
            entries = (await http.get("/v1/audit/entries", headers=auditor)).json()
            items = entries["items"] if isinstance(entries, dict) else entries
            recorded = {e["subject"] for e in items if e["action"] == "attestation.verified"}
            assert recorded == set(accepted)

            # One verified event per upload reaches NATS, published by whichever process
            # got to the outbox row (JetStream drops a republished duplicate by its id).
            nc = await nats.connect(nats_server.url)
            try:
                js = nc.jetstream(timeout=10)
                sub = await js.pull_subscribe("linegate.attestation.verified", durable="crash")
                seen: set[str] = set()
                for _ in range(100):
                    try:
                        msgs = await sub.fetch(BURST, timeout=1)
                    except TimeoutError:
                        msgs = []
                    for m in msgs:
                        seen.add(m.data.decode())
                        await m.ack()
                    ids = {i for i in accepted if any(i in s for s in seen)}
                    if ids == set(accepted):
                        break
                assert ids == set(accepted)
                assert len(seen) == BURST
            finally:
                await nc.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
