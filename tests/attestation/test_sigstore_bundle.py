"""Offline Sigstore bundle verification against real public-good and staging bundles."""

import base64
import hashlib
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.sigstore_bundle import (
    IdentityPolicy,
    SigstoreBundleError,
    SigstoreVerifier,
    default_trusted_root_paths,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sigstore"
PRODUCTION_ROOT = DATA / "trusted_root.production.json"
STAGING_ROOT = DATA / "trusted_root.staging.json"

pytestmark = pytest.mark.skipif(
    not (DATA / "bundle_v3_github.whl.sigstore").is_file(),
    reason=f"shared Sigstore test data not found at {DATA}",
)

# bundle_v3_github.whl.sigstore: GitHub Actions release of rfc8785.py on the public-good instance.
GITHUB_SAN = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_POLICY = IdentityPolicy(issuer=GITHUB_ISSUER, subject=GITHUB_SAN)

# bundle_v3.txt.sigstore: signed on the staging instance; identity read from its certificate.
STAGING_SAN = "william@yossarian.net"
STAGING_ISSUER = "https://github.com/login/oauth"
STAGING_POLICY = IdentityPolicy(issuer=STAGING_ISSUER, subject=STAGING_SAN)


def github_bundle() -> bytes:
    return (DATA / "bundle_v3_github.whl.sigstore").read_bytes()


def github_artifact() -> bytes:
    return (DATA / "bundle_v3_github.whl").read_bytes()


def staging_bundle() -> bytes:
    return (DATA / "bundle_v3.txt.sigstore").read_bytes()


def staging_artifact() -> bytes:
    return (DATA / "bundle_v3.txt").read_bytes()


@pytest.fixture
def verifier_for():
    def make(*roots: Path) -> SigstoreVerifier:
        return SigstoreVerifier.from_files(list(roots))

    return make


@pytest.fixture
def production(verifier_for) -> SigstoreVerifier:
    return verifier_for(PRODUCTION_ROOT)


def edit_bundle(raw: bytes, edit) -> bytes:
    doc = json.loads(raw)
    edit(doc)
    return json.dumps(doc).encode()


def flip_b64(value: str, index: int = 10) -> str:
    """Flip one bit of the decoded bytes of a base64 field."""
    data = bytearray(base64.b64decode(value))
    data[index] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


# ------------------------------------------------------------------ the public-good bundle


def test_github_bundle_verifies_with_the_artifact(production):
    result = production.verify(github_bundle(), [GITHUB_POLICY], artifact=github_artifact())

    assert result.identity == GITHUB_SAN
    assert result.issuer == GITHUB_ISSUER
    assert result.media_type == "application/vnd.dev.sigstore.bundle+json;version=0.2"
    assert result.artifact_sha256 == hashlib.sha256(github_artifact()).hexdigest()
    assert result.payload_type is None
    assert result.payload is None
    # integratedTime 1710888076, bound by the inclusion promise.
    assert result.signed_at == datetime(2024, 3, 19, 22, 41, 16, tzinfo=UTC)


def test_github_bundle_verifies_against_its_own_stated_digest(production):
    result = production.verify(github_bundle(), [GITHUB_POLICY])

    assert result.identity == GITHUB_SAN
    assert result.artifact_sha256 == hashlib.sha256(github_artifact()).hexdigest()


@pytest.mark.parametrize(
    "policy",
    [
        IdentityPolicy(issuer=GITHUB_ISSUER, subject=GITHUB_SAN.replace("v0.1.2", "v0.1.3")),
        IdentityPolicy(issuer=GITHUB_ISSUER, subject=GITHUB_SAN[:-1]),
        IdentityPolicy(issuer=GITHUB_ISSUER, subject=STAGING_SAN),
        IdentityPolicy(issuer="https://accounts.google.com", subject=GITHUB_SAN),
        IdentityPolicy(issuer=GITHUB_ISSUER + "/", subject=GITHUB_SAN),
    ],
    ids=["other-tag", "san-prefix", "other-san", "other-issuer", "issuer-trailing-slash"],
)
def test_any_other_identity_is_rejected(production, policy):
    with pytest.raises(SigstoreBundleError, match="matches none of the identity policies"):
        production.verify(github_bundle(), [policy], artifact=github_artifact())


def test_rejection_names_the_identity_that_actually_signed(production):
    policy = IdentityPolicy(issuer=GITHUB_ISSUER, subject="https://github.com/evil/repo")
    with pytest.raises(SigstoreBundleError) as info:
        production.verify(github_bundle(), [policy])
    message = str(info.value)
    assert GITHUB_SAN in message
    assert "https://github.com/evil/repo" in message
    assert "trusted_root.production.json" in message


def test_one_matching_policy_among_several_is_enough(production):
    others = [
        IdentityPolicy(issuer=STAGING_ISSUER, subject=STAGING_SAN),
        IdentityPolicy(issuer=GITHUB_ISSUER, subject_pattern=r"https://github\.com/evil/.*"),
    ]
    result = production.verify(github_bundle(), [*others, GITHUB_POLICY])
    assert result.identity == GITHUB_SAN


@pytest.mark.parametrize(
    "pattern",
    [
        r"https://github\.com/trailofbits/rfc8785\.py/\.github/workflows/release\.yml@refs/tags/v.+",
        r"https://github\.com/trailofbits/[^/]+/\.github/workflows/[^@]+@refs/tags/v\d+\.\d+\.\d+",
        r".*",
    ],
)
def test_regex_policy_matching_the_san_passes(production, pattern):
    policy = IdentityPolicy(issuer=GITHUB_ISSUER, subject_pattern=pattern)
    result = production.verify(github_bundle(), [policy], artifact=github_artifact())
    assert result.identity == GITHUB_SAN
    assert result.issuer == GITHUB_ISSUER


@pytest.mark.parametrize(
    ("issuer", "pattern"),
    [
        # fullmatch: a pattern matching only a prefix of the SAN must not pass.
        (GITHUB_ISSUER, r"https://github\.com/trailofbits/"),
        (GITHUB_ISSUER, r"https://github\.com/trailofbits/rfc8785\.py/.+@refs/heads/main"),
        (GITHUB_ISSUER, r"https://github\.com/evil/.*"),
        ("https://accounts.google.com", r".*"),
    ],
    ids=["prefix-only", "other-ref", "other-owner", "right-pattern-wrong-issuer"],
)
def test_regex_policy_not_matching_fails(production, issuer, pattern):
    policy = IdentityPolicy(issuer=issuer, subject_pattern=pattern)
    with pytest.raises(SigstoreBundleError, match="matches none of the identity policies"):
        production.verify(github_bundle(), [policy], artifact=github_artifact())


@pytest.mark.parametrize("position", [0, 4096, -1])
def test_a_changed_artifact_byte_fails(production, position):
    artifact = bytearray(github_artifact())
    artifact[position] ^= 0x01
    with pytest.raises(SigstoreBundleError, match="digest mismatch"):
        production.verify(github_bundle(), [GITHUB_POLICY], artifact=bytes(artifact))


def test_another_artifact_fails(production):
    with pytest.raises(SigstoreBundleError, match="digest mismatch"):
        production.verify(github_bundle(), [GITHUB_POLICY], artifact=staging_artifact())


# ------------------------------------------------------------------ tampered bundles


def _flip_signature(doc):
    sig = doc["messageSignature"]
    sig["signature"] = flip_b64(sig["signature"])


def _flip_certificate(doc):
    cert = doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]
    # Inside the certificate's public key, so it still parses but no longer chains.
    cert["rawBytes"] = flip_b64(cert["rawBytes"], index=120)


