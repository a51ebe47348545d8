"""Telemetry ingest: validate, deduplicate, aggregate and log a batch of messages at once.

:meth:`TelemetryIngest.process` takes the messages of one JetStream fetch and, in one
transaction, (1) skips events already counted (``telemetry_seen``: a redelivery after a lost
ack, or a replica's retry), (2) adds every new event to its windows with additive upserts,
(3) appends the raw events to the post-market log, (4) dead-letters what cannot be used, with
the reason, and (5) marks all of them seen. The caller acks only after that commit, so a crash
anywhere before it means redelivery and a crash after it means a duplicate that step (1) drops:
every event is counted exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol, cast

import sqlalchemy as sa
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from incident import postmarket
from incident.telemetry.decode import DecodedBatch, decode_batch
from incident.telemetry.models import (
    CAMERA_SUMS,
    HIST,
    KPI_SUMS,
    N_BINS,
    WINDOW_SUMS,
    camera_window,
    kpi_window,
    telemetry_dead_letter,
    telemetry_seen,
    telemetry_window,
)
from incident.telemetry.shifts import ShiftCalendar
from linegate.db import Database, DriverStatement, core_connection
from linegate.events import InferenceBatchV1, InferenceRecordV1, KpiSampleV1, OverrideV1

log = logging.getLogger("incident.telemetry")

TelemetryEvent = Annotated[InferenceBatchV1 | OverrideV1 | KpiSampleV1, Field(discriminator="kind")]
#: :meth:`TelemetryIngest.prepare` lets other tasks run after this many messages.
_YIELD_EVERY = 16
#: Dead-lettered payloads are kept up to this many bytes.
MAX_DEAD_LETTER_BYTES = 64 * 1024
#: (model, version, line): what one set of monitors watches.
GroupKey = tuple[str, str, str]


@functools.cache
def _adapter() -> TypeAdapter[InferenceBatchV1 | OverrideV1 | KpiSampleV1]:
    return TypeAdapter(TelemetryEvent)


@dataclass(frozen=True)
class Incoming:
    """One message as the ingest sees it (independent of nats-py)."""

    subject: str
    data: bytes
    stream_seq: int | None = None


@dataclass
class Outcome:
    events: int = 0
    records: int = 0
    duplicates: int = 0
    #: (category, reason) of each message dead-lettered.
    dead_letters: list[tuple[str, str]] = field(default_factory=list)
    #: Monitor groups whose windows this batch changed.
    touched: set[GroupKey] = field(default_factory=set)
    #: (line, shift start) of the KPI windows this batch changed.
    kpi_keys: set[tuple[str, datetime]] = field(default_factory=set)
    dropped: int = 0


@dataclass
class Prepared:
    """A batch parsed and summed by :meth:`TelemetryIngest.prepare`, not yet counted."""

    messages: Sequence[Incoming]
    now: datetime
    #: Per message: its dead-letter key and event id (for a dead letter, what a partial parse
    #: finds, if anything); what the seen-check looks up.
    keys: list[tuple[str, str | None]]
    #: Indices of the messages left out (seen before, or repeated in the batch).
    skipped: frozenset[int]
    sums: WindowSums
    log_rows: list[dict[str, Any]]
    dead_rows: list[dict[str, Any]]
    #: Ids of what counts now (event ids and dead-letter keys), to mark seen.
    fresh: list[str]
    out: Outcome


class DeadLetter(Exception):
    """A message that can never be used; carries the reason and a short category (the
    ``reason`` label of the dead-letter counter)."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason


