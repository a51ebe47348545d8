"""The installed model behind a typed surface, the input statistics and the fail-safe decision.

:class:`ModelRunner` serves whatever ``<state_dir>/current`` points at. The agent swaps that
symlink in one rename (see :mod:`linegate_cli.agent`), so each request checks the link target
with one ``readlink`` and, when it changed, loads the new folder completely before it replaces
the old session; requests in flight finish on the session they started with.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from linegate_cli.agent import CONTROL_FILE, MODEL_FILE, AgentState

log = logging.getLogger("linegate.edge.inference")

Outcome = Literal["pass", "reject", "manual_inspection"]

PREPROCESS_FILE = "preprocess.json"
DEFAULT_CONFIDENCE_THRESHOLD = 0.8
#: After a failed load of a folder, try it again at most this often (not on every request).
RELOAD_RETRY_S = 5.0

_ORT_DTYPES: Mapping[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


class InferenceError(Exception):
    """Base of the runner's errors."""


class NoActiveModel(InferenceError):
    """No verified model can serve: none installed, or the installed one does not load."""


class InvalidImage(InferenceError):
    """The image does not fit the active model's input (the caller's fault)."""


class ModelFailed(InferenceError):
    """The model ran but its output cannot be trusted (an error, non-finite values)."""


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    model: str
    version: str
    #: The label that means "part is good"; every other label is a defect.
    good_label: str
    #: The model's own ``confidence_threshold`` (preprocess.json, default 0.8).
    threshold: float


@dataclass(frozen=True)
class ActiveModel:
    """What is being served, for ``/v1/status`` and the records."""

    model: str
    version: str
    folder: Path
    labels: tuple[str, ...]
    good_label: str
    threshold: float
    layout: str
    #: Input shape after the batch dimension; ``None`` where the model accepts any size.
    input_shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True)
class Control:
    """An approved incident's order the agent verified (``control.json``)."""

    mode: Literal["automatic", "manual_inspection"]
    threshold: float | None
    incident_id: str
    reason: str


