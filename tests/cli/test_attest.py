"""``linegate attest``: sign and verify offline; upload to a local stand-in HTTP server."""

import base64
import hashlib
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from typer.testing import CliRunner

from linegate.embedded import free_port
from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    dsse_sign,
    dsse_verify,
    key_id,
    load_public_key,
    private_key_pem,
    public_key_pem,
)
from linegate_cli import attest
from linegate_cli.main import app

SLSA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "slsa"
SLSA_PREDICATE = SLSA_DIR / "slsa_predicate_v1_0.json"
SLSA_V1 = "https://slsa.dev/provenance/v1"

KEY_MAKERS: dict[str, Callable[[], Any]] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@pytest.fixture(autouse=True)
def _no_ambient_linegate_env(monkeypatch):
    for name in (
        "LINEGATE_TOKEN",
        "LINEGATE_CLIENT_ID",
        "LINEGATE_CLIENT_SECRET",
        "LINEGATE_ATTESTATION_URL",
        "LINEGATE_ENVIRONMENT",
    ):
        monkeypatch.delenv(name, raising=False)


def run(*args: str | Path):
    return CliRunner().invoke(app, ["attest", *map(str, args)])


def plain(output: str) -> str:
    """A usage error's text without rich's box and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


@dataclass
class KeyFiles:
    private: Path
    public: Path
    key_id: str


@pytest.fixture
def make_key(tmp_path) -> Callable[..., KeyFiles]:
    def make(kind: str = "p256", name: str | None = None) -> KeyFiles:
        key = KEY_MAKERS[kind]()
        stem = tmp_path / (name or kind)
        private, public = stem.with_suffix(".pem"), stem.with_suffix(".pub.pem")
        private.write_bytes(private_key_pem(key))
        public.write_bytes(public_key_pem(key.public_key()))
        return KeyFiles(private, public, key_id(key.public_key()))

    return make


@pytest.fixture
def make_file(tmp_path) -> Callable[..., Path]:
    def make(name: str, content: bytes | str | dict[str, Any]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = json.dumps(content)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return make


@pytest.fixture
def signed(tmp_path, make_key, make_file) -> Callable[..., tuple[Path, KeyFiles, Path]]:
    """Sign a statement over one artifact with the CLI: (envelope, key, artifact)."""

    def sign(kind: str = "p256", predicate: Path | None = None) -> tuple[Path, KeyFiles, Path]:
        key = make_key(kind)
        artifact = make_file("model.onnx", b"\x08\x07onnx-bytes" * 100)
        out = tmp_path / f"{kind}.intoto.json"
        result = run(
            "sign",
            "--key",
            key.private,
            "--subject",
            artifact,
            "--predicate-type",
            SLSA_V1,
            "--out",
            out,
            predicate or make_file("predicate.json", {"builder": {"id": "ci"}}),
        )
        assert result.exit_code == 0, result.output
        return out, key, artifact

    return sign


def envelope_payload(path: Path) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))


# ------------------------------------------------------------------------------ sign/verify


@pytest.mark.parametrize("kind", list(KEY_MAKERS))
def test_sign_then_verify_round_trips(signed, kind):
    envelope_path, key, artifact = signed(kind)
    envelope = json.loads(envelope_path.read_text())

    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == key.key_id
    verified = dsse_verify(envelope, [load_public_key(key.public.read_bytes())])
    assert verified.signer_key_ids == (key.key_id,)
    assert json.loads(verified.payload)["_type"] == "https://in-toto.io/Statement/v1"

    result = run("verify", envelope_path, "--public-key", key.public, "--subject", artifact)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"verified: {SLSA_V1} for 1 subject(s), signed by key {key.key_id[:16]}\n"
    )


def test_bare_attest_form_signs_to_stdout(make_key, make_file):
    key = make_key("ed25519")
    artifact = make_file("dataset.parquet", b"rows")
    predicate = make_file("predicate.json", {"k": "v"})
    result = run(
        "--key", key.private, "--subject", artifact, "--predicate-type", SLSA_V1, predicate
    )
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.stdout)
    verified = dsse_verify(envelope, [load_public_key(key.public.read_bytes())])
    assert json.loads(verified.payload)["predicate"] == {"k": "v"}


def test_a_mistyped_subcommand_is_not_taken_for_a_predicate_file():
    result = run("verfiy", "envelope.json")
    assert result.exit_code == 2
    assert "No such command" in plain(result.output)


def test_subject_digests_are_the_sha256_of_each_file(tmp_path, make_key, make_file):
    key = make_key()
    small = make_file("a/model.onnx", b"weights")
    large = make_file("b/weights.bin", bytes(range(256)) * 20_000)  # several read chunks
    out = tmp_path / "env.json"
    result = run(
        "sign",
        "--key",
        key.private,
        "--subject",
        small,
        "--subject",
        large,
        "--predicate-type",
        SLSA_V1,
        "--out",
        out,
        make_file("p.json", {}),
    )
    assert result.exit_code == 0, result.output

    statement = envelope_payload(out)
    assert statement["subject"] == [
        {"name": "model.onnx", "digest": {"sha256": hashlib.sha256(b"weights").hexdigest()}},
        {
            "name": "weights.bin",
            "digest": {"sha256": hashlib.sha256(large.read_bytes()).hexdigest()},
        },
    ]
    assert statement["predicateType"] == SLSA_V1


def test_two_different_subjects_with_one_name_are_refused(make_key, make_file):
    key = make_key()
    first, second = make_file("a/model.onnx", b"1"), make_file("b/model.onnx", b"2")
    result = run(
        "sign", "--key", key.private, "--subject", first, "--subject", second,
        "--predicate-type", SLSA_V1, make_file("p.json", {}),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "two different subjects are named 'model.onnx'" in result.stderr


def test_the_slsa_provenance_predicate_signs_and_verifies(signed):
    if not SLSA_PREDICATE.is_file():
        pytest.skip(f"shared test data missing: {SLSA_PREDICATE}")
    envelope_path, key, artifact = signed("p256", predicate=SLSA_PREDICATE)

    assert envelope_payload(envelope_path)["predicate"] == json.loads(SLSA_PREDICATE.read_text())
    result = run("verify", envelope_path, "--public-key", key.public, "--subject", artifact)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"verified: {SLSA_V1} for 1 subject(s)")


def test_verify_accepts_any_one_of_several_trusted_keys(signed, make_key):
    envelope_path, key, _ = signed()
    other = make_key("ed25519", name="other")
    result = run("verify", envelope_path, "--public-key", other.public, "--public-key", key.public)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"signed by key {key.key_id[:16]}\n")


def test_verify_fails_with_a_wrong_key(signed, make_key):
    envelope_path, _, _ = signed()
    stranger = make_key("p256", name="stranger")
    result = run("verify", envelope_path, "--public-key", stranger.public)
    assert result.exit_code == 1
    assert result.stderr == "error: no signature verifies with a trusted key\n"
    assert "verified" not in result.stdout


def test_verify_fails_on_a_tampered_payload(signed):
    envelope_path, key, _ = signed()
    envelope = json.loads(envelope_path.read_text())
    statement = envelope_payload(envelope_path)
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    envelope_path.write_text(json.dumps(envelope))

    result = run("verify", envelope_path, "--public-key", key.public)
    assert result.exit_code == 1
    assert result.stderr == "error: no signature verifies with a trusted key\n"


def test_verify_fails_when_a_subject_file_changed(signed):
    envelope_path, key, artifact = signed()
    artifact.write_bytes(artifact.read_bytes() + b"backdoor")

    result = run("verify", envelope_path, "--public-key", key.public, "--subject", artifact)
    assert result.exit_code == 1
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert f"(sha256:{digest}) is not a subject of the statement" in result.stderr


def test_verify_refuses_a_payload_type_other_than_in_toto(tmp_path):
    private = KEY_MAKERS["p256"]()
    public = tmp_path / "k.pub.pem"
    public.write_bytes(public_key_pem(private.public_key()))
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "a" * 64}}],
        "predicateType": SLSA_V1,
    }
    envelope = tmp_path / "env.json"
    envelope.write_text(
        json.dumps(dsse_sign(json.dumps(statement).encode(), "text/plain", private))
    )

    result = run("verify", envelope, "--public-key", public)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: payloadType is 'text/plain', not 'application/vnd.in-toto+json'\n"
    )


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            {"_type": "https://in-toto.io/Statement/v0.1"},
            "_type is 'https://in-toto.io/Statement/v0.1'",
        ),
        ({"subject": []}, "statement has no subjects"),
        ({"subject": [{"name": "m", "digest": {"sha512": "a" * 128}}]}, "subject 0 has no sha256"),
        ({"subject": [{"name": "m", "digest": {"sha256": "abc"}}]}, "subject 0 has no sha256"),
        ({"predicateType": ""}, "statement has no predicateType"),
    ],
    ids=["old-type", "no-subjects", "no-sha256", "short-digest", "no-predicate-type"],
)
def test_verify_refuses_a_malformed_statement(tmp_path, statement, message):
    private = KEY_MAKERS["ed25519"]()
    public = tmp_path / "k.pub.pem"
    public.write_bytes(public_key_pem(private.public_key()))
    body = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "a" * 64}}],
        "predicateType": SLSA_V1,
        **statement,
    }
    envelope = tmp_path / "env.json"
    envelope.write_text(
        json.dumps(dsse_sign(json.dumps(body).encode(), IN_TOTO_PAYLOAD_TYPE, private))
    )

    result = run("verify", envelope, "--public-key", public)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {message}")


def test_sign_refuses_a_predicate_that_is_not_a_json_object(make_key, make_file):
    key = make_key()
    result = run(
        "sign", "--key", key.private, "--subject", make_file("m", b"m"),
        "--predicate-type", SLSA_V1, make_file("p.json", "[1, 2]"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "is not a JSON object" in result.stderr


def test_sign_refuses_a_p521_key_it_could_not_sign_verifiably(tmp_path, make_file):
    key = tmp_path / "p521.pem"
    key.write_bytes(private_key_pem(ec.generate_private_key(ec.SECP521R1())))
    result = run(
        "sign", "--key", key, "--subject", make_file("m", b"m"),
        "--predicate-type", SLSA_V1, make_file("p.json", {}),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "P-521 keys are not supported" in result.stderr


def test_sign_refuses_a_predicate_type_that_is_not_a_uri(make_key, make_file):
    key = make_key()
    result = run(
        "sign", "--key", key.private, "--subject", make_file("m", b"m"),
        "--predicate-type", "provenance", make_file("p.json", {}),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "must be a URI" in plain(result.output)


# ------------------------------------------------------------------------- content sniffing

TRICKY = {
    "payload": 'a "quoted" \\ back\\slash \\" \u00e9\u4e2d ' * 50,
    "nested": {"x": [1, {"y": "}]{["}, [], {}], "z": "\\"},
    "payloadType": "application/vnd.in-toto+json",
    "num": -1.5e3,
    "flags": [True, False, None],
    "signatures": [{"keyid": "", "sig": "MEUC"}],
    "last": "end",
}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 16])
def test_top_level_reader_matches_json_loads_at_every_chunk_boundary(chunk):
    text = json.dumps(TRICKY, indent=1, ensure_ascii=False).encode()
    reader = attest._TopLevelReader(io.BytesIO(b"\xef\xbb\xbf" + text), chunk=chunk)
    members = dict(reader.members(frozenset(TRICKY)))
    assert members == TRICKY


def test_top_level_reader_skips_values_too_big_to_keep():
    doc = json.dumps({"big": "x" * 5000, "small": 1}).encode()
    reader = attest._TopLevelReader(io.BytesIO(doc), chunk=512, limit=1024)
    members = dict(reader.members(frozenset({"big", "small"})))
    assert members["big"] is attest._SKIPPED
    assert members["small"] == 1


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"a": "unterminated', "ends in the middle"),
        (b'{"a": 1 "b": 2}', "expected ',' or '}'"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": 1}', "pass --content-type"),
    ],
)
def test_detect_content_type_explains_what_it_cannot_read(make_file, document, message):
    with pytest.raises(attest.AttestError, match=message):
        attest.detect_content_type(make_file("doc.json", document))


# ------------------------------------------------------------------------------------ upload


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeAttestationService:
    """A stdlib HTTP server that records requests and answers from ``routes``."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)

    def answer(self, path: str, status: int, body: Any, content_type: str = "application/json"):
        self.routes[path] = (status, content_type, json.dumps(body).encode())


