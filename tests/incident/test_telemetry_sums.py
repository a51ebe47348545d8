"""The ingest's window sums: the column-wise path that nearly every batch takes gives the same
windows as adding its records one by one, and batches it cannot take (several cameras, model
versions or shifts; naive times) fall back to the record-by-record loop."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from incident.telemetry.ingest import WindowSums
from incident.telemetry.shifts import ShiftCalendar
from linegate.events import InferenceBatchV1, InferenceRecordV1
from tests.incident.telemetry_support import inference_record

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def _calendar() -> ShiftCalendar:
    return ShiftCalendar(("06:00", "14:00", "22:00"), ("early", "late", "night"), "UTC")


_record = inference_record


def _batch(records: list[InferenceRecordV1]) -> InferenceBatchV1:
    return InferenceBatchV1(line="line3", device_id="cam-3-1", records=records)


def _one_by_one(batch: InferenceBatchV1) -> WindowSums:
    sums = WindowSums(_calendar())
    sums._add_one_by_one(
        batch.line, batch.device_id, batch.records, [r.occurred_at for r in batch.records]
    )
    return sums


def _assert_same(a: WindowSums, b: WindowSums) -> None:
    assert a.windows.keys() == b.windows.keys()
    assert a.cameras.keys() == b.cameras.keys()
    assert a.meta == b.meta
    for got, want in [(a.windows[k], b.windows[k]) for k in a.windows] + [
        (a.cameras[k], b.cameras[k]) for k in a.cameras
    ]:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


CASES = {
    "uniform": [_record(j) for j in range(60)],
    "confidence missing on some": [
        _record(j, confidence=None if j % 4 == 0 else 0.9) for j in range(40)
    ],
    "confidence at and beyond the histogram's edges": [
        _record(j, confidence=c) for j, c in enumerate([0.0, 1.0, 1.7, -0.2, 0.05, 0.95])
    ],
    "two cameras": [_record(j, camera=f"cam{j % 2}") for j in range(30)],
    "a model swap inside the batch": [
        _record(j, version="2.1.0" if j < 10 else "2.0.4") for j in range(20)
    ],
    "no model decided some records": [
        _record(j, model=None, version=None) if j % 5 == 0 else _record(j) for j in range(25)
    ],
    "across a shift change": [
        _record(j, occurred_at=T0 + timedelta(hours=7.5 + j / 10)) for j in range(10)
    ],
    "naive times": [
        _record(j, occurred_at=(T0 + timedelta(minutes=j)).replace(tzinfo=None)) for j in range(10)
    ],
    "naive and aware times": [
        _record(j, occurred_at=(T0 + timedelta(minutes=j)).replace(tzinfo=None))
        if j % 2
        else _record(j)
        for j in range(10)
    ],
}


@pytest.mark.parametrize("records", CASES.values(), ids=CASES.keys())
def test_a_batch_adds_what_its_records_add_one_by_one(records: list[InferenceRecordV1]) -> None:
    batch = _batch(records)
    sums = WindowSums(_calendar())
    decided = sums.add_batch(batch)
    _assert_same(sums, _one_by_one(batch))
    versions = {(r.model, r.version) for r in records}
    assert decided == (next(iter(versions)) if len(versions) == 1 else None)


def test_batches_add_up_in_their_window() -> None:
    sums = WindowSums(_calendar())
    for k in range(3):
        sums.add_batch(_batch([_record(j + 10 * k) for j in range(10)]))
    [window] = sums.windows.values()
    assert window[0] == 30
    assert math.isclose(window[6], sum(((j % 21) / 20) ** 2 for j in range(30)))


def test_an_empty_batch_adds_nothing() -> None:
    sums = WindowSums(_calendar())
    assert sums.add_batch(_batch([])) == (None, None)
    assert not sums.windows
    assert not sums.cameras
