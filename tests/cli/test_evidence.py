"""``linegate evidence export`` / ``verify`` and ``linegate techfile`` on the demo release:
the bundle verifies offline, and altering any byte of any file in it fails naming the file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from linegate.auth import Role
from linegate.signing import generate_private_key, public_key_pem
from linegate_cli.main import app
from tests.registry.demo_stack import MODEL, VERSION, DemoStack, demo_stack  # noqa: F401


def cli(*args: Any, token: str = "") -> Any:
    return CliRunner().invoke(app, list(map(str, args)), env={"LINEGATE_TOKEN": token})


@pytest.fixture
async def exported(demo_stack: DemoStack, tmp_path: Path) -> tuple[Path, Path]:  # noqa: F811
    bundle = tmp_path / "weld-2.1.0.tar.gz"
    r = cli(
        "evidence",
        "export",
        MODEL,
        VERSION,
        "--out",
        bundle,
        "--registry",
        demo_stack.registry_url,
        token=demo_stack.token(Role.AUDITOR),
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"exported: {bundle}")
    trust = tmp_path / "registry.pub.pem"
    async with httpx.AsyncClient(base_url=demo_stack.registry_url) as http:
        trust.write_bytes((await http.get("/v1/audit/public-key")).content)
    return bundle, trust


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


async def test_techfile_command_writes_json_and_html(
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
