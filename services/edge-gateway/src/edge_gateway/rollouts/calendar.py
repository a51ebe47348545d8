"""Maintenance windows from the shift calendar: installs start only inside one.

A device uses its line's calendar, else its plant's; a device whose plant has no calendar may
install at any time. Windows are weekly, in local time (``zoneinfo``), so a changeover at 05:45
stays at 05:45 across daylight-saving changes.

Example::

    >>> from datetime import datetime, UTC
    >>> w = MaintenanceWindow(days=["mon"], start="05:45", end="06:15", tz="Europe/Berlin")
    >>> is_open([w], datetime(2026, 3, 2, 4, 50, tzinfo=UTC))  # 05:50 in Berlin, a Monday
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from edge_gateway.models import Device, MaintenanceCalendar
from edge_gateway.rollouts.schemas import DAYS, MaintenanceWindow

Calendars = Mapping[tuple[str, str], Sequence[MaintenanceWindow]]


def _occurrences(window: MaintenanceWindow, now: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The window's occurrences from the day before ``now`` to a week after, in UTC."""
    tz = ZoneInfo(window.tz)
    today = now.astimezone(tz).date()
    overnight = window.end_time <= window.start_time
    for offset in range(-1, 8):
        day = today + timedelta(days=offset)
        if DAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, window.start_time, tzinfo=tz)
        end = datetime.combine(day + timedelta(days=overnight), window.end_time, tzinfo=tz)
        # Compare instants, not wall times: convert before comparing.
        yield start.astimezone(UTC), end.astimezone(UTC)


def is_open(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    return any(start <= now < end for w in windows for start, end in _occurrences(w, now))


def next_opening(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """When the next window opens (``now`` if one is open)."""
    if is_open(windows, now):
        return now
    starts = [start for w in windows for start, _ in _occurrences(w, now) if start > now]
    return min(starts, default=None)


async def load(session: AsyncSession) -> dict[tuple[str, str], list[MaintenanceWindow]]:
    rows = (await session.exec(select(MaintenanceCalendar))).all()
    return {
        (c.plant, c.line): [MaintenanceWindow.model_validate(w) for w in c.windows] for c in rows
    }


def windows_for(calendars: Calendars, device: Device) -> Sequence[MaintenanceWindow] | None:
    """The line's windows, else the plant's; ``None``: no calendar, install any time."""
    found = calendars.get((device.plant, device.line))
    return found if found is not None else calendars.get((device.plant, ""))


def may_install(calendars: Calendars, device: Device, now: datetime) -> bool:
    windows = windows_for(calendars, device)
    return windows is None or is_open(windows, now)
