"""The portfolio risk report: every AI system in the inventory by EU AI Act category and NIST
tier, with owners, missing answers, open incidents and evidence completeness.

Open incidents come from the incident service (``GET /v1/incidents?status=active``); when it
does not answer, each system's count is ``null`` with the reason, never a guess. Evidence
completeness is the technical file's score of each system's newest released version (or newest
version when none is released).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from registry.inventory import gaps as inventory_gaps
from registry.repository import RegistryRepository
from registry.techfile import document
from registry.techfile.facts import gather
from registry.techfile.sources import Missing, Sources
from registry.versions import Registry


async def report(registry: Registry, sources: Sources) -> dict[str, Any]:
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        systems = await repo.systems()
        lines: dict[str, list[str]] = defaultdict(list)
        newest: dict[str, tuple[str, str]] = {}
        for line in await repo.model_lines():
            lines[line.system_id].append(line.name)
            versions = await repo.versions(line.name)
            released = [v for v in versions if v.released_at is not None]
            pick = (released or versions)[:1]
            if pick and line.system_id not in newest:
                newest[line.system_id] = (line.name, pick[0].version)
    incidents = await sources.json("incident", "/v1/incidents", {"status": "active", "limit": 1000})
    open_by_model: Counter[str] = Counter()
    incident_note = None
    if isinstance(incidents, Missing):
        incident_note = incidents.reason
    else:
        items = incidents.get("items", []) if isinstance(incidents, dict) else incidents
        for item in items:
            if isinstance(item, dict) and item.get("model"):
                open_by_model[str(item["model"])] += 1
    rows = []
    for system in systems:
        if system.status != "active":
            continue
        completeness: dict[str, Any] | None = None
        if system.id in newest:
            model, version = newest[system.id]
            doc = document.build(await gather(registry, sources, model, version))
            completeness = {"model": model, "version": version, **doc["completeness"]}
        rows.append(
            {
                "id": system.id,
                "name": system.name,
                "eu_category": system.eu_category or "unclassified",
                "nist_tier": system.nist_tier,
                "owner": (
                    {"name": system.owner_name, "email": system.owner_email}
                    if system.owner_name
                    else None
                ),
                "provider": system.provider,
                "missing_answers": inventory_gaps(system),
                "models": lines.get(system.id, []),
                "open_incidents": (
                    None
                    if incident_note
                    else sum(open_by_model[m] for m in lines.get(system.id, []))
                ),
                "evidence_completeness": completeness,
            }
        )
    by_category: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        tier = str(row["nist_tier"]) if row["nist_tier"] is not None else "unclassified"
        by_category[str(row["eu_category"])][tier].append(str(row["id"]))
    return {
        "total": len(rows),
        "by_eu_category_and_nist_tier": {k: dict(v) for k, v in by_category.items()},
        "without_owner": [r["id"] for r in rows if r["owner"] is None],
        "with_missing_answers": [r["id"] for r in rows if r["missing_answers"]],
        "open_incidents": "unknown" if incident_note else sum(open_by_model.values()),
        "incident_service": incident_note or "ok",
        "systems": rows,
    }
