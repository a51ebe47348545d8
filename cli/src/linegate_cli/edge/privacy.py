"""On-device privacy: raw images stay on the device; only redacted evidence leaves it, on demand.

- :class:`RedactionMask` is a camera's redaction polygons (e.g. where operators stand),
  rasterised with numpy by the even-odd rule at the pixel centres. :func:`load_mask_config`
  reads ``{camera: [polygon, ...]}`` from JSON.
- :func:`redact` returns a copy of an image (HW, CHW, HWC, NCHW or NHWC) with every masked
  pixel blanked in every channel; the input is never modified.
- :class:`EvidenceStore` keeps raw images and their inference records in the device's state
  directory, bounded by count and bytes (the oldest is evicted first). There is no streaming
  or listing of pixels: the only way an image leaves is :meth:`EvidenceStore.export`, an
  event-driven upload of one record that was rejected or attached to an incident, redacted with
  its camera's mask. Telemetry carries :meth:`InferenceRecord.reference`, never pixels.

Example::

    masks = load_mask_config(Path("/etc/linegate/masks.json"))
    store = EvidenceStore(state_dir / "evidence", masks=masks)
    record = store.record(image, camera="cam-1", decision="reject", explanation=saliency)
    telemetry["evidence"] = record.reference()       # ids and digests only
    upload = store.export(record.record_id, reason="reject")   # when the record is requested
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("linegate.edge.privacy")

Point = tuple[float, float]
Units = Literal["pixel", "normalised", "auto"]
Layout = Literal["HW", "CHW", "HWC", "NCHW", "NHWC"]

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHANNEL_COUNTS = (1, 3, 4)


class PrivacyError(Exception):
    """A redaction or evidence operation that cannot be done safely; the message says why."""


class ExportRefused(PrivacyError):
    """An export the device will not make: images leave only for rejects and incidents."""


# ------------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class RedactionMask:
    """The redaction polygons of one camera.

    Coordinates are ``(x, y)``: x along the columns, y along the rows. In ``pixel`` units pixel
    ``(row, col)`` spans ``[col, col + 1) x [row, row + 1)`` and is masked when its centre lies
    inside a polygon (even-odd rule; polygons are unioned). ``normalised`` coordinates are
    fractions of the width and height, so one mask fits every resolution of the camera.
    ``auto`` reads a mask as normalised when every coordinate lies in ``[0, 1]``: a pixel polygon
    that small covers at most one pixel, and the misreading, if any, redacts more, never less.
    """

    polygons: tuple[tuple[Point, ...], ...]
    units: Literal["pixel", "normalised"] = "pixel"
    _cache: dict[tuple[int, int], NDArray[np.bool_]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_polygons(
        cls, polygons: Iterable[Sequence[Sequence[float]]], *, units: Units = "auto"
    ) -> RedactionMask:
        """A mask from ``[[(x, y), ...], ...]``; each polygon needs at least three vertices."""
        parsed: list[tuple[Point, ...]] = []
        for i, polygon in enumerate(polygons):
            vertices: list[Point] = []
            for vertex in polygon:
                if len(vertex) != 2:
                    raise PrivacyError(f"polygon {i}: vertex {vertex!r} is not an (x, y) pair")
                x, y = float(vertex[0]), float(vertex[1])
                if not (math.isfinite(x) and math.isfinite(y)):
                    raise PrivacyError(f"polygon {i}: vertex {vertex!r} is not finite")
                vertices.append((x, y))
            if len(vertices) < 3:
                raise PrivacyError(f"polygon {i} has {len(vertices)} vertices; it needs 3 or more")
            parsed.append(tuple(vertices))
        if units != "auto":
            return cls(tuple(parsed), units)
        coords = [c for polygon in parsed for vertex in polygon for c in vertex]
        small = bool(coords) and all(0.0 <= c <= 1.0 for c in coords)
        return cls(tuple(parsed), "normalised" if small else "pixel")

    @classmethod
    def empty(cls) -> RedactionMask:
        """No redaction: a camera that is configured on purpose to mask nothing."""
        return cls(())

    def rasterise(self, height: int, width: int) -> NDArray[np.bool_]:
        """The ``(height, width)`` boolean mask, True where pixels are blanked (read-only)."""
        key = (int(height), int(width))
        cached = self._cache.get(key)
        if cached is None:
            cached = np.zeros(key, dtype=bool)
            for polygon in self.polygons:
                cached |= _even_odd(polygon, *key, normalised=self.units == "normalised")
            cached.setflags(write=False)
            self._cache[key] = cached
        return cached


def _even_odd(
    polygon: Sequence[Point], height: int, width: int, *, normalised: bool
) -> NDArray[np.bool_]:
    """Pixels whose centre is inside ``polygon`` by the even-odd rule.

    A pixel is inside when a ray from its centre towards +x crosses an odd number of edges. An
    edge crossing row ``r`` at ``x`` is crossed by the rays of the first ``ceil(x - 0.5)`` pixels
    of the row, so per edge one count goes into a histogram at that column and a reverse cumulative
    sum gives every pixel's crossing count: O(edges x rows + rows x cols), no per-pixel loop.
    """
    xs = np.array([p[0] for p in polygon], dtype=np.float64)
    ys = np.array([p[1] for p in polygon], dtype=np.float64)
    if normalised:
        xs, ys = xs * width, ys * height
    centres_y = np.arange(height, dtype=np.float64) + 0.5
    crossings = np.zeros((height, width + 1), dtype=np.int32)
    for x1, y1, x2, y2 in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1), strict=True):
        # Half-open in y so a vertex shared by two edges is counted once; horizontal edges never.
        rows = np.nonzero((y1 > centres_y) != (y2 > centres_y))[0]
        if rows.size == 0:
            continue
        x_at = x1 + (centres_y[rows] - y1) * (x2 - x1) / (y2 - y1)
        cols = np.clip(np.ceil(x_at - 0.5), 0, width).astype(np.intp)
        np.add.at(crossings, (rows, cols), 1)
    # Pixel c is crossed by every edge whose first uncrossed column is beyond c.
    count = np.cumsum(crossings[:, ::-1], axis=1)[:, ::-1][:, 1:]
    inside: NDArray[np.bool_] = (count % 2) == 1
    return inside


def load_mask_config(path: Path) -> dict[str, RedactionMask]:
    """Per-camera masks from JSON: ``{camera: [polygon, ...]}`` with ``polygon = [[x, y], ...]``.

    A camera may instead map to ``{"units": "pixel" | "normalised", "polygons": [...]}`` to
    state its units; a bare list reads its units as ``auto`` (see :class:`RedactionMask`).
    A camera with nothing to hide is listed with ``[]``: an unlisted camera exports nothing.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PrivacyError(f"cannot read the redaction mask config {path}: {e}") from e
    if not isinstance(raw, dict):
        raise PrivacyError(f"{path}: expected an object {{camera: [polygons]}}")
    masks: dict[str, RedactionMask] = {}
    for camera, spec in raw.items():
        units: Any = "auto"
        polygons = spec
        if isinstance(spec, dict):
            units = spec.get("units", "auto")
            polygons = spec.get("polygons", [])
            if units not in ("pixel", "normalised", "auto"):
                raise PrivacyError(f"{path}: camera {camera!r} has unknown units {units!r}")
        if not isinstance(polygons, list):
            raise PrivacyError(f"{path}: camera {camera!r} must map to a list of polygons")
        try:
            masks[str(camera)] = RedactionMask.from_polygons(polygons, units=units)
        except (PrivacyError, TypeError, ValueError) as e:
            raise PrivacyError(f"{path}: camera {camera!r}: {e}") from e
    return masks


