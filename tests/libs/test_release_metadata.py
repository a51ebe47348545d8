"""Signed release metadata (TUF targets) with real P-256 keys: every refusal, offline."""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import SSlibKey
from tuf.api.metadata import Metadata, Root, Targets

from linegate.release_metadata import (
    MAX_METADATA_BYTES,
    RELEASE_FIELD,
    LengthGuard,
    Release,
    ReleaseFile,
    ReleaseMetadataError,
    check_file,
    release_files,
    sign_release,
    verify_release,
)

MODEL = "weld-seam-inspector"
ARTEFACTS = {
    "model.onnx": b"\x08\x07onnx-graph-bytes" * 64,
    "preprocess.json": b'{"mean": [0.5], "std": [0.25]}',
    "model_card.md": b"# weld-seam-inspector 2.1.0\n",
    "model.sig": b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
}
MANIFEST = hashlib.sha256(b"model-signing statement subject").hexdigest()
ROLLBACK = {
    "incident_id": "INC-42",
    "approved_by": ["qa.lead", "ds.owner"],
    "reason": "line 3 escapes after lighting drift",
    "from_security_version": 7,
}


def entry(path: str, data: bytes) -> ReleaseFile:
    return ReleaseFile(path, len(data), hashlib.sha256(data).hexdigest())


FILES = [entry(path, data) for path, data in ARTEFACTS.items()]


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def make_release(key) -> Callable[..., bytes]:
    def make(**overrides: Any) -> bytes:
        fields: dict[str, Any] = {
            "model": MODEL,
            "version": "2.1.0",
            "security_version": 7,
            "manifest_sha256": MANIFEST,
            "files": FILES,
            "expires": datetime.now(UTC) + timedelta(days=7),
            "metadata_version": 3,
        }
        fields.update(overrides)
        signer = fields.pop("key", key)
        return sign_release(signer, **fields)

    return make


def verify(raw: bytes, key, **kwargs: Any) -> Release:
    return verify_release(raw, [key.public_key()], **kwargs)


def refused(reason: str, call: Callable[[], object]) -> ReleaseMetadataError:
    with pytest.raises(ReleaseMetadataError) as info:
        call()
    assert info.value.reason == reason, str(info.value)
    assert str(info.value)
    return info.value


