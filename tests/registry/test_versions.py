"""Pushing model versions: streamed upload, ONNX inspection, signing, storage, and refusals."""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from linegate.auth import Role
from linegate.modelsig import verify_model
from registry.timing import parse_server_timing
from tests.registry.conftest import MODEL


def stored_files(registry: Any) -> list[Path]:
    root = registry.app.state.registry.store.root / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def staged(registry: Any) -> list[Path]:
    return list((registry.app.state.registry.store.root / ".staging").iterdir())


@pytest.fixture
async def model_line(registry: Any) -> Any:
    await registry.create_system()
    return await registry.create_model()


async def test_push_inspects_signs_and_stores_a_version(
    registry: Any, model_line: Any, tmp_path: Path
) -> None:
    files = registry.artefact("2.1.0")
    digest = hashlib.sha256(files["model"]).hexdigest()
    r = await registry.push(
        "2.1.0", files=files, artefact_sha256=f"sha256:{digest}", security_version=3
    )
    assert r.status_code == 201, r.text
    v = r.json()
    assert r.headers["location"] == f"/v1/models/{MODEL}/versions/2.1.0"
    # Where the push's time went, stage by stage, in the order the server did them.
    stages = parse_server_timing(r.headers["server-timing"])
    assert list(stages) == [
        "body", "drain", "check", "inspect", "sign", "store", "record", "read"
    ]  # fmt: skip
    assert all(seconds >= 0 for seconds in stages.values())
    assert v["state"] == "draft"
    assert v["uploader"] == "dana-datasci"
    assert v["security_version"] == 3
    assert v["artefact_digest"] == digest
    assert {f["path"] for f in v["files"]} == {"model.onnx", "preprocess.json", "model_card.md"}
    assert v["onnx"]["inputs"][0]["name"] == "image"
    assert v["onnx"]["opsets"] == {"": 17}
    assert v["onnx"]["loaded_with_onnxruntime"] is True
    assert v["metadata"]["code_revision"]["revision"] == "abc123"
    assert v["approvals_required"] == 2  # NIST tier 1: four-eyes

    # Content-addressed: each file is stored under its own digest.
    for f in v["files"]:
        path = registry.app.state.registry.store.path(f["sha256"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    assert staged(registry) == []

    # The signature is an OpenSSF model-signing bundle that verifies offline with the
    # published key over the files as downloaded.
    headers = registry.auth(Role.AUDITOR, sub="auditor")
    sig = await registry.client.get(f"/v1/models/{MODEL}/versions/2.1.0/signature", headers=headers)
    assert sig.status_code == 200
    assert sig.headers["content-type"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    keys = (await registry.client.get("/v1/signing-keys")).json()["keys"]
    download = tmp_path / "download" / MODEL
    download.mkdir(parents=True)
    for f in v["files"]:
        got = await registry.client.get(
            f"/v1/models/{MODEL}/versions/2.1.0/files/{f['path']}", headers=headers
        )
        assert got.status_code == 200
        (download / f["path"]).write_bytes(got.content)
    (tmp_path / "model.sig").write_bytes(sig.content)
    (tmp_path / "registry.pub.pem").write_text(keys[0]["public_key_pem"])
    verified = verify_model(download, tmp_path / "registry.pub.pem", tmp_path / "model.sig")
    assert verified.manifest_sha256 == v["manifest_digest"]
    assert verified.key_id == keys[0]["key_id"] == v["signing_key_id"]

    r = await registry.client.post(f"/v1/models/{MODEL}/versions/2.1.0/verify", headers=headers)
    assert r.json()["verified"] is True

    entries = (
        await registry.client.get("/v1/audit/entries", headers=registry.auth(Role.AUDITOR))
    ).json()
    actions = [e["action"] for e in entries]
    assert "model.version.pushed" in actions
    assert "inventory.system.created" in actions


async def test_flipping_one_stored_byte_fails_verification(registry: Any, model_line: Any) -> None:
    r = await registry.push("2.1.0")
    v = r.json()
    model = next(f for f in v["files"] if f["path"] == "model.onnx")
    path = registry.app.state.registry.store.path(model["sha256"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions/2.1.0/verify", headers=registry.auth()
    )
    result = r.json()
    assert result["verified"] is False
    assert "model.onnx" in result["reason"]


async def assert_nothing_written(registry: Any, before: list[Path]) -> None:
    assert stored_files(registry) == before
    assert staged(registry) == []
    r = await registry.client.get(f"/v1/models/{MODEL}/versions", headers=registry.auth())
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("not-onnx", 422, "not a valid ONNX model"),
        ("truncated", 422, "not a valid ONNX model"),
        ("digest-mismatch", 422, "not the declared"),
        ("no-model-part", 422, "'model'"),
        ("bad-metadata", 422, "metadata"),
        ("metadata-not-json", 422, "metadata"),
        ("preprocess-not-json", 422, "preprocess"),
    ],
)
async def test_bad_pushes_are_refused_and_leave_nothing(
    registry: Any, model_line: Any, case: str, status: int, needle: str
) -> None:
    await registry.push("1.0.0")  # a good version already stored: its blobs must survive
    before = stored_files(registry)
    files = registry.artefact("2.0.0")
    metadata: Any = None
    kw: dict[str, Any] = {}
    if case == "not-onnx":
        files["model"] = b"\x00\x01 this is not a protobuf model" * 100
    elif case == "truncated":
        files["model"] = files["model"][: len(files["model"]) - 40]
    elif case == "digest-mismatch":
        kw["artefact_sha256"] = "0" * 64
    elif case == "no-model-part":
        del files["model"]
    elif case == "bad-metadata":
        metadata = {"version": "2.0.0", "security_version": "high", "surprise": 1}
    elif case == "metadata-not-json":
        metadata = b"{not json"
    elif case == "preprocess-not-json":
        files["preprocess"] = b"scale: 0.5"
    r = await registry.push("2.0.0", files=files, metadata=metadata, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.text
    await assert_nothing_written(registry, before)
    versions = (
        await registry.client.get(f"/v1/models/{MODEL}/versions", headers=registry.auth())
    ).json()
    assert [v["version"] for v in versions] == ["1.0.0"]


async def test_oversized_model_is_refused_while_streaming(
    registry_settings: Any, service_client: Any, mint_token: Any, tmp_path: Path
) -> None:
    from registry.app import create_app
    from tests.registry.conftest import RegistryClient

    app = create_app(registry_settings(model_max_bytes=2000))
    async with service_client(app) as client:
        registry = RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
        await registry.create_system()
        await registry.create_model()
        files = registry.artefact("1.0.0")
        files["model"] = files["model"] + b"\x00" * 5000
        r = await registry.push("1.0.0", files=files)
        assert r.status_code == 413, r.text
        assert stored_files(registry) == []
        assert staged(registry) == []


async def test_duplicate_version_and_security_version_rollback_are_refused(
    registry: Any, model_line: Any
) -> None:
    assert (await registry.push("2.0.0", security_version=5)).status_code == 201
    r = await registry.push("2.0.0", security_version=5)
    assert r.status_code == 409
    assert "already has version" in r.json()["detail"]
    r = await registry.push("2.0.1", security_version=4)
    assert r.status_code == 409
    assert "security_version 4 is lower than 5" in r.json()["detail"]
    r = await registry.push("2.0.2")  # defaults to the line's current security version
    assert r.status_code == 201
    assert r.json()["security_version"] == 5
    line = (await registry.client.get(f"/v1/models/{MODEL}", headers=registry.auth())).json()
    assert line["security_version"] == 5


async def test_push_needs_multipart_a_known_model_and_a_writer(
    registry: Any, model_line: Any
) -> None:
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions",
        content=b"raw",
        headers={**registry.auth(), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 415
    r = await registry.push("1.0.0", name="no-such-model")
    assert r.status_code == 404
    r = await registry.client.post(
        f"/v1/models/{MODEL}/versions",
        files={"model": ("m", b"x")},
        headers=registry.auth(Role.AUDITOR),
    )
    assert r.status_code == 403
    r = await registry.client.post(f"/v1/models/{MODEL}/versions", files={"model": ("m", b"x")})
    assert r.status_code == 401


async def test_devices_see_released_versions_only(registry: Any, model_line: Any) -> None:
    await registry.push("1.0.0")
    device = {"Authorization": "Bearer " + registry.mint(Role.DEVICE, device_id="cam-3-1")}
    r = await registry.client.get(f"/v1/models/{MODEL}/versions/1.0.0", headers=device)
    assert r.status_code == 404
    r = await registry.client.get(f"/v1/models/{MODEL}/versions/1.0.0/signature", headers=device)
    assert r.status_code == 404
    r = await registry.client.get(f"/v1/models/{MODEL}/versions", headers=device)
    assert r.json() == []
