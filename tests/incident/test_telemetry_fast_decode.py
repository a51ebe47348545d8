"""The fast inference-batch decoder (msgspec) against the contract (pydantic): over valid
messages and thousands of mutated ones it never accepts a message pydantic refuses, and what
it accepts it reads to the same values; the ingest makes the same sums, log rows and dead
letters of a mixed fetch with it as without it."""

from __future__ import annotations

import copy
import functools
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import msgspec
import pytest
from pydantic import ValidationError

from incident.telemetry import ingest as ingest_module
from incident.telemetry.decode import DecodedBatch, decode_batch
from incident.telemetry.ingest import Incoming, TelemetryIngest, _adapter
from incident.telemetry.shifts import ShiftCalendar
from linegate.events import (
    InferenceBatchV1,
    InputStatsV1,
    OverrideV1,
    ShadowResultV1,
    Subjects,
)
from tests.incident.telemetry_support import (
    STABLE,
    Profile,
    day,
    inference_record,
    production_run,
)

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)

# ------------------------------------------------------------------------------ the oracle


def _norm(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    """A value in a form that compares exactly: floats by bits (so -0.0 != 0.0), ints and
    bools by type, datetimes by wall time and offset (pydantic's TzInfo and msgspec's
    timezone are different classes of the same thing)."""
    if isinstance(value, msgspec.Struct):
        return _norm(msgspec.structs.asdict(value))
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, datetime):
        return ("datetime", value.replace(tzinfo=None).isoformat(), value.utcoffset())
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    assert value is None or isinstance(value, str), type(value)
    return value


def _fast_values(d: DecodedBatch) -> Any:
    values = _norm(d.batch)
    values["occurred_at"] = _norm(d.occurred_at)
    assert len(d.times) == len(values["records"])
    for r, t in zip(values["records"], d.times, strict=True):
        r["occurred_at"] = _norm(t)
    return values


