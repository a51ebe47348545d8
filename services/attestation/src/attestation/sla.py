"""Supplier SLAs: terms, contracted artefacts, notices, scorecards and breach evaluation.

A scorecard is computed from the records, never stored: for each contracted artefact and each
required evidence kind, is there a verified, unexpired attestation by this supplier covering
the artefact's digest? Notices must be answered within the agreed days. Each performance
commitment is met, not met or without evidence by the newest of the supplier's verified,
unexpired measurements (:mod:`attestation.sla_performance`). The evaluator
(:func:`evaluate_breaches`, run periodically) keeps ``sla_breach`` rows in step with the
scorecard and emits one ``linegate.attestation.sla.breached`` event per new breach.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from attestation.errors import SupplierNotFound
from attestation.models import Attestation, SlaBreach, SupplierArtefact, SupplierNotice, SupplierSla
from attestation.repository import SlaRepository, SupplierRepository, TrustRepository
from attestation.schemas_sla import ArtefactCreate, NoticeCreate, NoticeResponse, SlaTerms
from attestation.service import require_supplier
from attestation.sla_performance import CommitmentScore, score_commitments
from attestation.verification import aware_utc
from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.errors import Conflict
from linegate.events import SlaBreachedV1, Subjects
from linegate.outbox import enqueue

log = logging.getLogger("attestation.sla")


def _now() -> datetime:
    return datetime.now(UTC)


async def put_sla(
    supplier_id: str,
    terms: SlaTerms,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    slas: SlaRepository,
    audit: AuditLog,
) -> SupplierSla:
    await require_supplier(suppliers, supplier_id)
    row = await slas.sla(supplier_id) or SupplierSla(
        supplier_id=supplier_id, updated_at=_now(), updated_by=actor.actor
    )
    row.required_evidence = {k: list(v) for k, v in terms.required_evidence.items()}
    row.max_attestation_age_days = terms.max_attestation_age_days
    row.vulnerability_response_days = terms.vulnerability_response_days
    row.incident_response_days = terms.incident_response_days
    row.performance_commitments = [c.model_dump(mode="json") for c in terms.performance_commitments]
    row.updated_at, row.updated_by = _now(), actor.actor
    await slas.save(row)
    await TrustRepository(slas.session).changed()  # the maximum age sets uploads' expiry
    await audit.append(
        slas.session,
        actor=actor.actor,
        action="sla.set",
        subject=supplier_id,
        payload=terms.model_dump(mode="json"),
    )
    return row


async def add_artefact(
    supplier_id: str,
    body: ArtefactCreate,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    slas: SlaRepository,
    audit: AuditLog,
) -> SupplierArtefact:
    await require_supplier(suppliers, supplier_id)
    if any(a.digest == body.digest for a in await slas.artefacts(supplier_id)):
        raise Conflict(f"artefact {body.digest} is already contracted for {supplier_id}")
    row = SupplierArtefact(
        id=uuid.uuid4().hex,
        supplier_id=supplier_id,
        name=body.name,
        kind=body.kind,
        digest=body.digest,
        registered_at=_now(),
        registered_by=actor.actor,
    )
    await slas.save(row)
    await audit.append(
        slas.session,
        actor=actor.actor,
        action="sla.artefact.add",
        subject=f"{supplier_id}/{body.digest}",
        payload=body.model_dump(mode="json"),
    )
    return row


async def send_notice(
    supplier_id: str,
    body: NoticeCreate,
    *,
    actor: Principal,
    suppliers: SupplierRepository,
    slas: SlaRepository,
    audit: AuditLog,
) -> SupplierNotice:
    await require_supplier(suppliers, supplier_id)
    row = SupplierNotice(
        id=uuid.uuid4().hex,
        supplier_id=supplier_id,
        kind=body.kind,
        reference=body.reference,
        summary=body.summary,
        sent_at=body.sent_at or _now(),
        sent_by=actor.actor,
    )
    await slas.save(row)
    await audit.append(
        slas.session,
        actor=actor.actor,
        action="sla.notice.send",
        subject=f"{supplier_id}/{row.id}",
        payload=body.model_dump(mode="json"),
    )
    return row


async def respond_notice(
    supplier_id: str,
    notice_id: str,
    body: NoticeResponse,
    *,
    actor: Principal,
    slas: SlaRepository,
    audit: AuditLog,
) -> SupplierNotice:
    row = await slas.notice(supplier_id, notice_id)
    if row is None:
        raise SupplierNotFound(f"supplier {supplier_id!r} has no notice {notice_id!r}")
    if row.responded_at is not None:
        raise Conflict("this notice was already answered")
    row.responded_at, row.response = _now(), body.response
    await slas.save(row)
    await audit.append(
        slas.session,
        actor=actor.actor,
        action="sla.notice.respond",
        subject=f"{supplier_id}/{notice_id}",
        payload=body.model_dump(mode="json"),
    )
    return row


# ---------------------------------------------------------------------------- scorecard


@dataclass
class Finding:
    term: str
    key: str
    since: datetime
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "key": self.key,
            "since": self.since.isoformat(),
            "detail": self.detail,
        }


@dataclass
class Scorecard:
    supplier_id: str
    has_sla: bool
    required: int = 0
    covered: int = 0
    breaches: list[Finding] = field(default_factory=list)
    expiring: list[dict[str, Any]] = field(default_factory=list)
    artefacts: list[dict[str, Any]] = field(default_factory=list)
    performance: list[CommitmentScore] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return 1.0 if self.required == 0 else self.covered / self.required

    def as_dict(self) -> dict[str, Any]:
        return {
            "supplier": self.supplier_id,
            "has_sla": self.has_sla,
            "coverage": round(self.coverage, 4),
            "required": self.required,
            "covered": self.covered,
            "breaches": [b.as_dict() for b in sorted(self.breaches, key=lambda b: b.since)],
            "expiring": self.expiring,
            "artefacts": self.artefacts,
            "performance": [p.as_dict() for p in self.performance],
        }


def compute_scorecard(
    supplier_id: str,
    sla: SupplierSla | None,
    artefacts: list[SupplierArtefact],
    evidence: list[Attestation],
    notices: list[SupplierNotice],
    *,
    now: datetime,
    expiring_within: timedelta,
) -> Scorecard:
    card = Scorecard(supplier_id=supplier_id, has_sla=sla is not None)
    if sla is None:
        return card
    by_digest: dict[str, list[Attestation]] = {}
    for att in evidence:
        for subject in att.subjects:
            for algorithm, value in subject["digest"].items():
                by_digest.setdefault(f"{algorithm}:{value}", []).append(att)
    for artefact in artefacts:
        rows = []
        for requirement in sla.required_evidence.get(artefact.kind, []):
            kinds = set(requirement.split("|"))
            card.required += 1
            matching = [a for a in by_digest.get(artefact.digest, []) if a.predicate_kind in kinds]
            current = [a for a in matching if a.expires_at is None or aware_utc(a.expires_at) > now]
            key = f"{artefact.digest}#{requirement}"
            if current:
                card.covered += 1
                best = max(
                    current,
                    key=lambda a: (
                        aware_utc(a.expires_at) if a.expires_at else now + timedelta(days=36500)
                    ),
                )
                state = "covered"
                if (
                    best.expires_at is not None
                    and aware_utc(best.expires_at) <= now + expiring_within
                ):
                    state = "expiring"
                    card.expiring.append(
                        {
                            "key": key,
                            "attestation": best.id,
                            "expires_at": aware_utc(best.expires_at).isoformat(),
                        }
                    )
                rows.append({"evidence": requirement, "state": state, "attestation": best.id})
            elif matching:
                expired_at = max(
                    aware_utc(a.expires_at) for a in matching if a.expires_at is not None
                )
                card.breaches.append(
                    Finding(
                        "evidence-expired",
                        key,
                        expired_at,
                        f"{requirement} for {artefact.name} expired",
                    )
                )
                rows.append({"evidence": requirement, "state": "expired"})
            else:
                since = aware_utc(artefact.registered_at)
                card.breaches.append(
                    Finding(
                        "evidence-missing",
                        key,
                        since,
                        f"no verified {requirement} for {artefact.name}",
                    )
                )
                rows.append({"evidence": requirement, "state": "missing"})
        card.artefacts.append(
            {
                "name": artefact.name,
                "kind": artefact.kind,
                "digest": artefact.digest,
                "evidence": rows,
            }
        )
    for notice in notices:
        days = (
            sla.vulnerability_response_days
            if notice.kind == "vulnerability"
            else sla.incident_response_days
        )
        due = aware_utc(notice.sent_at) + timedelta(days=days)
        answered = aware_utc(notice.responded_at) if notice.responded_at else None
        if (answered is None and now > due) or (
            answered is not None and answered > due and now <= due + timedelta(days=90)
        ):
            card.breaches.append(
                Finding(
                    f"{notice.kind}-response",
                    notice.id,
                    due,
                    f"{notice.kind} notice {notice.reference} not answered within {days} days",
                )
            )
    _score_performance(card, sla, evidence, now)
    return card


def _score_performance(
    card: Scorecard, sla: SupplierSla, evidence: list[Attestation], now: datetime
) -> None:
    """Each performance commitment on the card; one not met or without evidence is a breach."""
    card.performance = score_commitments(
        sla.performance_commitments, evidence, now=now, terms_since=sla.updated_at
    )
    for score in card.performance:
        if score.status == "met":
            continue
        term = "performance-not-met" if score.status == "not_met" else "performance-no-evidence"
        detail = score.reason + (f" (attestation {score.attestation})" if score.attestation else "")
        card.breaches.append(Finding(term, score.key, score.since, detail))


async def scorecard(
    supplier_id: str,
    slas: SlaRepository,
    *,
    now: datetime | None = None,
    expiring_within: timedelta = timedelta(days=30),
) -> Scorecard:
    return compute_scorecard(
        supplier_id,
        await slas.sla(supplier_id),
        await slas.artefacts(supplier_id),
        await slas.evidence(supplier_id),
        await slas.notices(supplier_id),
        now=now or _now(),
        expiring_within=expiring_within,
    )


async def evaluate_breaches(
    slas: SlaRepository, audit: AuditLog, *, now: datetime | None = None
) -> list[SlaBreach]:
    """Open a breach (audit + event) for each new finding; resolve ones no longer found."""
    now = now or _now()
    opened: list[SlaBreach] = []
    for sla in await slas.all_slas():
        try:
            card = await scorecard(sla.supplier_id, slas, now=now)
        except Exception:  # one supplier's records must not stop every other's evaluation
            log.exception("SLA of supplier %s not evaluated", sla.supplier_id)
            continue
        found = {(f.term, f.key): f for f in card.breaches}
        current = {(b.term, b.key): b for b in await slas.open_breaches(sla.supplier_id)}
        for ident, finding in found.items():
            if ident in current:
                continue
            breach = SlaBreach(
                id=uuid.uuid4().hex,
                supplier_id=sla.supplier_id,
                term=finding.term,
                key=finding.key,
                since=finding.since,
                detail=finding.detail,
                opened_at=now,
            )
            await slas.save(breach)
            await audit.append(
                slas.session,
                actor="linegate:sla-evaluator",
                action="sla.breach.open",
                subject=f"{sla.supplier_id}/{finding.term}/{finding.key}",
                payload=finding.as_dict(),
                reason=finding.detail,
            )
            await enqueue(
                slas.session,
                Subjects.SUPPLIER_SLA_BREACHED,
                SlaBreachedV1(
                    supplier=sla.supplier_id,
                    term=finding.term,
                    since=finding.since,
                    detail=finding.detail,
                    actor="linegate:sla-evaluator",
                ),
            )
            opened.append(breach)
        for ident, breach in current.items():
            if ident not in found:
                breach.resolved_at = now
                await slas.save(breach)
                await audit.append(
                    slas.session,
                    actor="linegate:sla-evaluator",
                    action="sla.breach.resolve",
                    subject=f"{sla.supplier_id}/{breach.term}/{breach.key}",
                )
    return opened
