"""``linegate evidence``: export an auditor's evidence bundle and verify one offline.

Export asks the registry to build and sign the bundle of one model version (auditor token)::

    linegate evidence export weld-seam-inspector 2.1.0 --out weld-2.1.0.tar.gz

Verification needs only the bundle and the registry's public key, pinned once from
``GET {registry}/v1/audit/public-key`` (the key that signs the manifest, the registry's audit
checkpoints and its golden-set reports); no Linegate service needs to run::

    linegate evidence verify weld-2.1.0.tar.gz --trust registry.pub.pem

It prints one line per check (``ok`` or ``FAIL``, what was checked, the file it concerns) and
exits 0 when every check passed, 1 otherwise. Checks: the manifest's DSSE signature and in-toto
Statement; every file's sha256 against the manifest (and no file the manifest does not list);
the technical file's model and version; every model signature (DSSE, key, manifest digest;
a certificate-signed one: its leaf chains to ``keys/model-signing-chain.pem`` and is a
code-signing certificate valid at the bundle's signed creation time, then DSSE with the leaf's
key); the post-market log ``incidents/postmarket.jsonl`` (JSON lines of this version, as many
events and bytes as the manifest records);
every golden-set report (signature, subject digest); every attestation (digest as cited, DSSE
signature by a key of its supplier, subject digest); every audit proof (chain segment and
signed checkpoint), and that every audit entry the technical file or the manifest cites is in a
proven segment with the same hash. A directory holding an extracted bundle verifies the same.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    PublicKey,
    SignatureError,
    dsse_verify,
    load_public_key,
)

app = typer.Typer(no_args_is_help=True, help="Export and verify auditor evidence bundles.")

MANIFEST = "manifest.dsse.json"
BUNDLE_PREDICATE = "https://linegate.dev/evidence-bundle/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: int = 0

    def fail(self, what: str, detail: str = "") -> bool:
        return self.check(ok=False, what=what, detail=detail)

    def passed(self, what: str, detail: str = "") -> bool:
        return self.check(ok=True, what=what, detail=detail)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        self.lines.append(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""))
        if not ok:
            self.failed += 1
        return ok


def read_bundle(path: Path) -> dict[str, bytes]:
    """The bundle's files by name (relative to its top folder); raises ValueError."""
    if path.is_dir():
        root = path
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
    try:
        # Read the whole gzip stream first: its CRC is checked only at the end, and tarfile
        # stops at the end-of-archive marker without reaching it.
        with gzip.open(path, "rb") as f:
            data = f.read()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            files = {}
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name.split("/", 1)[1] if "/" in member.name else member.name
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[name] = extracted.read()
            return files
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path.name} is not a readable tar.gz bundle ({e})") from e


def _json(files: dict[str, bytes], name: str, report: Report) -> Any:
    try:
        return json.loads(files[name])
    except KeyError:
        report.fail(f"file {name}", "missing from the bundle")
    except ValueError as e:
        report.fail(f"file {name}", f"not JSON ({e})")
    return None


def _keys(files: dict[str, bytes], name: str, report: Report) -> list[PublicKey]:
    try:
        return [load_public_key(files[name])]
    except KeyError:
        report.fail(f"key {name}", "missing from the bundle")
    except SignatureError as e:
        report.fail(f"key {name}", str(e))
    return []


def _manifest(files: dict[str, bytes], trust: list[PublicKey], report: Report) -> Any:
    envelope = _json(files, MANIFEST, report)
    if envelope is None:
        return None
    try:
        verified = dsse_verify(envelope, trust)
        statement = json.loads(verified.payload)
    except (SignatureError, ValueError) as e:
        report.fail(f"manifest signature ({MANIFEST})", str(e))
        return None
    ok = (
        verified.payload_type == IN_TOTO_PAYLOAD_TYPE
        and isinstance(statement, dict)
        and statement.get("_type") == STATEMENT_TYPE
        and statement.get("predicateType") == BUNDLE_PREDICATE
    )
    report.passed(f"manifest signature ({MANIFEST})", f"key {verified.signer_key_ids[0][:16]}")
    if not report.check(ok, f"manifest statement ({MANIFEST})", "in-toto Statement v1 of a bundle"):
        return None
    return statement


