"""A fast decoder for the one message that comes by the thousand: ``InferenceBatchV1``.

The pydantic models in :mod:`linegate.events` are the contract and stay the only judge of
what is valid. This module mirrors ``InferenceBatchV1``, ``InferenceRecordV1``,
``InputStatsV1`` and ``ShadowResultV1`` field for field as msgspec structs, which decode a
device's batch several times faster, but it accepts only a strict subset of what pydantic
accepts and gives the same values for it. Whatever it does not accept (:func:`decode_batch`
returns None) goes to pydantic, which either accepts it in one of its lax forms or says why
it is refused. Narrower than the models on purpose:

- ``event_id``, ``occurred_at`` and ``kind`` are required (pydantic fills in the first two
  itself; only its values are taken then);
- numbers are JSON numbers of their type: no numeric strings, no ``NaN``/``Infinity``, no
  float that overflows, no integer beyond 64 bits, no ``1.0`` for an int;
- datetimes are RFC 3339 strings with at most six fractional digits (msgspec rounds a seventh
  digit where pydantic truncates it; the value must be the same);
- booleans are JSON booleans.

``tests/incident/test_telemetry_fast_decode.py`` runs both over valid and mutated messages
and asserts the fast decoder never accepts what pydantic refuses and agrees on every value.

Example::

    decoded = decode_batch(msg.data)
    if decoded is None:
        event = parse(msg)  # pydantic: the lax forms, or the dead-letter reason
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

_Decision = Literal["pass", "reject", "manual_inspection"]

# gc=False: these hold only strings, numbers and each other (never a cycle), and a batch
# allocates a few hundred of them; untracked, they do not drive the cyclic collector.


class InputStats(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``InputStatsV1``."""

    brightness: float
    contrast: float
    sharpness: float


class ShadowResult(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """``ShadowResultV1``."""

    model: str
    version: str
    decision: _Decision
    label: str | None = None
    confidence: float | None = None
    agrees: bool
    latency_ms: float


class InferenceRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """``InferenceRecordV1``, but ``occurred_at`` is the string as sent (checked and parsed by
    :func:`decode_batch` into :attr:`DecodedBatch.times`)."""

    record_id: str
    occurred_at: str
    camera: str
    decision: _Decision
    reason: str | None = None
    label: str | None = None
    confidence: float | None = None
    model: str | None = None
    version: str | None = None
    threshold: float
    stats: InputStats
    latency_ms: float
    shadow: ShadowResult | None = None
    control_incident_id: str | None = None


class InferenceBatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``InferenceBatchV1`` with ``event_id``, ``occurred_at`` and ``kind`` required."""

    event_id: str
    occurred_at: str
    actor: str | None = None
    kind: Literal["telemetry.inference_batch.v1"]
    line: str
    device_id: str
    records: list[InferenceRecord]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch: InferenceBatch
    #: The batch's ``occurred_at``.
    occurred_at: datetime
    #: The records' ``occurred_at``, in order.
    times: list[datetime]

    @property
    def event_id(self) -> str:
        return self.batch.event_id


_DECODER = msgspec.json.Decoder(InferenceBatch)
#: A fraction of a second longer than microseconds (msgspec takes only "." before one). The
#: literal first character keeps the search a fast scan.
_LONG_FRACTION = re.compile(r"\.\d{7}")


def decode_batch(data: bytes) -> DecodedBatch | None:
    """``data`` as an inference batch, or None if it is anything else or anything this
    decoder is stricter about than pydantic (then ask :func:`incident.telemetry.ingest.parse`)."""
    try:
        batch = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    stamps = [r.occurred_at for r in batch.records]
    stamps.append(batch.occurred_at)
    if _LONG_FRACTION.search("|".join(stamps)) is not None:
        return None
    try:
        times = msgspec.convert(stamps, list[datetime])
    except msgspec.ValidationError:
        return None
    return DecodedBatch(batch, times.pop(), times)
