"""``linegate evidence export`` / ``verify`` and ``linegate techfile`` on the demo release:
the bundle verifies offline, and altering any byte of any file in it fails naming the file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from incident.app import create_app as create_incident
from incident.postmarket import record
from incident.settings import IncidentSettings
from linegate.auth import Role
from linegate.signing import generate_private_key, public_key_pem
from linegate.testing.pki import CodeSigningPki
from linegate_cli.main import app
from tests.registry.demo_stack import (  # noqa: F401
    MODEL,
    VERSION,
    DemoStack,
    demo_stack,
    start_demo_stack,
)
from tests.registry.test_signing_methods import certificate_settings


def cli(*args: Any, token: str = "") -> Any:
    return CliRunner().invoke(app, list(map(str, args)), env={"LINEGATE_TOKEN": token})


def export_bundle(stack: DemoStack, tmp_path: Path) -> tuple[Path, Path]:
    """``linegate evidence export`` of the demo release, and the registry key pinned."""
    bundle = tmp_path / "weld-2.1.0.tar.gz"
    r = cli(
        "evidence",
        "export",
        MODEL,
        VERSION,
        "--out",
        bundle,
        "--registry",
        stack.registry_url,
        token=stack.token(Role.AUDITOR),
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"exported: {bundle}")
    # Built on disk in a staging directory that goes once the answer is sent (just after the
    # last byte: the removal runs as the response's background task).
    staging = stack.data_dir / "registry" / "blobs" / ".staging"
    for _ in range(200):
        if not any(staging.iterdir()):
            break
        time.sleep(0.05)
    assert list(staging.iterdir()) == []
    assert not bundle.with_name(bundle.name + ".partial").exists()
    trust = tmp_path / "registry.pub.pem"
    trust.write_bytes(httpx.get(f"{stack.registry_url}/v1/audit/public-key").content)
    return bundle, trust


@pytest.fixture
async def exported(demo_stack: DemoStack, tmp_path: Path) -> tuple[Path, Path]:  # noqa: F811
    return export_bundle(demo_stack, tmp_path)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("evidence verify tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _extract(bundle: Path, into: Path) -> Path:
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(into, filter="data")
    (root,) = into.iterdir()
    return root


async def test_an_exported_bundle_verifies_offline_with_every_check_reported(
    exported: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    demo_stack: DemoStack,  # noqa: F811
) -> None:
    bundle, trust = exported
    with tarfile.open(bundle, "r:gz") as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    assert {
        "manifest.dsse.json",
        "technical-file.json",
        "technical-file.html",
        "technical-file.pdf",
        f"model/{VERSION}.sig",
        "audit/registry.proof.json",
        "audit/attestation.proof.json",
        "competence.json",
        "keys/registry.pem",
        "keys/model-signing.pem",
        "keys/attestation-audit.pem",
        "keys/suppliers/optivision.json",
    } <= names
    assert sum(n.startswith("attestations/") and n.endswith(".raw") for n in names) == 3
    assert any(n.startswith("golden-set/") for n in names)

    _no_network(monkeypatch)
    r = cli("evidence", "verify", bundle, "--trust", trust)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert not [x for x in lines if x.startswith("FAIL")]
    for expected in (
        "ok   manifest signature (manifest.dsse.json)",
        "ok   file technical-file.json: sha256 matches the manifest",
        f"ok   model signature model/{VERSION}.sig: signed by keys/model-signing.pem",
        "ok   golden-set report golden-set/",
        "ok   attestation attestations/",
        "ok   audit proof audit/registry.proof.json",
        "ok   audit proof audit/attestation.proof.json",
        "ok   audit entries cited from registry",
        "ok   audit entries cited from attestation",
    ):
        assert any(x.startswith(expected) for x in lines), (expected, r.output)
    # One line per file of the manifest, and the incident service's absence is noted.
    assert sum(x.startswith("ok   file ") for x in lines) == len(names) - 1
    assert any(x.startswith("note not in the bundle: incidents:") for x in lines)
    # The post-market log is a gap with the reason, and no file or check of its own.
    (gap,) = [x for x in lines if x.startswith("note not in the bundle: post-market log")]
    assert f"of {MODEL} {VERSION}: the incident service at {demo_stack.incident_url}" in gap
    assert "did not answer" in gap
    assert "incidents/postmarket.jsonl" not in names
    assert not [x for x in lines if x.startswith("ok   post-market log")]
    assert lines[-1].startswith("verified: ")


async def test_altering_any_byte_of_any_file_fails_naming_the_file(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, trust = exported
    root = _extract(bundle, tmp_path / "x")
    assert cli("evidence", "verify", root, "--trust", trust).exit_code == 0
    _no_network(monkeypatch)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) > 15
    for path in files:
        original = path.read_bytes()
        for offset in (0, len(original) // 2, len(original) - 1):
            altered = bytearray(original)
            altered[offset] ^= 0x01
            path.write_bytes(bytes(altered))
            r = cli("evidence", "verify", root, "--trust", trust)
            name = path.relative_to(root).as_posix()
            assert r.exit_code == 1, (name, offset, r.output)
            failures = [x for x in r.output.splitlines() if x.startswith("FAIL")]
            assert any(name in x for x in failures), (name, offset, r.output)
        path.write_bytes(original)
    assert cli("evidence", "verify", root, "--trust", trust).exit_code == 0


async def test_an_added_file_a_damaged_archive_and_a_foreign_key_fail(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, trust = exported
    root = _extract(bundle, tmp_path / "x")
    (root / "attestations" / "extra.raw").write_bytes(b"{}")
    r = cli("evidence", "verify", root, "--trust", trust)
    assert r.exit_code == 1
    assert "FAIL file attestations/extra.raw: not listed in the manifest (added)" in r.output

    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(data))
    r = cli("evidence", "verify", damaged, "--trust", trust)
    assert r.exit_code == 1
    assert "FAIL archive damaged.tar.gz" in r.output

    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(public_key_pem(generate_private_key().public_key()))
    r = cli("evidence", "verify", bundle, "--trust", foreign)
    assert r.exit_code == 1
    assert "FAIL manifest signature (manifest.dsse.json)" in r.output


async def test_the_manifest_is_a_signed_in_toto_statement_over_every_file(
    exported: tuple[Path, Path],
) -> None:
    bundle, _ = exported
    with tarfile.open(bundle, "r:gz") as tar:
        files = {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    envelope = json.loads(files.pop("manifest.dsse.json"))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://linegate.dev/evidence-bundle/v1"
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        n: hashlib.sha256(d).hexdigest() for n, d in files.items()
    }
    assert statement["predicate"]["createdBy"] == "ivo.auditor"
    assert set(statement["predicate"]["auditEntries"]) == {"registry", "attestation"}


async def test_export_is_audited_and_needs_an_auditor(
    exported: tuple[Path, Path],
    demo_stack: DemoStack,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with demo_stack.registry() as http:
        entries = (await http.get("/v1/audit/entries", params={"limit": 1000})).json()
    (export,) = [e for e in entries if e["action"] == "evidence.exported"]
    assert (export["actor"], export["subject"]) == ("ivo.auditor", f"model:{MODEL}@{VERSION}")
    r = cli(
        "evidence",
        "export",
        MODEL,
        VERSION,
        "--out",
        tmp_path / "b.tar.gz",
        "--registry",
        demo_stack.registry_url,
        token=demo_stack.token(Role.REGISTRY_APPROVE, sub="dana"),
    )
    assert r.exit_code == 1
    assert "403" in r.output


async def test_techfile_command_writes_json_html_and_pdf(
    demo_stack: DemoStack,  # noqa: F811
    tmp_path: Path,
) -> None:
    token = demo_stack.token(Role.AUDITOR)
    r = cli("techfile", MODEL, VERSION, "--registry", demo_stack.registry_url, token=token)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [s["id"] for s in doc["sections"]] == [str(i) for i in range(1, 10)]
    assert f"completeness {doc['completeness']['score']:.0%}" in r.stderr
    out = tmp_path / "tf.html"
    r = cli(
        "techfile",
        MODEL,
        VERSION,
        "--format",
        "html",
        "--out",
        out,
        "--registry",
        demo_stack.registry_url,
        token=token,
    )
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("<!doctype html>")
    pdf = tmp_path / "tf.pdf"
    r = cli(
        "techfile",
        MODEL,
        VERSION,
        "--format",
        "pdf",
        "--out",
        pdf,
        "--registry",
        demo_stack.registry_url,
        token=token,
    )
    assert r.exit_code == 0, r.output
    assert pdf.read_bytes().startswith(b"%PDF-")
    r = cli(
        "techfile",
        MODEL,
        VERSION,
        "--format",
        "pdf",
        "--registry",
        demo_stack.registry_url,
        token=token,
    )
    assert r.exit_code == 2
    assert "add --out FILE" in r.output
    r = cli("techfile", MODEL, "0.0.1", "--registry", demo_stack.registry_url, token=token)
    assert r.exit_code == 1
    assert "has no version '0.0.1'" in r.output


def test_copying_a_bundle_folder_keeps_it_verifiable(tmp_path: Path) -> None:
    # A folder without a manifest is reported, not crashed on.
    (tmp_path / "b").mkdir()
    shutil.copyfile(__file__, tmp_path / "b" / "x.txt")
    key = tmp_path / "k.pem"
    key.write_bytes(public_key_pem(generate_private_key().public_key()))
    r = cli("evidence", "verify", tmp_path / "b", "--trust", key)
    assert r.exit_code == 1
    assert "FAIL file manifest.dsse.json: missing from the bundle" in r.output
    assert io.StringIO(r.output).readline().startswith("ok   archive b")


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _statement(files: dict[str, bytes]) -> Any:
    import base64

    return json.loads(base64.b64decode(json.loads(files["manifest.dsse.json"])["payload"]))


T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
POSTMARKET = "incidents/postmarket.jsonl"


def incident_with_postmarket_log(
    settings_factory: Any, serve_http: Any, service_client: Any, events: list[dict[str, Any]]
) -> Any:
    """Serves a real incident service whose post-market log holds ``events`` (telemetry of
    2.1.0 on line 3) and one event of another version, which no bundle of 2.1.0 may carry."""

    async def serve(common: dict[str, Any], port: int) -> None:
        settings = settings_factory(IncidentSettings, **common, monitor_interval_seconds=0)
        # The log is written through the service's own unit of work (its lifespan in this
        # loop), then the service is served over HTTP on the same database.
        writer = create_incident(settings)
        async with service_client(writer), writer.state.ctx.db.session() as session:
            for i, event in enumerate(events):
                await record(
                    session,
                    kind=event["kind"],
                    occurred_at=T0 + timedelta(minutes=i),
                    payload=event["payload"],
                    model=MODEL,
                    version=VERSION,
                    line="line3",
                )
            await record(
                session,
                kind="telemetry.batch",
                occurred_at=T0,
                payload={"parts": 99},
                model=MODEL,
                version="2.0.4",
                line="line3",
            )
        serve_http(create_incident(settings), port)

    return serve


EVENTS = [
    {"kind": "telemetry.batch", "payload": {"parts": 40, "rejects": 2, "device": "line3-cam1"}},
    {"kind": "telemetry.override", "payload": {"record_id": "r-17", "to": "ok"}},
    {"kind": "telemetry.kpi", "payload": {"scrap_rate": 0.011, "shift": "early"}},
    {"kind": "telemetry.batch", "payload": {"parts": 40, "rejects": 1, "device": "line3-cam1"}},
]


async def test_the_bundle_carries_the_versions_post_market_log_and_verify_checks_it(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await start_demo_stack(
        settings_factory,
        serve_http,
        incident=incident_with_postmarket_log(settings_factory, serve_http, service_client, EVENTS),
    )
    bundle, trust = export_bundle(stack, tmp_path)
    files = _members(bundle)
    lines = [json.loads(x) for x in files[POSTMARKET].splitlines()]
    assert [(e["kind"], e["payload"]) for e in lines] == [(e["kind"], e["payload"]) for e in EVENTS]
    assert {(e["model"], e["version"], e["line"]) for e in lines} == {(MODEL, VERSION, "line3")}
    statement = _statement(files)
    listed = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert listed[POSTMARKET] == hashlib.sha256(files[POSTMARKET]).hexdigest()
    recorded = statement["predicate"]["postmarket"]
    assert (recorded["events"], recorded["truncated"]) == (len(EVENTS), False)
    assert not [m for m in statement["predicate"]["missing"] if "post-market" in m]

    _no_network(monkeypatch)
    r = cli("evidence", "verify", bundle, "--trust", trust)
    assert r.exit_code == 0, r.output
    assert (
        f"ok   post-market log {POSTMARKET}: {len(EVENTS)} events of {MODEL} {VERSION}, "
        "the whole log"
    ) in r.output.splitlines()
    assert f"ok   file {POSTMARKET}: sha256 matches the manifest" in r.output

    root = _extract(bundle, tmp_path / "x")
    path = root / POSTMARKET
    original = path.read_bytes()
    for offset in (0, len(original) // 2, len(original) - 2):
        altered = bytearray(original)
        altered[offset] ^= 0x01
        path.write_bytes(bytes(altered))
        r = cli("evidence", "verify", root, "--trust", trust)
        assert r.exit_code == 1, (offset, r.output)
        failures = [x for x in r.output.splitlines() if x.startswith("FAIL")]
        assert f"FAIL file {POSTMARKET}" in "\n".join(failures), (offset, r.output)
    path.write_bytes(original)
    assert cli("evidence", "verify", root, "--trust", trust).exit_code == 0


async def test_a_post_market_log_over_the_cap_is_cut_after_a_whole_event_and_noted(
    settings_factory: Any,
    serve_http: Any,
    service_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    many = [
        {"kind": "telemetry.batch", "payload": {"parts": i, "pad": "x" * 200}} for i in range(12)
    ]
    cap = 1500  # a few of the ~330-byte events
    stack = await start_demo_stack(
        settings_factory,
        serve_http,
        registry={"evidence_postmarket_max_bytes": cap},
        incident=incident_with_postmarket_log(settings_factory, serve_http, service_client, many),
    )
    bundle, trust = export_bundle(stack, tmp_path)
    files = _members(bundle)
    async with httpx.AsyncClient(base_url=stack.incident_url, headers=stack.auth()) as http:
        r = await http.get("/v1/postmarket/export", params={"model": MODEL, "version": VERSION})
    whole = r.content
    kept = files[POSTMARKET]
    assert len(whole) > cap >= len(kept) > 0
    assert whole.startswith(kept)  # oldest first
    assert kept.endswith(b"\n")  # whole events
    count = len(kept.splitlines())
    assert 0 < count < len(many)
    statement = _statement(files)
    assert statement["predicate"]["postmarket"]["truncated"] is True
    (note,) = [m for m in statement["predicate"]["missing"] if "post-market" in m]
    assert f"truncated at LINEGATE_EVIDENCE_POSTMARKET_MAX_BYTES={cap}" in note
    assert f"holds the first {count} events" in note

    _no_network(monkeypatch)
    r = cli("evidence", "verify", bundle, "--trust", trust)
    assert r.exit_code == 0, r.output
    assert (
        f"ok   post-market log {POSTMARKET}: {count} events of {MODEL} {VERSION}, "
        f"truncated at {cap} bytes (see the note)"
    ) in r.output.splitlines()
    assert f"note not in the bundle: {note}" in r.output.splitlines()


async def test_a_certificate_signing_registry_bundle_verifies_against_its_pinned_chain(
    settings_factory: Any, serve_http: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = CodeSigningPki.create(tmp_path / "pki")
    leaf = pki.issue_leaf("registry-release")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.chain_pem.read_bytes() + pki.root_pem.read_bytes())
    stack = await start_demo_stack(
        settings_factory, serve_http, registry=certificate_settings(leaf, chain)
    )
    bundle, trust = export_bundle(stack, tmp_path)
    files = _members(bundle)
    async with stack.registry() as http:
        published = (await http.get("/v1/signing-keys")).json()["keys"][0]
    assert files["keys/model-signing-chain.pem"].decode() == published["certificate_chain_pem"]
    assert files["keys/model-signing-chain.pem"] == chain.read_bytes()
    assert b"x509CertificateChain" in files[f"model/{VERSION}.sig"]

    _no_network(monkeypatch)
    r = cli("evidence", "verify", bundle, "--trust", trust)
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.output.splitlines() if "model/" in x and "signed by" in x]
    assert line.startswith(
        f"ok   model signature model/{VERSION}.sig: signed by code-signing certificate "
        "CN=registry-release,O=Linegate Test Plant chaining to keys/model-signing-chain.pem"
    ), r.output

    # Another CA's chain in its place: the file no longer matches the manifest, and the
    # signature does not chain to it.
    root = _extract(bundle, tmp_path / "x")
    other = CodeSigningPki.create(tmp_path / "other", name="Other Plant")
    (root / "keys" / "model-signing-chain.pem").write_bytes(
        other.chain_pem.read_bytes() + other.root_pem.read_bytes()
    )
    r = cli("evidence", "verify", root, "--trust", trust)
    assert r.exit_code == 1
    failures = [x for x in r.output.splitlines() if x.startswith("FAIL")]
    assert any(x.startswith("FAIL file keys/model-signing-chain.pem: sha256") for x in failures)
    (signature,) = [x for x in failures if x.startswith(f"FAIL model signature model/{VERSION}")]
    assert "does not verify against the pinned chain keys/model-signing-chain.pem" in signature
    assert "Other Plant Root CA" in signature
    assert "signed under another CA" in signature
