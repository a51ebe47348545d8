"""Synthetic production runs and a running incident service for the telemetry-side tests.

A *run* is the telemetry of one line over consecutive shifts, generated from a seed: each
shift's inferences (confidence, decision, input statistics per camera) come from the profile
the test gives it, in batches of the size the agent publishes, and the MES's KPI sample for
the shift (produced, scrap, escapes). Monitors are driven with ``runner.run_once()`` after the
service has consumed everything, so a verdict never depends on how fetches happened to split
the stream; one test keeps the background runner to show the real-time path.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import numpy as np
import pytest
import sqlalchemy as sa

from incident.app import create_app
from incident.settings import IncidentSettings
from incident.signals import Signal
from incident.telemetry.models import kpi_window, telemetry_dead_letter, telemetry_window
from incident.telemetry.runtime import Telemetry
from linegate.auth import Role
from linegate.embedded import free_port
from linegate.events import (
    EventV1,
    InferenceBatchV1,
    InferenceRecordV1,
    InputStatsV1,
    KpiSampleV1,
    OverrideV1,
    Subjects,
)
from linegate.testing.fixtures import bearer

MODEL = "weld-seam-inspector"
VERSION = "2.1.0"
LINE = "line3"
DEVICES = ("cam-3-1", "cam-3-2")
#: Monday 06:00 UTC: the start of an early shift (shifts 06-14-22 UTC by default).
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
SHIFT = timedelta(hours=8)


@dataclass(frozen=True)
class Profile:
    """How one shift behaves."""

    parts: int = 600
    confidence_mean: float = 0.95
    confidence_sd: float = 0.015
    reject_rate: float = 0.03
    brightness: float = 0.52
    escapes: int = 0
    overrides: int = 0


STABLE = Profile()


@dataclass
class Run:
    messages: list[tuple[str, EventV1]] = field(default_factory=list)
    records: int = 0
    kpi_samples: int = 0
    shifts: int = 0

    def __add__(self, other: Run) -> Run:
        """Both runs at once (e.g. two versions on the line during a canary)."""
        return Run(
            self.messages + other.messages,
            self.records + other.records,
            self.kpi_samples + other.kpi_samples,
            max(self.shifts, other.shifts),
        )


def production_run(
    profiles: Sequence[Profile],
    *,
    seed: int = 7,
    batch: int = 50,
    start: datetime = T0,
    version: str = VERSION,
    attribute_kpis: bool = False,
) -> Run:
    """Telemetry of ``len(profiles)`` consecutive shifts on line 3, both devices, decided by
    ``version``; ``attribute_kpis``: the MES names that version in its KPI samples."""
    rng = np.random.default_rng(seed)
    run = Run()
    for i, p in enumerate(profiles):
        shift_start = start + i * SHIFT
        step = SHIFT / p.parts
        conf = np.clip(rng.normal(p.confidence_mean, p.confidence_sd, p.parts), 0.5, 0.999)
        reject = rng.random(p.parts) < p.reject_rate
        bright = rng.normal(p.brightness, 0.02, p.parts)
        contrast = rng.normal(0.21, 0.01, p.parts)
        sharp = rng.normal(0.034, 0.002, p.parts)
        per_device: dict[str, list[InferenceRecordV1]] = {d: [] for d in DEVICES}
        for j in range(p.parts):
            device = DEVICES[j % len(DEVICES)]
            per_device[device].append(
                InferenceRecordV1(
                    record_id=f"r-{i}-{j}",
                    occurred_at=shift_start + j * step,
                    camera="cam0",
                    decision="reject" if reject[j] else "pass",
                    label="porosity" if reject[j] else "ok",
                    confidence=float(conf[j]),
                    model=MODEL,
                    version=version,
                    threshold=0.5,
                    stats=InputStatsV1(
                        brightness=float(bright[j]),
                        contrast=float(contrast[j]),
                        sharpness=float(sharp[j]),
                    ),
                    latency_ms=4.0,
                )
            )
        for device, records in per_device.items():
            for k in range(0, len(records), batch):
                chunk = records[k : k + batch]
                run.messages.append(
                    (
                        Subjects.telemetry(LINE, device),
                        InferenceBatchV1(
                            occurred_at=chunk[-1].occurred_at,
                            line=LINE,
                            device_id=device,
                            records=chunk,
                        ),
                    )
                )
                run.records += len(chunk)
        for k in range(p.overrides):
            run.messages.append(
                (
                    Subjects.telemetry(LINE, DEVICES[0]),
                    OverrideV1(
                        occurred_at=shift_start + (k + 1) * step * 10,
                        actor="operator-anna",
                        line=LINE,
                        device_id=DEVICES[0],
                        record_id=f"r-{i}-{k * 10}",
                        camera="cam0",
                        model=MODEL,
                        version=version,
                        original_decision="reject",
                        decision="pass",
                        reason_code="false_reject",
                        rationale="seam re-measured by hand, within tolerance",
                    ),
                )
            )
            run.records += 1
        run.messages.append(
            (
                Subjects.kpi(LINE),
                KpiSampleV1(
                    occurred_at=shift_start + SHIFT,
                    line=LINE,
                    window_start=shift_start,
                    window_end=shift_start + SHIFT,
                    produced=p.parts,
                    scrap=int(reject.sum()),
                    escapes=p.escapes,
                    oee=0.82,
                    model=MODEL if attribute_kpis else None,
                    version=version if attribute_kpis else None,
                ),
            )
        )
        run.kpi_samples += 1
        run.records += 1
        run.shifts += 1
    return run


def day(profile: Profile = STABLE) -> list[Profile]:
    return [profile] * 3


class RecordingSink:
    """Test double of the seam: implements :class:`incident.signals.SignalSink` and keeps
    what it was given."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    async def raise_signal(self, session: Any, signal: Signal) -> None:
        self.signals.append(signal)

    def of(self, incident_type: str) -> list[Signal]:
        return [s for s in self.signals if s.incident_type == incident_type]


