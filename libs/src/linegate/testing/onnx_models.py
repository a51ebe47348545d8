"""Tiny real ONNX models for tests, benchmarks and the demo (no pytest needed).

The classifier is ``ReduceMean`` over H and W (one mean per channel), ``MatMul`` by a weight
matrix of shape ``(channels, n_classes)``, ``Add`` a bias, then ``Softmax``. With the default
weights (a scaled identity) it predicts the channel with the highest mean, so
:func:`labelled_batch` can make images whose true class is known. Weights change behaviour;
:func:`build_regressing_classifier` is the same model made deliberately bad at one class, the
"new version that regressed" of rollout and golden-set tests.

``onnx`` (a dev dependency) and ``numpy`` are imported inside the functions, so importing this
module costs nothing. Example::

    from pathlib import Path

    import onnxruntime as ort

    from linegate.testing.onnx_models import build_classifier, labelled_batch

    path = build_classifier(Path("model.onnx"))
    images, labels = labelled_batch(10)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": images})[0]
    accuracy = (probabilities.argmax(axis=1) == labels).mean()
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "build_classifier",
    "build_regressing_classifier",
    "labelled_batch",
    "write_model_dir",
]

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# Opset 17 (ReduceMean takes ``axes`` as an attribute) and IR 8 load in every onnxruntime >= 1.14.
OPSET = 17
IR_VERSION = 8
# Scales the identity weights so a channel ahead by 0.5 gets ~99% probability.
DEFAULT_SCALE = 10.0

DEFAULT_LABELS = ("ok", "scratch", "dent")


def build_classifier(
    path: Path,
    *,
    weights: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    n_classes: int = 3,
    input_shape: Sequence[int] = (1, 3, 8, 8),
) -> Path:
    """Write a tiny image classifier to ``path`` and return ``path``.

    ``input_shape`` is ``(batch, channels, height, width)``; the batch dimension is left
    symbolic so any batch size runs. ``weights`` has shape ``(channels, n_classes)`` and
    defaults to ``DEFAULT_SCALE`` times the identity (which needs ``channels == n_classes``);
    ``bias`` has shape ``(n_classes,)`` and defaults to zeros. Input ``image`` (float32),
    output ``probabilities`` (float32, ``(batch, n_classes)``).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (batch, channels, height, width), got {input_shape}")
    channels = int(input_shape[1])
    if weights is None:
        if channels != n_classes:
            raise ValueError(
                f"default weights map channel i to class i: pass weights of shape "
                f"({channels}, {n_classes}) when channels != n_classes"
            )
        w = DEFAULT_SCALE * np.eye(channels, n_classes, dtype=np.float32)
    else:
        w = np.asarray(weights, dtype=np.float32)
    b = np.zeros(n_classes, dtype=np.float32) if bias is None else np.asarray(bias, np.float32)
    if w.shape != (channels, n_classes) or b.shape != (n_classes,):
        raise ValueError(
            f"weights must be ({channels}, {n_classes}) and bias ({n_classes},), "
            f"got {w.shape} and {b.shape}"
        )

    graph = helper.make_graph(
        [
            helper.make_node(
                "ReduceMean", [INPUT_NAME], ["channel_means"], axes=[2, 3], keepdims=0
            ),
            helper.make_node("MatMul", ["channel_means", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
        ],
        "linegate_tiny_classifier",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", *(int(d) for d in input_shape[1:])]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[numpy_helper.from_array(w, "weights"), numpy_helper.from_array(b, "bias")],
    )
    model = helper.make_model(
        graph,
        producer_name="linegate.testing",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path


def build_regressing_classifier(
    path: Path,
    *,
    bad_class: int = 1,
    n_classes: int = 3,
    input_shape: Sequence[int] = (1, 3, 8, 8),
) -> Path:
    """Like :func:`build_classifier` with default weights, but it never predicts ``bad_class``.

    The weight from channel ``bad_class`` to class ``bad_class`` is negated, so an image of that
    class scores lowest on it and is given to another class; every other class is unaffected.
    Accuracy on ``bad_class`` drops to zero while the rest stay perfect.
    """
    import numpy as np

    if not 0 <= bad_class < n_classes:
        raise ValueError(f"bad_class must be in [0, {n_classes}), got {bad_class}")
    channels = int(input_shape[1])
    weights = DEFAULT_SCALE * np.eye(channels, n_classes, dtype=np.float32)
    weights[bad_class % channels, bad_class] = -DEFAULT_SCALE
    return build_classifier(path, weights=weights, n_classes=n_classes, input_shape=input_shape)


def labelled_batch(
    n_per_class: int,
    *,
    n_classes: int = 3,
    input_shape: Sequence[int] = (1, 3, 8, 8),
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Images whose class is the channel raised by 0.5 over uniform [0, 1) noise, with labels.

    Returns ``(images, labels)`` of shapes ``(n_per_class * n_classes, C, H, W)`` and
    ``(n_per_class * n_classes,)``, class-major; deterministic for a given ``seed``. The default
    classifier labels every one correctly (a channel mean is within ~0.1 of 0.5 on 8x8 pixels).
    """
    import numpy as np

    _, channels, height, width = (int(d) for d in input_shape)
    if n_classes > channels:
        raise ValueError(f"each class needs its own channel: {n_classes} > {channels}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class)
    images = rng.random((labels.size, channels, height, width), dtype=np.float32)
    images[np.arange(labels.size), labels] += np.float32(0.5)
    return images, labels


def write_model_dir(
    directory: Path,
    *,
    name: str = "weld-seam-inspector",
    version: str = "1.0.0",
    bad_class: int | None = None,
    weights: ArrayLike | None = None,
    labels: Sequence[str] = DEFAULT_LABELS,
) -> Path:
    """Write the artefact folder the registry signs: model.onnx, preprocess.json, model_card.md.

    ``bad_class`` writes :func:`build_regressing_classifier` instead of the default classifier;
    ``weights`` is passed to :func:`build_classifier`. Returns ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n_classes = len(labels)
    model = directory / "model.onnx"
    if bad_class is not None:
        build_regressing_classifier(model, bad_class=bad_class, n_classes=n_classes)
    else:
        build_classifier(model, weights=weights, n_classes=n_classes)
    preprocess = {
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "shape": ["batch", 3, 8, 8],
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 1 / 255,
        "labels": list(labels),
    }
    (directory / "preprocess.json").write_text(json.dumps(preprocess, indent=2) + "\n")
    (directory / "model_card.md").write_text(
        f"# {name} {version}\n\n"
        "Tiny test classifier (channel means -> linear -> softmax) built by "
        "`linegate.testing.onnx_models`. Not for production use.\n\n"
        f"- Classes: {', '.join(labels)}\n"
        f"- Known weakness: {labels[bad_class] if bad_class is not None else 'none'}\n"
    )
    return directory
