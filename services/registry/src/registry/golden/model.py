"""An ONNX classifier run with onnxruntime, fed golden inputs and returning class indices."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from registry.golden.dataset import GoldenSet, GoldenSetError

# onnxruntime's type strings of the input tensor types golden inputs can be cast to.
_ORT_DTYPES: Mapping[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
}


class OnnxClassifier:
    """An ONNX classifier behind a typed surface (onnxruntime ships no type hints).

    Every onnxruntime failure surfaces as :class:`GoldenSetError` naming the model's role.
    """

    def __init__(self, path: Path, role: str, golden: GoldenSet) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        self.role, self.n_classes = f"{role} {path}", golden.n_classes
        if not Path(path).is_file():
            raise GoldenSetError(f"{self.role} does not exist; give the path of its .onnx file")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's warnings would flood the service log
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            model_input, model_output = (
                self._session.get_inputs()[0],
                self._session.get_outputs()[0],
            )
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise GoldenSetError(f"{self.role} cannot be loaded by onnxruntime: {e}") from e
        self.input_name: str = model_input.name
        self.output_name: str = model_output.name
        dtype = _ORT_DTYPES.get(model_input.type)
        if dtype is None:
            raise GoldenSetError(
                f"{self.role} takes {model_input.type} input '{self.input_name}', which golden "
                f"inputs cannot be cast to; it needs a float or integer tensor"
            )
        self.dtype = dtype
        shape = [d if isinstance(d, int) else None for d in model_input.shape]
        sample_shape = golden.inputs.shape[1:]
        compatible = len(shape) == 1 + len(sample_shape) and all(
            want is None or want == got for want, got in zip(shape[1:], sample_shape, strict=True)
        )
        if not compatible:
            wanted = tuple("?" if d is None else d for d in model_input.shape)
            raise GoldenSetError(
                f"{self.role} expects input '{self.input_name}' of shape {wanted} but golden "
                f"inputs have shape {golden.inputs.shape}; use a golden set in the model's layout"
            )
        # A model exported with a fixed batch size is fed exactly that many rows at a time.
        self.fixed_batch = shape[0] if shape and shape[0] is not None and shape[0] > 0 else None

    def predict(self, batch: NDArray[np.float32]) -> NDArray[np.int64]:
        """Class index predicted for each row of ``batch``."""
        rows = len(batch)
        if self.fixed_batch is not None and rows != self.fixed_batch:
            return np.concatenate(
                [
                    self.predict(_pad(batch[i : i + self.fixed_batch], self.fixed_batch))
                    for i in range(0, rows, self.fixed_batch)
                ]
            )[:rows]
        x = _cast(batch, self.dtype)
        try:
            output = np.asarray(self._session.run([self.output_name], {self.input_name: x})[0])
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise GoldenSetError(f"{self.role} failed on the golden inputs: {e}") from e
        if output.ndim == 2 and output.shape[1] == 1 and output.dtype.kind in "iu":
            output = output[:, 0]
        if output.ndim == 2 and output.shape[0] == rows:
            if output.shape[1] != self.n_classes:
                raise GoldenSetError(
                    f"{self.role} outputs {output.shape[1]} class scores but the golden set has "
                    f"{self.n_classes} classes; use label names matching the model's classes"
                )
            best: NDArray[np.int64] = output.argmax(axis=1).astype(np.int64)
            return best
        if output.ndim == 1 and output.shape[0] == rows and output.dtype.kind in "iu":
            low, high = int(output.min()), int(output.max())
            if low < 0 or high >= self.n_classes:
                raise GoldenSetError(
                    f"{self.role} predicted label {low if low < 0 else high}, outside the "
                    f"golden set's {self.n_classes} classes; use label names matching the "
                    f"model's classes"
                )
            return output.astype(np.int64)
        raise GoldenSetError(
            f"{self.role} output '{self.output_name}' has shape {output.shape} ({output.dtype}) "
            f"for {rows} inputs; expected (batch, n_classes) scores or (batch,) integer labels"
        )

    def predict_all(self, inputs: NDArray[np.float32], batch_size: int) -> NDArray[np.int64]:
        parts = [
            self.predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)
        ]
        return np.concatenate(parts)


def _cast(batch: NDArray[np.float32], dtype: np.dtype[Any]) -> NDArray[Any]:
    if batch.dtype == dtype:
        return batch
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
    return batch.astype(dtype)


def _pad(batch: NDArray[np.float32], rows: int) -> NDArray[np.float32]:
    missing = rows - len(batch)
    return batch if missing == 0 else np.concatenate([batch, np.repeat(batch[-1:], missing, 0)])
