"""Shifts: the aggregation window of telemetry and KPIs, and the unit of the outcome monitor.

Example::

    >>> from datetime import datetime, UTC
    >>> cal = ShiftCalendar(("06:00", "14:00", "22:00"), ("early", "late", "night"), "UTC")
    >>> s = cal.shift_of(datetime(2026, 11, 3, 2, 30, tzinfo=UTC))
    >>> s.name, s.start.isoformat(), s.end.isoformat()
    ('night', '2026-11-02T22:00:00+00:00', '2026-11-03T06:00:00+00:00')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Shift:
    name: str
    start: datetime  # UTC
    end: datetime  # UTC


class ShiftCalendar:
    """Daily shifts starting at local times ``starts`` (``HH:MM``) in ``timezone``."""

    def __init__(self, starts: Sequence[str], names: Sequence[str], timezone: str) -> None:
        if not starts or len(starts) != len(names):
            raise ValueError("shift_starts and shift_names need the same, non-zero length")
        parsed = sorted((time.fromisoformat(s), n) for s, n in zip(starts, names, strict=True))
        if len({t for t, _ in parsed}) != len(parsed):
            raise ValueError("two shifts start at the same time")
        self._starts = parsed
        self._tz = ZoneInfo(timezone)
        self._last: Shift | None = None

    def shift_of(self, t: datetime) -> Shift:
        """The shift ``t`` falls in (``t`` naive means UTC)."""
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        last = self._last
        if last is not None and last.start <= t < last.end:
            return last  # consecutive records nearly always share a shift
        local = t.astimezone(self._tz)
        candidates: list[tuple[datetime, str]] = []
        for offset in (-1, 0, 1):
            day = local.date() + timedelta(days=offset)
            for start, name in self._starts:
                candidates.append((datetime.combine(day, start, self._tz), name))
        candidates.sort(key=lambda c: c[0])
        for i, (begin, name) in enumerate(candidates):
            nxt = candidates[i + 1][0]
            if begin <= local < nxt:
                shift = Shift(name, begin.astimezone(UTC), nxt.astimezone(UTC))
                self._last = shift
                return shift
        raise AssertionError("unreachable: the candidates span three days")  # pragma: no cover
