"""Golden-set validation on real onnxruntime sessions of tiny models built in tmp_path."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import registry.golden
from linegate.testing.onnx_models import (
    build_classifier,
    build_regressing_classifier,
    labelled_batch,
)
from registry.golden import (
    DEFECT_KINDS,
    DefectSpec,
    GoldenSet,
    GoldenSetError,
    ValidationPolicy,
    load_golden_set,
    save_golden_set,
    validate_model,
)

LABELS = ("ok", "scratch", "dent")
SCALE = 10.0  # the tiny classifier's default weight scale


@pytest.fixture
def model(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``model("good")``, ``model("regressing")`` or ``model(name, weights=..., ...)``."""

    def make(name: str, **kwargs: Any) -> Path:
        path = tmp_path / f"{name}.onnx"
        if name == "regressing":
            return build_regressing_classifier(path, bad_class=1)
        return build_classifier(path, **kwargs)

    return make


@pytest.fixture
def golden() -> GoldenSet:
    images, labels = labelled_batch(10)
    return GoldenSet.from_arrays(images, labels, LABELS)


def no_probes(**kwargs: Any) -> ValidationPolicy:
    """A policy checking the golden metrics only, so tests of them stay fast and focused."""
    return ValidationPolicy(**{"defects": (), "lighting_shifts": (), **kwargs})