class Tally:
    """How the corpus fell out, so the test shows it tried what it says."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[bool, bool]] = Counter()

    def check(self, data: bytes) -> tuple[bool, bool]:
        """(fast accepted, pydantic accepted) for ``data``; fails if the fast decoder accepts
        what pydantic refuses or reads it differently."""
        fast = decode_batch(data)
        try:
            ref = _adapter().validate_json(data)
        except ValidationError:
            ref = None
        if fast is not None:
            assert isinstance(ref, InferenceBatchV1), (
                f"fast accepted what pydantic refuses: {data!r}"
            )
            assert _fast_values(fast) == _norm(ref.model_dump()), data
        outcome = (fast is not None, ref is not None)
        self.counts[outcome] += 1
        return outcome


# ------------------------------------------------------------------------------ the corpus


_record = functools.partial(inference_record, micros=1013)


SHADOW = ShadowResultV1(
    model="weld-seam-inspector",
    version="2.2.0-rc1",
    decision="reject",
    label="porosity",
    confidence=0.61,
    agrees=False,
    latency_ms=5.5,
)


def _valid_batches() -> Iterator[InferenceBatchV1]:
    """Batches as devices publish them, and the corners of the contract."""
    for _, event in (
        production_run(day(STABLE)).messages
        + production_run([Profile(parts=90, reject_rate=0.3)], seed=3, batch=100).messages
    ):
        if isinstance(event, InferenceBatchV1):
            yield event
    b = {"line": "line3", "device_id": "cam-3-1"}
    yield InferenceBatchV1(**b, records=[])
    yield InferenceBatchV1(**b, records=[_record(j) for j in range(100)], dropped=17)
    yield InferenceBatchV1(
        **b,
        actor="agent-1.4",
        records=[
            _record(
                j,
                reason="below threshold",
                label="ok",
                shadow=SHADOW,
                control_incident_id="inc-42",
            )
            for j in range(5)
        ],
    )
    yield InferenceBatchV1(
        **b,
        records=[
            _record(0, confidence=None, model=None, version=None, decision="manual_inspection"),
            _record(1, shadow=SHADOW.model_copy(update={"label": None, "confidence": None})),
            _record(2, confidence=0.0, latency_ms=0.0, threshold=-0.0),
            _record(
                3, confidence=1.0, stats=InputStatsV1(brightness=-3, contrast=1e300, sharpness=0)
            ),
        ],
    )
    yield InferenceBatchV1(
        **b,
        occurred_at=T0.replace(tzinfo=None),
        records=[
            _record(j, occurred_at=(T0 + timedelta(seconds=j)).replace(tzinfo=None))
            for j in range(4)
        ],
    )
    yield InferenceBatchV1(
        **b,
        records=[
            _record(j, occurred_at=T0.astimezone(timezone(timedelta(hours=h, minutes=m))))
            for j, (h, m) in enumerate([(5, 30), (-1, 0), (0, 0), (13, 45), (-9, -30)])
        ],
    )
    yield InferenceBatchV1(
        **b, records=[_record(j, version="2.1.0" if j < 3 else "2.0.4") for j in range(6)]
    )


VALID = [e.model_dump_json().encode() for e in _valid_batches()]

#: A small batch whose every field is mutated in turn.
BASE: dict[str, Any] = json.loads(
    InferenceBatchV1(
        line="line3",
        device_id="cam-3-1",
        actor="agent",
        records=[_record(0, shadow=SHADOW, reason="r", label="l"), _record(1)],
        dropped=2,
    ).model_dump_json()
)

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    0.5,
    -0.0,
    1.0,
    1.5e308,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(10**30),
    "",
    "x",
    "1.5",
    "1",
    "true",
    "pass",
    "reject",
    "manual_inspection",
    "PASS",
    " pass",
    "telemetry.inference_batch.v1",
    "telemetry.override.v1",
    "2026-11-02T06:00:00Z",
    [],
    {},
    [1.5],
    {"brightness": 1, "contrast": 2, "sharpness": 3},
    "\u0000",
    "é",
    "\U0001f600",
]

DATETIMES = [
    "2026-11-02T06:00:00Z",
    "2026-11-02T06:00:00",
    "2026-11-02T06:00:00.5Z",
    "2026-11-02T06:00:00.123456Z",
    "2026-11-02T06:00:00.1234567Z",
    "2026-11-02T06:00:00.9999995Z",
    "2026-11-02T06:00:00.123456789123",
    "2026-11-02T06:00:00.000000000001+01:00",
    "2026-11-02T06:00:00+05:30",
    "2026-11-02T06:00:00-00:00",
    "2026-11-02T06:00:00+0530",
    "2026-11-02T06:00:00+05",
    "2026-11-02T06:00:00+24:00",
    "2026-11-02T06:00:00+23:59",
    "2026-11-02T06:00:00-23:59",
    "2026-11-02T06:00:00+00:60",
    "2026-11-02 06:00:00Z",
    "2026-11-02t06:00:00z",
    "2026-11-02T06:00Z",
    "2026-11-02T06Z",
    "2026-11-02",
    "2026-11-02T06:00:00,5Z",
    "2026-11-02T23:59:60Z",
    "2026-11-02T24:00:00Z",
    "2026-11-02T06:60:00Z",
    "2026-02-29T06:00:00Z",
    "2028-02-29T06:00:00Z",
    "2026-13-01T06:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",
    "+2026-11-02T06:00:00Z",
    "2026-11-2T06:00:00Z",
    "20261102T060000Z",
    "1700000000",
    "2026-11-02T06:00:00.Z",
    "2026-11-02T06:00:00Z ",
    " 2026-11-02T06:00:00Z",
    "2026-11-02T06:00:00\u0000Z",
    "2026-11-02T06:00:00\uff3a",
    "\u0662\u0660\u0662\u0666-11-02T06:00:00Z",
    "now",
    "",
]
#: What may stand where JSON has a number (spelled straight into the text).
NUMBER_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "9" * 19,
    "18446744073709551616",
    "-9223372036854775809",
    "1.0000000000000000000000001",
    "1E+2",
    "1e05",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    "-0",
    "1_000",
    "2.0",
    "1e2",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


SENTINEL = "\u2603sentinel\u2603"


def _spelled(doc: Any, path: tuple[Any, ...], token: str) -> bytes:
    """``doc`` with ``token`` written verbatim as the JSON text of the value at ``path``."""
    return _dumps(_set(doc, path, SENTINEL)).replace(
        json.dumps(SENTINEL, ensure_ascii=False).encode(), token.encode()
    )


def _mutations() -> Iterator[bytes]:
    paths = list(_paths(BASE))
    for path in paths:
        yield _dumps(_delete(BASE, path))
        for value in VALUES:
            yield _dumps(_set(BASE, path, value))
        if isinstance(path[-1], str) and path[-1].endswith("occurred_at"):
            for stamp in DATETIMES:
                yield _dumps(_set(BASE, path, stamp))
        for token in NUMBER_TOKENS:
            yield _spelled(BASE, path, token)
        # Deep nesting in place of the value.
        yield _spelled(BASE, path, "[" * 5000 + "]" * 5000)
        yield _spelled(BASE, path, '{"a":' * 300 + "1" + "}" * 300)
    # Unknown fields at every level (the contract forbids them).
    for container in [(), ("records", 0), ("records", 0, "stats"), ("records", 0, "shadow")]:
        yield _dumps(_set(BASE, (*container, "extra"), 1))
        yield _dumps(_set(BASE, (*container, "extra"), None))
    text = _dumps(BASE)
    # Duplicate keys: the later one counts (for both, or the fast decoder must refuse).
    yield text[:-1] + b',"line":"line9"}'
    yield text[:-1] + b',"dropped":"x"}'
    yield text.replace(b'"camera":"cam0"', b'"camera":"cam0","camera":"cam9"', 1)
    yield text.replace(b'"brightness":', b'"brightness":7,"brightness":', 1)
    yield text.replace(b'"kind":', b'"kind":"telemetry.override.v1","kind":', 1)
    # Not JSON, not UTF-8, not one document.
    yield b""
    yield b"null"
    yield b"[]"
    yield b"\xef\xbb\xbf" + text
    yield text + b"x"
    yield text + b" \n\t\r"
    yield b" \n" + text
    yield text + text
    yield text.replace(b'"line3"', b'"line\xff3"', 1)
    yield text.replace(b'"line3"', b'"line\xed\xa0\x803"', 1)
    yield text.replace(b'"line3"', b'"line\xc0\xaf3"', 1)
    yield text.replace(b'"line3"', b'"line\\ud8003"', 1)
    yield text.replace(b'"line3"', b'"line\\udc00\\ud8003"', 1)
    yield text.replace(b'"line3"', b'"\\u006cine3"', 1)
    yield text.replace(b'"line3"', b'"line3\\"', 1)
    yield text.replace(b'"line3"', b'"line3\x01"', 1)
    yield text.replace(b'"line3"', b'"line\\x33"', 1)
    yield text.replace(b":", b" : ")
    yield text.replace(b'"event_id"', b"'event_id'", 1)
    yield text.replace(b"null", b"None", 1)
    yield text.replace(b"true", b"True", 1)
    yield text.replace(b"false", b"FALSE", 1)
    yield text.replace(b"}]", b"},]", 1)
    yield text.replace(b"]", b"", 1)
    for cut in range(0, len(text), 37):
        yield text[:cut]
    # Random byte edits of the text.
    rng = random.Random(6)
    alphabet = b'{}[]":,.-+0123456789eEtrufalsn\\ \xff\x00'
    for _ in range(3000):
        b = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                b[i] = rng.choice(alphabet)
            elif op < 0.7:
                b.insert(i, rng.choice(alphabet))
            else:
                del b[i]
        yield bytes(b)


def test_every_valid_batch_takes_the_fast_path_with_the_same_values() -> None:
    tally = Tally()
    for data in VALID:
        assert tally.check(data) == (True, True), data[:300]
    assert len(VALID) > 30


def test_the_fast_decoder_never_accepts_what_pydantic_refuses() -> None:
    tally = Tally()
    for data in _mutations():
        tally.check(data)
    counts = tally.counts
    # The corpus exercised all three outcomes, in numbers: refused by both, accepted by
    # both with the same values, and lax forms only pydantic accepts (the fallback's work).
    assert counts[(False, False)] > 3000, counts
    assert counts[(True, True)] > 200, counts
    assert counts[(False, True)] > 100, counts
    assert counts[(True, False)] == 0  # (check() already failed on the first)


@pytest.mark.parametrize(
    "stamp",
    ["2026-11-02T06:00:00.1234567Z", "2026-11-02T06:00:00.9999999+01:00"],
)
def test_a_fraction_finer_than_microseconds_is_left_to_pydantic(stamp: str) -> None:
    """msgspec rounds the seventh digit, pydantic truncates: the fast path stays out."""
    doc = _set(BASE, ("records", 1, "occurred_at"), stamp)
    assert Tally().check(_dumps(doc)) == (False, True)


def test_an_override_or_a_kpi_sample_is_left_to_pydantic() -> None:
    run = production_run([Profile(parts=10, overrides=2)])
    others = [e for _, e in run.messages if not isinstance(e, InferenceBatchV1)]
    assert others
    for event in others:
        assert Tally().check(event.model_dump_json().encode()) == (False, True)


# ----------------------------------------------------------------------- the ingest with it


def _calendar() -> ShiftCalendar:
    return ShiftCalendar(("06:00", "14:00", "22:00"), ("early", "late", "night"), "UTC")


def _fetch() -> list[Incoming]:
    """A fetch of everything at once: batches, overrides, KPI samples, a duplicate, lax forms,
    refusals, wrong subjects, a model swap inside a batch."""
    run = production_run(day(STABLE), batch=100)
    msgs = [Incoming(subject, event.model_dump_json().encode()) for subject, event in run.messages]
    subject = Subjects.telemetry("line3", "cam-3-1")

    def variant(n: int, path: tuple[Any, ...], value: Any) -> bytes:
        return _dumps(_set(_set(BASE, ("event_id",), f"variant-{n}"), path, value))

    swap = InferenceBatchV1(
        line="line3",
        device_id="cam-3-1",
        event_id="swap",
        records=[_record(j, version="2.1.0" if j < 3 else "2.0.4") for j in range(6)],
    )
    override = OverrideV1(
        line="line3",
        device_id="cam-3-1",
        record_id="r-1",
        camera="cam0",
        model="weld-seam-inspector",
        version="2.1.0",
        original_decision="reject",
        decision="pass",
        reason_code="false_reject",
        rationale="re-measured",
    )
    msgs += [
        Incoming(subject, swap.model_dump_json().encode()),
        # Lax forms only pydantic takes: counted all the same.
        Incoming(subject, variant(1, ("records", 0, "confidence"), "0.75")),
        Incoming(
            subject, variant(2, ("records", 1, "occurred_at"), "2026-11-02T07:00:00.1234567Z")
        ),
        # Refused: dead letters.
        Incoming(subject, variant(3, ("records", 0, "decision"), "PASS")),
        Incoming(subject, variant(4, ("records", 0, "extra"), 1)),
        Incoming(subject, b"{not json"),
        Incoming(Subjects.telemetry("line3", "cam-3-2"), variant(5, ("line",), "line3")),
        Incoming("linegate.telemetry.line3", variant(6, ("line",), "line3")),
        msgs[0],  # the same event twice in one fetch
        Incoming(subject, _dumps(BASE)),
        Incoming(subject, override.model_dump_json().encode()),
    ]
    return [Incoming(m.subject, m.data, i + 1) for i, m in enumerate(msgs)]


def _comparable(prepared: Any) -> dict[str, Any]:
    sums = prepared.sums
    return {
        "keys": prepared.keys,
        "skipped": prepared.skipped,
        "fresh": prepared.fresh,
        "windows": sums.windows,
        "cameras": sums.cameras,
        "kpis": sums.kpis,
        "meta": sums.meta,
        "log": [{k: v for k, v in r.items() if k != "recorded_at"} for r in prepared.log_rows],
        "dead": [{k: v for k, v in r.items() if k != "received_at"} for r in prepared.dead_rows],
        "out": asdict(prepared.out),
    }


async def test_the_ingest_prepares_a_fetch_alike_with_and_without_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    msgs = _fetch()
    ingest = TelemetryIngest(cast(Any, None), _calendar())
    calls: list[bytes] = []

    def counting(data: bytes) -> DecodedBatch | None:
        calls.append(data)
        return decode_batch(data)

    monkeypatch.setattr(ingest_module, "decode_batch", counting)
    fast = _comparable(await ingest.prepare(msgs))
    took = sum(decode_batch(m.data) is not None for m in msgs)
    monkeypatch.setattr(ingest_module, "decode_batch", lambda data: None)
    slow = _comparable(await ingest.prepare(msgs))
    assert len(calls) == len(msgs)
    assert took > len(msgs) // 2  # most of the fetch really went the fast way
    assert fast == slow
    out = fast["out"]
    assert out["duplicates"] == 1
    assert sorted(c for c, _ in out["dead_letters"]) == [
        "invalid",
        "invalid",
        "not_json",
        "subject",
        "subject",
    ]
    inferences = sum(w[0] for w in fast["windows"].values())
    assert inferences == 1800 + 6 + 3 * len(BASE["records"])
    # The device's text goes to the log verbatim; the swap batch in one row per version.
    assert msgs[0].data.decode() in [r["payload"] for r in fast["log"]]
    assert [r["version"] for r in fast["log"] if r["event_id"] == "swap"] == ["2.1.0", "2.0.4"]