def edit_signed(raw: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(raw)
    change(doc)
    return json.dumps(doc).encode()


# ----------------------------------------------------------------------------- round trip


def test_round_trip_carries_every_file_and_release_field(make_release, key):
    expires = datetime(2031, 5, 17, 8, 30, 15, 999_999, tzinfo=UTC)
    release = verify(
        make_release(expires=expires),
        key,
        now=datetime(2031, 1, 1, tzinfo=UTC),
        model=MODEL,
        installed_security_version=6,
    )

    assert release.model == MODEL
    assert release.version == "2.1.0"
    assert release.security_version == 7
    assert release.manifest_sha256 == MANIFEST
    assert release.metadata_version == 3
    assert release.expires == expires.replace(microsecond=0)
    assert release.rollback is None
    assert release.files == tuple(sorted(FILES, key=lambda f: f.path))
    assert release.file("model.onnx") == entry("model.onnx", ARTEFACTS["model.onnx"])
    refused("mismatch", lambda: release.file("other.onnx"))


def test_document_layout_release_block_and_object_names(make_release):
    signed = json.loads(make_release())["signed"]

    assert signed["_type"] == "targets"
    assert signed["version"] == 3
    assert set(signed["targets"]) == set(ARTEFACTS)
    onnx = signed["targets"]["model.onnx"]
    assert onnx["length"] == len(ARTEFACTS["model.onnx"])
    assert onnx["custom"]["object_name"] == onnx["hashes"]["sha256"]
    assert signed[RELEASE_FIELD] == {
        "model": MODEL,
        "version": "2.1.0",
        "security_version": 7,
        "manifest_sha256": MANIFEST,
    }


def test_output_is_valid_tuf_verified_by_python_tuf_itself(make_release, key):
    raw = make_release()
    metadata = Metadata[Targets].from_bytes(raw)
    public = SSlibKey.from_crypto(key.public_key())
    assert (public.keytype, public.scheme) == ("ecdsa", "ecdsa-sha2-nistp256")
    assert list(metadata.signatures) == [public.keyid]  # keyids as TUF computes them

    root = Root()
    root.add_key(public, Targets.type)
    root.verify_delegate(Targets.type, metadata.signed_bytes, metadata.signatures)
    public.verify_signature(metadata.signatures[public.keyid], metadata.signed_bytes)
    # Canonical JSON: python-tuf's canonical form of the parsed document is the same bytes.
    assert metadata.signed_bytes in raw
    assert metadata.signed.unrecognized_fields[RELEASE_FIELD]["model"] == MODEL


def test_any_one_trusted_key_is_enough(make_release):
    old, new = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    raw = make_release(key=new)
    release = verify_release(raw, [old.public_key(), new.public_key()])
    assert release.model == MODEL


# ---------------------------------------------------------------------------- signatures


def test_one_tampered_byte_is_a_bad_signature(make_release, key):
    raw = make_release()
    digest = hashlib.sha256(ARTEFACTS["model.onnx"]).hexdigest().encode()
    at = raw.index(b'"sha256":"' + digest) + len(b'"sha256":"')
    tampered = raw[:at] + (b"0" if raw[at : at + 1] != b"0" else b"1") + raw[at + 1 :]
    assert len(tampered) == len(raw)

    refused("bad-signature", lambda: verify(tampered, key))


def test_removed_signature_is_unsigned(make_release, key):
    raw = edit_signed(make_release(), lambda doc: doc.update(signatures=[]))
    error = refused("unsigned", lambda: verify(raw, key))
    assert "no signature" in str(error)


def test_signed_by_another_key_is_unsigned(make_release, key):
    # The signature carries the stranger's own TUF keyid, which this device does not trust.
    stranger = ec.generate_private_key(ec.SECP256R1())
    error = refused("unsigned", lambda: verify(make_release(key=stranger), key))
    assert SSlibKey.from_crypto(key.public_key()).keyid in str(error)


def test_another_keys_signature_under_the_trusted_keyid_is_a_bad_signature(make_release, key):
    stranger = ec.generate_private_key(ec.SECP256R1())
    trusted_id = SSlibKey.from_crypto(key.public_key()).keyid

    def borrow_keyid(doc: dict[str, Any]) -> None:
        doc["signatures"][0]["keyid"] = trusted_id

    raw = edit_signed(make_release(key=stranger), borrow_keyid)
    refused("bad-signature", lambda: verify(raw, key))


# ------------------------------------------------------------------ expiry, model, size


def test_expired_metadata_is_refused(make_release, key):
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    raw = make_release(expires=expires)
    assert verify(raw, key, now=expires - timedelta(seconds=1)).model == MODEL
    refused("expired", lambda: verify(raw, key, now=expires))
    stale = make_release(expires=datetime.now(UTC) - timedelta(minutes=1))
    refused("expired", lambda: verify(stale, key))


def test_metadata_for_another_model_is_a_mismatch(make_release, key):
    raw = make_release(model="paint-defect-detector")
    error = refused("mismatch", lambda: verify(raw, key, model=MODEL))
    assert "paint-defect-detector" in str(error)


def test_oversized_metadata_is_refused_before_parsing(make_release, key):
    raw = make_release()
    refused("malformed", lambda: verify(raw, key, max_bytes=len(raw) - 1))
    huge = raw[:-1] + b" " * MAX_METADATA_BYTES + b"}"
    error = refused("malformed", lambda: verify(huge, key))
    assert "limit" in str(error)


def test_malformed_and_non_targets_metadata_are_refused(key):
    refused("malformed", lambda: verify(b"{not json", key))
    refused("malformed", lambda: verify(b'{"signed": {}, "signatures": []}', key))
    root = Metadata(Root(expires=datetime.now(UTC) + timedelta(days=1)))
    refused("malformed", lambda: verify(root.to_bytes(), key))


def test_signed_targets_without_release_fields_are_malformed(key):
    from securesystemslib.signer import CryptoSigner

    metadata = Metadata(Targets(expires=datetime.now(UTC) + timedelta(days=1)))
    metadata.sign(CryptoSigner(key))
    error = refused("malformed", lambda: verify(metadata.to_bytes(), key))
    assert RELEASE_FIELD in str(error)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"files": [ReleaseFile("../etc/passwd", 1, "a" * 64)]}, "relative POSIX path"),
        ({"files": [ReleaseFile("/abs/model.onnx", 1, "a" * 64)]}, "relative POSIX path"),
        ({"files": [ReleaseFile("model.onnx", 1, "A" * 64)]}, "lowercase hex"),
        ({"files": [FILES[0], FILES[0]]}, "twice"),
        ({"files": []}, "at least one file"),
        ({"security_version": -1}, "security_version"),
        ({"manifest_sha256": "abc"}, "manifest_sha256"),
        ({"model": ""}, "model"),
        ({"metadata_version": 0}, "metadata_version"),
        ({"rollback": {**ROLLBACK, "approved_by": []}}, "approved_by"),
        ({"rollback": {**ROLLBACK, "from_security_version": 7}}, "from_security_version"),
        ({"rollback": {**ROLLBACK, "to_security_version": 5}}, "to_security_version"),
        ({"rollback": {**ROLLBACK, "note": "x"}}, "unknown"),
    ],
)
def test_sign_refuses_bad_fields(make_release, overrides, needle):
    error = refused("malformed", lambda: make_release(**overrides))
    assert needle in str(error)