def _flip_certificate_signature(doc):
    cert = doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]
    cert["rawBytes"] = flip_b64(cert["rawBytes"], index=-5)


def _flip_log_entry_body(doc):
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["data"]["hash"]["value"] = "0" * 64
    entry["canonicalizedBody"] = base64.b64encode(
        json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    ).decode()


def _shift_integrated_time(doc):
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)


def _flip_inclusion_proof(doc):
    proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["hashes"][0] = flip_b64(proof["hashes"][0])


def _flip_signed_entry_timestamp(doc):
    promise = doc["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]
    promise["signedEntryTimestamp"] = flip_b64(promise["signedEntryTimestamp"])


def _flip_stated_digest(doc):
    digest = doc["messageSignature"]["messageDigest"]
    digest["digest"] = flip_b64(digest["digest"])


def _drop_log_entries(doc):
    doc["verificationMaterial"]["tlogEntries"] = []


@pytest.mark.parametrize(
    "edit",
    [
        _flip_signature,
        _flip_certificate,
        _flip_certificate_signature,
        _flip_log_entry_body,
        _shift_integrated_time,
        _flip_inclusion_proof,
        _flip_signed_entry_timestamp,
        _flip_stated_digest,
        _drop_log_entries,
    ],
)
@pytest.mark.parametrize("with_artifact", [True, False], ids=["artifact", "stated-digest"])
def test_tampered_bundle_fails(production, edit, with_artifact):
    tampered = edit_bundle(github_bundle(), edit)
    # The untampered bundle re-serialised the same way still verifies, so the edit is the cause.
    production.verify(edit_bundle(github_bundle(), lambda doc: None), [GITHUB_POLICY])
    artifact = github_artifact() if with_artifact else None
    with pytest.raises(SigstoreBundleError):
        production.verify(tampered, [GITHUB_POLICY], artifact=artifact)


def test_a_flipped_byte_in_the_raw_signature_text_fails(production):
    raw = github_bundle()
    doc = json.loads(raw)
    signature = doc["messageSignature"]["signature"].encode()
    start = raw.index(signature)
    # Swap one base64 character in the middle of the signature, in the file's own bytes.
    i = start + len(signature) // 2
    tampered = raw[:i] + (b"A" if raw[i : i + 1] != b"A" else b"B") + raw[i + 1 :]
    with pytest.raises(SigstoreBundleError, match="did not verify"):
        production.verify(tampered, [GITHUB_POLICY], artifact=github_artifact())


def test_signed_at_is_reported_only_when_an_inclusion_promise_binds_it():
    # Both shared bundles carry a promise, and sigstore rejects a v0.2/v0.3 bundle that has
    # neither a promise nor a signed timestamp, so this rule is checked on the helper itself.
    from attestation.sigstore_bundle import _signed_at

    doc = json.loads(github_bundle())
    assert _signed_at(doc) == datetime.fromtimestamp(1710888076, tz=UTC)
    del doc["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]
    assert _signed_at(doc) is None
    doc = json.loads(github_bundle())
    doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = "0"  # Rekor v2 entries
    assert _signed_at(doc) is None


# ------------------------------------------------------------------ staging and several roots


def test_staging_bundle_fails_against_production(production):
    with pytest.raises(SigstoreBundleError, match=r"trusted_root\.production\.json") as info:
        production.verify(staging_bundle(), [STAGING_POLICY], artifact=staging_artifact())
    # It fails on trust (the certificate does not chain to production), not on identity.
    assert "certificate chain" in str(info.value)
    assert "identity policies" not in str(info.value)


def test_staging_bundle_verifies_against_staging(verifier_for):
    staging = verifier_for(STAGING_ROOT)
    result = staging.verify(staging_bundle(), [STAGING_POLICY], artifact=staging_artifact())

    assert result.identity == STAGING_SAN
    assert result.issuer == STAGING_ISSUER
    assert result.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert result.artifact_sha256 == hashlib.sha256(staging_artifact()).hexdigest()
    assert result.signed_at == datetime.fromtimestamp(1712085549, tz=UTC)


def test_github_bundle_fails_against_staging(verifier_for):
    staging = verifier_for(STAGING_ROOT)
    with pytest.raises(SigstoreBundleError, match=r"trusted_root\.staging\.json") as info:
        staging.verify(github_bundle(), [GITHUB_POLICY], artifact=github_artifact())
    assert "identity policies" not in str(info.value)


@pytest.mark.parametrize("order", ["production-first", "staging-first"])
def test_a_verifier_with_both_roots_accepts_both_bundles(verifier_for, order):
    roots = [PRODUCTION_ROOT, STAGING_ROOT]
    both = verifier_for(*(roots if order == "production-first" else roots[::-1]))
    policies = [GITHUB_POLICY, STAGING_POLICY]

    github = both.verify(github_bundle(), policies, artifact=github_artifact())
    staging = both.verify(staging_bundle(), policies, artifact=staging_artifact())

    assert (github.identity, staging.identity) == (GITHUB_SAN, STAGING_SAN)


def test_failing_under_every_root_reports_each_root(verifier_for):
    both = verifier_for(PRODUCTION_ROOT, STAGING_ROOT)
    other = IdentityPolicy(issuer=GITHUB_ISSUER, subject="https://github.com/evil/repo")
    with pytest.raises(SigstoreBundleError) as info:
        both.verify(staging_bundle(), [other], artifact=staging_artifact())
    assert "trusted_root.production.json" in str(info.value)
    assert "trusted_root.staging.json" in str(info.value)


# ------------------------------------------------------------------ media types and garbage


@pytest.mark.parametrize(
    ("bundle", "policy", "media_type"),
    [
        (github_bundle, GITHUB_POLICY, "application/vnd.dev.sigstore.bundle+json;version=0.1"),
        (github_bundle, GITHUB_POLICY, "application/vnd.dev.sigstore.bundle+json;version=0.2"),
        (staging_bundle, STAGING_POLICY, "application/vnd.dev.sigstore.bundle.v0.3+json"),
        (staging_bundle, STAGING_POLICY, "application/vnd.dev.sigstore.bundle+json;version=0.3"),
    ],
)
def test_supported_media_types_are_accepted(verifier_for, bundle, policy, media_type):
    relabelled = edit_bundle(bundle(), lambda doc: doc.update(mediaType=media_type))
    both = verifier_for(PRODUCTION_ROOT, STAGING_ROOT)
    assert both.verify(relabelled, [policy]).media_type == media_type


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.dev.sigstore.bundle+json;version=0.4",
        "application/vnd.dev.sigstore.bundle.v0.4+json",
        "application/json",
        None,
    ],
)
def test_unsupported_media_type_is_rejected(production, media_type):
    relabelled = edit_bundle(github_bundle(), lambda doc: doc.update(mediaType=media_type))
    with pytest.raises(SigstoreBundleError, match="unsupported Sigstore bundle mediaType"):
        production.verify(relabelled, [GITHUB_POLICY])


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"", "not valid JSON"),
        (b"this is not a bundle", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[]", "not a Sigstore bundle"),
        (b"null", "not a Sigstore bundle"),
        (b'{"hello": "world"}', "not a Sigstore bundle"),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
            b' "verificationMaterial": {}}',
            "exactly one of dsseEnvelope or messageSignature",
        ),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
            b' "verificationMaterial": {}, "messageSignature": {"signature": "AAAA"}}',
            "malformed Sigstore bundle",
        ),
    ],
    ids=[
        "empty",
        "text",
        "binary",
        "deeply-nested",
        "json-list",
        "json-null",
        "other-json",
        "no-content",
        "no-certificate",
    ],
)
def test_garbage_input_fails_with_a_clear_reason(production, garbage, reason):
    with pytest.raises(SigstoreBundleError, match=reason):
        production.verify(garbage, [GITHUB_POLICY])