def _files(files: dict[str, bytes], statement: dict[str, Any], report: Report) -> None:
    listed: dict[str, str] = {}
    for subject in statement.get("subject", []):
        listed[str(subject.get("name"))] = str((subject.get("digest") or {}).get("sha256"))
    for name, digest in sorted(listed.items()):
        if name not in files:
            report.fail(f"file {name}", "listed in the manifest but missing")
            continue
        actual = hashlib.sha256(files[name]).hexdigest()
        report.check(
            actual == digest,
            f"file {name}",
            "sha256 matches the manifest"
            if actual == digest
            else f"sha256 {actual[:16]}... is not the manifest's {digest[:16]}... (altered)",
        )
    for name in sorted(set(files) - set(listed) - {MANIFEST}):
        report.fail(f"file {name}", "not listed in the manifest (added)")


def _links(techfile: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for section in techfile.get("sections", []):
        for statement in section.get("statements", []):
            for link in statement.get("evidence", []):
                if link.get("type") == kind:
                    found.setdefault(json.dumps(link, sort_keys=True), link)
    return list(found.values())


CHAIN = "keys/model-signing-chain.pem"
POSTMARKET = "incidents/postmarket.jsonl"


def _created_at(statement: dict[str, Any]) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(statement.get("predicate", {}).get("createdAt")))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _certificate_signed(bundle: Any) -> bool:
    material = bundle.get("verificationMaterial") if isinstance(bundle, dict) else None
    chain = material.get("x509CertificateChain") if isinstance(material, dict) else None
    return bool(isinstance(chain, dict) and chain.get("certificates"))


def _model_signatures(
    files: dict[str, bytes], techfile: dict[str, Any], statement: dict[str, Any], report: Report
) -> None:
    from linegate.modelsig import (
        MODEL_SIGNATURE_PREDICATE,
        ModelSignatureError,
        verify_signature_certificate,
    )

    keys = _keys(files, "keys/model-signing.pem", report)
    for link in _links(techfile, "model-signature"):
        name = f"model/{link['version']}.sig"
        data = files.get(name)
        if data is None:
            report.fail(f"model signature {name}", "cited by the technical file, missing")
            continue
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not report.check(digest == link["digest"], f"model signature {name}", "digest as cited"):
            continue
        try:
            bundle = json.loads(data)
        except ValueError as e:
            report.fail(f"model signature {name}", f"does not verify ({e})")
            continue
        if _certificate_signed(bundle):
            # Offline and at the bundle's signed creation time: the certificate must have been
            # valid when the registry vouched for it, not when an auditor reads it years later.
            at = _created_at(statement)
            if CHAIN not in files:
                report.fail(
                    f"model signature {name}",
                    f"certificate-signed, but the bundle has no {CHAIN} to verify it against",
                )
                continue
            if at is None:
                report.fail(f"model signature {name}", "the manifest has no valid createdAt")
                continue
            try:
                verified = verify_signature_certificate(
                    data, files[CHAIN], at=at, name=name, pinned_name=CHAIN
                )
            except ModelSignatureError as e:
                report.fail(f"model signature {name}", f"does not verify ({e})")
                continue
            manifest = "sha256:" + verified.manifest_sha256
            report.check(
                manifest == link["manifest_digest"],
                f"model signature {name}",
                f"signed by code-signing certificate {verified.certificate.subject} chaining to "
                f"{CHAIN} (valid at the bundle's creation, {at.isoformat()}) over manifest "
                f"{manifest[:23]}...",
            )
            continue
        try:
            verified_key = dsse_verify(bundle["dsseEnvelope"], keys)
            signed = json.loads(verified_key.payload)
            manifest = "sha256:" + signed["subject"][0]["digest"]["sha256"]
        except (SignatureError, ValueError, KeyError, TypeError, IndexError) as e:
            report.fail(f"model signature {name}", f"does not verify ({e})")
            continue
        report.check(
            manifest == link["manifest_digest"]
            and signed.get("predicateType") == MODEL_SIGNATURE_PREDICATE,
            f"model signature {name}",
            f"signed by keys/model-signing.pem over manifest {manifest[:23]}...",
        )


