"""Runbooks as versioned data (NIST AI RMF MANAGE 1.3: pre-defined response plans).

Each runbook version is a JSON file in ``incident/incidents/runbooks/`` named
``<id>.v<version>.json``. At start-up the service records every version it has not seen in
the ``runbook_version`` table with its digest; a version already recorded is never replaced:
when its file changed, the edit is refused (logged and audited) and the recorded content
stays in force. A change to a runbook is therefore a new file with the next version, and an
incident keeps the version it started with.

Steps are ``check`` or ``decision`` (a human confirms them, with a note) or ``action`` (a
corrective action that executes only after approval). A step with ``"gate": "human"`` must be
completed before any later action step may be proposed.

Example::

    catalogue = await sync_runbooks(session, audit, now=now)
    book = catalogue.for_type("defect_escape")      # newest version that applies
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents.core import ACTOR
from incident.incidents.models import RunbookVersion
from incident.signals import IncidentType
from linegate.audit import AuditLog
from linegate.events import IncidentActionKind
from linegate.signing import canonical_json

log = logging.getLogger("incident.incidents.runbooks")


class RunbookStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = Field(min_length=1)
    kind: Literal["check", "decision", "action"]
    action: IncidentActionKind | None = None
    gate: Literal["human", "approval", "none"] = "human"
    guidance: str = ""

    @model_validator(mode="after")
    def _action_steps_name_an_action(self) -> RunbookStep:
        if (self.kind == "action") != (self.action is not None):
            raise ValueError(f"step {self.id!r}: an action step names its action, others do not")
        if self.kind == "action" and self.gate != "approval":
            raise ValueError(f"step {self.id!r}: a corrective action is always approval-gated")
        return self


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    applies_to: list[IncidentType] = Field(min_length=1)
    description: str = ""
    steps: list[RunbookStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_steps(self) -> Runbook:
        ids = [s.id for s in self.steps]
        if len(ids) != len(set(ids)):
            raise ValueError(f"runbook {self.id!r}: step ids must be unique")
        return self

    def step(self, step_id: str) -> RunbookStep | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def gates_before(self, step_id: str) -> list[RunbookStep]:
        """Human-gated steps that come before ``step_id``."""
        gates: list[RunbookStep] = []
        for s in self.steps:
            if s.id == step_id:
                return gates
            if s.gate == "human":
                gates.append(s)
        return gates


def digest(content: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()


def packaged_runbooks() -> list[dict[str, Any]]:
    """The runbook files shipped in the package, parsed (not yet validated)."""
    folder = resources.files("incident.incidents") / "runbooks"
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            docs.append(json.loads(entry.read_text(encoding="utf-8")))
    return docs


@dataclass
class Catalogue:
    """Every recorded runbook version, immutable once recorded."""

    versions: dict[tuple[str, int], Runbook] = field(default_factory=dict)

    def get(self, runbook_id: str, version: int | None = None) -> Runbook | None:
        if version is not None:
            return self.versions.get((runbook_id, version))
        found = [b for (rid, _), b in self.versions.items() if rid == runbook_id]
        return max(found, key=lambda b: b.version) if found else None

    def latest(self) -> list[Runbook]:
        ids = sorted({rid for rid, _ in self.versions})
        return [b for rid in ids if (b := self.get(rid)) is not None]

    def history(self, runbook_id: str) -> list[Runbook]:
        return sorted(
            (b for (rid, _), b in self.versions.items() if rid == runbook_id),
            key=lambda b: b.version,
        )

    def for_type(self, incident_type: str) -> Runbook | None:
        """The newest version of the first runbook (by id) that applies to the type."""
        for book in self.latest():
            if incident_type in book.applies_to:
                return book
        return None


async def sync_runbooks(
    session: AsyncSession,
    audit: AuditLog,
    *,
    now: datetime,
    documents: list[dict[str, Any]] | None = None,
) -> Catalogue:
    """Record unseen runbook versions, refuse edits of recorded ones, return the catalogue."""
    recorded = {
        (r.runbook_id, r.version): r for r in (await session.exec(select(RunbookVersion))).all()
    }
    for doc in packaged_runbooks() if documents is None else documents:
        try:
            book = Runbook.model_validate(doc)
        except ValidationError as e:
            log.error("invalid runbook file ignored: %s", e)  # noqa: TRY400 - no traceback needed
            continue
        content = book.model_dump(mode="json")
        key = (book.id, book.version)
        existing = recorded.get(key)
        if existing is None:
            row = RunbookVersion(
                runbook_id=book.id,
                version=book.version,
                digest=digest(content),
                content=content,
                recorded_at=now,
            )
            session.add(row)
            recorded[key] = row
            await audit.append(
                session,
                actor=ACTOR,
                action="runbook.recorded",
                subject=f"runbook:{book.id}@{book.version}",
                payload=content,
                now=now,
            )
        elif existing.digest != digest(content):
            log.error(
                "runbook %s version %d changed after it was recorded; the recorded content "
                "stays in force: publish the change as version %d",
                book.id,
                book.version,
                book.version + 1,
            )
            await audit.append(
                session,
                actor=ACTOR,
                action="runbook.edit_refused",
                subject=f"runbook:{book.id}@{book.version}",
                payload=content,
                reason=f"recorded digest {existing.digest} differs from the file's",
                now=now,
            )
    await session.flush()
    return Catalogue({k: Runbook.model_validate(r.content) for k, r in recorded.items()})
