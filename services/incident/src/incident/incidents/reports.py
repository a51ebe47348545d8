"""Pre-filled report drafts (initial and final) for a triaged incident, as JSON and Markdown.

The draft gathers what the service knows: the incident and what it touches, the triage
decision and its legal basis, every deadline, the timeline, corrective actions with their
approvers and outcomes, and the evidence freeze. What only people can say (affected persons,
the root cause, contacts) is listed in ``to_complete``; nothing is invented. A person
reviews, completes and submits the report to the authority, then records the submission on
the clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents import actions, clocks, workflow
from incident.incidents import freeze as evidence
from incident.incidents.core import utc
from incident.incidents.errors import NotTriaged

ReportKind = Literal["initial", "final"]

_INITIAL_TODO = [
    "provider and deployer contact details",
    "persons or groups affected and the harm observed",
    "immediate measures beyond those recorded here",
]
_FINAL_TODO = [
    "provider and deployer contact details",
    "persons or groups affected and the harm observed",
    "root cause analysis",
    "measures taken to prevent recurrence",
    "cross-border impact (NIS2 Art. 23(4)(d)(iv))",
]


def _iso(t: datetime | None) -> str | None:
    return None if t is None else utc(t).isoformat()


async def draft(
    session: AsyncSession, incident_id: str, kind: ReportKind, now: datetime
) -> dict[str, Any]:
    incident = await workflow.get_incident(session, incident_id)
    if incident.triage is None:
        raise NotTriaged(f"incident {incident_id} is not triaged: decide its standing first")
    triage = incident.triage
    frozen = await evidence.active_freeze(session, incident.id)
    action_rows = []
    for a in await actions.list_actions(session, incident.id):
        read = await actions.action_read(session, a)
        action_rows.append(
            {
                "action": a.action,
                "state": a.state,
                "params": a.params,
                "rationale": a.rationale,
                "approved_by": [ap.approver for ap in read.approvals],
                "outcome": (a.result or {}).get("outcome"),
                "detail": (a.result or {}).get("detail"),
            }
        )
    events = await workflow.timeline(session, incident.id)
    closing = next((e for e in reversed(events) if e.data.get("to") == "closed"), None)
    to_complete = list(_INITIAL_TODO if kind == "initial" else _FINAL_TODO)
    if kind == "final" and incident.status not in ("mitigated", "closed"):
        to_complete.insert(0, f"the incident is still {incident.status}: mitigate it first")
    return {
        "kind": kind,
        "generated_at": now.isoformat(),
        "incident": {
            "id": incident.id,
            "type": incident.incident_type,
            "severity": incident.severity,
            "status": incident.status,
            "summary": incident.summary,
            "opened_at": _iso(incident.opened_at),
            "aware_at": _iso(incident.aware_at),
            "mitigated_at": _iso(incident.mitigated_at),
            "closed_at": _iso(incident.closed_at),
            "closing_reason": closing.detail if closing else None,
        },
        "ai_system": {
            "model": incident.model,
            "version": incident.version,
            "line": incident.line,
            "station": incident.station,
            "device_id": incident.device_id,
            "rollout_id": incident.rollout_id,
            "frozen_as_evidence": frozen is not None,
        },
        "classification": {
            "serious_incident": triage.get("serious"),
            "art_3_49_categories": triage.get("categories", []),
            "death": triage.get("death", False),
            "widespread_infringement": triage.get("widespread_infringement", False),
            "nis2_significant": triage.get("nis2_significant", False),
            "rationale": triage.get("rationale"),
            "decided_by": triage.get("by"),
            "decided_at": triage.get("at"),
        },
        "deadlines": [
            clocks.clock_read(c, now).model_dump(mode="json", exclude={"incident_id"})
            for c in await clocks.clocks_of(session, incident.id)
        ],
        "evidence": incident.evidence,
        "corrective_actions": action_rows,
        "timeline": [
            {"at": _iso(e.at), "kind": e.kind, "actor": e.actor, "detail": e.detail} for e in events
        ],
        "to_complete": to_complete,
    }


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(d: dict[str, Any]) -> str:
    inc, system, cls = d["incident"], d["ai_system"], d["classification"]
    title = "Initial" if d["kind"] == "initial" else "Final"
    lines = [
        f"# {title} incident report (draft): {inc['id']}",
        "",
        f"*Generated {d['generated_at']}; review and complete before submitting.*",
        "",
        "## Incident",
        "",
        f"- Type: {inc['type']}, severity {inc['severity']}, status {inc['status']}",
        f"- Summary: {inc['summary']}",
        f"- Opened: {inc['opened_at']}; aware: {inc['aware_at']}",
    ]
    if inc["closed_at"]:
        lines.append(f"- Closed: {inc['closed_at']} ({inc['closing_reason']})")
    lines += [
        "",
        "## AI system",
        "",
        f"- Model: {system['model']} {system['version']}",
        f"- Line {system['line']}, station {system['station']}, device {system['device_id']}",
        f"- Rollout: {system['rollout_id']}",
        f"- Frozen as evidence: {'yes' if system['frozen_as_evidence'] else 'no'}",
        "",
        "## Classification",
        "",
        f"- Serious incident (EU AI Act Art. 3(49)): "
        f"{'yes' if cls['serious_incident'] else 'no'}"
        + (f" ({', '.join(cls['art_3_49_categories'])})" if cls["art_3_49_categories"] else ""),
        f"- Significant incident (NIS2 Art. 23(3)): {'yes' if cls['nis2_significant'] else 'no'}",
        f"- Rationale: {cls['rationale']} ({cls['decided_by']}, {cls['decided_at']})",
        "",
        "## Deadlines",
        "",
        "| regime | report | due | submitted | basis |",
        "|---|---|---|---|---|",
    ]
    for c in d["deadlines"]:
        submitted = c["submitted_at"] or ("**OVERDUE**" if c["overdue"] else "not yet")
        lines.append(
            f"| {c['regime']} | {c['report']} | {c['due_at']} | {submitted} | "
            f"{_md_escape(c['basis'])} |"
        )
    lines += ["", "## Corrective actions", ""]
    if not d["corrective_actions"]:
        lines.append("None recorded.")
    for a in d["corrective_actions"]:
        lines.append(
            f"- {a['action']} ({a['state']}), approved by {', '.join(a['approved_by']) or '-'}: "
            f"{a['rationale']}" + (f"; outcome {a['outcome']}" if a["outcome"] else "")
        )
    lines += ["", "## Timeline", "", "| at | event | by | detail |", "|---|---|---|---|"]
    for e in d["timeline"]:
        lines.append(f"| {e['at']} | {e['kind']} | {e['actor']} | {_md_escape(e['detail'])} |")
    lines += ["", "## To be completed by the reporter", ""]
    lines += [f"- [ ] {item}" for item in d["to_complete"]]
    return "\n".join(lines) + "\n"