# ---------------------------------------------------------------------------- rollback


def test_lower_security_version_without_instruction_is_refused(make_release, key):
    raw = make_release(version="2.0.4", security_version=6)
    assert verify(raw, key, installed_security_version=6).version == "2.0.4"  # same: not a rollback
    error = refused("rollback", lambda: verify(raw, key, installed_security_version=7))
    assert "rollback instruction" in str(error)


def test_signed_rollback_instruction_allows_exactly_its_target(make_release, key):
    raw = make_release(version="2.0.4", security_version=6, rollback=ROLLBACK)
    release = verify(raw, key, installed_security_version=7)
    assert release.rollback == {**ROLLBACK, "to_security_version": 6}
    # A device that has since moved past the incident's version is not rolled back.
    error = refused("rollback", lambda: verify(raw, key, installed_security_version=8))
    assert "INC-42" in str(error)


def test_rollback_instruction_cannot_be_added_after_signing(make_release, key):
    raw = make_release(version="2.0.4", security_version=6)

    def add_instruction(doc: dict[str, Any]) -> None:
        doc["signed"][RELEASE_FIELD]["rollback"] = {**ROLLBACK, "to_security_version": 6}

    tampered = edit_signed(raw, add_instruction)
    refused("bad-signature", lambda: verify(tampered, key, installed_security_version=7))


# ------------------------------------------------------------------------- downloads


def test_check_file_refuses_another_models_file(make_release, key):
    release = verify(make_release(), key)
    data = ARTEFACTS["model.onnx"]
    check_file(release, "model.onnx", len(data), hashlib.sha256(data).hexdigest())

    # The same-sized model.onnx of another, validly signed release: only the digest differs.
    other_data = (b"\x08\x07other-model-bytes" * 64)[: len(data)]
    other = verify(
        make_release(model="paint-defect-detector", files=[entry("model.onnx", other_data)]), key
    ).file("model.onnx")
    refused("digest", lambda: check_file(release, "model.onnx", other.length, other.sha256))
    refused("length", lambda: check_file(release, "model.onnx", len(data) + 1, "a" * 64))
    refused("mismatch", lambda: check_file(release, "weights.bin", len(data), "a" * 64))