async def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Line:
    """The incident service on real NATS and a real database, and a NATS client playing the
    devices and the MES."""

    app: Any
    client: Any
    nc: Any
    mint: Any
    sink: RecordingSink

    @property
    def telemetry(self) -> Telemetry:
        telemetry: Telemetry = self.app.state.telemetry
        return telemetry

    @property
    def js(self) -> Any:
        return self.nc.jetstream(timeout=10)

    def auth(self, *roles: Role, sub: str = "rita-responder") -> dict[str, str]:
        return bearer(self.mint(*(roles or (Role.RESPONDER,)), sub=sub))

    async def publish(self, subject: str, event: EventV1, *, msg_id: str | None = None) -> None:
        await self.js.publish(
            subject,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or event.event_id},
        )

    async def publish_run(self, run: Run) -> None:
        for subject, event in run.messages:
            await self.publish(subject, event)

    async def publish_raw(self, subject: str, data: bytes) -> None:
        await self.js.publish(subject, data, headers={"Nats-Msg-Id": uuid.uuid4().hex})

    async def totals(self) -> tuple[int, int, int, int]:
        """(inferences, overrides, KPI samples, dead letters) in the database."""
        async with self.app.state.ctx.db.session() as session:
            tw = telemetry_window.c
            row = (
                await session.exec(  # type: ignore[call-overload]
                    sa.select(
                        sa.func.coalesce(sa.func.sum(tw.n), 0),
                        sa.func.coalesce(sa.func.sum(tw.overrides), 0),
                    )
                )
            ).one()
            kpis = (
                await session.exec(  # type: ignore[call-overload]
                    sa.select(sa.func.coalesce(sa.func.sum(kpi_window.c.samples), 0))
                )
            ).one()
            dead = (
                await session.exec(  # type: ignore[call-overload]
                    sa.select(sa.func.count()).select_from(telemetry_dead_letter)
                )
            ).one()
        return int(row[0]), int(row[1]), int(kpis[0]), int(dead[0])

    async def wait_ingested(self, run: Run, *, dead: int = 0, times: int = 1) -> None:
        overrides = sum(isinstance(e, OverrideV1) for _, e in run.messages)
        want = (
            (run.records - overrides - run.kpi_samples) * times,
            overrides * times,
            run.kpi_samples * times,
            dead,
        )

        async def done() -> bool:
            return await self.totals() == want

        await wait_for(done, f"ingest of {want}")

    async def evaluate(self) -> dict[str, Any]:
        await self.telemetry.runner.run_once()
        return await self.monitors()

    async def monitors(self) -> dict[str, Any]:
        r = await self.client.get(
            f"/v1/monitors/{MODEL}/{VERSION}/{LINE}", headers=self.auth(Role.AUDITOR)
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        body["by_monitor"] = {s["monitor"]: s for s in body["states"]}
        return body


def closed_registry() -> str:
    """A registry URL on which nothing listens (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def line_factory(
    settings_factory: Any, service_client: Any, mint_token: Any, nats_server: Any
) -> Any:
    """``async with line_factory(**settings) as line``: the service with a recording sink."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(*, record_signals: bool = True, **overrides: Any) -> AsyncIterator[Line]:
        values: dict[str, Any] = {
            "monitor_interval_seconds": 0,
            "registry_url": closed_registry(),
        }
        values.update(overrides)
        settings = settings_factory(IncidentSettings, **values)
        app = create_app(settings)
        nc = await nats.connect(nats_server.url)
        sink = RecordingSink()
        try:
            async with service_client(app) as client:
                if record_signals:
                    app.state.signal_sink = sink
                yield Line(app=app, client=client, nc=nc, mint=mint_token, sink=sink)
        finally:
            await nc.close()

    return make


def shifted(profile: Profile, **changes: Any) -> Profile:
    return replace(profile, **changes)


def inference_record(j: int, *, micros: int = 0, **changes: Any) -> InferenceRecordV1:
    """The ``j``-th record of a plain batch (a minute apart from T0, plus ``j * micros``
    microseconds; decisions, confidences and input stats varying with ``j``), with
    ``changes`` applied and validated by the contract's model."""
    values: dict[str, Any] = {
        "record_id": f"r-{j}",
        "occurred_at": T0 + timedelta(minutes=j, microseconds=j * micros),
        "camera": "cam0",
        "decision": ("pass", "reject", "manual_inspection")[j % 3],
        "confidence": (j % 21) / 20,
        "model": "weld-seam-inspector",
        "version": "2.1.0",
        "threshold": 0.5,
        "stats": InputStatsV1(brightness=0.5 + j / 1000, contrast=0.2, sharpness=0.03 + j / 1e4),
        "latency_ms": 4.0 + j,
    }
    values.update(changes)
    return InferenceRecordV1.model_validate(values)
