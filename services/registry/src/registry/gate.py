"""The release gate (EU AI Act Art. 9, 14, 17): golden-set validation, human approvals, release,
revocation.

States: ``draft -> validated -> approved -> released -> revoked`` (``rejected`` ends a version
an approver turned down). A version is released only when its stored files still verify against
the registry's signature, its latest golden-set run passed, the evidence its risk class requires
is present, and enough people other than the uploader approved it with a written rationale
(two for NIST tier 1, four-eyes). Release and revocation are NATS events, committed with the
state change through the outbox.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from linegate.auth import Principal
from linegate.errors import Unprocessable
from linegate.events import ModelReleasedV1, ModelRevokedV1, Subjects
from linegate.outbox import enqueue
from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    canonical_json,
    dsse_sign,
    load_or_create_private_key,
)
from registry import competence, evidence
from registry.errors import (
    AlreadyExists,
    InvalidGoldenSet,
    InvalidTransition,
    ReleaseBlocked,
    SelfApproval,
    SystemNotFound,
)
from registry.golden import DefectSpec, GoldenSetError, ValidationPolicy, load_golden_set
from registry.golden import validate_model as run_golden_set
from registry.models import (
    AiSystem,
    Approval,
    Blob,
    CompetenceRole,
    EuCategory,
    GoldenSet,
    ModelLine,
    ModelVersion,
    ValidationRun,
    VersionState,
)
from registry.repository import RegistryRepository
from registry.schemas import ApprovalCreate
from registry.versions import Registry, require_line, require_version, verify_stored

GOLDEN_SET_PREDICATE = "https://linegate.dev/attestation/golden-set-validation/v1"
DEFECT_KINDS = ("scratch", "crack", "porosity", "occlusion")


def approvals_required(system: AiSystem) -> int:
    """Four-eyes for NIST tier 1 (safety, autonomous control); one approver otherwise."""
    return 2 if system.nist_tier == 1 else 1


async def _system_of(repo: RegistryRepository, line: ModelLine) -> AiSystem:
    system = await repo.system(line.system_id)
    if system is None:  # the foreign key makes this unreachable; fail closed anyway
        raise SystemNotFound(f"model {line.name!r} names a missing system {line.system_id!r}")
    return system


# ------------------------------------------------------------------------------ golden sets


async def add_golden_set(
    registry: Registry,
    actor: Principal,
    model_name: str,
    chunks: Any,
    description: str,
) -> GoldenSet:
    async with registry.db.session() as session:
        line = await require_line(RegistryRepository(session), model_name)
    with registry.store.staging() as stage:
        received = await stage.receive(
            "golden.npz", chunks, limit=registry.settings.golden_set_max_bytes
        )
        try:
            golden = await asyncio.to_thread(load_golden_set, received.path)
        except GoldenSetError as e:
            raise InvalidGoldenSet(str(e)) from e
        names = set(golden.label_names)
        unknown = [c for c in [*line.critical_classes, line.good_class] if c and c not in names]
        if unknown:
            raise InvalidGoldenSet(
                f"the golden set's label_names {sorted(names)} lack the model's classes {unknown}"
            )
        added = registry.store.commit(received)
        try:
            async with registry.db.session() as session:
                repo = RegistryRepository(session)
                now = datetime.now(UTC)
                if await repo.blob(received.sha256) is None:
                    session.add(Blob(digest=received.sha256, size=received.size, created_at=now))
                row = GoldenSet(
                    id=uuid.uuid4().hex,
                    model_name=model_name,
                    digest=received.sha256,
                    samples=int(golden.labels.shape[0]),
                    label_names=list(golden.label_names),
                    description=description,
                    created_at=now,
                    created_by=actor.subject,
                )
                await repo.add(row)
                await registry.audit.append(
                    session,
                    actor=actor.actor,
                    action="model.golden_set.added",
                    subject=f"model:{model_name}",
                    payload={"golden_set": row.id, "digest": row.digest, "samples": row.samples},
                )
                return row
        except BaseException:
            if added:
                registry.store.remove(received.sha256)
            raise


# ------------------------------------------------------------------------------- validation


def _policy(line: ModelLine) -> ValidationPolicy:
    return ValidationPolicy(
        critical_classes=tuple(line.critical_classes),
        tolerance=line.tolerance,
        good_class=line.good_class,
        defects=tuple(
            DefectSpec(kind, min_detection=float(line.min_defect_detection.get(kind, 0.0)))  # type: ignore[arg-type]
            for kind in DEFECT_KINDS
        ),
        max_lighting_flip_rate=line.max_lighting_flip_rate,
    )


def _signed_statement(
    registry: Registry,
    version: ModelVersion,
    golden: GoldenSet,
    baseline: ModelVersion | None,
    report: dict[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """The run as an in-toto Statement about model.onnx, in a DSSE envelope signed by the
    registry's service key: the result can be checked away from the registry."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model.onnx", "digest": {"sha256": version.artefact_digest}}],
        "predicateType": GOLDEN_SET_PREDICATE,
        "predicate": {
            "model": version.model_name,
            "version": version.version,
            "goldenSet": {"id": golden.id, "digest": {"sha256": golden.digest}},
            "baseline": (
                {"version": baseline.version, "digest": {"sha256": baseline.artefact_digest}}
                if baseline
                else None
            ),
            "report": report,
            "validatedAt": at.isoformat(),
        },
    }
    key = load_or_create_private_key(registry.report_key_path)
    return dsse_sign(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, key)


