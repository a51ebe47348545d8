"""Override rosters: the registry's competence register, carried to devices in signed form.

Devices decide offline whether an operator may override a decision, so they need the register
in a form they can verify: for the AI system a model line is deployed for (``GET
/v1/models/{name}`` -> ``system_id``; ``GET /v1/inventory/systems/{id}`` -> ``nist_tier``),
every unrevoked ``override`` training that has not ended (``GET
/v1/competence?system_id=&role=override``), with its ``trained_at`` and ``valid_until``. The
gateway keeps the last roster it read per model (``CompetenceRoster``; the registry may be
down when a document must be signed) and signs it into each device's desired state
(:func:`edge_gateway.distribution.publish_desired`).

The registry publishes no event when training is recorded or revoked, so
:class:`CompetenceRefresher` reads the rosters of the models devices run every
``competence_refresh_seconds``; when the roster it would sign differs (training recorded,
revoked or ended, the system's tier changed), the devices running that model get a new
desired-state revision, so the device refuses the document that still lists a revoked
training. Expiry needs no new document: the device checks ``valid_until`` at the moment of the
override.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select

from edge_gateway import distribution
from edge_gateway.distribution import Gateway
from edge_gateway.errors import DistributionRefused
from edge_gateway.models import CompetenceRoster, DesiredState, Release
from linegate.competence import CompetenceUnlisted, Standing, judge, unverifiable
from linegate.errors import ServiceUnavailable

log = logging.getLogger("edge_gateway.competence")
ACTOR = "service:edge-gateway"
ROLE = "override"
#: Approving a rollout's next stage is a release decision: the registry's approver role.
APPROVER = "approver"
_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class RosterRead:
    """What the registry says about a model's override roster now."""

    model: str
    system_id: str
    nist_tier: int | None
    override: tuple[tuple[str, str, str], ...]  # (person, trained_at, valid_until), sorted

    def entries(self) -> list[dict[str, Any]]:
        return [{"person": p, "trained_at": t, "valid_until": u} for p, t, u in self.override]


async def read_roster(gw: Gateway, model: str, *, at: datetime | None = None) -> RosterRead:
    """The roster of ``model``'s AI system from the registry's API (raises when it cannot)."""
    at = at or datetime.now(UTC)
    line = await gw.registry.model_line(model)
    system_id = str(line["system_id"])
    system = await gw.registry.system(system_id)
    tier = system.get("nist_tier")
    entries = set()
    for record in await gw.registry.competence(system_id, ROLE):
        if record.get("revoked_at") is not None or record.get("role") != ROLE:
            continue
        trained_at, valid_until = _parse(record["trained_at"]), _parse(record["valid_until"])
        if valid_until <= at:
            continue  # ended: the device would refuse it anyway, and the roster stays small
        # Seconds, as canonical JSON carries them: never longer than the register says.
        start = trained_at.replace(microsecond=0)
        if start < trained_at:
            start += timedelta(seconds=1)
        end = valid_until.replace(microsecond=0)
        if end <= start:
            continue
        entries.add((str(record["person"]), start.strftime(_TIME), end.strftime(_TIME)))
    return RosterRead(model, system_id, None if tier is None else int(tier), tuple(sorted(entries)))


async def refresh_rosters(gw: Gateway, models: Iterable[str] | None = None) -> list[str]:
    """Read the rosters of ``models`` (default: every model a device should run), store the
    ones that changed and re-issue the desired state of the devices running those models.
    Returns the devices re-issued. A model whose roster cannot be read keeps its last one."""
    if models is None:
        async with gw.db.session() as session:
            stmt = select(Release.model).where(DesiredState.release_id == Release.id).distinct()
            models = list((await session.exec(stmt)).all())
    reissue: list[str] = []
    for model in sorted(set(models)):
        try:
            roster = await read_roster(gw, model)
        except Exception as e:  # noqa: BLE001  (registry down or model unknown: keep the last)
            log.warning("override roster of %s not refreshed: %s", model, e)
            continue
        if await _store(gw, roster):
            async with gw.db.session() as session:
                stmt = select(DesiredState.device_id).where(
                    DesiredState.release_id == Release.id, Release.model == model
                )
                devices = list((await session.exec(stmt)).all())
            changed = await distribution._change_desired(
                gw,
                devices,
                actor=ACTOR,
                reason=f"override roster of AI system {roster.system_id} changed",
                action="device.competence.set",
                change=lambda _: None,  # the roster is read when the document is signed
                payload={"model": model, "system_id": roster.system_id},
            )
            reissue += changed
    return reissue


async def _store(gw: Gateway, roster: RosterRead) -> bool:
    """Record that the registry answered ``roster``; True when it differs from the last."""
    now = datetime.now(UTC)
    async with gw.db.session() as session:
        row = await session.get(CompetenceRoster, roster.model)
        entries = roster.entries()
        if row is not None and (row.system_id, row.nist_tier, row.override) == (
            roster.system_id,
            roster.nist_tier,
            entries,
        ):
            row.fetched_at = now
            session.add(row)
            return False
        if row is None:
            row = CompetenceRoster(
                model=roster.model,
                system_id=roster.system_id,
                nist_tier=roster.nist_tier,
                override=entries,
                fetched_at=now,
                updated_at=now,
            )
        else:
            row.system_id, row.nist_tier, row.override = roster.system_id, roster.nist_tier, entries
            row.fetched_at = row.updated_at = now
        session.add(row)
        await gw.audit.append(
            session,
            actor=ACTOR,
            action="competence.roster.updated",
            subject=f"model:{roster.model}",
            payload={
                "system_id": roster.system_id,
                "nist_tier": roster.nist_tier,
                "override": entries,
            },
        )
    return True


class CompetenceRefresher(distribution.Periodic):
    """Runs :func:`refresh_rosters` every ``interval`` seconds (0: never)."""

    name = "competence-refresh"

    async def step(self) -> None:
        devices = await refresh_rosters(self.gw)
        if devices:
            log.info("override rosters changed: re-issued %d device(s)", len(devices))


def _parse(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


async def approver_standing(gw: Gateway, model: str, person: str) -> Standing:
    """Whether ``person`` may approve the next stage of a rollout of ``model``: current
    ``approver`` training on the model line's AI system (refused on tier 1 or no tier, flagged
    on tiers 2-3); when the registry cannot say, ``competence_unverifiable`` decides."""
    policy, setting = gw.settings.competence_unverifiable, "LINEGATE_COMPETENCE_UNVERIFIABLE"
    try:
        system_id = str((await gw.registry.model_line(model))["system_id"])
        check = await gw.registry.competence_check(person, system_id, APPROVER)
    except ServiceUnavailable as e:
        return unverifiable(person, APPROVER, e.detail, policy, setting)
    except DistributionRefused as e:
        # The registry answered (404): asking again changes nothing until its records do.
        return unverifiable(
            person,
            APPROVER,
            e.detail,
            policy,
            setting,
            remedy=f"register the model line {model} in the registry first",
            error=CompetenceUnlisted,
        )
    return judge(person, APPROVER, [(system_id, check)])
