"""The auditor's evidence bundle of one model version: one ``.tar.gz`` that verifies offline.

Layout (under ``evidence-<model>-<version>/``)::

    manifest.dsse.json              DSSE envelope of an in-toto Statement v1 whose subjects are
                                    every other file with its sha256 (signed by the registry)
    technical-file.json / .html / .pdf   the Annex IV technical file (JSON is the record)
    model/<version>.sig             OpenSSF model-signing bundles of the versions it cites
    golden-set/<run>.dsse.json      signed golden-set reports (canonical JSON of the envelope)
    attestations/<id>.raw           every cited attestation, the bytes the supplier uploaded
    attestations/<id>.json          its record at the attestation service
    audit/<service>.proof.json      audit log segment to a freshly signed checkpoint, per service
    competence.json                 the system's competence register
    incidents/*.json                incident records and monitors, when the service answered
    incidents/postmarket.jsonl      the version's post-market monitoring log (Art. 72), JSON
                                    lines as the incident service exports them, oldest first,
                                    capped at LINEGATE_EVIDENCE_POSTMARKET_MAX_BYTES
    keys/registry.pem               registry service key: manifest, checkpoints, reports
    keys/model-signing.pem          model signature key
    keys/model-signing-chain.pem    the pinned certificate chain, when the registry signs by
                                    certificate (as ``GET /v1/signing-keys`` publishes it)
    keys/<service>-audit.pem        other services' audit checkpoint keys
    keys/suppliers/<id>.json        suppliers' public keys (attestation signatures)

The manifest's signer is the registry's service key (``GET /v1/audit/public-key`` of the
registry): the auditor pins it once, and ``linegate evidence verify BUNDLE --trust PEM`` checks
everything else from the bundle alone. Creating a bundle is audited (``evidence.exported``) and
its own entry is inside the registry's proof.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from linegate.audit import AuditCheckpoint, AuditLog
from linegate.auth import Principal
from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    canonical_json,
    dsse_sign,
    load_or_create_private_key,
    public_key_pem,
)
from registry.model_signers import published_signing_keys
from registry.techfile import document, html, pdf
from registry.techfile.facts import gather
from registry.techfile.sources import Missing, Sources
from registry.versions import Registry

BUNDLE_PREDICATE = "https://linegate.dev/evidence-bundle/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MANIFEST = "manifest.dsse.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """The bundle's files as they are collected, written to ``directory`` (a staging directory
    of the blob store) and hashed on the way, so the export holds one file in memory at a time
    and never the whole bundle."""

    directory: Path
    #: name -> sha256 hex of each file written so far.
    files: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    audit_entries: dict[str, list[int]] = field(default_factory=dict)
    postmarket: dict[str, Any] | None = None

    def _path(self, name: str) -> Path:
        path = self.directory / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, name: str, data: bytes) -> bytes:
        self._path(name).write_bytes(data)
        self.files[name] = _sha256(data)
        return data

    def add_json(self, name: str, value: Any) -> bytes:
        return self.add(name, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    def copy(self, name: str, source: Path) -> None:
        """Copy a stored file in 1 MiB pieces, hashing it as it goes."""
        digest = hashlib.sha256()
        with source.open("rb") as src, self._path(name).open("wb") as dst:
            while piece := src.read(1 << 20):
                digest.update(piece)
                dst.write(piece)
        self.files[name] = digest.hexdigest()

    def archive(self, root: str, at: datetime) -> Path:
        """The ``.tar.gz`` of every file under ``root/``, sorted by name, written to disk."""
        out = self.directory / f"{root}.tar.gz"
        with tarfile.open(out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.files):
                path = self.directory / "files" / name
                info = tarfile.TarInfo(f"{root}/{name}")
                info.size = path.stat().st_size
                info.mtime = int(at.timestamp())
                info.mode = 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
        return out


async def _attestations(bundle: Bundle, sources: Sources, ids: list[str]) -> set[str]:
    suppliers: set[str] = set()
    for attestation_id in ids:
        record = await sources.json("attestation", f"/v1/attestations/{attestation_id}")
        raw = await sources.request("attestation", "GET", f"/v1/attestations/{attestation_id}/raw")
        if isinstance(record, Missing) or isinstance(raw, Missing):
            reason = record.reason if isinstance(record, Missing) else raw.reason  # type: ignore[union-attr]
            bundle.missing.append(f"attestation {attestation_id}: {reason}")
            continue
        bundle.add(f"attestations/{attestation_id}.raw", raw.content)
        bundle.add_json(f"attestations/{attestation_id}.json", record)
        if record.get("supplier"):
            suppliers.add(str(record["supplier"]))
    for supplier in sorted(suppliers):
        keys = await sources.json("attestation", f"/v1/suppliers/{supplier}/keys")
        if isinstance(keys, Missing):
            bundle.missing.append(f"keys of supplier {supplier}: {keys.reason}")
        else:
            bundle.add_json(f"keys/suppliers/{supplier}.json", keys)
    return suppliers


POSTMARKET = "incidents/postmarket.jsonl"


async def _postmarket(
    bundle: Bundle, sources: Sources, model: str, version: str, max_bytes: int
) -> None:
    """The version's post-market log as the incident service exports it, up to ``max_bytes``
    (cut after the last whole event; the manifest records the cut)."""
    got = await sources.stream_capped(
        "incident",
        "/v1/postmarket/export",
        {"format": "jsonl", "model": model, "version": version},
        max_bytes,
    )
    if isinstance(got, Missing):
        bundle.missing.append(f"post-market log of {model} {version}: {got.reason}")
        return
    try:
        events = [json.loads(line) for line in got.content.splitlines() if line.strip()]
    except ValueError as e:
        bundle.missing.append(
            f"post-market log of {model} {version}: the incident service's export is not JSON "
            f"lines ({e})"
        )
        return
    bundle.add(POSTMARKET, got.content)
    bundle.postmarket = {
        "file": POSTMARKET,
        "events": len(events),
        "bytes": len(got.content),
        "firstId": events[0].get("id") if events else None,
        "lastId": events[-1].get("id") if events else None,
        "truncated": got.truncated,
        "maxBytes": max_bytes,
    }
    if got.truncated:
        ids = f" (ids {events[0].get('id')}-{events[-1].get('id')})" if events else ""
        bundle.missing.append(
            f"post-market log of {model} {version}: truncated at LINEGATE_EVIDENCE_POSTMARKET_"
            f"MAX_BYTES={max_bytes}; {POSTMARKET} holds the first {len(events)} events{ids}, "
            "later events are only at the incident service (GET /v1/postmarket/export)"
        )


async def _remote_audit(
    bundle: Bundle, sources: Sources, service: str, subjects: set[str], reason: str
) -> None:
    """Checkpoint the other service's log now and carry the segment from the first entry
    about ``subjects`` to that checkpoint."""
    if not subjects:
        return
    key = await sources.request(service, "GET", "/v1/audit/public-key", auth=False)
    if isinstance(key, Missing):
        bundle.missing.append(f"{service} audit log: {key.reason}")
        return
    seqs: list[int] = []
    after = 0
    while True:
        page = await sources.json(service, "/v1/audit/entries", {"after": after, "limit": 1000})
        if isinstance(page, Missing):
            bundle.missing.append(f"{service} audit log: {page.reason}")
            return
        seqs += [int(e["seq"]) for e in page if str(e.get("subject")) in subjects]
        if len(page) < 1000:
            break
        after = int(page[-1]["seq"])
    if not seqs:
        bundle.missing.append(f"{service} audit log: no entry about {sorted(subjects)}")
        return
    cp = await sources.request(service, "POST", "/v1/audit/checkpoints", params={"reason": reason})
    if isinstance(cp, Missing):
        bundle.missing.append(f"{service} audit checkpoint: {cp.reason}")
        return
    proof = await sources.json(
        service, f"/v1/audit/entries/{min(seqs)}/proof", {"checkpoint": cp.json()["seq"]}
    )
    if isinstance(proof, Missing):
        bundle.missing.append(f"{service} audit proof: {proof.reason}")
        return
    bundle.add(f"keys/{service}-audit.pem", key.content)
    bundle.add_json(f"audit/{service}.proof.json", proof)
    bundle.audit_entries[service] = sorted(seqs)


async def export(
    registry: Registry,
    sources: Sources,
    actor: Principal,
    model: str,
    version: str,
    directory: Path,
) -> tuple[str, Path]:
    """Build the bundle in ``directory`` (empty, the caller's to remove); returns the file name
    to offer and the path of the ``.tar.gz``."""
    now = datetime.now(UTC)
    facts = await gather(registry, sources, model, version)
    doc = document.build(facts, now=now)
    bundle = Bundle(directory)
    if isinstance(facts.attestations, Missing):
        bundle.missing.append(f"attestations: {facts.attestations.reason}")
    links = document.links(doc)
    attestation_ids = sorted({str(x["id"]) for x in links if x["type"] == "attestation"})
    await _attestations(bundle, sources, attestation_ids)
    reason = f"evidence bundle of {model} {version}"
    await _remote_audit(bundle, sources, "attestation", set(attestation_ids), reason)
    if isinstance(facts.incidents, Missing):
        bundle.missing.append(f"incidents: {facts.incidents.reason}")
    else:
        bundle.add_json("incidents/incidents.json", facts.incidents)
        ids = {str(i.get("id")) for i in facts.incidents if i.get("id")}
        await _remote_audit(
            bundle, sources, "incident", {f"incident:{i}" for i in ids} | ids, reason
        )
    if not isinstance(facts.monitors, Missing):
        bundle.add_json("incidents/monitors.json", facts.monitors)
    await _postmarket(
        bundle, sources, model, version, registry.settings.evidence_postmarket_max_bytes
    )

    signatures = {x["version"]: x for x in links if x["type"] == "model-signature"}
    for v in facts.versions:
        if v.version in signatures:
            bundle.copy(f"model/{v.version}.sig", registry.store.path(v.signature_digest))
    for run in facts.validations:
        bundle.add(f"golden-set/{run.id}.dsse.json", canonical_json(run.envelope))
    bundle.add_json("competence.json", [r.model_dump(mode="json") for r in facts.competence])
    service_key = load_or_create_private_key(registry.report_key_path)
    bundle.add("keys/registry.pem", public_key_pem(service_key.public_key()))
    bundle.add("keys/model-signing.pem", registry.public_key_pem())
    chains = [k.certificate_chain_pem for k in published_signing_keys(registry.settings)]
    if chain := next((c for c in chains if c), None):
        bundle.add("keys/model-signing-chain.pem", chain.encode())
    techfile = bundle.add_json("technical-file.json", doc)
    bundle.add("technical-file.html", html.render(doc).encode())
    bundle.add("technical-file.pdf", pdf.render(doc))

    first = min((x["seq"] for x in links if x["type"] == "audit-entry"), default=None)
    async with registry.db.session() as session:
        entry = await registry.audit.append(
            session,
            actor=actor.actor,
            action="evidence.exported",
            subject=f"model:{model}@{version}",
            payload={"technical_file": f"sha256:{_sha256(techfile)}", "missing": bundle.missing},
            reason=reason,
        )
        cp = await registry.audit.checkpoint(session)
        if cp is None:  # append() signed it already (seq a multiple of checkpoint_every)
            cp = await session.get(AuditCheckpoint, entry.seq)
        assert cp is not None
        proof = await AuditLog.proof(
            session, first or entry.seq, checkpoint=cp.seq, service=registry.settings.service_name
        )
    bundle.add_json("audit/registry.proof.json", proof)
    bundle.audit_entries["registry"] = sorted(
        {x["seq"] for x in links if x["type"] == "audit-entry"} | {entry.seq}
    )
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}}
            for name, digest in sorted(bundle.files.items())
        ],
        "predicateType": BUNDLE_PREDICATE,
        "predicate": {
            "model": model,
            "version": version,
            "artefactDigest": doc["artefact_digest"],
            "createdAt": now.isoformat(),
            "createdBy": actor.actor,
            "auditEntries": bundle.audit_entries,
            "missing": bundle.missing,
            "checkpoint": cp.seq,
            "retention": facts.retention,
            **({"postmarket": bundle.postmarket} if bundle.postmarket else {}),
        },
    }
    envelope = dsse_sign(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, service_key)
    bundle.add_json(MANIFEST, envelope)
    root = f"evidence-{model}-{version}"
    return f"{root}.tar.gz", bundle.archive(root, now)