def _postmarket(files: dict[str, bytes], statement: dict[str, Any], report: Report) -> None:
    """The post-market log segment: JSON lines of this model version, as many events and
    bytes as the manifest records (its digest is checked with every file)."""
    predicate = statement.get("predicate", {})
    recorded = predicate.get("postmarket")
    if POSTMARKET not in files and not recorded:
        return  # not in the bundle: the manifest's missing list says why
    what = f"post-market log {POSTMARKET}"
    data = files.get(POSTMARKET)
    if data is None:
        report.fail(what, "recorded by the manifest, missing")
        return
    if not isinstance(recorded, dict):
        report.fail(what, "in the bundle, but the manifest does not record it")
        return
    try:
        events = [json.loads(line) for line in data.splitlines() if line.strip()]
    except ValueError as e:
        report.fail(what, f"not JSON lines ({e})")
        return
    model, version = predicate.get("model"), predicate.get("version")
    foreign = [
        e.get("id") if isinstance(e, dict) else e
        for e in events
        if not isinstance(e, dict) or (e.get("model"), e.get("version")) != (model, version)
    ]
    if foreign:
        report.fail(what, f"events not of {model} {version}: {foreign[:5]}")
        return
    if (recorded.get("events"), recorded.get("bytes")) != (len(events), len(data)):
        report.fail(
            what,
            f"{len(events)} events in {len(data)} bytes, the manifest records "
            f"{recorded.get('events')} in {recorded.get('bytes')}",
        )
        return
    report.passed(
        what,
        f"{len(events)} events of {model} {version}"
        + (
            f", truncated at {recorded.get('maxBytes')} bytes (see the note)"
            if recorded.get("truncated")
            else ", the whole log"
        ),
    )


def _reports(
    files: dict[str, bytes], techfile: dict[str, Any], trust: list[PublicKey], report: Report
) -> None:
    artefact = str(techfile.get("artefact_digest", "")).removeprefix("sha256:")
    for link in _links(techfile, "golden-set-report"):
        name = f"golden-set/{link['validation_id']}.dsse.json"
        data = files.get(name)
        if data is None:
            report.fail(f"golden-set report {name}", "cited, missing")
            continue
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            verified = dsse_verify(json.loads(data), trust)
            statement = json.loads(verified.payload)
            subject = statement["subject"][0]["digest"]["sha256"]
        except (SignatureError, ValueError, KeyError, TypeError, IndexError) as e:
            report.fail(f"golden-set report {name}", f"does not verify ({e})")
            continue
        report.check(
            digest == link["digest"] and subject == artefact,
            f"golden-set report {name}",
            "signed by the trusted registry key, about the artefact, digest as cited",
        )


def _supplier_keys(files: dict[str, bytes], supplier: str) -> list[PublicKey]:
    try:
        records = json.loads(files[f"keys/suppliers/{supplier}.json"])
        return [load_public_key(r["public_key_pem"]) for r in records]
    except (KeyError, ValueError, TypeError, SignatureError):
        return []


