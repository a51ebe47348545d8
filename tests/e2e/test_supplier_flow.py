"""A supplier's CI, end to end over real HTTP: credentials from procurement, `linegate attest`
signs with the supplier's key, uploads with the client-credentials grant, and the evidence is
found by digest; `linegate attest verify` checks the same envelope offline."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.app import create_app
from attestation.settings import AttestationSettings
from linegate.auth import Role, TokenIssuer
from linegate.embedded import free_port
from linegate.signing import private_key_pem, public_key_pem

LINEGATE = Path(sys.executable).parent / "linegate"
TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


@pytest.mark.e2e
def test_supplier_ci_signs_uploads_and_procurement_finds_the_evidence(
    tmp_path, settings_factory, serve_http
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_factory(AttestationSettings, attestation_url=url)
    serve_http(create_app(settings), port)
    token, _ = TokenIssuer.embedded(settings).issue("pat@plant", [Role.PROCUREMENT])
    procurement = {"Authorization": f"Bearer {token}"}

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "optivision.pem").write_bytes(private_key_pem(key))
    (tmp_path / "optivision.pub").write_bytes(public_key_pem(key.public_key()))
    with httpx.Client(base_url=url, headers=procurement, timeout=30) as staff:
        assert (
            staff.post("/v1/suppliers", json={"id": "optivision", "name": "Optivision"}).status_code
            == 201
        )
        pem = (tmp_path / "optivision.pub").read_text()
        assert (
            staff.post("/v1/suppliers/optivision/keys", json={"public_key_pem": pem}).status_code
            == 201
        )
        client = staff.post("/v1/suppliers/optivision/clients", json={"description": "CI"}).json()

    model = tmp_path / "weld-seam-inspector-2.1.0.onnx"
    model.write_bytes(os.urandom(4096))
    predicate = tmp_path / "provenance.json"
    predicate.write_text((TESTDATA / "slsa" / "slsa_predicate_v1_0.json").read_text())
    envelope = tmp_path / "slsa.dsse.json"
    env = dict(
        os.environ,
        LINEGATE_ATTESTATION_URL=url,
        LINEGATE_CLIENT_ID=client["client_id"],
        LINEGATE_CLIENT_SECRET=client["client_secret"],
    )
    env.pop("LINEGATE_TOKEN", None)

    def run(*args):
        return subprocess.run(
            [str(LINEGATE), *args], env=env, capture_output=True, text=True, timeout=60
        )

    signed = run(
        "attest",
        "--key",
        str(tmp_path / "optivision.pem"),
        "--subject",
        str(model),
        "--predicate-type",
        "https://slsa.dev/provenance/v1",
        "--out",
        str(envelope),
        str(predicate),
    )
    assert signed.returncode == 0, signed.stderr
    offline = run(
        "attest",
        "verify",
        str(envelope),
        "--public-key",
        str(tmp_path / "optivision.pub"),
        "--subject",
        str(model),
    )
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith("verified: https://slsa.dev/provenance/v1 for 1 subject(s)")

    uploaded = run("attest", "upload", str(envelope))
    assert uploaded.returncode == 0, uploaded.stderr
    record = json.loads(uploaded.stdout)
    assert record["status"] == "verified"

    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    deadline = time.monotonic() + 5
    with httpx.Client(base_url=url, headers=procurement, timeout=30) as staff:
        found = staff.get("/v1/attestations", params={"subject_digest": f"sha256:{digest}"}).json()[
            "items"
        ]
        assert [a["id"] for a in found] == [record["id"]]
        while time.monotonic() < deadline and staff.get("/readyz").status_code != 200:
            time.sleep(0.1)

    # A tampered copy is refused by the same CLI, offline.
    tampered = json.loads(envelope.read_text())
    tampered["payloadType"] = "application/json"
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    refused = run("attest", "verify", str(bad), "--public-key", str(tmp_path / "optivision.pub"))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error:")
    # ... and by the service, which records the rejection and says why.
    rejected = run("attest", "upload", str(bad))
    assert rejected.returncode == 1
    assert "rejection id" in rejected.stderr