class ControlFile:
    """Reads ``<state_dir>/control.json`` when it changed (one ``stat`` per call).

    An unreadable file is read as manual inspection: an order the device cannot read must not
    turn back into automatic decisions.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / CONTROL_FILE
        self._seen: tuple[int, int] | None = None
        self._control: Control | None = None

    def current(self) -> Control | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._control = None, None
            return None
        key = (st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._control, self._seen = self._read(), key
        return self._control

    def _read(self) -> Control:
        try:
            raw = json.loads(self.path.read_text())
            threshold = raw.get("threshold")
            return Control(
                mode="manual_inspection" if raw["mode"] == "manual_inspection" else "automatic",
                threshold=None if threshold is None else float(threshold),
                incident_id=str(raw["incident_id"]),
                reason=str(raw.get("reason", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.exception("control.json unreadable: failing safe", extra={"error": str(e)})
            return Control("manual_inspection", None, "unknown", f"control.json unreadable: {e}")


@dataclass(frozen=True)
class _Loaded:
    target: str
    active: ActiveModel
    session: Any  # onnxruntime.InferenceSession (untyped)
    input_name: str
    output_name: str
    dtype: type[np.floating[Any]]
    batch: int | None


class ModelRunner:
    """Runs ``<state_dir>/current/model.onnx`` with onnxruntime on the CPU.

    ``good_label`` (agent configuration) overrides preprocess.json's ``good_label``, which
    defaults to ``labels[0]``. Thread-safe: :meth:`predict` may be called from worker threads.
    """

    def __init__(
        self, state_dir: Path, *, good_label: str | None = None, link: str = "current"
    ) -> None:
        self.state_dir = Path(state_dir)
        self.good_label = good_label
        #: ``current`` (the active model) or ``shadow`` (a candidate the agent runs beside it).
        self.link = link
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._failed: tuple[str, str, float] | None = None  # target, error, when

    @property
    def current(self) -> Path:
        return self.state_dir / self.link

    def active(self) -> ActiveModel:
        """The model that serves the next request; :class:`NoActiveModel` if there is none."""
        return self._model().active

    def predict(self, image: NDArray[np.floating[Any]]) -> Prediction:
        """Classify one image given in the model's layout without the batch dimension (a
        leading batch of 1 is accepted), in the units the model is fed (preprocess.json
        describes them; the registry's golden set is validated on the same tensors)."""
        loaded = self._model()
        x = _fit(image, loaded)
        try:
            outputs = loaded.session.run([loaded.output_name], {loaded.input_name: x})
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise ModelFailed(f"onnxruntime failed: {e}") from e
        scores = np.asarray(outputs[0], dtype=np.float64)
        labels = loaded.active.labels
        if scores.ndim == 2:
            scores = scores[0]
        if scores.shape != (len(labels),) or not np.all(np.isfinite(scores)):
            raise ModelFailed(
                f"output {loaded.output_name!r} has shape {scores.shape} or non-finite values; "
                f"expected {len(labels)} finite class scores"
            )
        probabilities = _as_probabilities(scores)
        best = int(probabilities.argmax())
        active = loaded.active
        return Prediction(
            label=labels[best],
            confidence=float(probabilities[best]),
            probabilities={label: float(p) for label, p in zip(labels, probabilities, strict=True)},
            model=active.model,
            version=active.version,
            good_label=active.good_label,
            threshold=active.threshold,
        )

    # ------------------------------------------------------------------------- loading

    def _model(self) -> _Loaded:
        target = self._target()
        loaded = self._loaded
        if loaded is not None and loaded.target == target:
            return loaded
        with self._lock:
            loaded = self._loaded
            if loaded is not None and loaded.target == target:
                return loaded  # another thread loaded it while we waited
            failed = self._failed
            if (
                failed is not None
                and failed[0] == target
                and time.monotonic() - failed[2] < RELOAD_RETRY_S
            ):
                raise NoActiveModel(failed[1])
            try:
                new = self._load(target)
            except NoActiveModel as e:
                self._loaded = None  # never keep serving a model the agent swapped away
                self._failed = (target, str(e), time.monotonic())
                log.exception("the installed model does not load", extra={"error": str(e)})
                raise
            self._loaded, self._failed = new, None  # one assignment: old or new, never half
            log.info(
                "serving model",
                extra={"model": new.active.model, "version": new.active.version},
            )
            return new

    def _target(self) -> str:
        try:
            return str(self.current.readlink())
        except FileNotFoundError:
            self._loaded = None
            raise NoActiveModel("no verified model is active") from None
        except OSError:  # not a symlink: a folder put there by hand still identifies itself
            if self.current.is_dir():
                return str(self.current.resolve())
            raise NoActiveModel(f"{self.current} is neither a model folder nor a link") from None

    def _load(self, target: str) -> _Loaded:
        # Load from the link's target, not through ``current``: a second swap during the load
        # cannot give us one release's model with another's preprocess.json.
        folder = Path(target) if Path(target).is_absolute() else self.state_dir / target
        try:
            config = json.loads((folder / PREPROCESS_FILE).read_text())
            return self._session(target, folder, config)
        except NoActiveModel:
            raise
        except Exception as e:  # a broken install must route to manual inspection, not crash
            raise NoActiveModel(f"the installed model in {folder} cannot be loaded: {e}") from e

    def _session(self, target: str, folder: Path, config: Any) -> _Loaded:
        import onnxruntime as ort  # type: ignore[import-untyped]

        if not isinstance(config, dict):
            raise NoActiveModel(f"{PREPROCESS_FILE} in {folder} is not a JSON object")
        labels = tuple(str(label) for label in config.get("labels") or ())
        if not labels:
            raise NoActiveModel(f"{PREPROCESS_FILE} in {folder} lists no labels")
        good_label = self.good_label or str(config.get("good_label") or labels[0])
        if good_label not in labels:
            raise NoActiveModel(
                f"good label {good_label!r} is not one of the model's labels {list(labels)}"
            )
        threshold = float(config.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD))
        if not 0.0 < threshold <= 1.0:
            raise NoActiveModel(f"confidence_threshold {threshold} is not in (0, 1]")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's warnings would flood the device log
        session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        input_name = str(config.get("input") or next(iter(inputs)))
        output_name = str(config.get("output") or session.get_outputs()[0].name)
        if input_name not in inputs or output_name not in outputs:
            raise NoActiveModel(
                f"{PREPROCESS_FILE} names input {input_name!r} / output {output_name!r}; the "
                f"model has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
            )
        spec = inputs[input_name]
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None:
            raise NoActiveModel(f"input {input_name!r} is {spec.type}; a float tensor is needed")
        dims = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        if len(dims) < 2:
            raise NoActiveModel(f"input {input_name!r} has no batch dimension: {spec.shape}")
        model, version = self._names(folder)
        return _Loaded(
            target=target,
            active=ActiveModel(
                model=model,
                version=version,
                folder=folder,
                labels=labels,
                good_label=good_label,
                threshold=threshold,
                layout=str(config.get("layout") or "NCHW"),
                input_shape=tuple(dims[1:]),
            ),
            session=session,
            input_name=input_name,
            output_name=output_name,
            dtype=dtype,
            batch=dims[0],
        )

    def _names(self, folder: Path) -> tuple[str, str]:
        """Model and version: the agent's active entry when it names this folder's slot
        (``slots/<model>@<version>/<model>``), else the slot's name itself (the agent swaps the
        link before it writes state.json), else the folder name and "unknown"."""
        slot = folder.parent.name
        try:
            active = AgentState.load(self.state_dir / "state.json").active
        except (OSError, ValueError, TypeError) as e:
            log.warning(
                "state.json unreadable; naming the model by its folder", extra={"error": str(e)}
            )
            active = None
        if active is not None and active.slot == slot:
            return active.model, active.version
        model, sep, version = slot.partition("@")
        if sep and model and version:
            return model, version
        return folder.name, "unknown"


