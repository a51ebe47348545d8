"""Who may override a decision on this device: the signed override roster, checked offline.

The gateway signs, into each device's desired state, the override roster of the AI system the
model line belongs to (the registry's competence register: every unrevoked ``override``
training with its ``trained_at`` and ``valid_until``, and the system's NIST tier); the agent
verifies the document and writes the roster to ``competence.json``
(:data:`linegate_cli.agent.COMPETENCE_FILE`). :func:`check_override` decides at the moment of
the override, so a training that ends while the device is offline stops counting on time:

- current training: accepted;
- no current training on a NIST tier 1 system, on one with no tier, without a roster, or with
  a roster for another model than the one that decided: refused (:class:`UntrainedOperator`,
  403 problem+json naming the reason);
- no current training on a tier 2 or 3 system: accepted with a ``competence_flag`` so that
  auditors and the incident service see it.

Example::

    roster = CompetenceFile(state_dir).current()
    verdict = check_override(roster, "j.meyer", model="weld-seam-inspector", at=datetime.now(UTC))
    if verdict.refused:
        raise verdict.error()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from linegate.errors import Forbidden
from linegate_cli.agent import COMPETENCE_FILE

log = logging.getLogger("linegate.edge.inference")

#: Why an operator has no current training (``current``: they have).
Standing = Literal["current", "untrained", "expired", "not_yet_valid", "no_roster", "other_model"]


class UntrainedOperator(Forbidden):
    title = "Operator not trained to override on this system"


@dataclass(frozen=True)
class Training:
    person: str
    trained_at: datetime
    valid_until: datetime


@dataclass(frozen=True)
class Roster:
    """The override roster the agent verified (``competence.json``)."""

    model: str
    system_id: str
    nist_tier: int | None
    override: tuple[Training, ...]
    revision: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What the competence check says about one override."""

    standing: Standing
    #: ``refuse`` or ``flag`` when the standing is not ``current``, else ``None``.
    action: Literal["refuse", "flag"] | None
    detail: str
    system_id: str | None = None
    nist_tier: int | None = None

    @property
    def refused(self) -> bool:
        return self.action == "refuse"

    @property
    def flag(self) -> str | None:
        """The sentence an auditor reads on a flagged override (``None`` unless flagged)."""
        return self.detail if self.action == "flag" else None

    def error(self, operator: str) -> UntrainedOperator:
        return UntrainedOperator(
            self.detail,
            extra={
                "operator": operator,
                "reason": self.standing,
                "system_id": self.system_id,
                "nist_tier": self.nist_tier,
            },
        )


def check_override(
    roster: Roster | None, operator: str, *, model: str | None, at: datetime
) -> Verdict:
    """Whether ``operator`` may override a decision ``model`` made, at ``at`` (aware)."""
    if roster is None:
        return Verdict(
            "no_roster",
            "refuse",
            f"override by {operator} refused: this device holds no signed override roster, so "
            "nobody's training can be checked (the gateway signs one into the desired state)",
        )
    if model is not None and model != roster.model:
        return Verdict(
            "other_model",
            "refuse",
            f"override by {operator} refused: the decision came from model {model!r}, but the "
            f"device's override roster is for {roster.model!r} (AI system {roster.system_id})",
            roster.system_id,
            roster.nist_tier,
        )
    mine = [t for t in roster.override if t.person == operator]
    if any(t.trained_at <= at < t.valid_until for t in mine):
        return Verdict("current", None, "", roster.system_id, roster.nist_tier)
    standing: Standing
    if any(t.valid_until <= at for t in mine):
        standing = "expired"
        ended = max(t.valid_until for t in mine if t.valid_until <= at)
        why = f"{operator}'s override training ended at {ended:%Y-%m-%dT%H:%M:%SZ}"
    elif mine:
        standing = "not_yet_valid"
        start = min(t.trained_at for t in mine)
        why = f"{operator}'s override training counts only from {start:%Y-%m-%dT%H:%M:%SZ}"
    else:
        standing = "untrained"
        why = f"{operator} has no override training"
    tier = roster.nist_tier
    where = f"AI system {roster.system_id} (NIST tier {tier if tier is not None else 'unset'})"
    if tier in (None, 1):
        return Verdict(
            standing,
            "refuse",
            f"override refused: {why} for {where}; without current training a tier 1 (or "
            "unclassified) system refuses overrides: record it in the competence register",
            roster.system_id,
            tier,
        )
    return Verdict(
        standing, "flag", f"{why} for {where}; accepted and flagged", roster.system_id, tier
    )


class CompetenceFile:
    """Reads ``<state_dir>/competence.json`` when it changed (one ``stat`` per call).

    A missing or unreadable file is no roster: every override is then refused, never waved
    through.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / COMPETENCE_FILE
        self._seen: tuple[int, int, int] | None = None
        self._roster: Roster | None = None

    def current(self) -> Roster | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._roster = None, None
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._roster, self._seen = self._read(), key
        return self._roster

    def _read(self) -> Roster | None:
        try:
            raw = json.loads(self.path.read_text())
            tier = raw["nist_tier"]
            return Roster(
                model=str(raw["model"]),
                system_id=str(raw["system_id"]),
                nist_tier=None if tier is None else int(tier),
                override=tuple(
                    Training(
                        person=str(e["person"]),
                        trained_at=_aware(e["trained_at"]),
                        valid_until=_aware(e["valid_until"]),
                    )
                    for e in raw["override"]
                ),
                revision=raw.get("revision"),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.exception("competence.json unreadable: refusing overrides", extra={"error": str(e)})
            return None


def _aware(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return t
