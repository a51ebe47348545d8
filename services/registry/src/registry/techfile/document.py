"""The Annex IV technical file (EU AI Act Art. 11) of one model version, as JSON.

Nine sections follow Annex IV's nine points. Every statement carries the evidence it rests on:
registry audit entries (service, seq, hash), attestations (id and digest of the bytes the
supplier uploaded), the OpenSSF model signature, signed golden-set reports and competence
records. What the registry cannot state from evidence is a *gap* with the reason; the file is
never padded with boilerplate, and its completeness score is statements / (statements + gaps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from linegate.audit import AuditEntry
from registry import evidence as evidence_policy
from registry.gate import approvals_required
from registry.inventory import cadence
from registry.inventory import gaps as inventory_gaps
from registry.models import CompetenceRecord, ModelVersion, ValidationRun, VersionState
from registry.techfile.facts import Facts, report_digest
from registry.techfile.sources import Missing

TECHFILE_TYPE = "https://linegate.dev/technical-file/v1"

Link = dict[str, Any]


def audit_link(e: AuditEntry, service: str = "registry") -> Link:
    return {
        "type": "audit-entry",
        "service": service,
        "seq": e.seq,
        "hash": e.hash,
        "action": e.action,
    }


def attestation_link(a: dict[str, Any]) -> Link:
    digest = str(a.get("raw_digest", ""))
    return {
        "type": "attestation",
        "id": a["id"],
        "digest": digest if digest.startswith("sha256:") else f"sha256:{digest}",
        "predicate_type": a.get("predicate_type"),
        "supplier": a.get("supplier"),
    }


def signature_link(v: ModelVersion) -> Link:
    return {
        "type": "model-signature",
        "version": v.version,
        "digest": f"sha256:{v.signature_digest}",
        "key_id": v.signing_key_id,
        "manifest_digest": f"sha256:{v.manifest_digest}",
    }


def report_link(run: ValidationRun) -> Link:
    return {
        "type": "golden-set-report",
        "validation_id": run.id,
        "digest": report_digest(run),
        "passed": run.passed,
    }


def competence_link(r: CompetenceRecord) -> Link:
    return {"type": "competence-record", "id": r.id, "person": r.person, "role": r.role}


@dataclass
class Section:
    id: str
    title: str
    annex_iv: str
    statements: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, str]] = field(default_factory=list)

    def state(self, item: str, text: str, evidence: Iterable[Link] = (), **data: Any) -> None:
        self.statements.append({"item": item, "text": text, "evidence": list(evidence), **data})

    def gap(self, item: str, reason: str) -> None:
        self.gaps.append({"item": item, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        total = len(self.statements) + len(self.gaps)
        return {
            "id": self.id,
            "title": self.title,
            "annex_iv": self.annex_iv,
            "statements": self.statements,
            "gaps": self.gaps,
            "completeness": round(len(self.statements) / total, 4) if total else 0.0,
        }


def _date(t: datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def _attestations(facts: Facts) -> list[dict[str, Any]]:
    return [] if isinstance(facts.attestations, Missing) else facts.attestations


def _of_kind(facts: Facts, kind: str) -> list[dict[str, Any]]:
    return [
        a
        for a in _attestations(facts)
        if a.get("status") == "verified" and evidence_policy.matches(kind, a)
    ]


def _file(v: ModelVersion, path: str) -> dict[str, Any] | None:
    return next((f for f in v.files if f["path"] == path), None)


def _latest_run(facts: Facts) -> ValidationRun | None:
    if facts.version.validation_id:
        run = next((r for r in facts.validations if r.id == facts.version.validation_id), None)
        if run is not None:
            return run
    return facts.validations[0] if facts.validations else None


# ---------------------------------------------------------------------------------- sections


def general_description(facts: Facts) -> Section:
    s = Section("1", "General description of the AI system", "Annex IV point 1")
    sysd, v = facts.system, facts.version
    created = facts.audit_for(subject=f"system:{sysd.id}")
    pushed = facts.audit_for(action="model.version.pushed", subject=facts.version_subject)
    s.state(
        "1(a) intended purpose, provider",
        f"{sysd.name}: {sysd.purpose}. Intended use: {sysd.intended_use}. Provider: "
        f"{sysd.provider}" + (f", supplier {sysd.supplier_id}" if sysd.supplier_id else "") + ".",
        map(audit_link, created),
    )
    if sysd.owner_name:
        s.state(
            "1(a) accountable person",
            f"{sysd.owner_name} <{sysd.owner_email}> is accountable for the system.",
            map(audit_link, created),
        )
    else:
        s.gap("1(a) accountable person", "the inventory names no accountable owner")
    s.state(
        "1(b) interaction with other systems",
        f"Deployed at: {sysd.deployment_context}. It influences: {sysd.decision_influenced}."
        + (f" Lines: {', '.join(sysd.lines)}." if sysd.lines else ""),
        map(audit_link, created),
    )
    producer = v.onnx.get("producer") or v.onnx.get("producer_name")
    s.state(
        "1(c) versions",
        f"Model {v.model_name} {v.version} (security_version {v.security_version}), ONNX"
        + (f" opset {v.onnx.get('opset')}" if v.onnx.get("opset") else "")
        + (f" produced by {producer}" if producer else "")
        + "; files: "
        + ", ".join(f"{f['path']} sha256:{f['sha256']}" for f in v.files)
        + ".",
        [signature_link(v), *map(audit_link, pushed)],
    )
    s.state(
        "1(d) form placed in service",
        "A signed artefact folder (OpenSSF model-signing) distributed to line devices by the "
        "Linegate edge gateway; devices verify the signature before installing.",
        [signature_link(v)],
    )
    s.gap(
        "1(e) hardware",
        "the devices the model runs on are in the edge gateway's inventory, which the "
        "technical file does not read yet",
    )
    card = _file(v, "model_card.md")
    if card:
        s.state(
            "1(h) instructions for use",
            f"The model card (model_card.md, sha256:{card['sha256']}) is part of the signed "
            "artefact.",
            [signature_link(v)],
        )
    else:
        s.gap("1(h) instructions for use", "the version was pushed without a model card")
    return s


def _dev_methods(s: Section, facts: Facts) -> None:
    v = facts.version
    code = v.meta.get("code_revision")
    slsa = _of_kind(facts, "slsa-provenance")
    pushed = facts.audit_for(action="model.version.pushed", subject=facts.version_subject)
    if code or v.meta.get("training_parameters"):
        text = "Trained from "
        text += f"{code['repository']} at {code['revision']}" if code else "an undeclared revision"
        if v.meta.get("training_parameters"):
            text += f" with training parameters {v.meta['training_parameters']}"
        s.state("2(a) development methods", text + ".", map(audit_link, pushed))
    else:
        s.gap("2(a) development methods", "the version metadata declares no code revision")
    if slsa:
        s.state(
            "2(a) build provenance (third party)",
            f"{len(slsa)} verified SLSA provenance attestation(s) from supplier(s) "
            f"{sorted({str(a.get('supplier')) for a in slsa})} name the artefact digest.",
            map(attestation_link, slsa),
        )
    else:
        s.gap("2(a) build provenance (third party)", _why_no(facts, "SLSA provenance"))


def _why_no(facts: Facts, what: str) -> str:
    if isinstance(facts.attestations, Missing):
        return f"attestations could not be read: {facts.attestations.reason}"
    return f"no verified {what} attestation names the artefact digest"


def _design(s: Section, facts: Facts) -> None:
    v = facts.version
    io = {k: v.onnx.get(k) for k in ("inputs", "outputs") if v.onnx.get(k)}
    if io:
        s.state(
            "2(b)-(c) design and architecture", f"ONNX graph interface: {io}.", [signature_link(v)]
        )
    else:
        s.gap("2(b)-(c) design and architecture", "the ONNX inspection recorded no interface")
    if v.meta.get("hyperparameters"):
        s.state(
            "2(b) hyperparameters",
            f"{v.meta['hyperparameters']}.",
            map(
                audit_link,
                facts.audit_for(action="model.version.pushed", subject=facts.version_subject),
            ),
        )
    else:
        s.gap("2(b) hyperparameters", "the version metadata declares no hyperparameters")


def _data(s: Section, facts: Facts) -> None:
    v = facts.version
    datasets = v.meta.get("datasets") or []
    provenance = _of_kind(facts, "dataset-provenance")
    bom = _of_kind(facts, "ml-bom")
    if datasets:
        s.state(
            "2(d) training data",
            "Datasets: " + ", ".join(f"{d['name']} ({d['digest']})" for d in datasets) + ".",
            map(
                audit_link,
                facts.audit_for(action="model.version.pushed", subject=facts.version_subject),
            ),
        )
    if provenance:
        s.state(
            "2(d) data provenance",
            f"{len(provenance)} verified dataset-provenance attestation(s) describe the data.",
            map(attestation_link, provenance),
        )
    else:
        s.gap("2(d) data provenance", _why_no(facts, "dataset-provenance"))
    if bom:
        s.state(
            "2(d) ML-BOM",
            f"{len(bom)} verified ML-BOM(s) describe the model and data.",
            map(attestation_link, bom),
        )
    else:
        s.gap("2(d) ML-BOM", _why_no(facts, "ML-BOM"))


def _oversight(s: Section, facts: Facts) -> None:
    approvals = [a for a in facts.approvals if a.decision == "approve"]
    records = {r.id: r for r in facts.competence}
    decided = facts.audit_for(subject=facts.version_subject)
    decided = [
        e for e in decided if e.action in ("model.version.approved", "model.version.rejected")
    ]
    required = approvals_required(facts.system)
    if approvals:
        links: list[Link] = list(map(audit_link, decided))
        links += [
            competence_link(records[a.competence_record_id])
            for a in approvals
            if a.competence_record_id in records
        ]
        s.state(
            "2(e) human oversight (Art. 14)",
            f"{len(approvals)} of {required} required approver(s), none of them the uploader "
            f"({facts.version.uploader}): "
            + "; ".join(f"{a.approver}: \u201c{a.rationale}\u201d" for a in approvals)
            + ".",
            links,
        )
    else:
        s.gap("2(e) human oversight (Art. 14)", "nobody has approved this version")
    flagged = [a for a in facts.approvals if a.flags]
    for a in flagged:
        s.gap("2(e) approver competence", "; ".join(a.flags))
    trained = [a for a in facts.approvals if a.competence_record_id in records]
    if trained and not flagged:
        s.state(
            "2(e) approver competence",
            "Every approver held current approver training for this system when deciding: "
            + ", ".join(a.approver for a in trained)
            + ".",
            [competence_link(records[str(a.competence_record_id)]) for a in trained],
        )
    current = [r for r in facts.competence if r.revoked_at is None]
    if current:
        s.state(
            "2(e) competence register",
            "Trained for this system: "
            + "; ".join(
                f"{r.person} as {r.role} until {_date(r.valid_until)} ({r.course})" for r in current
            )
            + ".",
            [
                *map(competence_link, current),
                *map(audit_link, [e for e in facts.audit if e.action == "competence.recorded"]),
            ],
        )
    else:
        s.gap("2(e) competence register", "nobody's training is recorded for this system")


def _tests_and_security(s: Section, facts: Facts) -> None:
    v = facts.version
    if v.meta.get("predetermined_changes"):
        s.state(
            "2(f) predetermined changes",
            str(v.meta["predetermined_changes"]),
            map(
                audit_link,
                facts.audit_for(action="model.version.pushed", subject=facts.version_subject),
            ),
        )
    else:
        s.gap("2(f) predetermined changes", "the version metadata declares none")
    validated = [
        e
        for e in facts.audit_for(subject=facts.version_subject)
        if e.action in ("model.version.validated", "model.version.failed")
    ]
    if facts.validations:
        for run in facts.validations:
            golden = facts.golden_sets.get(run.golden_set_id)
            s.state(
                "2(g) validation and test report",
                f"Golden-set run {run.id} on {_date(run.created_at)} by {run.created_by}: "
                f"{'passed' if run.passed else 'failed'}, accuracy "
                f"{run.report.get('accuracy')} on {run.report.get('samples')} samples"
                + (f" of golden set {golden.id} (sha256:{golden.digest})" if golden else "")
                + "; signed by the registry.",
                [report_link(run), *map(audit_link, validated)],
            )
    else:
        s.gap("2(g) validation and test report", "the version was never validated")
    sbom = _of_kind(facts, "sbom")
    s.state(
        "2(h) cybersecurity",
        f"Signed with OpenSSF model-signing (key {v.signing_key_id[:16]}); anti-rollback "
        f"security_version {v.security_version}; devices verify signature and digests.",
        [signature_link(v)],
    )
    if sbom:
        s.state(
            "2(h) software bill of materials",
            f"{len(sbom)} verified SBOM(s) name the artefact.",
            map(attestation_link, sbom),
        )
    else:
        s.gap("2(h) software bill of materials", _why_no(facts, "SBOM"))


def development(facts: Facts) -> Section:
    s = Section(
        "2",
        "Detailed description of the elements and of the development process",
        "Annex IV point 2",
    )
    _dev_methods(s, facts)
    _design(s, facts)
    _data(s, facts)
    _oversight(s, facts)
    _tests_and_security(s, facts)
    return s


def monitoring_and_control(facts: Facts) -> Section:
    s = Section("3", "Monitoring, functioning and control", "Annex IV point 3")
    v, sysd = facts.version, facts.system
    pushed = facts.audit_for(action="model.version.pushed", subject=facts.version_subject)
    if v.meta.get("limitations"):
        s.state(
            "3 capabilities and limitations", str(v.meta["limitations"]), map(audit_link, pushed)
        )
    else:
        s.gap("3 capabilities and limitations", "the version metadata declares no limitations")
    run = _latest_run(facts)
    if run is not None:
        classes = run.report.get("classes") or []
        s.state(
            "3 accuracy per class",
            "On the golden set: "
            + "; ".join(
                f"{c['name']}: precision {c['precision']:.3f}, recall {c['recall']:.3f} "
                f"(n={c['support']})"
                for c in classes
            )
            + ".",
            [report_link(run)],
        )
        lighting = run.report.get("lighting") or []
        if lighting:
            s.state(
                "3 robustness to lighting",
                "; ".join(
                    f"x{r['shift']}: {r['flip_rate']:.3f} of good images flipped" for r in lighting
                ),
                [report_link(run)],
            )
        else:
            s.gap(
                "3 robustness to lighting",
                "the model line sets no lighting-flip threshold, so none was measured",
            )
    else:
        s.gap("3 accuracy per class", "no golden-set run")
    if sysd.consequence_if_wrong:
        s.state(
            "3 foreseeable unintended outcomes",
            sysd.consequence_if_wrong,
            map(audit_link, facts.audit_for(subject=f"system:{sysd.id}")),
        )
    else:
        s.gap(
            "3 foreseeable unintended outcomes",
            "the inventory does not say what happens if the system is wrong",
        )
    s.state(
        "3 human oversight measures",
        f"Release needs {approvals_required(sysd)} approver(s) other than the uploader with "
        "current training (refused without it on NIST tier 1); approvers, responders and "
        "incident workflows can revoke a version (kill switch).",
        map(
            audit_link,
            facts.audit_for(action="model.version.released", subject=facts.version_subject),
        ),
    )
    pre = _file(v, "preprocess.json")
    if pre:
        s.state(
            "3 input data specification",
            f"preprocess.json (sha256:{pre['sha256']}) in the signed artefact.",
            [signature_link(v)],
        )
    else:
        s.gap("3 input data specification", "the version was pushed without preprocess.json")
    s.state(
        "3 automatic logging (Art. 12)",
        "Every state change is appended to the registry's hash-chained audit log with signed "
        f"checkpoints; entries are kept at least {facts.retention['audit_log_retention_days']} "
        f"days, documentation {facts.retention['documentation_retention_days']} days.",
        map(audit_link, facts.audit[-1:]),
    )
    return s


def metrics_rationale(facts: Facts) -> Section:
    s = Section("4", "Appropriateness of the performance metrics", "Annex IV point 4")
    line = facts.line
    if line.critical_classes:
        s.state(
            "4 critical classes",
            f"Classes {line.critical_classes} may not lose more than {line.tolerance} recall "
            "or precision against the released version, because "
            + (facts.system.consequence_if_wrong or "a missed defect matters")
            + ".",
            map(audit_link, facts.audit_for(action="model.created", subject=f"model:{line.name}")),
        )
    else:
        s.gap("4 critical classes", "the model line names no critical class")
    if line.min_defect_detection:
        s.state(
            "4 synthetic defect detection",
            f"Minimum detection of synthetic defects: {line.min_defect_detection}.",
            map(audit_link, facts.audit_for(action="model.created", subject=f"model:{line.name}")),
        )
    else:
        s.gap(
            "4 synthetic defect detection",
            "the model line sets no minimum detection rate for synthetic defects",
        )
    return s


def risk_management(facts: Facts) -> Section:
    s = Section("5", "Risk management system (Art. 9)", "Annex IV point 5")
    sysd = facts.system
    entries = facts.audit_for(subject=f"system:{sysd.id}")
    if sysd.eu_category:
        s.state(
            "5 classification",
            f"EU AI Act: {sysd.eu_category}"
            + (f" ({sysd.eu_basis})" if sysd.eu_basis else "")
            + f": {sysd.eu_rationale}. NIST AI RMF consequence tier {sysd.nist_tier}.",
            map(audit_link, entries),
        )
    for missing in inventory_gaps(sysd):
        s.gap(f"5 classification: {missing}", f"the inventory has no {missing} for the system")
    required = facts.evidence_policy
    if required:
        present = [k for k in required if _of_kind(facts, k)]
        if present:
            s.state(
                "5 required evidence",
                f"Required for {sysd.eu_category}: {required}; present: {present}.",
                [attestation_link(a) for k in present for a in _of_kind(facts, k)],
            )
        for k in required:
            if k not in present:
                s.gap(f"5 required evidence: {k}", _why_no(facts, k))
    released = facts.audit_for(action="model.version.released", subject=facts.version_subject)
    if released:
        s.state(
            "5 release gate",
            "Released after the gate checked signature, golden set, evidence and approvals.",
            map(audit_link, released),
        )
    else:
        s.gap("5 release gate", f"the version is {facts.version.state}, not released")
    if isinstance(facts.incidents, Missing):
        s.gap("5 incidents", facts.incidents.reason)
    else:
        s.state(
            "5 incidents",
            f"{len(facts.incidents)} incident(s) recorded for this model version"
            + (
                ": " + ", ".join(f"{i.get('id')} ({i.get('status')})" for i in facts.incidents)
                if facts.incidents
                else "."
            ),
            [{"type": "incident", "id": i.get("id")} for i in facts.incidents],
        )
    return s


def lifecycle(facts: Facts) -> Section:
    s = Section("6", "Changes through the lifecycle", "Annex IV point 6")
    for v in sorted(facts.versions, key=lambda x: x.created_at):
        subject = f"model:{v.model_name}@{v.version}"
        text = (
            f"{v.version} (security_version {v.security_version}): pushed "
            f"{_date(v.created_at)} by {v.uploader}"
        )
        if v.released_at:
            text += f", released {_date(v.released_at)} by {v.released_by}"
        if v.revoked_at:
            text += f", revoked {_date(v.revoked_at)}: {v.revoke_reason}"
        s.state(
            "6 version",
            text + f"; now {v.state}.",
            [signature_link(v), *map(audit_link, facts.audit_for(subject=subject))],
        )
    return s


def standards(facts: Facts) -> Section:
    s = Section("7", "Harmonised standards and other specifications applied", "Annex IV point 7")
    s.gap(
        "7 harmonised standards",
        "no harmonised standard or common specification (Art. 40, 41) is recorded for this "
        "system; the provider lists those applied",
    )
    v = facts.version
    s.state(
        "7 model integrity",
        "OpenSSF model-signing v1 (Sigstore bundle v0.3, DSSE, in-toto Statement v1).",
        [signature_link(v)],
    )
    for kind, name in (
        ("slsa-provenance", "SLSA provenance v1"),
        ("ml-bom", "CycloneDX ML-BOM / SPDX 3 AI"),
    ):
        found = _of_kind(facts, kind)
        if found:
            s.state(f"7 {name}", f"Supplier evidence in {name}.", map(attestation_link, found))
    return s


def declaration(facts: Facts) -> Section:
    s = Section("8", "EU declaration of conformity", "Annex IV point 8")
    if facts.system.eu_category == "high_risk":
        s.gap(
            "8 declaration of conformity (Art. 47)",
            "no EU declaration of conformity is recorded: the provider draws it up and signs "
            "it; Linegate does not generate one",
        )
    else:
        s.state(
            "8 declaration of conformity (Art. 47)",
            f"Not required: the system is classified {facts.system.eu_category or 'unset'}.",
            map(audit_link, facts.audit_for(subject=f"system:{facts.system.id}")),
        )
    return s


def post_market(facts: Facts) -> Section:
    s = Section("9", "Post-market monitoring plan (Art. 72)", "Annex IV point 9")
    value, source = cadence(facts.system)
    if value:
        s.state(
            "9 monitoring cadence",
            f"Monitored {value} ({'from NIST tier' if source == 'tier' else 'override'}"
            + (f": {facts.system.cadence_override_reason}" if source == "override" else "")
            + ").",
            map(audit_link, facts.audit_for(subject=f"system:{facts.system.id}")),
        )
    else:
        s.gap("9 monitoring cadence", "the system has no NIST tier and no cadence override")
    if isinstance(facts.monitors, Missing):
        s.gap("9 configured monitors", facts.monitors.reason)
    elif facts.monitors:
        s.state(
            "9 configured monitors",
            "; ".join(_monitor_text(m) for m in facts.monitors),
            [
                {
                    "type": "monitor",
                    "model": m.get("model"),
                    "version": m.get("version"),
                    "line": m.get("line"),
                }
                for m in facts.monitors
            ],
        )
    else:
        s.gap("9 configured monitors", "the incident service has no monitor for this model")
    if isinstance(facts.incidents, Missing):
        s.gap("9 serious incident reporting (Art. 73)", facts.incidents.reason)
    else:
        s.state(
            "9 serious incident reporting (Art. 73)",
            f"The incident service tracks incidents and their regulatory clocks; "
            f"{len(facts.incidents)} recorded for this version.",
            [{"type": "incident", "id": i.get("id")} for i in facts.incidents],
        )
    return s


def _monitor_text(m: dict[str, Any]) -> str:
    states = m.get("states") or []
    names = sorted({str(x.get("monitor") or x.get("kind") or x.get("name")) for x in states})
    return (
        f"{m.get('model')} {m.get('version')} on {m.get('line')}"
        + (f" (tier {m['tier']})" if m.get("tier") is not None else "")
        + (f": {', '.join(names)}" if names else "")
    )


SECTIONS = (
    general_description,
    development,
    monitoring_and_control,
    metrics_rationale,
    risk_management,
    lifecycle,
    standards,
    declaration,
    post_market,
)


def build(facts: Facts, *, now: datetime | None = None) -> dict[str, Any]:
    sections = [make(facts).to_dict() for make in SECTIONS]
    present = sum(len(x["statements"]) for x in sections)
    missing = [{"section": x["id"], **g} for x in sections for g in x["gaps"]]
    expected = present + len(missing)
    v = facts.version
    return {
        "type": TECHFILE_TYPE,
        "regulation": "Regulation (EU) 2024/1689 (AI Act), Article 11 and Annex IV",
        "model": v.model_name,
        "version": v.version,
        "state": v.state,
        "system": facts.system.id,
        "artefact_digest": f"sha256:{v.artefact_digest}",
        "manifest_digest": f"sha256:{v.manifest_digest}",
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "released": v.state in (VersionState.RELEASED, VersionState.REVOKED)
        and v.released_at is not None,
        "sections": sections,
        "gaps": missing,
        "completeness": {
            "statements": present,
            "gaps": len(missing),
            "score": round(present / expected, 4) if expected else 0.0,
        },
    }


def links(document: dict[str, Any]) -> list[Link]:
    """Every evidence link of a technical file (each once)."""
    seen: dict[str, Link] = {}
    for section in document["sections"]:
        for statement in section["statements"]:
            for link in statement["evidence"]:
                seen.setdefault(repr(sorted(link.items())), link)
    return list(seen.values())