def _attestations(files: dict[str, bytes], techfile: dict[str, Any], report: Report) -> None:
    artefact = str(techfile.get("artefact_digest", "")).removeprefix("sha256:")
    for link in _links(techfile, "attestation"):
        name = f"attestations/{link['id']}.raw"
        data = files.get(name)
        if data is None:
            report.fail(f"attestation {name}", "cited by the technical file, missing")
            continue
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not report.check(digest == link["digest"], f"attestation {name}", "digest as cited"):
            continue
        keys = _supplier_keys(files, str(link.get("supplier")))
        try:
            envelope = json.loads(data)
            if not (isinstance(envelope, dict) and "payloadType" in envelope):
                report.passed(
                    f"attestation {name}",
                    "not a DSSE envelope: digest checked only (the attestation service "
                    "verified it at upload)",
                )
                continue
            verified = dsse_verify(envelope, keys)
            statement = json.loads(verified.payload)
            subjects = {s["digest"].get("sha256") for s in statement["subject"]}
        except (SignatureError, ValueError, KeyError, TypeError) as e:
            report.fail(f"attestation {name}", f"does not verify ({e})")
            continue
        report.check(
            artefact in subjects,
            f"attestation {name}",
            f"signed by supplier {link.get('supplier')} "
            f"(keys/suppliers/{link.get('supplier')}.json), names the artefact",
        )


def _audit(
    files: dict[str, bytes],
    techfile: dict[str, Any],
    statement: dict[str, Any],
    trust: list[PublicKey],
    report: Report,
) -> None:
    from linegate.audit import verify_proof

    cited: dict[str, dict[int, str | None]] = {}
    for link in _links(techfile, "audit-entry"):
        cited.setdefault(str(link["service"]), {})[int(link["seq"])] = str(link["hash"])
    for service, seqs in (statement.get("predicate", {}).get("auditEntries") or {}).items():
        for seq in seqs:
            cited.setdefault(str(service), {}).setdefault(int(seq), None)
    services = sorted(
        set(cited) | {n.split("/")[1].split(".")[0] for n in files if n.startswith("audit/")}
    )
    for service in services:
        name = f"audit/{service}.proof.json"
        proof = _json(files, name, report)
        if proof is None:
            continue
        keys = trust if service == "registry" else _keys(files, f"keys/{service}-audit.pem", report)
        result = verify_proof(proof, keys, service=service)
        if not report.check(
            result.ok,
            f"audit proof {name}",
            f"entries {result.first}-{result.last} chain to checkpoint {result.checkpoint_seq} "
            "signed by "
            + ("the trusted registry key" if service == "registry" else f"keys/{service}-audit.pem")
            if result.ok
            else "; ".join(result.errors),
        ):
            continue
        hashes = {int(e["seq"]): str(e["hash"]) for e in proof["entries"]}
        wrong = [
            seq
            for seq, h in sorted(cited.get(service, {}).items())
            if seq not in hashes or (h is not None and hashes[seq] != h)
        ]
        report.check(
            not wrong,
            f"audit entries cited from {service}",
            f"{len(cited.get(service, {}))} in the proven segment with the cited hashes"
            if not wrong
            else f"not proven as cited: {wrong}",
        )


