"""The seam between what watches the line and what opens incidents.

Monitors (telemetry drift, the outcome monitor, override clusters, operator feedback) and the
NATS consumers of other services' events (rollout aborts, refused devices, maintenance alerts)
do not create incident rows themselves: they raise a :class:`Signal` on a :class:`SignalSink`.
The incident module implements the sink: it deduplicates by ``dedup_key`` (one cause opens one
incident; later signals with the same key join its timeline), honours snoozes, applies routing
and writes the audit entry and the ``linegate.incident.opened`` event.

Example::

    await sink.raise_signal(
        session,
        Signal(
            incident_type="defect_escape",
            severity="high",
            dedup_key="outcome:weld-seam-inspector:2.1.0:line3",
            summary="escapes 4.1% on night shift while model pass rate stays 97%",
            source="monitor:outcome",
            line="line3", model="weld-seam-inspector", version="2.1.0",
            evidence={"escape_rate": 0.041, "baseline": 0.004, "confidence_mean": 0.93},
        ),
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

IncidentType = Literal[
    "defect_escape",
    "scrap_spike",
    "drift",
    "confidence_collapse",
    "override_cluster",
    "sensor_degradation",
    "pdm_alert",
    "security",
    "rollout_abort",
    "operator_feedback",
]

Severity = Literal["low", "medium", "high", "critical"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Signal:
    """Something a monitor or consumer saw that may warrant an incident."""

    incident_type: IncidentType
    severity: Severity
    #: One cause, one incident: signals sharing a key while an incident is open join it.
    dedup_key: str
    summary: str
    #: Who raised it, e.g. ``monitor:outcome``, ``nats:edge-gateway``.
    source: str
    observed_at: datetime = field(default_factory=_now)
    line: str | None = None
    station: str | None = None
    device_id: str | None = None
    model: str | None = None
    version: str | None = None
    rollout_id: str | None = None
    #: The figures behind the signal (statistic, threshold, window bounds, counts).
    evidence: Mapping[str, Any] = field(default_factory=dict)


class SignalSink(Protocol):
    """Where signals go; the incident module's implementation opens or updates incidents
    inside the caller's session (the caller's unit of work commits once)."""

    async def raise_signal(self, session: AsyncSession, signal: Signal) -> None: ...