def _fit(image: NDArray[np.floating[Any]], loaded: _Loaded) -> NDArray[Any]:
    """``image`` as a batch the model accepts, or :class:`InvalidImage` saying what it wants."""
    want = loaded.active.input_shape
    shape = image.shape[1:] if image.ndim == len(want) + 1 and image.shape[0] == 1 else image.shape
    fits = len(shape) == len(want) and all(
        w is None or w == g for w, g in zip(want, shape, strict=True)
    )
    if not fits:
        wanted = "x".join("?" if w is None else str(w) for w in want)
        raise InvalidImage(
            f"image shape {list(image.shape)} does not fit model input {wanted} "
            f"({loaded.active.layout} without the batch dimension, a leading 1 allowed)"
        )
    x = np.asarray(image, dtype=loaded.dtype).reshape((1, *shape))
    if loaded.batch is not None and loaded.batch > 1:  # exported with a fixed batch: pad it
        x = np.repeat(x, loaded.batch, axis=0)
    return x


def _as_probabilities(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scores that already form a distribution are kept; anything else (logits) is softmaxed."""
    if np.all(scores >= 0) and abs(float(scores.sum()) - 1.0) < 1e-3:
        return scores
    shifted = np.exp(scores - scores.max())
    result: NDArray[np.float64] = shifted / shifted.sum()
    return result


# ---------------------------------------------------------------------- input statistics


def input_stats(image: NDArray[np.floating[Any]], layout: str = "NCHW") -> dict[str, float]:
    """Cheap per-image statistics for input-drift monitoring (numpy only, O(pixels)).

    The image (HW, or CHW / HWC per ``layout``, optionally with a leading batch of 1) is first
    reduced to its channel mean, a luminance proxy. Then:

    - ``brightness``: the mean; dimming lights or a dirty lens lower it;
    - ``contrast``: the standard deviation; haze and glare lower it;
    - ``sharpness``: the variance of the 4-neighbour discrete Laplacian
      ``4*x[i,j] - x[i-1,j] - x[i+1,j] - x[i,j-1] - x[i,j+1]`` over interior pixels; defocus,
      motion blur and smears lower it (0 for images under 3x3).

    All are in the units of the input (pixel values as fed to the model), so compare them per
    camera over time, not across cameras with different pipelines.
    """
    x = np.asarray(image, dtype=np.float64)
    while x.ndim > 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3:
        x = x.mean(axis=-1 if layout.upper().endswith("C") else 0)
    if x.ndim != 2 or x.size == 0:
        raise InvalidImage(f"image of shape {list(image.shape)} is not a 2-D (per channel) image")
    sharpness = 0.0
    if x.shape[0] >= 3 and x.shape[1] >= 3:
        laplacian = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
        sharpness = float(laplacian.var())
    return {"brightness": float(x.mean()), "contrast": float(x.std()), "sharpness": sharpness}


# ------------------------------------------------------------------------------ decision


def decide(
    prediction: Prediction | None,
    threshold: float,
    *,
    no_model_reason: str = "no verified model is active",
) -> Decision:
    """The fail-safe decision: ``pass`` only for the good label at or above ``threshold``.

    A defect label at or above the threshold is ``reject``; anything below it, a non-finite
    confidence, or no prediction at all (no model, a model that failed) is
    ``manual_inspection`` with the reason. There is no path to ``pass`` without a confident
    good prediction.
    """
    if prediction is None:
        return Decision("manual_inspection", no_model_reason)
    confidence = prediction.confidence
    if not math.isfinite(confidence) or confidence < threshold:
        return Decision(
            "manual_inspection",
            f"confidence {confidence:.3f} for {prediction.label!r} is below the threshold "
            f"{threshold:g}",
        )
    if prediction.label == prediction.good_label:
        return Decision("pass")
    return Decision("reject", f"defect {prediction.label!r} at confidence {confidence:.3f}")
