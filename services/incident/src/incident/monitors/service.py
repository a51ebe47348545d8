"""Choosing the windows, running the monitors and recording what they found.

For one model version on one line, the **reference** window is the configured one
(``reference_from``/``reference_to``) or else the first ``reference_hours`` of its telemetry.
The **current** window ends at the newest shift with telemetry and spans the cadence's period
(the latest shift alone for real-time monitoring, the last day for daily, ...), never
overlapping the reference. Windows are chosen from the data's own times, not the clock, so a
replay gives the same verdicts.

A monitor that starts firing (or is still firing in a later window) raises its signal on the
sink inside the same transaction as its new state, and the transition is audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from incident._sql import fetch_all, fetch_one
from incident.monitors.evaluate import Group, KpiShift, Verdict, Windows, evaluate, signal_of
from incident.monitors.models import monitor_config, monitor_state
from incident.monitors.schemas import CADENCE_PERIOD, Thresholds, thresholds_for
from incident.monitors.tiers import TierInfo
from incident.signals import SignalSink
from incident.telemetry.models import (
    CAMERA_SUMS,
    KPI_SUMS,
    WINDOW_SUMS,
    camera_window,
    kpi_window,
    telemetry_window,
)
from linegate.audit import AuditLog

ACTOR = "service:incident-monitors"
GroupKey = tuple[str, str, str]


def utc(t: datetime) -> datetime:
    """``t`` in UTC (naive means UTC: SQLite hands datetimes back without an offset)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _sum(rows: Iterable[Mapping[Any, Any]], columns: Sequence[str]) -> dict[str, float]:
    out = dict.fromkeys(columns, 0.0)
    for r in rows:
        for c in columns:
            out[c] += r[c]
    return out


async def get_config(session: AsyncSession, key: GroupKey) -> dict[str, Any] | None:
    model, version, line = key
    row = await fetch_one(
        session,
        sa.select(monitor_config).where(
            monitor_config.c.model == model,
            monitor_config.c.version == version,
            monitor_config.c.line == line,
        ),
    )
    return dict(row) if row is not None else None


async def ensure_config(
    session: AsyncSession, key: GroupKey, info: TierInfo, now: datetime
) -> dict[str, Any]:
    """The group's configuration, created (or its tier refreshed) from ``info``."""
    model, version, line = key
    cfg = await get_config(session, key)
    if cfg is None:
        cfg = {
            "model": model,
            "version": version,
            "line": line,
            "tier": info.tier,
            "cadence": info.cadence,
            "tier_source": info.source,
            "tier_checked_at": now,
            "thresholds": {},
            "reference_from": None,
            "reference_to": None,
            "last_evaluated_at": None,
            "next_due_at": None,
            "created_at": now,
            "updated_at": now,
            "updated_by": ACTOR,
        }
        await session.exec(monitor_config.insert(), params=[cfg])
        return cfg
    # A default (registry down) never overwrites a tier the registry gave earlier.
    known = str(cfg["tier_source"]).startswith("registry")
    same = (cfg["tier"], cfg["cadence"], cfg["tier_source"]) == (
        info.tier,
        info.cadence,
        info.source,
    )
    if (info.from_registry or not known) and not same:
        changes = {
            "tier": info.tier,
            "cadence": info.cadence,
            "tier_source": info.source,
            "tier_checked_at": now,
        }
        await session.exec(
            sa.update(monitor_config)
            .where(
                monitor_config.c.model == model,
                monitor_config.c.version == version,
                monitor_config.c.line == line,
            )
            .values(**changes)
        )
        cfg.update(changes)
    return cfg


