"""Where a request's time goes, for a ``Server-Timing`` response header (W3C Server Timing).

A push of a large model spends most of its time receiving; what the server does after the last
byte arrived (draining the queue to disk, the final fsync, inspecting, signing, committing) is
what a client waits for with nothing left to send. :class:`StageTimes` notes those stages so the
201 can say how long each took, and a client or the bench can see it without server access.
"""

from __future__ import annotations

import contextlib
import time


class StageTimes:
    """Consecutive stages (each from the previous mark to this one) plus extra figures that
    overlap them (``add``), in wall seconds."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def header(self) -> str:
        """The ``Server-Timing`` value: ``name;dur=<milliseconds>`` for each stage, in order."""
        return ", ".join(f"{name};dur={s * 1000:.1f}" for name, s in self.stages.items())


def parse_server_timing(value: str) -> dict[str, float]:
    """Seconds by name from a ``Server-Timing`` value (entries without ``dur`` are skipped)."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for p in params:
            key, _, dur = p.partition("=")
            if key.strip().lower() == "dur" and name:
                with contextlib.suppress(ValueError):
                    out[name] = float(dur) / 1000
    return out