def test_a_mangled_certificate_is_reported_as_malformed(production):
    def mangle(doc):
        cert = doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]
        cert["rawBytes"] = base64.b64encode(b"\x30\x03\x02\x01\x01").decode()

    with pytest.raises(SigstoreBundleError, match="malformed Sigstore bundle"):
        production.verify(edit_bundle(github_bundle(), mangle), [GITHUB_POLICY])


def test_a_bundle_without_a_stated_digest_needs_the_artifact(production):
    def drop_digest(doc):
        del doc["messageSignature"]["messageDigest"]

    bundle = edit_bundle(github_bundle(), drop_digest)
    with pytest.raises(SigstoreBundleError, match="no messageDigest"):
        production.verify(bundle, [GITHUB_POLICY])
    # With the artefact the same bundle verifies: the digest field is informational.
    assert production.verify(bundle, [GITHUB_POLICY], artifact=github_artifact())


# ------------------------------------------------------------------ DSSE bundles


def _as_dsse(doc, payload=b'{"_type": "https://in-toto.io/Statement/v1"}'):
    signature = doc.pop("messageSignature")["signature"]
    doc["dsseEnvelope"] = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": "application/vnd.in-toto+json",
        "signatures": [{"sig": signature, "keyid": ""}],
    }


def test_a_forged_dsse_envelope_fails_real_verification(production):
    # A real certificate and log entry with an envelope they never signed.
    with pytest.raises(SigstoreBundleError, match="did not verify"):
        production.verify(edit_bundle(github_bundle(), _as_dsse), [GITHUB_POLICY])