async def load_windows(
    session: AsyncSession, cfg: Mapping[str, Any], t: Thresholds
) -> Windows | None:
    """The reference and current windows of a group, or None before any telemetry."""
    model, version, line = cfg["model"], cfg["version"], cfg["line"]
    tw = telemetry_window.c
    group = (tw.model == model, tw.version == version, tw.line == line)
    bounds = await fetch_one(
        session,
        sa.select(
            sa.func.min(tw.bucket_start).label("first"), sa.func.max(tw.bucket_start).label("last")
        ).where(*group),
    )
    assert bounds is not None
    first, latest = _utc(bounds["first"]), _utc(bounds["last"])
    if first is None or latest is None:
        return None
    ref_from = _utc(cfg.get("reference_from")) or first
    ref_to = _utc(cfg.get("reference_to")) or first + timedelta(hours=t.reference_hours)
    latest_row = await fetch_one(
        session, sa.select(tw.bucket_end).where(*group, tw.bucket_start == latest)
    )
    assert latest_row is not None
    latest_end = _utc(latest_row["bucket_end"])
    assert latest_end is not None
    period = CADENCE_PERIOD.get(str(cfg["cadence"]), timedelta(0))
    cur_from = latest if period == timedelta(0) else latest_end - period
    in_ref = sa.and_(tw.bucket_start >= ref_from, tw.bucket_start < ref_to)
    in_cur = sa.and_(tw.bucket_start >= cur_from, sa.not_(in_ref))

    ref_rows = await fetch_all(session, sa.select(telemetry_window).where(*group, in_ref))
    cur_rows = await fetch_all(
        session, sa.select(telemetry_window).where(*group, in_cur).order_by(tw.bucket_start)
    )
    reference = _sum((r for r in ref_rows), WINDOW_SUMS)
    current = _sum((r for r in cur_rows), WINDOW_SUMS)
    by_bucket = {_utc(r["bucket_start"]): r for r in cur_rows}

    cw = camera_window.c
    cgroup = (cw.model == model, cw.version == version, cw.line == line)
    cam_ref: dict[tuple[str, str], dict[str, float]] = {}
    cam_cur: dict[tuple[str, str], dict[str, float]] = {}
    for target, cond in (
        (cam_ref, sa.and_(cw.bucket_start >= ref_from, cw.bucket_start < ref_to)),
        (
            cam_cur,
            sa.and_(
                cw.bucket_start >= cur_from,
                sa.not_(sa.and_(cw.bucket_start >= ref_from, cw.bucket_start < ref_to)),
            ),
        ),
    ):
        for m in await fetch_all(session, sa.select(camera_window).where(*cgroup, cond)):
            acc = target.setdefault((m["device_id"], m["camera"]), dict.fromkeys(CAMERA_SUMS, 0.0))
            for c in CAMERA_SUMS:
                acc[c] += m[c]

    kw = kpi_window.c
    # The line's figures the MES attributes to this version, or to no version in particular.
    kpi_of = (
        kw.line == line,
        sa.or_(sa.and_(kw.model == model, kw.version == version), kw.model == ""),
    )
    not_ref = sa.not_(sa.and_(kw.bucket_start >= ref_from, kw.bucket_start < ref_to))
    kpi_ref_rows = await fetch_all(
        session,
        sa.select(kpi_window).where(*kpi_of, kw.bucket_start >= ref_from, kw.bucket_start < ref_to),
    )
    since = max(cur_from, first)
    if period == timedelta(0):
        # Real time: the newest shift with KPIs (they may lag the telemetry by a shift).
        newest = await fetch_one(
            session,
            sa.select(sa.func.max(kw.bucket_start).label("b")).where(
                *kpi_of, kw.bucket_start >= first, not_ref
            ),
        )
        since = utc(newest["b"]) if newest is not None and newest["b"] is not None else latest_end
    kpi_cur_rows = await fetch_all(
        session,
        sa.select(kpi_window)
        .where(*kpi_of, kw.bucket_start >= since, not_ref)
        .order_by(kw.bucket_start),
    )
    per_shift: dict[datetime, list[Any]] = {}
    for k in kpi_cur_rows:
        start = _utc(k["bucket_start"])
        assert start is not None
        per_shift.setdefault(start, []).append(k)
    shifts: list[KpiShift] = []
    for start, ks in per_shift.items():
        tel = by_bucket.get(start)
        if tel is None:
            tel = await fetch_one(
                session, sa.select(telemetry_window).where(*group, tw.bucket_start == start)
            )
        shifts.append(
            KpiShift(
                bucket_start=start,
                shift=str(ks[0]["shift"]),
                kpi=_sum(ks, KPI_SUMS),
                telemetry=_sum([tel], WINDOW_SUMS) if tel is not None else {},
            )
        )
    window = {
        "reference_from": ref_from.isoformat(),
        "reference_to": ref_to.isoformat(),
        "current_from": cur_from.isoformat(),
        "current_to": latest_end.isoformat(),
        "latest_shift_start": latest.isoformat(),
    }
    return Windows(
        reference=reference,
        current=current,
        cameras_reference=cam_ref,
        cameras_current=cam_cur,
        kpi_reference=_sum((r for r in kpi_ref_rows), KPI_SUMS),
        kpi_current=shifts,
        window=window,
    )


def _reference_filling(window: Mapping[str, Any], current: Mapping[str, float]) -> bool:
    return current.get("n", 0) == 0 and window["latest_shift_start"] < window["reference_to"]