def verify_bundle(path: Path, trust: list[PublicKey]) -> Report:
    """Every check of a bundle, offline."""
    report = Report()
    try:
        files = read_bundle(path)
    except ValueError as e:
        report.fail(f"archive {path.name}", str(e))
        return report
    report.passed(f"archive {path.name}", f"{len(files)} files")
    statement = _manifest(files, trust, report)
    if statement is None:
        return report
    _files(files, statement, report)
    techfile = _json(files, "technical-file.json", report)
    if not isinstance(techfile, dict):
        return report
    predicate = statement.get("predicate", {})
    report.check(
        (techfile.get("model"), techfile.get("version"))
        == (predicate.get("model"), predicate.get("version")),
        "technical file (technical-file.json)",
        f"{techfile.get('model')} {techfile.get('version')}, completeness "
        f"{techfile.get('completeness', {}).get('score')}",
    )
    steps: list[Callable[[], None]] = [
        lambda: _model_signatures(files, techfile, statement, report),
        lambda: _postmarket(files, statement, report),
        lambda: _reports(files, techfile, trust, report),
        lambda: _attestations(files, techfile, report),
        lambda: _audit(files, techfile, statement, trust, report),
    ]
    for step in steps:
        step()
    for missing in predicate.get("missing", []):
        report.lines.append(f"note not in the bundle: {missing}")
    return report


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The .tar.gz (or its folder)")],
    trust: Annotated[
        list[Path],
        typer.Option(
            "--trust",
            metavar="PEM",
            help="The registry's public key (GET /v1/audit/public-key), pinned beforehand",
        ),
    ],
) -> None:
    """Verify an evidence bundle offline: one line per check; exit 0 only if all pass."""
    try:
        keys = [load_public_key(p.read_bytes()) for p in trust]
    except (OSError, SignatureError) as e:
        typer.echo(f"error: cannot read --trust key: {e}", err=True)
        raise typer.Exit(2) from e
    report = verify_bundle(bundle, keys)
    for line in report.lines:
        typer.echo(line)
    if report.failed:
        typer.echo(f"FAILED: {report.failed} check(s) failed")
        raise typer.Exit(1)
    typer.echo(f"verified: {sum(1 for x in report.lines if x.startswith('ok'))} checks passed")


Token = Annotated[str, typer.Option(envvar="LINEGATE_TOKEN", help="Bearer token (auditor role)")]
RegistryUrl = Annotated[
    str | None, typer.Option("--registry", help="Registry URL (default: LINEGATE_REGISTRY_URL)")
]


def registry_url(url: str | None) -> str:
    from linegate.settings import LinegateSettings

    return (url or LinegateSettings().registry_url).rstrip("/")


def fetch(method: str, url: str, token: str) -> bytes:
    """One request to the registry; problem+json answers are reported and exit 1."""
    import httpx

    from linegate_cli.attest import report_http_error

    try:
        with httpx.Client(timeout=300.0) as client:
            response = client.request(method, url, headers={"Authorization": f"Bearer {token}"})
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the registry at {url}: {e}", err=True)
        raise typer.Exit(1) from e
    if not response.is_success:
        report_http_error(method.lower() + " " + url.split("/v1/", 1)[-1], response)
        raise typer.Exit(1)
    return response.content


def download(method: str, url: str, token: str, out: Path) -> str:
    """Stream the registry's answer to ``out`` (through ``out.partial``, renamed once complete,
    so a broken download never looks like a bundle); returns its sha256 hex. problem+json
    answers are reported and exit 1."""
    import httpx

    from linegate_cli.attest import report_http_error

    partial = out.with_name(out.name + ".partial")
    digest = hashlib.sha256()
    try:
        with (
            httpx.Client(timeout=300.0) as client,
            client.stream(method, url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            if not response.is_success:
                response.read()
                report_http_error(method.lower() + " " + url.split("/v1/", 1)[-1], response)
                raise typer.Exit(1)
            with partial.open("wb") as f:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        partial.replace(out)
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the registry at {url}: {e}", err=True)
        raise typer.Exit(1) from e
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


@app.command()
def export(
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    version: Annotated[str, typer.Argument(metavar="VERSION")],
    out: Annotated[Path, typer.Option("--out", metavar="BUNDLE", help="Where to write it")],
    token: Token,
    registry: RegistryUrl = None,
) -> None:
    """Ask the registry for the signed evidence bundle of a version and write it to --out."""
    url = f"{registry_url(registry)}/v1/models/{model}/versions/{version}/evidence-bundle"
    digest = download("POST", url, token, out)
    with tarfile.open(out, mode="r:gz") as tar:
        count = sum(1 for m in tar.getmembers() if m.isfile())
    typer.echo(f"exported: {out} ({count} files, sha256:{digest[:16]}...)")