# slsa-conda-dsse.sigstore.json: a real public-good DSSE bundle (GitHub Actions, Rekor dsse/0.0.1);
# tests/attestation/data/README.md says where it comes from.
DSSE_BUNDLE = Path(__file__).parent / "data" / "slsa-conda-dsse.sigstore.json"
DSSE_SAN = "https://github.com/wolfv/sigstore-test/.github/workflows/action.yaml@refs/heads/main"
DSSE_POLICY = IdentityPolicy(issuer=GITHUB_ISSUER, subject=DSSE_SAN)
CONDA_SHA256 = "59ed81ee7a2485c47588ebdbad14764bf722c93438b43fe953a651747bc62ad7"


def test_a_real_dsse_bundle_verifies_offline_and_returns_its_statement(production):
    result = production.verify(DSSE_BUNDLE.read_bytes(), [DSSE_POLICY])
    assert result.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(result.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": CONDA_SHA256}
    assert result.artifact_sha256 is None
    assert result.identity == DSSE_SAN


def test_a_real_dsse_bundle_is_refused_for_any_other_identity(production):
    other = IdentityPolicy(issuer=GITHUB_ISSUER, subject_pattern=r"https://github\.com/evil/.*")
    with pytest.raises(SigstoreBundleError, match="matches none of the identity policies"):
        production.verify(DSSE_BUNDLE.read_bytes(), [other, GITHUB_POLICY])


def _retarget(doc):
    # The same statement about another file: one changed payload byte.
    env = doc["dsseEnvelope"]
    payload = base64.b64decode(env["payload"]).replace(CONDA_SHA256.encode(), b"0" * 64)
    env["payload"] = base64.b64encode(payload).decode()


def _swap_payload_type(doc):
    doc["dsseEnvelope"]["payloadType"] = "application/json"


@pytest.mark.parametrize("edit", [_retarget, _swap_payload_type])
def test_a_real_dsse_bundle_with_a_changed_envelope_fails(production, edit):
    with pytest.raises(SigstoreBundleError, match="DSSE: invalid signature"):
        production.verify(edit_bundle(DSSE_BUNDLE.read_bytes(), edit), [DSSE_POLICY])


def test_a_real_dsse_bundle_fails_against_the_staging_root(verifier_for):
    with pytest.raises(SigstoreBundleError):
        verifier_for(STAGING_ROOT).verify(DSSE_BUNDLE.read_bytes(), [DSSE_POLICY])


def test_an_artifact_is_refused_for_a_dsse_bundle(production):
    bundle = edit_bundle(github_bundle(), _as_dsse)
    with pytest.raises(SigstoreBundleError, match="DSSE bundle"):
        production.verify(bundle, [GITHUB_POLICY], artifact=github_artifact())


# ------------------------------------------------------------------ offline, configuration


def test_verification_makes_no_network_connection(monkeypatch):
    attempts: list[str] = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"network access attempted: {name}")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    # And the calls that would refresh a trust root over TUF, whatever transport they use.
    from sigstore.models import ClientTrustConfig
    from sigstore.verify import Verifier

    monkeypatch.setattr(Verifier, "production", refuse("Verifier.production"))
    monkeypatch.setattr(Verifier, "staging", refuse("Verifier.staging"))
    monkeypatch.setattr(ClientTrustConfig, "from_tuf", refuse("ClientTrustConfig.from_tuf"))

    both = SigstoreVerifier.from_files([*default_trusted_root_paths(), STAGING_ROOT])
    policies = [GITHUB_POLICY, STAGING_POLICY]
    both.verify(github_bundle(), policies, artifact=github_artifact())
    both.verify(github_bundle(), policies)
    both.verify(staging_bundle(), policies, artifact=staging_artifact())
    with pytest.raises(SigstoreBundleError):
        both.verify(github_bundle(), [STAGING_POLICY])

    assert attempts == []