def graph_model(
    path: Path,
    nodes: Sequence[Any],
    *,
    initializers: dict[str, NDArray[Any]],
    output: tuple[str, int, list[Any]],
    input_shape: Sequence[Any] = ("batch", 3, 8, 8),
    input_type: int | None = None,
) -> Path:
    """Write a one-input ONNX graph (input ``image``) with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        list(nodes),
        "test_model",
        [
            helper.make_tensor_value_info(
                "image", input_type or TensorProto.FLOAT, list(input_shape)
            )
        ],
        [helper.make_tensor_value_info(*output)],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save_model(onnx_model, path)
    return path


# ---------------------------------------------------------------------------- golden metrics


def test_good_model_scores_perfectly(model: Callable[..., Path], golden: GoldenSet) -> None:
    report = validate_model(model("good"), golden, policy=ValidationPolicy())

    assert report.passed, report.reasons
    assert report.samples == 30
    assert report.accuracy == 1.0
    assert [(m.name, m.support, m.precision, m.recall) for m in report.classes] == [
        (name, 10, 1.0, 1.0) for name in LABELS
    ]
    assert report.confusion == [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    assert report.baseline is None
    assert report.good_class == "ok"


def test_regression_on_a_critical_class_fails(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    report = validate_model(
        model("regressing"),
        golden,
        policy=no_probes(critical_classes=("scratch",)),
        baseline_model_path=model("good"),
    )

    assert not report.passed
    assert "critical class 'scratch' recall 0.000 < baseline 1.000 - tolerance 0.020" in (
        report.reasons
    )
    assert all("'scratch'" in reason for reason in report.reasons)
    scratch = report.classes[1]
    assert (scratch.predicted, scratch.precision, scratch.recall) == (0, 0.0, 0.0)
    assert scratch.note is not None
    assert "never predicted" in scratch.note
    assert report.baseline is not None
    assert report.baseline.accuracy == 1.0
    assert report.baseline.deltas[1].recall == -1.0


def test_regression_on_a_non_critical_class_is_allowed(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    # Scratch images are called "ok" (the scratch channel feeds the ok score, dent needs a
    # doubled weight to stay ahead): only scratch recall and ok precision fall, and neither
    # class is critical.
    weights = SCALE * np.array([[1, 0, 0], [1, -1, 0], [0, 0, 2]], dtype=np.float32)
    candidate = model("scratch_to_ok", weights=weights)

    report = validate_model(
        candidate,
        golden,
        policy=no_probes(critical_classes=("dent",)),
        baseline_model_path=model("good"),
    )

    assert report.passed, report.reasons
    assert report.classes[1].recall == 0.0
    assert report.baseline is not None
    assert report.baseline.deltas[2].precision == report.baseline.deltas[2].recall == 0.0


def test_misrouted_images_lower_the_precision_of_the_class_they_land_in(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    # The regressing model gives scratch images to ok or dent, so dent loses precision: a
    # critical-class regression even though dent's own images are all still found.
    report = validate_model(
        model("regressing"),
        golden,
        policy=no_probes(critical_classes=("dent",)),
        baseline_model_path=model("good"),
    )

    assert report.classes[2].recall == 1.0
    assert not report.passed
    assert [r.split(" precision")[0] for r in report.reasons] == ["critical class 'dent'"]


@pytest.mark.parametrize(("tolerance", "passed"), [(0.1, True), (0.05, False), (0.0, False)])
def test_tolerance_bounds_the_allowed_drop(
    model: Callable[..., Path], tolerance: float, passed: bool
) -> None:
    images, labels = labelled_batch(10)
    # One scratch image with a small margin: the baseline still finds it, the candidate (biased
    # against scratch) does not, so scratch recall drops by exactly 0.1.
    images[10] = np.array([0.5, 0.6, 0.5], dtype=np.float32)[:, None, None]
    golden = GoldenSet.from_arrays(images, labels, LABELS)
    candidate = model("biased", bias=[0.0, -2.0, 0.0])

    report = validate_model(
        candidate,
        golden,
        policy=no_probes(critical_classes=("scratch",), tolerance=tolerance),
        baseline_model_path=model("good"),
    )

    assert report.classes[1].recall == pytest.approx(0.9)
    assert report.passed is passed
    if not passed:
        assert report.reasons == (
            f"critical class 'scratch' recall 0.900 < baseline 1.000 - tolerance {tolerance:.3f}",
        )


def test_min_recall_floor(model: Callable[..., Path], golden: GoldenSet) -> None:
    policy = no_probes(min_recall={"scratch": 0.9})

    failed = validate_model(model("regressing"), golden, policy=policy)
    passed = validate_model(model("good"), golden, policy=policy)

    assert failed.reasons == ("class 'scratch' recall 0.000 < floor 0.900",)
    assert passed.passed


def test_critical_classes_without_a_baseline_are_noted(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    report = validate_model(
        model("regressing"), golden, policy=no_probes(critical_classes=("scratch",))
    )

    assert report.passed
    assert any("no baseline model" in note for note in report.notes)


# ---------------------------------------------------------------------------- probes


def all_defects(min_detection: float) -> tuple[DefectSpec, ...]:
    return tuple(DefectSpec(kind, min_detection) for kind in DEFECT_KINDS)


def test_channel_mean_model_misses_synthetic_defects(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    # Defects touch every channel alike, so the per-channel means keep "ok" in the lead.
    report = validate_model(
        model("good"), golden, policy=ValidationPolicy(defects=all_defects(0.5))
    )

    assert not report.passed
    assert [(d.kind, d.images, d.detection_rate, d.passed) for d in report.defects] == [
        (kind, 10, 0.0, False) for kind in DEFECT_KINDS
    ]
    for kind, reason in zip(DEFECT_KINDS, report.reasons, strict=True):
        assert reason.startswith(f"synthetic defect {kind!r} detection rate 0.000 < ")


def defect_detector(path: Path, *, channels_last: bool = False) -> Path:
    """Two classes (ok, defect): "ok" while the image's pixels stay within a narrow band.

    ok score = 10 * (mean over channels of min - mean over channels of max) + 4, defect = 0:
    a 0.4..0.6 image scores ok (about 2), a pixel at 0 or 1 in every channel makes it a defect.
    ``channels_last`` takes (N, H, W, C) images and transposes them first.
    """
    from onnx import TensorProto, helper

    weights = np.zeros((6, 2), dtype=np.float32)
    weights[:3, 0], weights[3:, 0] = SCALE / 3, -SCALE / 3
    transpose = helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2])
    source = "nchw" if channels_last else "image"
    return graph_model(
        path,
        [
            *([transpose] if channels_last else []),
            helper.make_node("ReduceMin", [source], ["low"], axes=[2, 3], keepdims=0),
            helper.make_node("ReduceMax", [source], ["high"], axes=[2, 3], keepdims=0),
            helper.make_node("Concat", ["low", "high"], ["features"], axis=1),
            helper.make_node("MatMul", ["features", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["logits"]),
        ],
        initializers={"weights": weights, "bias": np.array([4.0, 0.0], dtype=np.float32)},
        output=("logits", TensorProto.FLOAT, ["batch", 2]),
        input_shape=("batch", 8, 8, 3) if channels_last else ("batch", 3, 8, 8),
    )


def inspection_set(n: int = 12, seed: int = 0) -> GoldenSet:
    """Plain ok images around 0.5, and defective ones with a dark patch or a bright line."""
    rng = np.random.default_rng(seed)
    ok = rng.uniform(0.4, 0.6, (n, 3, 8, 8)).astype(np.float32)
    defect = rng.uniform(0.4, 0.6, (n, 3, 8, 8)).astype(np.float32)
    defect[: n // 2, :, 2:5, 2:5] = 0.0
    defect[n // 2 :, :, 4, :] = 1.0
    return GoldenSet.from_arrays(
        np.concatenate([ok, defect]), np.repeat([0, 1], n), ("ok", "defect")
    )


def test_a_defect_detector_detects_every_synthetic_defect(tmp_path: Path) -> None:
    detector = defect_detector(tmp_path / "detector.onnx")

    report = validate_model(
        detector, inspection_set(), policy=ValidationPolicy(defects=all_defects(1.0))
    )

    assert report.accuracy == 1.0
    assert report.passed, report.reasons
    detections = {d.kind: (d.images, d.detected, d.detection_rate) for d in report.defects}
    assert detections == dict.fromkeys(DEFECT_KINDS, (12, 12, 1.0))
    assert [(r.shift, r.flipped) for r in report.lighting] == [(0.7, 0), (1.3, 0)]


def test_channels_last_images_are_probed_on_their_spatial_plane(tmp_path: Path) -> None:
    nchw = inspection_set()
    nhwc = np.ascontiguousarray(nchw.inputs.transpose(0, 2, 3, 1))
    golden = GoldenSet.from_arrays(nhwc, nchw.labels, nchw.label_names)
    detector = defect_detector(tmp_path / "nhwc.onnx", channels_last=True)

    report = validate_model(detector, golden, policy=ValidationPolicy(defects=all_defects(1.0)))

    assert report.passed, report.reasons
    assert [d.detection_rate for d in report.defects] == [1.0] * len(DEFECT_KINDS)


def test_lighting_flips_beyond_the_limit_fail(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    # A bias towards dent that the ok channel's lead only outweighs at normal brightness.
    candidate = model("dim_sensitive", bias=[0.0, 0.0, 3.0])
    policy = no_probes(lighting_shifts=(0.4, 1.3), max_lighting_flip_rate=0.1)

    report = validate_model(candidate, golden, policy=policy)

    assert report.accuracy == 1.0
    assert [(r.shift, r.images, r.flipped, r.passed) for r in report.lighting] == [
        (0.4, 10, 10, False),
        (1.3, 10, 0, True),
    ]
    assert report.reasons == (
        "lighting shift x0.40 changed the prediction of 10 of 10 'ok' images "
        "(flip rate 1.000 > max 0.100)",
    )
    unlimited = validate_model(candidate, golden, policy=no_probes(lighting_shifts=(0.4,)))
    assert unlimited.passed
    assert unlimited.lighting[0].flip_rate == 1.0


def test_probes_need_images_of_the_good_class(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    subset = golden.labels != 0
    no_ok = GoldenSet.from_arrays(golden.inputs[subset], golden.labels[subset], LABELS)

    lenient = validate_model(model("good"), no_ok, policy=ValidationPolicy())
    strict = validate_model(
        model("good"), no_ok, policy=ValidationPolicy(defects=(DefectSpec("crack", 0.5),))
    )

    assert lenient.passed
    assert lenient.defects[0].images == 0
    assert any("not measured" in note for note in lenient.notes)
    assert strict.reasons == (
        "synthetic defect 'crack' could not be measured: the golden set has no 'ok' images",
    )


def test_same_seed_same_report_whatever_the_batch_size(
    model: Callable[..., Path], golden: GoldenSet
) -> None:
    policy = ValidationPolicy(
        critical_classes=("scratch",), defects=all_defects(0.0), max_lighting_flip_rate=0.5
    )

    def run(batch_size: int) -> dict[str, Any]:
        return validate_model(
            model("regressing"),
            golden,
            policy=policy,
            baseline_model_path=model("good"),
            batch_size=batch_size,
        ).to_dict()

    first = run(64)
    assert run(64) == first
    assert run(7) == first


def test_report_is_json(model: Callable[..., Path], golden: GoldenSet) -> None:
    report = validate_model(
        model("regressing"),
        golden,
        policy=ValidationPolicy(critical_classes=("scratch",), min_recall={"dent": 0.5}),
        baseline_model_path=model("good"),
    )

    document = report.to_dict()

    assert json.loads(json.dumps(document)) == document
    assert list(document) == [
        "passed",
        "reasons",
        "notes",
        "samples",
        "accuracy",
        "good_class",
        "classes",
        "confusion",
        "baseline",
        "defects",
        "lighting",
        "policy",
    ]
    assert document["baseline"]["deltas"][1] == {
        "name": "scratch",
        "precision": -1.0,
        "recall": -1.0,
    }


# ---------------------------------------------------------------------------- model inputs


def test_uint8_input_fixed_batch_and_label_output(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    # uint8 input, a batch fixed at 4 (the 21 rows are padded), and int64 labels as output.
    classifier = graph_model(
        tmp_path / "labels.onnx",
        [
            helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("ArgMax", ["means"], ["label"], axis=1, keepdims=0),
        ],
        initializers={},
        output=("label", TensorProto.INT64, [4]),
        input_shape=(4, 3, 8, 8),
        input_type=TensorProto.UINT8,
    )
    images, labels = labelled_batch(7)
    save_golden_set(tmp_path / "golden.npz", (images * 100).astype(np.uint8), labels, LABELS)

    report = validate_model(
        classifier, load_golden_set(tmp_path / "golden.npz"), policy=ValidationPolicy()
    )

    assert report.samples == 21
    assert report.accuracy == 1.0


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 16, 16), "expects input 'image' of shape ('batch', 3, 8, 8)"),
        ((8, 8, 3), "golden inputs have shape (6, 8, 8, 3)"),
        ((3, 64), "expects input 'image'"),
    ],
)
def test_input_shape_mismatch(
    model: Callable[..., Path], shape: tuple[int, ...], message: str
) -> None:
    golden = GoldenSet.from_arrays(np.zeros((6, *shape), np.float32), [0, 1, 2] * 2, LABELS)

    with pytest.raises(GoldenSetError, match="candidate model") as raised:
        validate_model(model("good"), golden, policy=ValidationPolicy())

    assert message in str(raised.value)


def test_class_count_mismatch(model: Callable[..., Path], golden: GoldenSet) -> None:
    four = model("four", weights=np.eye(3, 4, dtype=np.float32), n_classes=4)

    with pytest.raises(GoldenSetError, match="outputs 4 class scores but the golden set has 3"):
        validate_model(four, golden, policy=ValidationPolicy())


def test_unusable_model_files(
    model: Callable[..., Path], golden: GoldenSet, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")

    with pytest.raises(GoldenSetError, match=r"candidate model .* cannot be loaded"):
        validate_model(garbage, golden, policy=ValidationPolicy())
    with pytest.raises(GoldenSetError, match=r"baseline model .* does not exist"):
        validate_model(
            model("good"),
            golden,
            policy=ValidationPolicy(),
            baseline_model_path=tmp_path / "missing.onnx",
        )


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            lambda: ValidationPolicy(critical_classes=("crack",)),
            "critical_classes names class 'crack'",
        ),
        (lambda: ValidationPolicy(min_recall={"Scratch": 0.5}), "min_recall names class 'Scratch'"),
        (lambda: ValidationPolicy(good_class="good"), "good_class names class 'good'"),
    ],
)
def test_policy_naming_unknown_classes(
    model: Callable[..., Path],
    golden: GoldenSet,
    policy: Callable[[], ValidationPolicy],
    message: str,
) -> None:
    with pytest.raises(GoldenSetError, match=message):
        validate_model(model("good"), golden, policy=policy())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ValidationPolicy(tolerance=1.5), "tolerance must be between 0 and 1"),
        (lambda: DefectSpec("dent"), "unknown defect kind 'dent'"),  # type: ignore[arg-type]
        (lambda: DefectSpec("crack", -0.1), "min_detection of defect 'crack'"),
        (
            lambda: ValidationPolicy(defects=(DefectSpec("crack"), DefectSpec("crack"))),
            "kind twice",
        ),
        (lambda: ValidationPolicy(lighting_shifts=(0.0,)), "positive factor"),
        (lambda: ValidationPolicy(max_lighting_flip_rate=2.0), "max_lighting_flip_rate"),
    ],
)
def test_invalid_policy(make: Callable[[], object], message: str) -> None:
    with pytest.raises(GoldenSetError, match=message):
        make()


# ---------------------------------------------------------------------------- golden files


def test_golden_set_round_trip(tmp_path: Path) -> None:
    images, labels = labelled_batch(3)
    pixels = (images * 100).astype(np.uint8)
    save_golden_set(tmp_path / "golden", pixels, labels, LABELS)  # no ".npz" appended

    loaded = load_golden_set(tmp_path / "golden")

    assert loaded.inputs.dtype == np.float32
    np.testing.assert_array_equal(loaded.inputs, pixels.astype(np.float32))
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.label_names == LABELS
    assert not loaded.inputs.flags.writeable


def test_label_names_default(tmp_path: Path) -> None:
    with (tmp_path / "golden.npz").open("wb") as f:
        np.savez(f, inputs=np.zeros((4, 2), np.float32), labels=np.array([0, 1, 2, 1]))

    assert load_golden_set(tmp_path / "golden.npz").label_names == (
        "class_0",
        "class_1",
        "class_2",
    )


def write_npz(path: Path, **arrays: Any) -> Path:
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


GOOD_INPUTS = np.zeros((4, 3, 2, 2), np.float32)
GOOD_LABELS = np.array([0, 1, 2, 0])
NAMES = np.array(LABELS)


def nan_inputs() -> NDArray[np.float32]:
    inputs = GOOD_INPUTS.copy()
    inputs[2, 0, 1, 1] = np.nan
    return inputs


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"inputs": np.array([{"x": 1}] * 4, dtype=object), "labels": GOOD_LABELS},
            "array 'inputs' holds pickled Python objects",
        ),
        (
            {"inputs": GOOD_INPUTS, "labels": GOOD_LABELS, "label_names": NAMES.astype(object)},
            "array 'label_names' holds pickled Python objects",
        ),
        ({"inputs": GOOD_INPUTS}, "lacks the array.* labels"),
        ({"labels": GOOD_LABELS, "other": GOOD_INPUTS}, "lacks the array.* inputs"),
        ({"inputs": GOOD_INPUTS, "labels": GOOD_LABELS[:3]}, "4 samples but labels has 3"),
        ({"inputs": GOOD_INPUTS[:0], "labels": GOOD_LABELS[:0]}, "is empty"),
        (
            {"inputs": np.zeros((11, 3), np.float32), "labels": np.arange(11) % 2},
            "11 samples, more than max_samples=10",
        ),
        (
            {"inputs": GOOD_INPUTS, "labels": np.array([0, 1, 3, 0]), "label_names": NAMES},
            "label 3 is out of range",
        ),
        ({"inputs": GOOD_INPUTS, "labels": np.array([0, -1, 1, 0])}, "label -1 is out of range"),
        ({"inputs": nan_inputs(), "labels": GOOD_LABELS}, r"NaN or infinity \(first at sample 2"),
        (
            {"inputs": np.full((4, 3), np.inf, np.float32), "labels": GOOD_LABELS},
            "4 input.* contain NaN or infinity",
        ),
        (
            {"inputs": GOOD_INPUTS, "labels": np.zeros(4, np.int64), "label_names": NAMES},
            "holds only class 'ok'; it needs samples of at least 2 classes",
        ),
        ({"inputs": GOOD_INPUTS, "labels": np.zeros(4, np.int64)}, "at least 2 classes"),
        ({"inputs": GOOD_INPUTS.astype(np.int16), "labels": GOOD_LABELS}, "float32 or uint8"),
        ({"inputs": GOOD_INPUTS, "labels": GOOD_LABELS.astype(float)}, "must be integers"),
        (
            {"inputs": GOOD_INPUTS, "labels": GOOD_LABELS, "label_names": NAMES.astype(bytes)},
            "label_names must be a 1-D unicode string array",
        ),
        (
            {
                "inputs": GOOD_INPUTS,
                "labels": GOOD_LABELS,
                "label_names": np.array(["a", "a", "b"]),
            },
            "unique non-empty strings",
        ),
    ],
)
def test_load_golden_set_rejects(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    path = write_npz(tmp_path / "golden.npz", **arrays)

    with pytest.raises(GoldenSetError, match=message) as raised:
        load_golden_set(path, max_samples=10)

    assert str(raised.value).startswith(f"golden set {path}")


def test_load_golden_set_rejects_files_that_are_not_npz(tmp_path: Path) -> None:
    text = tmp_path / "golden.csv"
    text.write_text("inputs,labels\n1,0\n")
    npy = tmp_path / "golden.npy"
    np.save(npy, GOOD_INPUTS)

    for path in (text, npy):
        with pytest.raises(GoldenSetError, match=r"is not a NumPy \.npz archive \(not a zip"):
            load_golden_set(path)
    with pytest.raises(GoldenSetError, match="does not exist"):
        load_golden_set(tmp_path / "missing.npz")


def test_load_golden_set_rejects_a_corrupt_archive(tmp_path: Path) -> None:
    path = tmp_path / "golden.npz"
    with path.open("wb") as f:
        np.savez_compressed(f, inputs=np.zeros((64, 64), np.float32), labels=np.arange(64) % 2)
    data = bytearray(path.read_bytes())
    data[100:140] = b"\xff" * 40  # inside the first member's compressed bytes
    path.write_bytes(bytes(data))

    with pytest.raises(GoldenSetError, match=r"golden set .* cannot be read as a \.npz archive"):
        load_golden_set(path)


# ---------------------------------------------------------------------------- docs


def test_module_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = registry.golden.__doc__
    assert doc is not None
    example = textwrap.dedent(doc.split("Example::\n", 1)[1])
    monkeypatch.chdir(tmp_path)

    exec(compile(example, "registry.golden example", "exec"), {})

    assert (tmp_path / "golden.npz").is_file()