ACCEPTED = {
    "id": "att-1",
    "status": "verified",
    "supplier": "acme",
    "predicate_type": SLSA_V1,
    "subjects": [],
    "expires_at": None,
}


@pytest.fixture
def service() -> Iterator[FakeAttestationService]:
    fake = FakeAttestationService(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            fake.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
            status, content_type, payload = fake.routes.get(
                self.path, (404, "application/problem+json", b'{"title": "Not Found"}')
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.answer("/v1/attestations", 201, ACCEPTED)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


DOCUMENTS: dict[str, tuple[dict[str, Any], str]] = {
    "sigstore-v0.3": (
        {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": {}},
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    ),
    "sigstore-v0.1": (
        {
            "verificationMaterial": {},
            "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        },
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    ),
    "cyclonedx": (
        {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []},
        "application/vnd.cyclonedx+json",
    ),
    "spdx-2.3": (
        {"SPDXID": "SPDXRef-DOCUMENT", "spdxVersion": "SPDX-2.3", "packages": []},
        "application/spdx+json",
    ),
    "spdx-3": (
        {"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": []},
        "application/spdx+json",
    ),
    "dsse": (
        {"payload": "e30=", "payloadType": IN_TOTO_PAYLOAD_TYPE, "signatures": [{"sig": "AA=="}]},
        "application/vnd.dsse.envelope.v1+json",
    ),
}


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_upload_sends_the_file_with_its_detected_content_type(service, make_file, kind):
    document, content_type = DOCUMENTS[kind]
    path = make_file(f"{kind}.json", json.dumps(document, indent=2))

    result = run("upload", path, "--url", service.url, "--token", "tok-123")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ACCEPTED
    [request] = service.requests
    assert (request.method, request.path) == ("POST", "/v1/attestations")
    assert request.headers["Content-Type"] == content_type
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert request.body == path.read_bytes()


class _ChunkRecordingFile:
    """Wraps a binary file and records the size asked of each ``read``."""

    def __init__(self, f, sizes: list[int]):
        self._f, self._sizes = f, sizes

    def read(self, size: int = -1) -> bytes:
        self._sizes.append(size)
        return self._f.read(size)

    def fileno(self) -> int:
        return self._f.fileno()

    def __iter__(self):
        raise AssertionError("iterating a binary file reads it by lines, not chunks")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_upload_streams_a_large_envelope_in_bounded_reads(service, signed, monkeypatch):
    envelope_path, _, _ = signed()
    envelope = json.loads(envelope_path.read_text())
    # A 4 MiB payload ahead of payloadType: sniffing must not need the whole file either.
    big = {"payload": base64.b64encode(b"\x00" * (3 << 20)).decode(), **envelope}
    envelope_path.write_text(json.dumps(big))
    sizes: list[int] = []
    real_open = Path.open

    def recording_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return _ChunkRecordingFile(f, sizes) if self == envelope_path else f

    monkeypatch.setattr(Path, "open", recording_open)
    result = run("upload", envelope_path, "--url", service.url, "--token", "t")
    monkeypatch.undo()

    assert result.exit_code == 0, result.output
    [request] = service.requests
    assert request.headers["Content-Type"] == "application/vnd.dsse.envelope.v1+json"
    assert request.headers["Content-Length"] == str(envelope_path.stat().st_size)
    assert "Transfer-Encoding" not in request.headers
    assert request.body == envelope_path.read_bytes()
    assert sizes
    assert all(0 < size <= 1 << 16 for size in sizes), sorted(set(sizes))


def test_upload_honours_an_explicit_content_type(service, make_file):
    path = make_file("odd.json", {"neither": "sbom nor envelope"})
    result = run(
        "upload", path, "--url", service.url, "--token", "t",
        "--content-type", "application/spdx+json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert service.requests[0].headers["Content-Type"] == "application/spdx+json"


def test_upload_refuses_a_document_it_cannot_classify(service, make_file):
    path = make_file("odd.json", {"neither": "sbom nor envelope"})
    result = run("upload", path, "--url", service.url, "--token", "t")
    assert result.exit_code == 2
    assert "pass --content-type" in plain(result.output)
    assert service.requests == []


def test_upload_prints_the_problem_details_of_a_rejection(service, make_file):
    service.answer(
        "/v1/attestations",
        422,
        {
            "type": "about:blank",
            "title": "Attestation rejected",
            "status": 422,
            "detail": "the envelope does not verify",
            "reasons": ["no signature verifies with a registered key", "key acme-1 expired"],
            "id": "rej-42",
        },
        content_type="application/problem+json",
    )
    path = make_file("env.json", DOCUMENTS["dsse"][0])

    result = run("upload", path, "--url", service.url, "--token", "t")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: upload failed: HTTP 422 Unprocessable Entity: the envelope does not verify",
        "  - no signature verifies with a registered key",
        "  - key acme-1 expired",
        "  rejection id: rej-42",
    ]


def test_upload_reports_a_server_error_without_json(service, make_file):
    service.routes["/v1/attestations"] = (502, "text/plain", b"bad gateway")
    result = run("upload", make_file("env.json", DOCUMENTS["dsse"][0]), "--url", service.url,
                 "--token", "t")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == "error: upload failed: HTTP 502 Bad Gateway: bad gateway\n"


def test_upload_gets_a_token_with_the_client_credentials_grant(service, make_file, monkeypatch):
    service.answer(
        "/oauth/token", 200, {"access_token": "granted", "token_type": "Bearer", "expires_in": 900}
    )
    monkeypatch.setenv("LINEGATE_ATTESTATION_URL", service.url + "/")
    monkeypatch.setenv("LINEGATE_CLIENT_ID", "acme-ci")
    monkeypatch.setenv("LINEGATE_CLIENT_SECRET", "s3cret")

    result = run("upload", make_file("bom.json", DOCUMENTS["cyclonedx"][0]))

    assert result.exit_code == 0, result.output
    token_request, upload_request = service.requests
    assert token_request.path == "/oauth/token"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["acme-ci"],
        "client_secret": ["s3cret"],
    }
    assert upload_request.path == "/v1/attestations"
    assert upload_request.headers["Authorization"] == "Bearer granted"


def test_upload_stops_when_the_token_request_is_refused(service, make_file):
    service.answer(
        "/oauth/token", 401, {"error": "invalid_client", "error_description": "unknown client"}
    )
    result = run(
        "upload", make_file("bom.json", DOCUMENTS["cyclonedx"][0]), "--url", service.url,
        "--client-id", "acme-ci", "--client-secret", "wrong",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == "error: token request failed: HTTP 401 Unauthorized: unknown client\n"
    assert [r.path for r in service.requests] == ["/oauth/token"]


def test_upload_takes_the_token_from_the_environment(service, make_file, monkeypatch):
    monkeypatch.setenv("LINEGATE_TOKEN", "from-env")
    result = run("upload", make_file("sbom.json", DOCUMENTS["spdx-2.3"][0]), "--url", service.url)
    assert result.exit_code == 0, result.output
    assert service.requests[0].headers["Authorization"] == "Bearer from-env"


def test_upload_without_credentials_is_a_usage_error(service, make_file):
    result = run("upload", make_file("sbom.json", DOCUMENTS["spdx-2.3"][0]), "--url", service.url)
    assert result.exit_code == 2
    assert "no credentials" in plain(result.output)
    assert service.requests == []


def test_upload_exits_2_when_the_service_is_unreachable(make_file):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run(
        "upload", make_file("env.json", DOCUMENTS["dsse"][0]), "--url", url, "--token", "t"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach the attestation service at {url}: ")
