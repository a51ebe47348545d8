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
(the default, nothing recorded: 503 when the registry cannot be asked, 409 when its inventory
lists no system for the model) or ``flag``.
"""

from __future__ import annotations

from typing import Any, Literal

from incident.registry_client import RegistryClient, systems_listing
from linegate.competence import CompetenceUnlisted, Standing, judge, unverifiable
from linegate.errors import ServiceUnavailable

ROLE = "responder"
SETTING = "LINEGATE_COMPETENCE_UNVERIFIABLE"


class RegistryCompetence:
    def __init__(
        self, client: RegistryClient, *, unverifiable: Literal["refuse", "flag"] = "refuse"
    ) -> None:
        self.client = client
        self.unverifiable = unverifiable

    def _cannot_check(self, person: str, why: str, **how: Any) -> Standing:
        return unverifiable(person, ROLE, why, self.unverifiable, SETTING, **how)

    async def approver(self, person: str, model: str | None, line: str | None) -> Standing:
        """The approver's standing; raises :class:`~linegate.competence.Untrained` where a tier
        refuses, :class:`~linegate.competence.CompetenceUnverifiable` where the register cannot
        say and the setting refuses."""
        if not model:
            return self._cannot_check(person, "the action names no model")
        try:
            inventory = await self.client.inventory()
        except ServiceUnavailable as e:
            return self._cannot_check(person, e.detail)
        systems = systems_listing(inventory, model, line)
        if not systems:
            # The registry answered: asking again changes nothing until the inventory does.
            return self._cannot_check(
                person,
                f"the registry's inventory lists no active AI system for {model}",
                remedy="list the model in an active inventory entry of the registry first",
                error=CompetenceUnlisted,
            )
        try:
            checks = [
                (str(s["id"]), await self.client.competence_check(person, str(s["id"]), ROLE))
                for s in systems
            ]
        except ServiceUnavailable as e:
            return self._cannot_check(person, e.detail)
        return judge(person, ROLE, checks)
