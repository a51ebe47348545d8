"""The golden set in memory (:class:`GoldenSet`) and on disk, and the package's one error.

:func:`load_golden_set` and :func:`save_golden_set` read and write the ``.npz`` format described
in :mod:`registry.golden`; :class:`GoldenSetError` is raised for bad data, policies and models.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

_T = TypeVar("_T", bound=np.generic)


class GoldenSetError(Exception):
    """The golden set, the policy or a model cannot be used; the message says what to fix."""


@dataclass(frozen=True, eq=False)  # arrays have no truth value, so no field-wise __eq__
class GoldenSet:
    """Validated, read-only golden data: ``inputs[i]`` is expected to be ``labels[i]``.

    Build one with :meth:`from_arrays` (which converts dtypes) or :func:`load_golden_set`;
    constructing it directly checks the same invariants but converts nothing.
    """

    inputs: NDArray[np.float32]
    labels: NDArray[np.int64]
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        inputs, labels, names = self.inputs, self.labels, self.label_names
        if not isinstance(inputs, np.ndarray) or inputs.dtype != np.float32:
            raise GoldenSetError("inputs must be a float32 array; use GoldenSet.from_arrays")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
            raise GoldenSetError("labels must be an int64 array; use GoldenSet.from_arrays")
        if inputs.ndim < 2:
            raise GoldenSetError(
                f"inputs must have shape (N, ...) with one model input per sample, "
                f"got shape {inputs.shape}"
            )
        if labels.ndim != 1:
            raise GoldenSetError(f"labels must have shape (N,), got shape {labels.shape}")
        if len(inputs) != len(labels):
            raise GoldenSetError(
                f"inputs has {len(inputs)} samples but labels has {len(labels)}; "
                f"give exactly one label per input"
            )
        if len(labels) == 0:
            raise GoldenSetError("the golden set is empty; add at least one sample per class")
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise GoldenSetError(f"label_names must be unique non-empty strings, got {names!r}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= len(names):
            bad = low if low < 0 else high
            raise GoldenSetError(
                f"label {bad} is out of range for {len(names)} label names {names!r}; "
                f"labels must be in [0, {len(names)})"
            )
        finite = np.isfinite(inputs).reshape(len(inputs), -1).all(axis=1)
        if not finite.all():
            raise GoldenSetError(
                f"{int((~finite).sum())} input(s) contain NaN or infinity "
                f"(first at sample {int(np.argmin(finite))}); remove or repair them"
            )
        present = np.unique(labels)
        if len(names) < 2 or present.size < 2:
            only = ", ".join(repr(names[i]) for i in present)
            raise GoldenSetError(
                f"the golden set holds only class {only}; it needs samples of at least "
                f"2 classes to measure precision and recall"
            )
        # Read-only views: the caller's arrays keep their own flags.
        object.__setattr__(self, "inputs", _read_only(inputs))
        object.__setattr__(self, "labels", _read_only(labels))

    @classmethod
    def from_arrays(
        cls, inputs: ArrayLike, labels: ArrayLike, label_names: Sequence[str] | None = None
    ) -> GoldenSet:
        """Convert (float or uint8 inputs to float32, integer labels to int64) and validate."""
        x = np.asarray(inputs)
        if x.dtype.kind != "f" and x.dtype != np.uint8:
            raise GoldenSetError(
                f"inputs must be float32 or uint8, got {x.dtype}; convert them with "
                f".astype(np.float32)"
            )
        y = np.asarray(labels)
        if y.dtype.kind not in "iu":
            raise GoldenSetError(
                f"labels must be integers (class indices), got {y.dtype}; map class names to "
                f"indices and pass the names as label_names"
            )
        if label_names is None:
            count = int(y.max()) + 1 if y.size and y.ndim == 1 and y.max() >= 0 else 0
            label_names = [f"class_{i}" for i in range(count)]
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, refused below
            return cls(
                np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), tuple(label_names)
            )

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.labels)


def _read_only(array: NDArray[_T]) -> NDArray[_T]:
    view = array.view()
    view.flags.writeable = False
    return view


def load_golden_set(path: Path, *, max_samples: int = 100_000) -> GoldenSet:
    """Load and validate the golden set at ``path`` (format in :mod:`registry.golden`).

    Array headers are read before the arrays, so an oversized set (more than ``max_samples``)
    or an object array is refused without being decompressed. Raises :class:`GoldenSetError`.
    """
    path = Path(path)
    if not path.is_file():
        raise GoldenSetError(f"golden set {path} does not exist; give the path of its .npz file")
    if not zipfile.is_zipfile(path):
        raise GoldenSetError(
            f"golden set {path} is not a NumPy .npz archive (not a zip file); write it with "
            f"save_golden_set or numpy.savez"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise GoldenSetError(f"golden set {path} is not a NumPy .npz archive")
            missing = [key for key in ("inputs", "labels") if key not in npz.files]
            if missing:
                raise GoldenSetError(
                    f"golden set {path} lacks the array(s) {', '.join(missing)}; it needs "
                    f"'inputs' and 'labels' (and optionally 'label_names')"
                )
            keys = [key for key in ("inputs", "labels", "label_names") if key in npz.files]
            for key in keys:
                _check_header(npz, key, path, max_samples)
            arrays = {key: _load_array(npz, key, path) for key in keys}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
        raise GoldenSetError(
            f"golden set {path} cannot be read as a .npz archive ({e}); rewrite it with "
            f"save_golden_set"
        ) from e
    names = arrays.get("label_names")
    if names is not None and (names.dtype.kind != "U" or names.ndim != 1):
        raise GoldenSetError(
            f"golden set {path}: label_names must be a 1-D unicode string array, got "
            f"{names.dtype} of shape {names.shape}"
        )
    try:
        return GoldenSet.from_arrays(
            arrays["inputs"], arrays["labels"], None if names is None else names.tolist()
        )
    except GoldenSetError as e:
        raise GoldenSetError(f"golden set {path}: {e}") from None


def _check_header(npz: np.lib.npyio.NpzFile, key: str, path: Path, max_samples: int) -> None:
    assert npz.zip is not None  # set while the archive is open
    member_name = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
    with npz.zip.open(member_name) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:  # version 3 headers are rare; np.load checks those arrays below
                return
        except ValueError as e:
            raise GoldenSetError(f"golden set {path}: array '{key}' is not valid .npy") from e
    if dtype.hasobject:
        raise GoldenSetError(_pickled(path, key))
    if key != "label_names" and shape and shape[0] > max_samples:
        raise GoldenSetError(
            f"golden set {path} has {shape[0]} samples, more than max_samples={max_samples}; "
            f"use a smaller set or raise the limit"
        )


def _load_array(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> NDArray[Any]:
    try:
        array: NDArray[Any] = npz[key]
    except ValueError as e:  # numpy's refusal of object arrays under allow_pickle=False
        raise GoldenSetError(_pickled(path, key)) from e
    return array


def _pickled(path: Path, key: str) -> str:
    return (
        f"golden set {path}: array '{key}' holds pickled Python objects, which are refused; "
        f"store numbers, and names as a unicode string array"
    )


def save_golden_set(
    path: Path, inputs: ArrayLike, labels: ArrayLike, label_names: Sequence[str] | None = None
) -> None:
    """Validate and write a golden set that :func:`load_golden_set` reads back unchanged.

    uint8 inputs are stored as uint8 (compact); any other inputs as float32. The file is
    written at exactly ``path`` (numpy would otherwise append ``.npz``).
    """
    golden = GoldenSet.from_arrays(inputs, labels, label_names)
    raw = np.asarray(inputs)
    stored = raw if raw.dtype == np.uint8 else golden.inputs
    path = Path(path)
    with path.open("wb") as f:
        np.savez_compressed(
            f, inputs=stored, labels=golden.labels, label_names=np.array(golden.label_names)
        )