# ----------------------------------------------------------------------------- redaction


def infer_layout(shape: Sequence[int]) -> Layout:
    """The layout of an image of ``shape``, from where a 1, 3 or 4 channel axis sits.

    Raises :class:`PrivacyError` when the shape is ambiguous (e.g. ``3x3x3``): pass ``layout``.
    """
    if len(shape) == 2:
        return "HW"
    if len(shape) in (3, 4):
        first, last = shape[-3], shape[-1]
        channels_first = first in _CHANNEL_COUNTS and last not in _CHANNEL_COUNTS
        channels_last = last in _CHANNEL_COUNTS and first not in _CHANNEL_COUNTS
        if channels_first or channels_last:
            if len(shape) == 3:
                return "CHW" if channels_first else "HWC"
            return "NCHW" if channels_first else "NHWC"
    raise PrivacyError(f"cannot tell the layout of an image of shape {tuple(shape)}: pass layout")


def _spatial(shape: Sequence[int], layout: Layout) -> tuple[int, int, tuple[slice | None, ...]]:
    """Height, width, and the index that broadcasts an (H, W) mask over the image."""
    if len(shape) != len(layout):
        raise PrivacyError(f"an image of shape {tuple(shape)} is not {layout}")
    h, w = shape[layout.index("H")], shape[layout.index("W")]
    index = tuple(slice(None) if axis in "HW" else None for axis in layout)
    return h, w, index


