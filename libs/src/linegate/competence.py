"""Judging a person's standing from the registry's competence register (EU AI Act Art. 14,
NIS2 Art. 21(2)(g)), for the services that ask it over HTTP before a human decision counts.

The registry answers ``GET /v1/competence/check?person=&system_id=&role=`` with ``current``,
``record_id``, ``nist_tier`` and ``without_training`` (``refuse`` on tier 1 or no tier, ``flag``
on tiers 2-3). :func:`judge` turns the answers for every AI system involved into the record
kept with the decision, raising :class:`Untrained` where a tier refuses; :func:`unverifiable`
applies the service's policy when the register cannot say.

Example::

    checks = [(sid, await registry.competence_check(person, sid, "approver")) for sid in systems]
    standing = judge(person, "approver", checks)     # raises Untrained on tier 1
    record = standing.as_json()                      # stored with the approval and audited
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from linegate.errors import Conflict, Forbidden, LinegateError, ServiceUnavailable

Policy = Literal["refuse", "flag"]


class Untrained(Forbidden):
    title = "No current training for this system"


class CompetenceUnverifiable(ServiceUnavailable):
    """The register could not be asked (503: asking again later may answer)."""

    title = "Training could not be checked"


class CompetenceUnlisted(Conflict):
    """The register answered, but lists no system to check the training against (409: asking
    again changes nothing until the inventory does)."""

    title = "Training could not be checked"


@dataclass(frozen=True)
class Standing:
    """What the register said about one person acting in one role; kept with the decision."""

    person: str
    role: str
    #: Every system checked, with its record id when the training is current.
    systems: dict[str, str | None] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "role": self.role,
            "systems": dict(self.systems),
            "flags": list(self.flags),
        }


def judge(person: str, role: str, checks: Iterable[tuple[str, Mapping[str, Any]]]) -> Standing:
    records: dict[str, str | None] = {}
    flags: list[str] = []
    for system_id, check in checks:
        current = bool(check.get("current"))
        records[system_id] = check.get("record_id") if current else None
        if current:
            continue
        tier = check.get("nist_tier")
        why = (
            f"{person} has no current {role} training for AI system {system_id!r} "
            f"(NIST tier {tier if tier is not None else 'unset'})"
        )
        if check.get("without_training") != "flag":
            raise Untrained(
                why + ": record it in the registry's competence register first",
                extra={"person": person, "system_id": system_id, "role": role},
            )
        flags.append(why + "; accepted and flagged")
    return Standing(person, role, records, tuple(flags))


def unverifiable(
    person: str,
    role: str,
    why: str,
    policy: Policy,
    setting: str,
    *,
    remedy: str = "try again once the registry answers",
    error: type[LinegateError] = CompetenceUnverifiable,
) -> Standing:
    """``policy`` ``refuse``: raise ``error`` (:class:`CompetenceUnverifiable`, or
    :class:`CompetenceUnlisted` where the register answered), its detail ending with
    ``remedy``; ``flag``: a standing that says why nothing was checked."""
    detail = f"the {role} training of {person} could not be checked: {why}"
    if policy == "refuse":
        raise error(
            f"{detail} ({setting}=refuse); {remedy}", extra={"person": person, "role": role}
        )
    return Standing(person, role, {}, (detail + "; accepted and flagged",))
