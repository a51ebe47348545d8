"""Competence of a responder approving a corrective action (EU AI Act Art. 14, NIS2 Art. 21(2)(g)).

A corrective action changes what a line does (roll back a model, send parts to a person), so
whoever approves one must hold current ``responder`` training for the AI system involved, as
recorded in the registry's competence register. The system is found through the registry's
inventory (the active entries listing the incident's model, on its line when they name lines);
each is asked ``GET /v1/competence/check`` at the moment of the approval, never from a cache,
so a revoked or expired record stops the next approval.

Without current training the system's tier decides, as for release approvals in the registry:
tier 1 (or no tier) refuses with 403, tiers 2-3 accept and flag the approval, and the flag stays
on the approval, its timeline note and its audit entry. When the registry cannot answer, or no
inventory entry lists the model, the setting ``competence_unverifiable`` decides: ``refuse``
(the default: 503, nothing recorded) or ``flag``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from incident.registry_client import RegistryClient, systems_listing
from linegate.errors import Forbidden, ServiceUnavailable

ROLE = "responder"


class UntrainedResponder(Forbidden):
    title = "No current responder training for this system"


class CompetenceUnverifiable(ServiceUnavailable):
    title = "Responder training could not be checked"


@dataclass(frozen=True)
class Competence:
    """What the register said about one approver; stored with the approval."""

    person: str
    #: Every system checked, with its record id when the training is current.
    systems: dict[str, str | None] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "role": ROLE,
            "systems": dict(self.systems),
            "flags": list(self.flags),
        }


class RegistryCompetence:
    def __init__(
        self, client: RegistryClient, *, unverifiable: Literal["refuse", "flag"] = "refuse"
    ) -> None:
        self.client = client
        self.unverifiable = unverifiable

    def _cannot_check(self, person: str, why: str) -> Competence:
        detail = f"the responder training of {person} could not be checked: {why}"
        if self.unverifiable == "refuse":
            raise CompetenceUnverifiable(
                detail + " (LINEGATE_COMPETENCE_UNVERIFIABLE=refuse); try again once the "
                "registry answers",
                extra={"person": person, "role": ROLE},
            )
        return Competence(person, {}, (detail + "; accepted and flagged",))

    async def approver(self, person: str, model: str | None, line: str | None) -> Competence:
        """The approver's standing; raises :class:`UntrainedResponder` where a tier refuses,
        :class:`CompetenceUnverifiable` where the register cannot say and the setting refuses."""
        if not model:
            return self._cannot_check(person, "the action names no model")
        try:
            systems = systems_listing(await self.client.inventory(), model, line)
            if not systems:
                return self._cannot_check(
                    person, f"the registry's inventory lists no active AI system for {model}"
                )
            checks = [
                (str(s["id"]), await self.client.competence_check(person, str(s["id"]), ROLE))
                for s in systems
            ]
        except ServiceUnavailable as e:
            return self._cannot_check(person, e.detail)
        records: dict[str, str | None] = {}
        flags: list[str] = []
        for system_id, check in checks:
            records[system_id] = check.get("record_id") if check.get("current") else None
            if check.get("current"):
                continue
            tier = check.get("nist_tier")
            why = (
                f"{person} has no current {ROLE} training for AI system {system_id!r} "
                f"(NIST tier {tier if tier is not None else 'unset'})"
            )
            if check.get("without_training") != "flag":
                raise UntrainedResponder(
                    why + ": record it in the registry's competence register first",
                    extra={"person": person, "system_id": system_id, "role": ROLE},
                )
            flags.append(why + "; accepted and flagged")
        return Competence(person, records, tuple(flags))