def redact(
    image: NDArray[Any],
    mask: RedactionMask | NDArray[np.bool_],
    *,
    layout: Layout | None = None,
    fill: float = 0,
) -> NDArray[Any]:
    """A copy of ``image`` with every masked pixel set to ``fill`` in all channels.

    ``mask`` is a :class:`RedactionMask` (rasterised at the image's size) or an ``(H, W)``
    boolean array. ``layout`` defaults to :func:`infer_layout`. ``image`` is not modified.
    """
    image = np.asarray(image)
    layout = layout or infer_layout(image.shape)
    height, width, index = _spatial(image.shape, layout)
    pixels = mask.rasterise(height, width) if isinstance(mask, RedactionMask) else mask
    if pixels.shape != (height, width) or pixels.dtype != np.bool_:
        raise PrivacyError(
            f"the mask is {pixels.dtype} {pixels.shape}, the image {layout} is {height}x{width}"
        )
    out = image.copy()
    np.copyto(out, np.asarray(fill, dtype=image.dtype), where=pixels[index])
    return out


# ------------------------------------------------------------------------------ evidence


class SupportsAsDict(Protocol):
    """An explanation (saliency map, rule that fired) that stores itself as JSON."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class InferenceRecord:
    """What the device decided about one image, kept beside the raw image on the device."""

    record_id: str
    camera: str
    decision: str
    created_at: str
    image_sha256: str
    image_shape: tuple[int, ...]
    image_dtype: str
    layout: Layout
    model: str | None = None
    version: str | None = None
    incident_id: str | None = None
    explanation: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exportable(self) -> bool:
        """Only a reject or a record attached to an incident may leave the device."""
        return self.decision == "reject" or self.incident_id is not None

    def reference(self) -> dict[str, Any]:
        """What telemetry carries about this record: identifiers and a digest, no pixels."""
        return {
            "record_id": self.record_id,
            "camera": self.camera,
            "decision": self.decision,
            "image_sha256": self.image_sha256,
            "incident_id": self.incident_id,
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_shape"] = list(self.image_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceRecord:
        values = dict(data)
        values["image_shape"] = tuple(int(d) for d in values["image_shape"])
        return cls(**values)


@dataclass(frozen=True)
class EvidenceUpload:
    """One record as it leaves the device: redacted image, record and explanation."""

    record: dict[str, Any]
    #: The redacted image as ``.npy`` bytes (``numpy.load(io.BytesIO(...))``), never the raw one.
    image_npy: bytes
    image_sha256: str
    reason: str
    redacted_pixels: int
    exported_at: str

    @property
    def explanation(self) -> dict[str, Any] | None:
        explanation: dict[str, Any] | None = self.record.get("explanation")
        return explanation

    def image(self) -> NDArray[Any]:
        """The redacted image decoded (no pickles are ever loaded)."""
        array: NDArray[Any] = np.load(io.BytesIO(self.image_npy), allow_pickle=False)
        return array


_IMAGE = "image.npy"
_RECORD = "record.json"


class EvidenceStore:
    """Raw images and inference records on the device, bounded, exported only redacted.

    Each record is a folder ``records/<sequence>-<record_id>/`` with ``image.npy`` and
    ``record.json``, written to a temporary folder and renamed into place, so a crash leaves
    either the whole record or none. When more than ``max_records`` records or ``max_bytes``
    bytes are held, the oldest are deleted. Exports are appended to ``exports.jsonl``: the
    device's own account of every image that left it.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        masks: Mapping[str, RedactionMask],
        max_records: int = 1000,
        max_bytes: int = 1 << 30,
    ) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be positive")
        self.state_dir = Path(state_dir)
        self.masks = dict(masks)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records_dir = self.state_dir / "records"
        self._records_dir.mkdir(parents=True, exist_ok=True)
        self._index: OrderedDict[str, tuple[Path, int]] = OrderedDict()
        self._next_seq = 0
        self._load()

    def _load(self) -> None:
        entries: list[tuple[int, str, Path]] = []
        for folder in self._records_dir.iterdir():
            if folder.name.startswith(".tmp-"):
                shutil.rmtree(folder, ignore_errors=True)  # an interrupted write
                continue
            prefix, _, name = folder.name.partition("-")
            if prefix.isdigit() and (folder / _RECORD).is_file() and (folder / _IMAGE).is_file():
                entries.append((int(prefix), name, folder))
        for seq, record_id, folder in sorted(entries):
            self._index[record_id] = (folder, _folder_bytes(folder))
            self._next_seq = seq + 1
        self._evict()  # the bounds may have shrunk since the last run

    # ------------------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._index

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._index.values())

    def get(self, record_id: str) -> InferenceRecord:
        """The record (no pixels); :class:`KeyError` if it was never stored or was evicted."""
        folder, _ = self._index[record_id]
        return InferenceRecord.from_dict(json.loads((folder / _RECORD).read_text()))

    # ------------------------------------------------------------------------- writes

    def record(
        self,
        image: NDArray[Any],
        *,
        camera: str,
        decision: str,
        layout: Layout | None = None,
        record_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
        incident_id: str | None = None,
        explanation: SupportsAsDict | Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> InferenceRecord:
        """Keep ``image`` and what was decided about it; evict the oldest past the bounds."""
        image = np.ascontiguousarray(image)
        if image.dtype == object:
            raise PrivacyError("object arrays are not images")
        layout = layout or infer_layout(image.shape)
        _spatial(image.shape, layout)
        record_id = record_id or uuid.uuid4().hex
        if not _ID_RE.match(record_id):
            raise PrivacyError(f"record id {record_id!r} is not [A-Za-z0-9_-]{{1,64}}")
        if record_id in self._index:
            raise PrivacyError(f"record {record_id} is already stored")
        if explanation is not None and not isinstance(explanation, Mapping):
            explanation = explanation.as_dict()
        record = InferenceRecord(
            record_id=record_id,
            camera=camera,
            decision=decision,
            created_at=datetime.now(UTC).isoformat(),
            image_sha256=hashlib.sha256(image.tobytes()).hexdigest(),
            image_shape=tuple(int(d) for d in image.shape),
            image_dtype=str(image.dtype),
            layout=layout,
            model=model,
            version=version,
            incident_id=incident_id,
            explanation=dict(explanation) if explanation is not None else None,
            details=dict(details or {}),
        )
        npy = _npy_bytes(image)
        body = json.dumps(record.as_dict(), sort_keys=True).encode()
        if len(npy) + len(body) > self.max_bytes:
            raise PrivacyError(
                f"record {record_id} needs {len(npy) + len(body)} bytes; the store holds "
                f"{self.max_bytes}"
            )
        folder = self._records_dir / f"{self._next_seq:012d}-{record_id}"
        tmp = self._records_dir / f".tmp-{record_id}"
        tmp.mkdir()
        try:
            _write(tmp / _IMAGE, npy)
            _write(tmp / _RECORD, body)
            tmp.rename(folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._next_seq += 1
        self._index[record_id] = (folder, len(npy) + len(body))
        self._evict()
        return record

    def attach_incident(self, record_id: str, incident_id: str) -> InferenceRecord:
        """Mark a record as evidence of ``incident_id`` (which makes it exportable)."""
        record = self.get(record_id)
        updated = InferenceRecord.from_dict({**record.as_dict(), "incident_id": incident_id})
        folder, _ = self._index[record_id]
        tmp = folder / (_RECORD + ".tmp")
        _write(tmp, json.dumps(updated.as_dict(), sort_keys=True).encode())
        tmp.replace(folder / _RECORD)
        self._index[record_id] = (folder, _folder_bytes(folder))
        return updated

    def _evict(self) -> None:
        while len(self._index) > self.max_records or self.total_bytes > self.max_bytes:
            record_id, (folder, _) = self._index.popitem(last=False)
            shutil.rmtree(folder, ignore_errors=True)
            log.info("evicted evidence record", extra={"record_id": record_id})

    # ------------------------------------------------------------------------- export

    def export(self, record_id: str, reason: str) -> EvidenceUpload:
        """One record for an event-driven upload, its image redacted with its camera's mask.

        Refused (:class:`ExportRefused`) unless the decision was ``reject`` or the record is
        attached to an incident, when no mask is configured for the camera, or without a
        ``reason``. Each export is logged on the device in ``exports.jsonl``.
        """
        if not reason.strip():
            raise ExportRefused("an export needs a reason (the reject or incident it serves)")
        try:
            record = self.get(record_id)
        except KeyError as e:
            raise ExportRefused(f"record {record_id} is not on this device") from e
        if not record.exportable:
            raise ExportRefused(
                f"record {record_id} was a {record.decision!r} with no incident: images leave "
                "the device only for rejects and incidents"
            )
        mask = self.masks.get(record.camera)
        if mask is None:
            raise ExportRefused(
                f"no redaction mask is configured for camera {record.camera!r}; list it (with [] "
                "if it has nothing to hide) before its images can leave the device"
            )
        folder, _ = self._index[record_id]
        raw = np.load(folder / _IMAGE, allow_pickle=False)
        redacted = redact(raw, mask, layout=record.layout)
        height, width, _ = _spatial(raw.shape, record.layout)
        npy = _npy_bytes(redacted)
        upload = EvidenceUpload(
            record=record.as_dict(),
            image_npy=npy,
            image_sha256=hashlib.sha256(npy).hexdigest(),
            reason=reason,
            redacted_pixels=int(mask.rasterise(height, width).sum()),
            exported_at=datetime.now(UTC).isoformat(),
        )
        line = {
            "record_id": record_id,
            "reason": reason,
            "image_sha256": upload.image_sha256,
            "redacted_pixels": upload.redacted_pixels,
            "exported_at": upload.exported_at,
        }
        with (self.state_dir / "exports.jsonl").open("a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
        return upload


def _npy_bytes(array: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
