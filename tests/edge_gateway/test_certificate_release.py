"""A registry that signs with a code-signing certificate (LINEGATE_MODEL_SIGNING_METHOD =
certificate) releases through the real gateway to a device that pins the CA chain the registry
publishes: the gateway verifies the bundle against that chain before distributing, the device
verifies it again and installs; a device pinning another CA refuses it, and so does one pinning
the right CA but another signer identity (``--model-identity``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from linegate.events import DeviceStatusV1
from linegate.signing import load_public_key
from linegate.testing.pki import CodeSigningPki
from linegate_cli.agent import DeviceAgent
from tests.edge_gateway.test_distribution import Chain, chain_of


@pytest.fixture
async def certificate_chain(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    mint_token: Any,
    tmp_path: Path,
    nats_server: Any,
) -> AsyncIterator[Chain]:
    pki = CodeSigningPki.create(tmp_path / "pki")
    leaf = pki.issue_leaf("registry-release")
    pinned = tmp_path / "pinned-chain.pem"
    pinned.write_bytes(pki.chain_pem.read_bytes() + pki.root_pem.read_bytes())
    async with chain_of(
        settings_factory,
        serve_http,
        service_client,
        mint_token,
        tmp_path,
        nats_server,
        model_signing_method="certificate",
        model_signing_key=leaf.key,
        model_signing_certificate=leaf.certificate,
        model_signing_certificate_chain=pinned,
    ) as chain:
        yield chain


async def device(
    chain: Chain, device_id: str, trust: Path, identity: str | None = None
) -> DeviceAgent:
    keys = (await chain.gateway.get("/v1/release-keys")).json()["keys"]

    async def report(status: DeviceStatusV1) -> None:
        chain.reports.append(status)

    return DeviceAgent(
        device_id,
        chain.tmp / "devices" / device_id,
        js=chain.js,
        release_keys=[load_public_key(k.encode()) for k in keys],
        model_key_paths=[trust],
        report=report,
        download_timeout=10,
        model_identity=identity,
    )


async def test_a_certificate_signed_release_installs_on_a_device_pinning_the_chain(
    certificate_chain: Chain,
) -> None:
    chain = certificate_chain
    published = (await chain.registry.client.get("/v1/signing-keys")).json()["keys"][0]
    assert published["method"] == "certificate"
    trust = chain.tmp / "device-trust.pem"
    trust.write_text(published["certificate_chain_pem"])

    # The gateway pins the chain together with the signer identity the registry publishes,
    # so a signature by another certificate of the same CA would not verify for it.
    trust_entries = await chain.app.state.gateway.registry.signing_keys()
    assert (published["certificate_chain_pem"], "release-signer@plant.example") in trust_entries
    assert (published["public_key_pem"], None) in trust_entries

    await chain.release("2.0.4", security_version=1)  # the gateway verified it by the chain
    for device_id in ("cam-3-1", "cam-3-2", "cam-3-3"):
        await chain.register(device_id)
    assert (await chain.assign("2.0.4", line="line3")).status_code == 200

    # cam-3-1 pins the chain and the identity the registry publishes: it installs.
    agent = await device(chain, "cam-3-1", trust, identity=published["identity"])
    assert await agent.apply(await chain.desired("cam-3-1")) is True
    assert chain.states() == ["downloaded", "verified", "self_test", "active"]

    # cam-3-3 pins the same chain but expects another signer: the genuine release is refused.
    chain.reports.clear()
    pinned_elsewhere = await device(chain, "cam-3-3", trust, identity="qa-signer@plant.example")
    assert await pinned_elsewhere.apply(await chain.desired("cam-3-3")) is False
    refused = [r for r in chain.reports if r.state == "refused"]
    assert refused, chain.states()
    assert "model signature" in (refused[-1].detail or "")
    assert "'qa-signer@plant.example'" in (refused[-1].detail or ""), refused[-1].detail
    assert pinned_elsewhere.state.active is None
    assert not pinned_elsewhere.current.exists()

    # A device pinning another CA (or only the registry's bare key) refuses the same release.
    other = CodeSigningPki.create(chain.tmp / "other-pki", name="Other Plant")
    chain.reports.clear()
    stranger = await device(chain, "cam-3-2", other.root_pem)
    assert await stranger.apply(await chain.desired("cam-3-2")) is False
    refused = [r for r in chain.reports if r.state == "refused"]
    assert refused, chain.states()
    assert "model signature" in (refused[-1].detail or "")
    assert stranger.state.active is None