def _reason(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return "invalid payload: " + "; ".join(parts) + more


def parse(msg: Incoming) -> InferenceBatchV1 | OverrideV1 | KpiSampleV1:
    """The event in ``msg``, or :class:`DeadLetter` saying why there is none."""
    try:
        event = _adapter().validate_json(msg.data)
    except ValidationError as e:
        if e.errors() and e.errors()[0].get("type") == "json_invalid":
            raise DeadLetter("not_json", "not JSON") from e
        raise DeadLetter("invalid", _reason(e)) from e
    tokens = msg.subject.split(".")
    if isinstance(event, KpiSampleV1):
        if len(tokens) != 5 or tokens[3:] != ["mes", "kpi"]:
            raise DeadLetter(
                "subject", f"a KPI sample on {msg.subject}, not linegate.telemetry.<line>.mes.kpi"
            )
        if tokens[2] != event.line:
            raise DeadLetter(
                "subject", f"subject line {tokens[2]!r} but payload line {event.line!r}"
            )
        return event
    # The subject is what the server let the device publish on: trust it over the payload.
    if len(tokens) != 4:
        raise DeadLetter(
            "subject", f"device telemetry on {msg.subject}, not linegate.telemetry.<line>.<id>"
        )
    if (tokens[2], tokens[3]) != (event.line, event.device_id):
        raise DeadLetter(
            "subject",
            f"subject names line {tokens[2]!r} device {tokens[3]!r} but the payload says "
            f"line {event.line!r} device {event.device_id!r}",
        )
    if isinstance(event, OverrideV1) and not event.rationale.strip():
        raise DeadLetter(
            "no_rationale", "override without a rationale (a reversal needs one, EU AI Act Art. 14)"
        )
    return event


class _Stats(Protocol):
    @property
    def brightness(self) -> float: ...
    @property
    def contrast(self) -> float: ...
    @property
    def sharpness(self) -> float: ...


class Record(Protocol):
    """What the sums read of an inference record: ``InferenceRecordV1`` or the fast decoder's
    :class:`incident.telemetry.decode.InferenceRecord` (its time is passed beside it)."""

    @property
    def camera(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def stats(self) -> _Stats: ...


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


_I_CONF = WINDOW_SUMS.index("conf_n")
_I_HIST = WINDOW_SUMS.index(HIST[0])
_I_LAT = WINDOW_SUMS.index("latency_sum")
#: From this many records a batch's sums are taken a column at a time (fewer: one by one).
_COLUMNS_FROM = 8


class WindowSums:
    """In-memory sums of one batch, flushed as one upsert per table."""

    def __init__(self, shifts: ShiftCalendar) -> None:
        self.shifts = shifts
        self.windows: dict[tuple[str, str, str, datetime], list[float]] = {}
        self.meta: dict[datetime, tuple[datetime, str]] = {}
        self.cameras: dict[tuple[str, str, str, str, str, datetime], list[float]] = {}
        self.kpis: dict[tuple[str, datetime, str, str], list[float]] = {}

    def _bucket(self, t: datetime) -> datetime:
        shift = self.shifts.shift_of(t)
        self.meta.setdefault(shift.start, (shift.end, shift.name))
        return shift.start

    def _window(self, model: str, version: str, line: str, t: datetime) -> list[float]:
        key = (model, version, line, self._bucket(t))
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = [0.0] * len(WINDOW_SUMS)
        return w

    def add_batch(self, batch: InferenceBatchV1) -> tuple[str | None, str | None] | None:
        """Add ``batch``'s records to their windows; returns the (model, version) that decided
        every record of it, or None when they differ (a batch that straddles a model swap)."""
        times = [r.occurred_at for r in batch.records]
        return self.add_records(batch.line, batch.device_id, batch.records, times)

    def add_records(
        self, line: str, device: str, records: Sequence[Record], times: Sequence[datetime]
    ) -> tuple[str | None, str | None] | None:
        """:meth:`add_batch` of a batch's ``records``, which occurred at ``times``."""
        n = len(records)
        if n < _COLUMNS_FROM:
            return self._add_few(line, device, records, times)
        # The hot path of the ingest. Nearly every batch is one camera of one model version
        # within one shift: its sums are taken column by column (a list per field, summed
        # and counted in C), not record by record. Anything else takes the general loop.
        models = [r.model for r in records]
        versions = [r.version for r in records]
        cameras = [r.camera for r in records]
        model, version, camera = models[0], versions[0], cameras[0]
        one_version = models.count(model) == n and versions.count(version) == n
        if not one_version or cameras.count(camera) != n:
            self._add_one_by_one(line, device, records, times)
            return (model, version) if one_version else None
        if model is None or version is None:
            return (model, version)  # no model decided (fail-safe manual inspection)
        try:
            first, last = min(times), max(times)
        except TypeError:  # naive and aware times in one batch
            self._add_one_by_one(line, device, records, times)
            return (model, version)
        if first.tzinfo is None:
            first, last = first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)
        shift = self.shifts.shift_of(first)
        if not last < shift.end:
            self._add_one_by_one(line, device, records, times)
            return (model, version)
        self.meta.setdefault(shift.start, (shift.end, shift.name))
        key = (model, version, line, shift.start)
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = [0.0] * len(WINDOW_SUMS)
        ck = (model, version, line, device, camera, shift.start)
        cw = self.cameras.get(ck)
        if cw is None:
            cw = self.cameras[ck] = [0.0] * len(CAMERA_SUMS)
        _add_columns(w, cw, records)
        return (model, version)

    def _add_few(
        self, line: str, device: str, records: Sequence[Record], times: Sequence[datetime]
    ) -> tuple[str | None, str | None] | None:
        """:meth:`add_records` of fewer than :data:`_COLUMNS_FROM` records: one by one costs
        less than a list per field."""
        if not records:
            return (None, None)
        model, version = records[0].model, records[0].version
        one = all(r.model == model and r.version == version for r in records)
        self._add_one_by_one(line, device, records, times)
        return (model, version) if one else None

    def _add_one_by_one(
        self, line: str, device: str, records: Sequence[Record], times: Sequence[datetime]
    ) -> None:
        """The general case, record by record: several cameras, versions or shifts."""
        windows, cameras = self.windows, self.cameras
        start = end = None
        for r, when in zip(records, times, strict=True):
            model, version = r.model, r.version
            if model is None or version is None:
                continue  # no model decided (fail-safe manual inspection): not a model's KPI
            t = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
            if start is None or end is None or not start <= t < end:
                shift = self.shifts.shift_of(t)
                self.meta.setdefault(shift.start, (shift.end, shift.name))
                start, end = shift.start, shift.end
            key = (model, version, line, start)
            w = windows.get(key)
            if w is None:
                w = windows[key] = [0.0] * len(WINDOW_SUMS)
            w[0] += 1
            decision = r.decision
            if decision == "pass":
                w[1] += 1
            elif decision == "reject":
                w[2] += 1
            else:
                w[3] += 1
            c = r.confidence
            if c is not None:
                w[_I_CONF] += 1
                w[_I_CONF + 1] += c
                w[_I_CONF + 2] += c * c
                w[_I_HIST + min(max(int(c * N_BINS), 0), N_BINS - 1)] += 1
            w[_I_LAT] += r.latency_ms
            ck = (model, version, line, device, r.camera, start)
            cw = cameras.get(ck)
            if cw is None:
                cw = cameras[ck] = [0.0] * len(CAMERA_SUMS)
            s = r.stats
            b, k, h = s.brightness, s.contrast, s.sharpness
            cw[0] += 1
            cw[1] += b
            cw[2] += b * b
            cw[3] += k
            cw[4] += k * k
            cw[5] += h
            cw[6] += h * h

    def add_override(self, o: OverrideV1) -> None:
        if o.model is None or o.version is None:
            return
        w = self._window(o.model, o.version, o.line, o.occurred_at)
        w[WINDOW_SUMS.index("overrides")] += 1
        to = "overrides_to_pass" if o.decision == "pass" else "overrides_to_reject"
        w[WINDOW_SUMS.index(to)] += 1

    def add_feedback(self, model: str, version: str, line: str, t: datetime) -> None:
        self._window(model, version, line, t)[WINDOW_SUMS.index("feedback")] += 1

    def add_kpi(self, k: KpiSampleV1) -> None:
        middle = _utc(k.window_start) + (_utc(k.window_end) - _utc(k.window_start)) / 2
        key = (k.line, self._bucket(middle), k.model or "", k.version or "")
        w = self.kpis.get(key)
        if w is None:
            w = self.kpis[key] = [0.0] * len(KPI_SUMS)
        w[0] += 1
        w[1] += k.produced
        w[2] += k.scrap
        w[3] += k.rework
        w[4] += k.escapes
        if k.oee is not None:
            w[5] += k.oee
            w[6] += 1

    async def flush(self, session: AsyncSession, now: datetime) -> None:
        ints = {c for c in WINDOW_SUMS if c not in {"conf_sum", "conf_sumsq", "latency_sum"}}
        rows: list[dict[str, Any]] = []
        for (model, version, line, start), sums in sorted(self.windows.items()):
            end, name = self.meta[start]
            row: dict[str, Any] = {
                "model": model,
                "version": version,
                "line": line,
                "bucket_start": start,
                "bucket_end": end,
                "shift": name,
                "updated_at": now,
            }
            row.update(
                {c: int(v) if c in ints else v for c, v in zip(WINDOW_SUMS, sums, strict=True)}
            )
            rows.append(row)
        await upsert_add(session, telemetry_window, WINDOW_SUMS, rows)
        cams: list[dict[str, Any]] = []
        for (model, version, line, device, camera, start), sums in sorted(self.cameras.items()):
            row = {
                "model": model,
                "version": version,
                "line": line,
                "device_id": device,
                "camera": camera,
                "bucket_start": start,
                "updated_at": now,
            }
            row.update(
                {c: int(v) if c == "n" else v for c, v in zip(CAMERA_SUMS, sums, strict=True)}
            )
            cams.append(row)
        await upsert_add(session, camera_window, CAMERA_SUMS, cams)
        kpis: list[dict[str, Any]] = []
        for (line, start, model, version), sums in sorted(self.kpis.items()):
            end, name = self.meta[start]
            row = {
                "model": model,
                "version": version,
                "line": line,
                "bucket_start": start,
                "bucket_end": end,
                "shift": name,
                "updated_at": now,
            }
            row.update(
                {c: v if c == "oee_sum" else int(v) for c, v in zip(KPI_SUMS, sums, strict=True)}
            )
            kpis.append(row)
        await upsert_add(session, kpi_window, KPI_SUMS, kpis)


def _add_columns(w: list[float], cw: list[float], records: Sequence[Record]) -> None:
    """Add ``records`` (one camera, one window) to the window's sums ``w`` and the camera's
    ``cw``, a column at a time: a list per field, summed and counted in C."""
    n = len(records)
    decisions = [r.decision for r in records]
    latencies = [r.latency_ms for r in records]
    stats = [r.stats for r in records]
    passes = decisions.count("pass")
    rejects = decisions.count("reject")
    w[0] += n
    w[1] += passes
    w[2] += rejects
    w[3] += n - passes - rejects
    confs = [r.confidence for r in records if r.confidence is not None]
    if confs:
        w[_I_CONF] += len(confs)
        w[_I_CONF + 1] += sum(confs)
        w[_I_CONF + 2] += sum(map(operator.mul, confs, confs))
        # A batch's confidences fall in a few bins: each counted in C (a Counter costs more
        # to build than that, most of all for a small batch).
        bins = [int(c * N_BINS) for c in confs]
        for b in set(bins):
            w[_I_HIST + min(max(b, 0), N_BINS - 1)] += bins.count(b)
    w[_I_LAT] += sum(latencies)
    bright = [x.brightness for x in stats]
    contrast = [x.contrast for x in stats]
    sharp = [x.sharpness for x in stats]
    cw[0] += n
    cw[1] += sum(bright)
    cw[2] += sum(map(operator.mul, bright, bright))
    cw[3] += sum(contrast)
    cw[4] += sum(map(operator.mul, contrast, contrast))
    cw[5] += sum(sharp)
    cw[6] += sum(map(operator.mul, sharp, sharp))


async def upsert_add(
    session: AsyncSession, table: sa.Table, sums: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` or add their ``sums`` to the rows already there (by primary key)."""
    if not rows:
        return
    stmt = _upsert_statement(_dialect(session), table, tuple(sums))
    await session.exec(stmt, params=list(rows))


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


@functools.cache
def _upsert_statement(dialect: str, table: sa.Table, sums: tuple[str, ...]) -> sa.Insert:
    # Built once: constructing the ON CONFLICT clause of ~30 sums costs more than running it.
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    values: dict[str, Any] = {c: table.c[c] + ins.excluded[c] for c in sums}
    values["updated_at"] = ins.excluded.updated_at
    return ins.on_conflict_do_update(index_elements=keys, set_=values)


class TelemetryIngest:
    """Turns fetched telemetry messages into windows, log rows and dead letters."""

    def __init__(self, db: Database, shifts: ShiftCalendar) -> None:
        self.db = db
        self.shifts = shifts

    async def process(self, messages: Sequence[Incoming]) -> Outcome:
        """Count ``messages`` once, in one transaction; raise on a database failure (the caller
        then acks nothing and the messages come again)."""
        return await self.write(await self.prepare(messages))

    async def prepare(
        self, messages: Sequence[Incoming], skip: frozenset[int] = frozenset()
    ) -> Prepared:
        """Parse and sum ``messages`` but those at the indices in ``skip``, without the
        database: the half of :meth:`process` that may run while the previous batch is still
        being written (see the consumer). Each event is folded into the batch's sums as soon
        as it is parsed: holding a fetch's worth of parsed records, or of per-message sums,
        costs more in garbage collection than parsing them."""
        out = Outcome(duplicates=len(skip))
        batch = Prepared(
            messages, datetime.now(UTC), [], skip, WindowSums(self.shifts), [], [], [], out
        )
        ids: set[str] = set()
        for i, m in enumerate(messages):
            if i and not i % _YIELD_EVERY:
                await asyncio.sleep(0)  # let the previous batch's writes go on meanwhile
            dkey = _dead_key(m)
            # The fast decoder takes nearly every message; pydantic the rest, and says why a
            # message is refused.
            event: TelemetryEvent | DecodedBatch | None = _fast_batch(m)
            if event is None:
                try:
                    event = parse(m)
                except DeadLetter as dl:
                    # A duplicate is recognised by its event id even when it cannot be used.
                    batch.keys.append((dkey, _peek_id(m)))
                    if i in skip or dkey in ids:
                        out.duplicates += i not in skip
                        continue
                    ids.add(dkey)
                    batch.fresh.append(dkey)
                    out.dead_letters.append((dl.category, dl.reason))
                    batch.dead_rows.append(_dead_row(m, dl.reason, batch.now))
                    continue
            batch.keys.append((dkey, event.event_id))
            if i in skip or event.event_id in ids:
                out.duplicates += i not in skip  # the same event twice in one fetch
                continue
            ids.add(event.event_id)
            batch.fresh.append(event.event_id)
            out.events += 1
            self._add(event, m.data, batch.sums, batch.log_rows, batch.now, out)
            del event
        return batch

    async def write(self, batch: Prepared) -> Outcome:
        """Count what :meth:`prepare` made of a batch, in one transaction: skip what was seen
        (``telemetry_seen``, read now, after every earlier batch committed), add the rest to
        the windows, the post-market log and the dead letters, and mark it seen."""
        async with self.db.session() as session:
            keys = [k for pair in batch.keys for k in pair if k is not None]
            seen = await _already_seen(session, keys)
            dups = frozenset(
                i
                for i, (dkey, eid) in enumerate(batch.keys)
                if dkey in seen or (eid is not None and eid in seen)
            )
            if dups - batch.skipped:
                # Seen before (a redelivery, a republished event): rare, so the batch is
                # parsed again without them rather than every message summed on its own.
                batch = await self.prepare(batch.messages, batch.skipped | dups)
            out, sums, now = batch.out, batch.sums, batch.now
            await sums.flush(session, now)
            await postmarket.record_many(session, batch.log_rows)
            if batch.dead_rows:
                await session.exec(telemetry_dead_letter.insert(), params=batch.dead_rows)
            if batch.fresh:
                await _mark_seen(session, batch.fresh, now)
            out.touched = {(m, v, line) for m, v, line, _ in sums.windows}
            out.kpi_keys = {(line, start) for line, start, _, _ in sums.kpis}
        return out

    def _add(
        self,
        event: TelemetryEvent | DecodedBatch,
        raw: bytes,
        sums: WindowSums,
        log_rows: list[dict[str, Any]],
        now: datetime,
        out: Outcome,
    ) -> None:
        if isinstance(event, DecodedBatch):
            self._add_decoded(event, raw, sums, log_rows, now, out)
        elif isinstance(event, InferenceBatchV1):
            times = [r.occurred_at for r in event.records]
            one = sums.add_records(event.line, event.device_id, event.records, times)
            out.records += len(times)
            out.dropped += event.dropped
            _log_batch(event, one, times[0] if times else event.occurred_at, raw, log_rows, now)
        elif isinstance(event, OverrideV1):
            sums.add_override(event)
            out.records += 1
            log_rows.append(
                postmarket.row(
                    kind="override",
                    occurred_at=event.occurred_at,
                    payload=event.model_dump_json(),
                    recorded_at=now,
                    event_id=event.event_id,
                    model=event.model,
                    version=event.version,
                    device_id=event.device_id,
                    line=event.line,
                    record_id=event.record_id,
                )
            )
        else:
            sums.add_kpi(event)
            out.records += 1
            log_rows.append(
                postmarket.row(
                    kind="kpi_sample",
                    occurred_at=event.window_end,
                    payload=event.model_dump_json(),
                    recorded_at=now,
                    event_id=event.event_id,
                    model=event.model,
                    version=event.version,
                    line=event.line,
                    station=event.station,
                )
            )

    def _add_decoded(
        self,
        fast: DecodedBatch,
        raw: bytes,
        sums: WindowSums,
        log_rows: list[dict[str, Any]],
        now: datetime,
        out: Outcome,
    ) -> None:
        """:meth:`_add` of an inference batch the fast decoder took (the same values as
        pydantic's)."""
        b, times = fast.batch, fast.times
        one = sums.add_records(b.line, b.device_id, b.records, times)
        out.records += len(times)
        out.dropped += b.dropped
        if one is None:
            # A batch that straddles a model swap is logged in parts, re-serialised by the
            # contract's model (which accepts whatever the fast decoder accepted).
            event = _adapter().validate_json(raw)
            if not isinstance(event, InferenceBatchV1):  # never: the same message, the same kind
                raise TypeError(f"{type(event).__name__} where an inference batch was decoded")
            _log_batch(event, None, times[0], raw, log_rows, now)
            return
        log_rows.append(
            _batch_row(
                b.event_id,
                b.line,
                b.device_id,
                one,
                times[0] if times else fast.occurred_at,
                raw.decode(),
                now,
            )
        )

    async def dead_letter(self, msg: Incoming, reason: str) -> Outcome:
        """Dead-letter ``msg`` on its own (it broke processing), once."""
        out = Outcome()
        now = datetime.now(UTC)
        key = _dead_key(msg)
        async with self.db.session() as session:
            if await _already_seen(session, [key]):
                out.duplicates = 1
                return out
            await session.exec(telemetry_dead_letter.insert(), params=[_dead_row(msg, reason, now)])
            await session.exec(telemetry_seen.insert(), params=[{"event_id": key, "seen_at": now}])
        out.dead_letters.append(("processing", reason))
        return out

    async def prune_seen(self, older_than: timedelta) -> int:
        """Forget ids seen before the stream could still redeliver them (bounded table)."""
        cutoff = datetime.now(UTC) - older_than
        async with self.db.session() as session:
            result = await session.exec(
                sa.delete(telemetry_seen).where(telemetry_seen.c.seen_at < cutoff)
            )
            return int(result.rowcount or 0)


def _fast_batch(m: Incoming) -> DecodedBatch | None:
    """``m``'s inference batch by the fast decoder, if it takes it and the subject matches
    the payload's line and device; None: ask :func:`parse` (which says why, if it is wrong)."""
    fast = decode_batch(m.data)
    if fast is None:
        return None
    tokens = m.subject.split(".")
    b = fast.batch
    if len(tokens) != 4 or tokens[2] != b.line or tokens[3] != b.device_id:
        return None
    return fast


def _log_batch(
    event: InferenceBatchV1,
    one: tuple[str | None, str | None] | None,
    first: datetime,
    raw: bytes,
    log_rows: list[dict[str, Any]],
    now: datetime,
) -> None:
    """The device's event goes to the log as it was published: one row per batch (per model
    version in the rare batch that straddles a model swap)."""
    if one is not None:
        log_rows.append(
            _batch_row(event.event_id, event.line, event.device_id, one, first, raw.decode(), now)
        )
        return
    groups: dict[tuple[str | None, str | None], list[InferenceRecordV1]] = {}
    for r in event.records:
        groups.setdefault((r.model, r.version), []).append(r)
    for (model, version), recs in groups.items():
        payload = event.model_copy(update={"records": recs}).model_dump_json()
        log_rows.append(
            _batch_row(
                event.event_id,
                event.line,
                event.device_id,
                (model, version),
                recs[0].occurred_at,
                payload,
                now,
            )
        )


def _batch_row(
    event_id: str,
    line: str,
    device: str,
    decided_by: tuple[str | None, str | None],
    first: datetime,
    payload: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "kind": "inference_batch",
        "occurred_at": _utc(first),
        "recorded_at": now,
        "event_id": event_id,
        "incident_id": None,
        "model": decided_by[0],
        "version": decided_by[1],
        "device_id": device,
        "line": line,
        "station": None,
        "record_id": None,
        "payload": payload,
    }


class _EventId(BaseModel):
    event_id: str


def _peek_id(m: Incoming) -> str | None:
    """The message's event id without building the rest of it (None if it has none)."""
    try:
        return _EventId.model_validate_json(m.data).event_id
    except ValidationError:
        return None


def _dead_key(m: Incoming) -> str:
    if m.stream_seq is not None:
        return f"dl:{m.stream_seq}"
    return "dl:" + hashlib.sha256(m.subject.encode() + b"\0" + m.data).hexdigest()


def _dead_row(m: Incoming, reason: str, now: datetime) -> dict[str, Any]:
    data = m.data[:MAX_DEAD_LETTER_BYTES]
    return {
        "received_at": now,
        "subject": m.subject[:255],
        "stream_seq": m.stream_seq,
        "reason": reason,
        "data": data.decode("utf-8", errors="replace"),
        "truncated": len(m.data) > MAX_DEAD_LETTER_BYTES,
    }


async def _already_seen(session: AsyncSession, keys: Iterable[str]) -> set[str]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return set()
    dialect = _dialect(session)
    # All the ids as one parameter (an array; JSON text on SQLite): one statement text
    # whatever their number, so neither SQLAlchemy nor the driver renders and parses an
    # IN list of hundreds of placeholders per fetch. Never a prepared statement: PostgreSQL
    # kept the generic plan it chose while the table was small, a sequential scan, as
    # telemetry_seen grew (the bench's sweep after some 60,000 ids: 9,000-13,000 instead of
    # 30,000 records/s at one record per message, 14,000 instead of 82,000 at three);
    # planned for its values, it is an index lookup per id.
    rows = await _seen_lookup(dialect).execute(
        await core_connection(session), {"ids": _id_list(dialect, keys)}, prepare=False
    )
    return {str(r[0]) for r in rows}


async def _mark_seen(session: AsyncSession, ids: list[str], now: datetime) -> None:
    """Insert ``ids`` into ``telemetry_seen`` in one statement (not a row each)."""
    dialect = _dialect(session)
    await session.exec(
        cast(Any, _mark_seen_statement(dialect)),
        params={"ids": _id_list(dialect, ids), "now": now},
    )


def _id_list(dialect: str, ids: list[str]) -> Any:
    return ids if dialect == "postgresql" else json.dumps(ids)


def _ids_param(dialect: str) -> sa.BindParameter[Any]:
    if dialect == "postgresql":
        return sa.bindparam("ids", type_=postgresql.ARRAY(sa.String))
    return sa.bindparam("ids", type_=sa.String)


#: A row of SQLite's ``json_each``: the element is its ``value``.
_VALUE = sa.column("value", sa.String)


@functools.cache
def _seen_lookup(dialect: str) -> DriverStatement:
    event_id = telemetry_seen.c.event_id
    if dialect == "postgresql":
        return DriverStatement(sa.select(event_id).where(event_id == sa.any_(_ids_param(dialect))))
    listed = sa.select(_VALUE).select_from(sa.func.json_each(_ids_param(dialect)))
    return DriverStatement(sa.select(event_id).where(event_id.in_(listed)))


@functools.cache
def _mark_seen_statement(dialect: str) -> sa.Insert:
    now = sa.bindparam("now", type_=telemetry_seen.c.seen_at.type)
    rows: sa.Select[Any]
    if dialect == "postgresql":
        rows = sa.select(sa.func.unnest(_ids_param(dialect)), now)
    else:
        rows = sa.select(_VALUE, now).select_from(sa.func.json_each(_ids_param(dialect)))
    return telemetry_seen.insert().from_select(["event_id", "seen_at"], rows)
