"""inspect_onnx: metadata, rejection reasons, and memory that stays flat in file size."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from linegate.testing.onnx_models import build_classifier
from registry import onnx_inspect
from registry.onnx_inspect import InvalidOnnx, TensorSpec, inspect_onnx

if TYPE_CHECKING:
    from collections.abc import Sequence

MiB = 1024 * 1024
BIG_ROWS, BIG_COLS = 5_000, 10_000  # 50 M float32 weights: 200 MB


def _write(model: onnx.ModelProto, path: Path) -> Path:
    """Serialise without onnx.save_model's or the checker's opinions (for broken models)."""
    path.write_bytes(model.SerializeToString())
    return path


def _model(
    nodes: Sequence[onnx.NodeProto],
    *,
    inputs: Sequence[str] = ("x",),
    outputs: Sequence[str] = ("y",),
    initializers: Sequence[TensorProto] = (),
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in outputs],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return build_classifier(tmp_path / "model.onnx")


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200 MB single-file model: features (batch, 5000) @ weights (5000, 10000)."""
    path = tmp_path_factory.mktemp("big") / "big.onnx"
    weights = numpy_helper.from_array(np.ones((BIG_ROWS, BIG_COLS), np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["scores"])],
        "big",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", BIG_ROWS])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", BIG_COLS])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, path)
    del model, graph, weights
    return path


# ---------------------------------------------------------------- valid models


def test_classifier_metadata(classifier: Path) -> None:
    info = inspect_onnx(classifier)

    assert info.size_bytes == classifier.stat().st_size
    assert info.ir_version == 8
    assert info.opsets == {"": 17}
    assert info.producer_name == "linegate.testing"
    assert info.graph_name == "linegate_tiny_classifier"
    assert info.inputs == (TensorSpec("image", "float32", ("batch", 3, 8, 8)),)
    assert info.outputs == (TensorSpec("probabilities", "float32", ("batch", 3)),)
    assert info.node_count == 4
    assert info.initializer_count == 2
    # 3x3 weights and 3 biases as float32, plus each tensor's name, dims and type.
    assert 48 < info.initializer_bytes < 100
    assert info.loaded_with_onnxruntime is True


def test_skipping_onnxruntime_gives_the_same_metadata(classifier: Path) -> None:
    with_ort = inspect_onnx(classifier)
    without_ort = inspect_onnx(classifier, ort_max_bytes=0)

    assert without_ort.loaded_with_onnxruntime is False
    assert dataclasses.replace(without_ort, loaded_with_onnxruntime=True) == with_ort


def test_to_dict_is_json(classifier: Path) -> None:
    as_dict = inspect_onnx(classifier).to_dict()

    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["inputs"] == [
        {"name": "image", "elem_type": "float32", "shape": ["batch", 3, 8, 8]}
    ]


