"""Monitor routes: configuration and state per model version x line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, BackgroundTasks
from pydantic import ValidationError

from incident._sql import fetch_all
from incident.monitors import service
from incident.monitors.errors import InvalidThresholds, MonitorNotFound
from incident.monitors.models import monitor_config, monitor_state
from incident.monitors.schemas import (
    MonitorGroupRead,
    MonitorStateRead,
    MonitorUpdate,
    thresholds_for,
)
from incident.telemetry.deps import MonitorWriterDep, ReaderDep, RunnerDep
from incident.telemetry.ingest import Outcome
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/v1/monitors", tags=["monitors"])


async def group_read(session: Any, cfg: dict[str, Any]) -> MonitorGroupRead:
    ms = monitor_state.c
    rows = await fetch_all(
        session,
        sa.select(monitor_state)
        .where(ms.model == cfg["model"], ms.version == cfg["version"], ms.line == cfg["line"])
        .order_by(ms.monitor),
    )
    overrides = dict(cfg.get("thresholds") or {})
    return MonitorGroupRead(
        **{
            k: v
            for k, v in cfg.items()
            if k in MonitorGroupRead.model_fields and k not in ("thresholds", "states")
        },
        thresholds=thresholds_for(int(cfg["tier"]), overrides),
        threshold_overrides=overrides,
        states=[MonitorStateRead.model_validate(dict(r)) for r in rows],
    )


@router.get("", summary="Every monitored model version x line, with its monitors' states")
async def list_monitors(session: SessionDep, _: ReaderDep) -> list[MonitorGroupRead]:
    mc = monitor_config.c
    rows = await fetch_all(
        session, sa.select(monitor_config).order_by(mc.model, mc.version, mc.line)
    )
    return [await group_read(session, dict(r)) for r in rows]


@router.get("/{model}/{version}/{line}")
async def get_monitor(
    model: str, version: str, line: str, session: SessionDep, _: ReaderDep
) -> MonitorGroupRead:
    cfg = await service.get_config(session, (model, version, line))
    if cfg is None:
        raise MonitorNotFound(f"no monitors for {model} {version} on {line} (no telemetry yet)")
    return await group_read(session, cfg)


@router.patch("/{model}/{version}/{line}", summary="Change thresholds or the reference window")
async def update_monitor(
    model: str,
    version: str,
    line: str,
    body: MonitorUpdate,
    session: SessionDep,
    principal: MonitorWriterDep,
    ctx: ContextDep,
    runner: RunnerDep,
    background: BackgroundTasks,
) -> MonitorGroupRead:
    key = (model, version, line)
    now = datetime.now(UTC)
    cfg = await service.get_config(session, key)
    if cfg is None:
        # Configure ahead of the first telemetry: the tier comes from the registry as usual.
        cfg = await service.ensure_config(session, key, await runner.tiers.tier(model, line), now)
    overrides = dict(cfg.get("thresholds") or {})
    for name, value in body.thresholds.items():
        if value is None:
            overrides.pop(name, None)
        else:
            overrides[name] = value
    try:
        thresholds_for(int(cfg["tier"]), overrides)
    except ValidationError as e:
        raise InvalidThresholds(
            "the thresholds do not validate; see reasons",
            extra={"reasons": [f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]},
        ) from e
    changes: dict[str, Any] = {
        "thresholds": overrides,
        "updated_at": now,
        "updated_by": principal.actor,
    }
    if body.clear_reference:
        changes.update(reference_from=None, reference_to=None)
    elif body.reference_from is not None and body.reference_to is not None:
        changes.update(
            reference_from=service.utc(body.reference_from),
            reference_to=service.utc(body.reference_to),
        )
    mc = monitor_config.c
    await session.exec(
        sa.update(monitor_config)
        .where(mc.model == model, mc.version == version, mc.line == line)
        .values(**changes)
    )
    await ctx.audit.append(
        session,
        actor=principal.actor,
        action="monitor.configure",
        subject=f"monitor:{model}:{version}:{line}",
        payload=body.model_dump(mode="json"),
        reason=body.reason,
    )
    cfg.update(changes)
    # Judged again under the new settings once they are committed.
    background.add_task(runner.notify, Outcome(touched={key}))
    return await group_read(session, cfg)


@router.post("/{model}/{version}/{line}/evaluate", summary="Evaluate the monitors now")
async def evaluate_monitor(
    model: str,
    version: str,
    line: str,
    session: SessionDep,
    principal: MonitorWriterDep,
    ctx: ContextDep,
    runner: RunnerDep,
) -> MonitorGroupRead:
    """Runs every monitor of the group now, whatever its cadence (e.g. an investigation)."""
    cfg = await service.get_config(session, (model, version, line))
    if cfg is None:
        raise MonitorNotFound(f"no monitors for {model} {version} on {line} (no telemetry yet)")
    await ctx.audit.append(
        session,
        actor=principal.actor,
        action="monitor.evaluate",
        subject=f"monitor:{model}:{version}:{line}",
        payload={"model": model, "version": version, "line": line},
    )
    await service.evaluate_group(session, cfg, sink=runner.sink(), audit=ctx.audit)
    cfg = await service.get_config(session, (model, version, line))
    assert cfg is not None
    return await group_read(session, cfg)