async def validate(
    registry: Registry, actor: Principal, model_name: str, version_name: str
) -> ValidationRun:
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        line = await require_line(repo, model_name)
        version = await require_version(repo, model_name, version_name)
        _require_state(version, VersionState.DRAFT, VersionState.VALIDATED, action="validate")
        golden_sets = await repo.golden_sets(model_name)
        if not golden_sets:
            raise InvalidTransition(
                f"model {model_name!r} has no golden set: upload one to "
                f"/v1/models/{model_name}/golden-sets before validating"
            )
        golden = golden_sets[0]
        baseline = await repo.current_release(model_name, exclude=version.id)
    store = registry.store
    try:
        dataset = await asyncio.to_thread(load_golden_set, store.path(golden.digest))
        report = await asyncio.to_thread(
            run_golden_set,
            store.path(version.artefact_digest),
            dataset,
            policy=_policy(line),
            baseline_model_path=store.path(baseline.artefact_digest) if baseline else None,
        )
    except GoldenSetError as e:
        raise Unprocessable(f"the golden set cannot be run on this version: {e}") from e
    now = datetime.now(UTC)
    result = report.to_dict()
    envelope = _signed_statement(registry, version, golden, baseline, result, now)
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        version = await require_version(repo, model_name, version_name)
        _require_state(version, VersionState.DRAFT, VersionState.VALIDATED, action="validate")
        run = ValidationRun(
            id=uuid.uuid4().hex,
            version_id=version.id,
            golden_set_id=golden.id,
            baseline_version_id=baseline.id if baseline else None,
            passed=report.passed,
            report=result,
            envelope=envelope,
            created_at=now,
            created_by=actor.subject,
        )
        version.validation_id = run.id
        version.validated_at = now
        version.state = VersionState.VALIDATED if report.passed else VersionState.DRAFT
        await repo.add(run, version)
        await registry.audit.append(
            session,
            actor=actor.actor,
            action="model.version.validated" if report.passed else "model.version.failed",
            subject=f"model:{model_name}@{version_name}",
            payload={"validation": run.id, "passed": run.passed, "reasons": result["reasons"]},
        )
        return run


def _require_state(version: ModelVersion, *allowed: VersionState, action: str) -> None:
    if version.state not in allowed:
        raise InvalidTransition(
            f"cannot {action} {version.model_name} {version.version}: it is {version.state}, "
            f"and {action} needs {' or '.join(allowed)}"
        )


# -------------------------------------------------------------------------------- approvals


async def decide(
    registry: Registry,
    actor: Principal,
    model_name: str,
    version_name: str,
    body: ApprovalCreate,
) -> ModelVersion:
    rationale = body.rationale.strip()
    minimum = registry.settings.min_rationale_chars
    if len(rationale) < minimum:
        raise Unprocessable(
            f"every approval and rejection needs a written rationale of at least {minimum} "
            "characters (EU AI Act Art. 14: human oversight is recorded)"
        )
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        line = await require_line(repo, model_name)
        version = await require_version(repo, model_name, version_name)
        _require_state(version, VersionState.VALIDATED, action=body.decision)
        if actor.subject == version.uploader:
            raise SelfApproval(
                f"{actor.subject} uploaded {model_name} {version_name} and may not "
                f"{body.decision} it: a different person must decide"
            )
        decisions = await repo.approvals(version.id)
        if any(a.approver == actor.subject for a in decisions):
            raise AlreadyExists(f"{actor.subject} already decided on {model_name} {version_name}")
        now = datetime.now(UTC)
        system = await _system_of(repo, line)
        # Annex IV 2(e) / Art. 14: oversight by people with the necessary training.
        eligible = await competence.eligibility(
            repo, system, actor.subject, CompetenceRole.APPROVER, now
        )
        approval = Approval(
            id=uuid.uuid4().hex,
            version_id=version.id,
            approver=actor.subject,
            decision=body.decision,
            rationale=rationale,
            created_at=now,
            competence_record_id=eligible.record.id if eligible.record else None,
            flags=list(eligible.flags),
        )
        if body.decision == "reject":
            version.state = VersionState.REJECTED
        else:
            approvers = {a.approver for a in decisions if a.decision == "approve"} | {actor.subject}
            if len(approvers) >= approvals_required(system):
                version.state = VersionState.APPROVED
                version.approved_at = now
        await repo.add(approval, version)
        await registry.audit.append(
            session,
            actor=actor.actor,
            action=f"model.version.{'approved' if body.decision == 'approve' else 'rejected'}",
            subject=f"model:{model_name}@{version_name}",
            payload={
                "approval": approval.id,
                "state": version.state,
                "competence_record": approval.competence_record_id,
                "flags": approval.flags,
            },
            reason=rationale,
        )
        return version