def test_tensors_in_subgraphs_and_attributes_are_stripped_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An If whose branches hold an initializer and a Constant: only ~100 bytes of structure."""
    n = 5_000  # 20 KB per tensor, above the size below which nodes are copied whole
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "ones"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [n])],
        initializer=[numpy_helper.from_array(np.ones(n, np.float32), "ones")],
    )
    else_branch = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["else_y"],
                value=numpy_helper.from_array(np.arange(n, dtype=np.float32), "ramp"),
            )
        ],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [n])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "branches",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [n]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = _write(model, tmp_path / "branches.onnx")
    assert path.stat().st_size > 40_000
    monkeypatch.setattr(onnx_inspect, "MAX_SKELETON_BYTES", 2_000)

    info = inspect_onnx(path)

    assert info.inputs == (TensorSpec("cond", "bool", ()), TensorSpec("x", "float32", (n,)))
    assert info.initializer_count == 0
    assert info.loaded_with_onnxruntime is True


# ---------------------------------------------------------------- not ONNX at all


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")

    with pytest.raises(InvalidOnnx, match="empty"):
        inspect_onnx(path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))

    with pytest.raises(InvalidOnnx, match=r"not an ONNX model|truncated|no graph"):
        inspect_onnx(path)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "config.onnx"
    path.write_text(json.dumps({"input": "image", "shape": [1, 3, 8, 8]}))

    with pytest.raises(InvalidOnnx, match="not an ONNX model: it looks like JSON"):
        inspect_onnx(path)


def test_truncated_at_every_offset_is_rejected(classifier: Path, tmp_path: Path) -> None:
    data = classifier.read_bytes()
    cut = tmp_path / "cut.onnx"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(InvalidOnnx):
            inspect_onnx(cut)


def test_truncation_is_named(classifier: Path, tmp_path: Path) -> None:
    data = classifier.read_bytes()
    weights = (10 * np.eye(3, dtype=np.float32)).tobytes()
    mid_initializer = data.index(weights) + len(weights) // 2
    cut = tmp_path / "cut.onnx"
    for size in (1, 6, len(data) // 2, mid_initializer, len(data) - 1):
        cut.write_bytes(data[:size])
        with pytest.raises(InvalidOnnx, match="truncated"):
            inspect_onnx(cut)


# ---------------------------------------------------------------- ONNX, but unusable


def test_undefined_tensor_is_rejected_by_the_checker(tmp_path: Path) -> None:
    path = _write(_model([helper.make_node("Relu", ["nowhere"], ["y"])]), tmp_path / "m.onnx")

    with pytest.raises(InvalidOnnx, match=r"ONNX checker rejected .*'nowhere'"):
        inspect_onnx(path, ort_max_bytes=0)


def test_unknown_op_is_rejected_by_the_checker(tmp_path: Path) -> None:
    path = _write(_model([helper.make_node("Frobnicate", ["x"], ["y"])]), tmp_path / "m.onnx")

    with pytest.raises(InvalidOnnx, match=r"ONNX checker rejected .*Frobnicate"):
        inspect_onnx(path, ort_max_bytes=0)


def test_onnxruntime_refusal_is_rejected_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The checker does not range-check attributes; onnxruntime does."""
    softmax = helper.make_node("Softmax", ["x"], ["y"], axis=5)
    path = _write(_model([softmax]), tmp_path / "m.onnx")

    assert inspect_onnx(path, ort_max_bytes=0).loaded_with_onnxruntime is False
    with pytest.raises(InvalidOnnx, match=r"onnxruntime cannot load the model: .*axis") as e:
        inspect_onnx(path)
    assert str(path) not in str(e.value)
    assert capfd.readouterr().err == ""


def test_external_data_is_rejected(tmp_path: Path) -> None:
    model = onnx.load_model(build_classifier(tmp_path / "model.onnx"))
    path = tmp_path / "external.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        size_threshold=0,
        location="external.data",
    )

    with pytest.raises(InvalidOnnx, match="external tensor data is not supported"):
        inspect_onnx(path)


def test_missing_essentials_are_named(tmp_path: Path) -> None:
    no_outputs = _model([helper.make_node("Relu", ["x"], ["y"])], outputs=())
    no_ir = _model([helper.make_node("Relu", ["x"], ["y"])])
    no_ir.ir_version = 0
    no_opsets = _model([helper.make_node("Relu", ["x"], ["y"])])
    del no_opsets.opset_import[:]
    no_graph = onnx.ModelProto(ir_version=8, opset_import=[helper.make_opsetid("", 17)])

    for model, reason in [
        (no_outputs, "no outputs"),
        (no_ir, "no ir_version"),
        (no_opsets, "no opset_import"),
        (no_graph, "no graph"),
    ]:
        with pytest.raises(InvalidOnnx, match=reason):
            inspect_onnx(_write(model, tmp_path / "m.onnx"))


def test_oversized_structure_is_rejected(classifier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_inspect, "MAX_SKELETON_BYTES", 64)

    with pytest.raises(InvalidOnnx, match=r"graph structure .* larger than"):
        inspect_onnx(classifier)


# ---------------------------------------------------------------- memory flat in file size


def test_python_memory_stays_flat_for_a_200mb_initializer(
    big_model: Path, classifier: Path
) -> None:
    inspect_onnx(classifier)  # imports onnx and onnxruntime outside the measurement
    tracemalloc.start()
    try:
        info = inspect_onnx(big_model, ort_max_bytes=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 16 * MiB
    assert info.initializer_bytes == pytest.approx(BIG_ROWS * BIG_COLS * 4, rel=1e-3)
    assert info.inputs == (TensorSpec("features", "float32", ("batch", BIG_ROWS)),)
    assert info.loaded_with_onnxruntime is False


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB only on Linux")
def test_process_rss_stays_flat_for_a_200mb_initializer(big_model: Path, classifier: Path) -> None:
    """tracemalloc misses C++ allocations (protobuf, the checker); peak RSS does not."""
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from registry.onnx_inspect import inspect_onnx\n"
        "inspect_onnx(Path(sys.argv[1]), ort_max_bytes=0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "inspect_onnx(Path(sys.argv[2]), ort_max_bytes=0)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(classifier), str(big_model)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert int(result.stdout) * 1024 < 16 * MiB
