"""Fixtures for the attestation service: a running app, onboarded suppliers, real signatures."""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from attestation.app import create_app
from attestation.settings import AttestationSettings
from linegate.auth import Role
from linegate.signing import IN_TOTO_PAYLOAD_TYPE, public_key_pem

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
SLSA_V1 = "https://slsa.dev/provenance/v1"
DSSE = "application/vnd.dsse.envelope.v1+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def statement(subjects: list[dict[str, Any]], predicate_type: str, predicate: Any) -> bytes:
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subjects,
            "predicateType": predicate_type,
            "predicate": predicate,
        }
    ).encode()


def sign(key: Any, payload: bytes, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """A DSSE envelope made by securesystemslib, the supplier-side library."""
    envelope = Envelope(payload=payload, payload_type=payload_type, signatures={})
    envelope.sign(CryptoSigner(key))
    return json.dumps(envelope.to_dict()).encode()


def slsa_predicate(finished_on: datetime | None = None) -> dict[str, Any]:
    predicate: dict[str, Any] = json.loads(
        (TESTDATA / "slsa" / "slsa_predicate_v1_0.json").read_text()
    )
    if finished_on is not None:
        predicate.setdefault("runDetails", {}).setdefault("metadata", {})["finishedOn"] = (
            finished_on.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    return predicate


MODEL_BYTES = b"onnx-model-bytes-of-weld-seam-inspector-2.1.0"
MODEL_DIGEST = hashlib.sha256(MODEL_BYTES).hexdigest()
MODEL_SUBJECT = [{"name": "weld-seam-inspector-2.1.0.onnx", "digest": {"sha256": MODEL_DIGEST}}]


@dataclass
class Stack:
    client: Any
    app: Any
    mint: Any
    keys: dict[str, Any] = field(default_factory=dict)

    def token(
        self, *roles: Role, tenant: str | None = None, device_id: str | None = None
    ) -> dict[str, str]:
        return bearer(self.mint(*roles, tenant=tenant, device_id=device_id))

    async def onboard(
        self, supplier_id: str, *, key: bool = True, identity: dict[str, str] | None = None
    ) -> Any:
        procurement = self.token(Role.PROCUREMENT)
        r = await self.client.post(
            "/v1/suppliers",
            json={"id": supplier_id, "name": supplier_id.title()},
            headers=procurement,
        )
        assert r.status_code == 201, r.text
        private = None
        if key:
            private = ec.generate_private_key(ec.SECP256R1())
            r = await self.client.post(
                f"/v1/suppliers/{supplier_id}/keys",
                json={"public_key_pem": public_key_pem(private.public_key()).decode()},
                headers=procurement,
            )
            assert r.status_code == 201, r.text
            self.keys[supplier_id] = private
        if identity is not None:
            r = await self.client.post(
                f"/v1/suppliers/{supplier_id}/identities", json=identity, headers=procurement
            )
            assert r.status_code == 201, r.text
        return private

    async def upload(self, supplier_id: str, body: bytes, content_type: str = DSSE) -> Any:
        headers = {**self.token(Role.SUPPLIER, tenant=supplier_id), "content-type": content_type}
        return await self.client.post("/v1/attestations", content=body, headers=headers)


@pytest.fixture
async def stack(settings_factory, service_client, mint_token):
    roots = [
        TESTDATA / "sigstore" / "trusted_root.production.json",
        TESTDATA / "sigstore" / "trusted_root.staging.json",
    ]
    settings = settings_factory(
        AttestationSettings, sigstore_trusted_roots=roots, attestation_max_bytes=4 * 1024 * 1024
    )
    app = create_app(settings)
    async with service_client(app) as client:
        yield Stack(client=client, app=app, mint=mint_token)