# ---------------------------------------------------------------------------------- release


def _classification_gaps(system: AiSystem) -> list[str]:
    reasons = []
    if system.eu_category is None:
        reasons.append(f"AI system {system.id!r} has no EU AI Act category")
    elif system.eu_category == EuCategory.PROHIBITED:
        reasons.append(f"AI system {system.id!r} is classified as a prohibited practice (Art. 5)")
    if system.nist_tier is None:
        reasons.append(f"AI system {system.id!r} has no NIST consequence tier")
    if not system.owner_name:
        reasons.append(f"AI system {system.id!r} has no named accountable owner")
    if not system.consequence_if_wrong:
        reasons.append(f"AI system {system.id!r} does not say what happens if it is wrong")
    return reasons


async def evidence_for(
    registry: Registry, system: AiSystem, digest: str
) -> evidence.EvidenceReport:
    required = registry.settings.evidence_policy.get(system.eu_category or "", [])
    # Nothing required (e.g. a minimal-risk system): no need to reach the attestation service.
    found = await registry.attestations.attestations_for(digest) if required else []
    return evidence.evaluate(digest, system.eu_category, required, found)


async def version_evidence(
    registry: Registry, model_name: str, version_name: str
) -> evidence.EvidenceReport:
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        line = await require_line(repo, model_name)
        version = await require_version(repo, model_name, version_name)
        system = await _system_of(repo, line)
    return await evidence_for(registry, system, version.artefact_digest)


async def release(
    registry: Registry, actor: Principal, model_name: str, version_name: str, note: str
) -> ModelVersion:
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        line = await require_line(repo, model_name)
        version = await require_version(repo, model_name, version_name)
        _require_state(version, VersionState.APPROVED, action="release")
        system = await _system_of(repo, line)
        run = await repo.validation(version.validation_id) if version.validation_id else None
        approvals = await repo.approvals(version.id)
    reasons = _classification_gaps(system)
    if run is None or not run.passed:
        reasons.append("the latest golden-set validation did not pass")
    verified = await asyncio.to_thread(verify_stored, registry, version)
    if not verified.verified:
        reasons.append(f"signature: {verified.reason}")
    report = await evidence_for(registry, system, version.artefact_digest)
    reasons.extend(report.reasons)
    if reasons:
        raise ReleaseBlocked(
            f"{model_name} {version_name} cannot be released: " + "; ".join(reasons),
            extra={"reasons": reasons, "evidence": report.to_dict()},
        )
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        version = await require_version(repo, model_name, version_name)
        _require_state(version, VersionState.APPROVED, action="release")
        now = datetime.now(UTC)
        version.state = VersionState.RELEASED
        version.released_at = now
        version.released_by = actor.subject
        version.release_evidence = {
            "evidence": report.to_dict(),
            "signature": verified.model_dump(mode="json"),
            "validation_id": run.id if run else None,
            "approvals": [
                {
                    "approver": a.approver,
                    "decision": a.decision,
                    "rationale": a.rationale,
                    "competence_record_id": a.competence_record_id,
                    "flags": list(a.flags),
                }
                for a in approvals
            ],
            "note": note,
        }
        await repo.add(version)
        await enqueue(
            session,
            Subjects.REGISTRY_RELEASED,
            ModelReleasedV1(
                model=model_name,
                version=version_name,
                artefact_digest=f"sha256:{version.artefact_digest}",
                security_version=version.security_version,
            ),
        )
        await registry.audit.append(
            session,
            actor=actor.actor,
            action="model.version.released",
            subject=f"model:{model_name}@{version_name}",
            payload=version.release_evidence,
            reason=note or None,
        )
    registry.wake_outbox()
    return version


async def revoke(
    registry: Registry, actor: Principal, model_name: str, version_name: str, reason: str
) -> ModelVersion:
    """The kill switch: a revoked version is never installed again; the gateway acts on it."""
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        version = await require_version(repo, model_name, version_name)
        _require_state(
            version,
            VersionState.DRAFT,
            VersionState.VALIDATED,
            VersionState.APPROVED,
            VersionState.RELEASED,
            action="revoke",
        )
        was = version.state
        version.state = VersionState.REVOKED
        version.revoked_at = datetime.now(UTC)
        version.revoked_by = actor.subject
        version.revoke_reason = reason
        await repo.add(version)
        await enqueue(
            session,
            Subjects.REGISTRY_REVOKED,
            ModelRevokedV1(model=model_name, version=version_name, reason=reason),
        )
        await registry.audit.append(
            session,
            actor=actor.actor,
            action="model.version.revoked",
            subject=f"model:{model_name}@{version_name}",
            payload={"previous_state": was},
            reason=reason,
        )
    registry.wake_outbox()
    return version