def test_the_network_guard_would_catch_a_connection(monkeypatch):
    # Proves the guard above is live: a real connect attempt is refused and recorded.
    attempts: list[str] = []

    def blocked(self, address):
        attempts.append(str(address))
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    with socket.socket() as s, pytest.raises(OSError, match="network access attempted"):
        s.connect(("192.0.2.1", 443))
    assert attempts == ["('192.0.2.1', 443)"]


def test_default_trusted_root_is_the_production_root_shipped_with_sigstore():
    paths = default_trusted_root_paths()

    assert len(paths) == 1
    assert paths[0].is_file()
    assert "tuf-repo-cdn.sigstore.dev" in str(paths[0])
    assert "sigstage" not in str(paths[0])
    verifier = SigstoreVerifier.from_files(paths)
    assert verifier.verify(github_bundle(), [GITHUB_POLICY]).identity == GITHUB_SAN
    with pytest.raises(SigstoreBundleError):
        verifier.verify(staging_bundle(), [STAGING_POLICY])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": GITHUB_ISSUER},
        {"issuer": GITHUB_ISSUER, "subject": GITHUB_SAN, "subject_pattern": ".*"},
        {"issuer": GITHUB_ISSUER, "subject": ""},
        {"issuer": "", "subject": GITHUB_SAN},
        {"issuer": GITHUB_ISSUER, "subject_pattern": "("},
    ],
    ids=["neither", "both", "empty-subject", "empty-issuer", "bad-regex"],
)
def test_identity_policy_is_validated(kwargs):
    with pytest.raises(ValueError, match="IdentityPolicy"):
        IdentityPolicy(**kwargs)


def test_no_policies_is_a_caller_error(production):
    with pytest.raises(ValueError, match="at least one IdentityPolicy"):
        production.verify(github_bundle(), [])


def test_no_trusted_root_is_refused():
    with pytest.raises(SigstoreBundleError, match="no trusted root"):
        SigstoreVerifier([])


@pytest.mark.parametrize("content", [None, b"{not json", b'{"mediaType": "nope"}'])
def test_an_unloadable_trusted_root_file_is_reported(tmp_path, content):
    path = tmp_path / "trusted_root.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SigstoreBundleError, match="cannot load trusted root"):
        SigstoreVerifier.from_files([path])