async def evaluate_group(
    session: AsyncSession,
    cfg: Mapping[str, Any],
    *,
    sink: SignalSink,
    audit: AuditLog,
    now: datetime | None = None,
) -> list[Verdict]:
    """Run every monitor of ``cfg``'s group, store the states, raise and audit firings."""
    now = now or datetime.now(UTC)
    model, version, line = cfg["model"], cfg["version"], cfg["line"]
    t = thresholds_for(int(cfg["tier"]), dict(cfg.get("thresholds") or {}))
    g = Group(model, version, line, int(cfg["tier"]))
    w = await load_windows(session, cfg, t)
    if w is None:
        verdicts = [Verdict("all", "insufficient_data", "no telemetry yet")]
        window: dict[str, Any] = {}
    elif _reference_filling(w.window, w.current):
        verdicts = [
            Verdict(
                "all",
                "reference_filling",
                f"the reference window runs to {w.window['reference_to']}; nothing after it yet",
            )
        ]
        window = w.window
    else:
        verdicts = evaluate(g, w, t)
        window = w.window
    ms = monitor_state.c
    key = (ms.model == model, ms.version == version, ms.line == line)
    existing = {
        r["monitor"]: dict(r)
        for r in await fetch_all(session, sa.select(monitor_state).where(*key))
    }
    rows: list[dict[str, Any]] = []
    for v in verdicts:
        prev = existing.get(v.monitor)
        values = {**v.values, "window": window}
        state: dict[str, Any] = {
            "model": model,
            "version": version,
            "line": line,
            "monitor": v.monitor,
            "status": v.status,
            "detail": v.detail,
            "values": values,
            "dedup_key": g.dedup_key(v.monitor),
            "evaluated_at": now,
            "since": now if prev is None or prev["status"] != v.status else prev["since"],
            "fired_at": prev["fired_at"] if prev else None,
            "fire_count": prev["fire_count"] if prev else 0,
        }
        was_firing = prev is not None and prev["status"] == "firing"
        new_window = prev is None or (prev.get("values") or {}).get("window", {}).get(
            "latest_shift_start"
        ) != window.get("latest_shift_start")
        if v.firing and (not was_firing or new_window):
            await sink.raise_signal(session, signal_of(g, v, window, now))
            state["fired_at"] = now
            state["fire_count"] += 1
        if v.firing != was_firing and (v.firing or prev is not None):
            await audit.append(
                session,
                actor=ACTOR,
                action="monitor.fired" if v.firing else "monitor.cleared",
                subject=f"monitor:{g.dedup_key(v.monitor)}",
                payload=values,
                reason=v.detail,
                now=now,
            )
        rows.append(state)
    # Two statements whatever the number of monitors: real-time evaluation runs after every
    # ingest batch and shares SQLite's single writer with the ingest.
    await session.exec(sa.delete(monitor_state).where(*key))
    await session.exec(monitor_state.insert(), params=rows)
    period = CADENCE_PERIOD.get(str(cfg["cadence"]), timedelta(0))
    await session.exec(
        sa.update(monitor_config)
        .where(
            monitor_config.c.model == model,
            monitor_config.c.version == version,
            monitor_config.c.line == line,
        )
        .values(last_evaluated_at=now, next_due_at=now + period if period else None)
    )
    return verdicts


async def groups_on(
    session: AsyncSession, kpi_keys: Iterable[tuple[str, datetime]]
) -> set[GroupKey]:
    """Groups with telemetry in the (line, shift) windows a KPI batch changed."""
    out: set[GroupKey] = set()
    tw = telemetry_window.c
    for line, start in set(kpi_keys):
        rows = await fetch_all(
            session,
            sa.select(tw.model, tw.version)
            .where(tw.line == line, tw.bucket_start == start)
            .distinct(),
        )
        out.update((str(r["model"]), str(r["version"]), line) for r in rows)
    return out


async def stale_groups(session: AsyncSession) -> set[GroupKey]:
    """Groups whose windows changed since they were last evaluated (catch-up at start)."""
    tw, mc = telemetry_window.c, monitor_config.c
    latest = (
        sa.select(tw.model, tw.version, tw.line, sa.func.max(tw.updated_at).label("u"))
        .group_by(tw.model, tw.version, tw.line)
        .subquery()
    )
    q = (
        sa.select(latest.c.model, latest.c.version, latest.c.line)
        .select_from(
            latest.outerjoin(
                monitor_config,
                sa.and_(
                    mc.model == latest.c.model,
                    mc.version == latest.c.version,
                    mc.line == latest.c.line,
                ),
            )
        )
        .where(sa.or_(mc.last_evaluated_at.is_(None), mc.last_evaluated_at < latest.c.u))
    )
    return {
        (str(r["model"]), str(r["version"]), str(r["line"])) for r in await fetch_all(session, q)
    }


async def due_groups(session: AsyncSession, now: datetime) -> set[GroupKey]:
    mc = monitor_config.c
    rows = await fetch_all(
        session,
        sa.select(mc.model, mc.version, mc.line).where(
            mc.next_due_at.is_not(None), mc.next_due_at <= now
        ),
    )
    return {(str(r["model"]), str(r["version"]), str(r["line"])) for r in rows}


async def schedule(session: AsyncSession, key: GroupKey, at: datetime) -> None:
    model, version, line = key
    await session.exec(
        sa.update(monitor_config)
        .where(
            monitor_config.c.model == model,
            monitor_config.c.version == version,
            monitor_config.c.line == line,
        )
        .values(next_due_at=at)
    )