def test_length_guard_stops_one_byte_past_the_signed_length():
    data = ARTEFACTS["model.onnx"]
    guard = LengthGuard(entry("model.onnx", data))
    guard.feed(data[:100])
    guard.feed(data[100:])
    error = refused("length", lambda: guard.feed(b"x"))
    assert "more than" in str(error)
    assert guard.received == len(data)
    refused("length", guard.finish)

    greedy = LengthGuard(entry("model.onnx", data))
    refused("length", lambda: greedy.feed(data + b"x"))
    assert greedy.received == 0


def test_length_guard_finishes_on_exact_data_and_catches_short_or_different_data():
    data = ARTEFACTS["model.onnx"]
    expected = entry("model.onnx", data)

    exact = LengthGuard(expected)
    for start in range(0, len(data), 7):
        exact.feed(data[start : start + 7])
    exact.finish()

    short = LengthGuard(expected)
    short.feed(data[:-1])
    refused("length", short.finish)

    different = LengthGuard(expected)
    different.feed(bytes(len(data)))
    refused("digest", different.finish)


def test_release_files_hashes_an_artefact_folder(tmp_path: Path, make_release, key):
    for name, data in ARTEFACTS.items():
        (tmp_path / name).write_bytes(data)
    files = release_files(tmp_path)
    assert files == tuple(sorted(FILES, key=lambda f: f.path))
    assert verify(make_release(files=files), key).files == files

    (tmp_path / "link").symlink_to(tmp_path / "model.onnx")
    refused("malformed", lambda: release_files(tmp_path))


# ------------------------------------------------------------------------- device binding

CONTROL = {
    "mode": "manual_inspection",
    "threshold": "0.92",
    "incident_id": "INC-42",
    "action_id": "act-1",
    "approved_by": ["qa.lead", "ds.owner"],
    "reason": "line 3 lighting degraded",
}


def test_device_binding_with_control_and_shadow_is_signed_and_round_trips(make_release, key):
    shadow = make_release(version="2.2.0", security_version=8).decode()
    device = {"id": "cam-3-1", "revision": 4, "control": CONTROL, "shadow": shadow}
    release = verify(make_release(device=device), key)
    assert release.device == device
    assert verify(release.device["shadow"].encode(), key).version == "2.2.0"
    assert verify(make_release(), key).device is None

    # Nothing in the binding can change after signing: not the order, not the revision.
    raw = make_release(device=device)
    for change in (
        lambda d: d["signed"]["x-linegate-release"]["device"]["control"].update(mode="automatic"),
        lambda d: d["signed"]["x-linegate-release"]["device"].update(revision=99),
        lambda d: d["signed"]["x-linegate-release"]["device"].update(id="cam-3-2"),
    ):
        refused("bad-signature", lambda change=change: verify(edit_signed(raw, change), key))


@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ({"id": "cam-3-1", "revision": 0}, "revision must be >= 1"),
        ({"id": "cam-3-1", "revision": 1, "extra": 1}, "unknown device fields"),
        ({"id": "cam-3-1", "revision": 1, "shadow": ""}, "signed metadata, as a string"),
        ({"id": "cam-3-1", "revision": 1, "control": {**CONTROL, "mode": "off"}}, "mode"),
        ({"id": "cam-3-1", "revision": 1, "control": {**CONTROL, "threshold": "1.5"}}, "(0, 1]"),
        ({"id": "cam-3-1", "revision": 1, "control": {**CONTROL, "approved_by": []}}, "approved"),
    ],
)
def test_sign_refuses_a_malformed_device_binding(make_release, device, needle):
    error = refused("malformed", lambda: make_release(device=device))
    assert needle in str(error)
