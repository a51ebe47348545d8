"""Explainability: a reject carries an occlusion saliency map that follows the defect."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from linegate_cli.edge.privacy import EvidenceStore, RedactionMask
from linegate_cli.edge.saliency import (
    RuleExplanation,
    SaliencyError,
    SaliencyExplanation,
    load_session,
    occlusion_saliency,
)

SHAPE = (3, 32, 32)
GRID = (8, 8)  # 4x4-pixel cells


def build_defect_model(path: Path, *, fixed_batch: bool = False) -> Path:
    """P(defect) from the brightest pixel anywhere: a local spot decides the whole image.

    ``Flatten -> ReduceMax -> (max - 0.5) * 10 -> Softmax([-z, z])``: class 1 is "defect".
    """
    batch: int | str = 1 if fixed_batch else "batch"
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("ReduceMax", ["flat"], ["peak"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["peak", "level"], ["above"]),
            helper.make_node("Mul", ["above", "gain"], ["z"]),
            helper.make_node("Neg", ["z"], ["minus_z"]),
            helper.make_node("Concat", ["minus_z", "z"], ["logits"], axis=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "defect_spot",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, *SHAPE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 2])],
        initializer=[
            numpy_helper.from_array(np.array([0.5], np.float32), "level"),
            numpy_helper.from_array(np.array([10.0], np.float32), "gain"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return path


def part_with_defect(row: int, col: int, *, seed: int = 0) -> np.ndarray:
    """A dull part (values < 0.4) with a bright 2x2 spot at pixel (row, col)."""
    image = np.random.default_rng(seed).uniform(0.0, 0.4, SHAPE).astype(np.float32)
    image[:, row : row + 2, col : col + 2] = 1.0
    return image


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_defect_model(tmp_path_factory.mktemp("saliency") / "defect.onnx")


def test_the_hottest_cell_follows_the_defect_when_it_moves(model):
    session = load_session(model)
    first, meta = occlusion_saliency(session, part_with_defect(5, 9), target_class=1, grid=GRID)
    moved, _ = occlusion_saliency(session, part_with_defect(25, 21), target_class=1, grid=GRID)

    assert meta.baseline_score > 0.9  # the model rejects the part
    assert SaliencyExplanation(first, meta).hottest_cell == (5 // 4, 9 // 4)
    assert np.unravel_index(np.argmax(moved), moved.shape) == (25 // 4, 21 // 4)
    assert not np.allclose(first, moved)
    # Only the cell holding the spot matters to this model; the rest cost nothing.
    assert first[1, 2] > 0.5
    assert np.count_nonzero(np.abs(first) > 1e-3) == 1


def test_cost_is_grid_cells_plus_one_evaluations_in_one_run(model):
    image = part_with_defect(12, 12)
    saliency, meta = occlusion_saliency(model, image, target_class=1, grid=GRID)
    assert saliency.shape == GRID
    assert saliency.dtype == np.float32
    assert meta.evaluations == GRID[0] * GRID[1] + 1 == 65
    assert meta.runs == 1
    assert meta.elapsed_ms > 0
    print(f"occlusion saliency 8x8 on 3x32x32: {meta.elapsed_ms:.2f} ms, 65 evaluations")

    _, split = occlusion_saliency(model, image, target_class=1, grid=GRID, max_batch=16)
    assert (split.evaluations, split.runs) == (65, 5)


def test_a_model_with_a_fixed_batch_of_one_runs_once_per_image(tmp_path):
    fixed = build_defect_model(tmp_path / "fixed.onnx", fixed_batch=True)
    batched, _ = occlusion_saliency(
        build_defect_model(tmp_path / "dyn.onnx"), part_with_defect(0, 30), target_class=1
    )
    saliency, meta = occlusion_saliency(fixed, part_with_defect(0, 30), target_class=1)
    assert (meta.evaluations, meta.runs) == (65, 65)
    np.testing.assert_allclose(saliency, batched, atol=1e-6)


def test_the_original_image_is_not_modified(model):
    image = part_with_defect(3, 3)
    before = image.copy()
    occlusion_saliency(model, image[None], target_class=1, grid=(4, 4))
    np.testing.assert_array_equal(image, before)


def test_bad_requests_say_what_to_change(model):
    with pytest.raises(SaliencyError, match="target_class 2"):
        occlusion_saliency(model, part_with_defect(0, 0), target_class=2)
    with pytest.raises(SaliencyError, match="does not fit"):
        occlusion_saliency(model, part_with_defect(0, 0), target_class=1, grid=(64, 8))
    with pytest.raises(SaliencyError, match="CHW"):
        occlusion_saliency(model, np.zeros((32, 32), np.float32), target_class=1)


def test_a_reject_is_stored_with_its_explanation_and_exported_with_it(model, tmp_path):
    store = EvidenceStore(tmp_path / "evidence", masks={"cam-1": RedactionMask.empty()})
    image = part_with_defect(20, 4)
    saliency, meta = occlusion_saliency(model, image, target_class=1)
    record = store.record(
        image, camera="cam-1", decision="reject", explanation=SaliencyExplanation(saliency, meta)
    )
    rule = store.record(
        image,
        camera="cam-1",
        decision="reject",
        explanation=RuleExplanation("seam_width_mm > 2.5", "measured 3.1 mm at x=14"),
    )

    upload = store.export(record.record_id, reason="reject")
    explanation = upload.explanation
    assert explanation is not None
    assert explanation["method"] == "occlusion"
    assert explanation["hottest_cell"] == [5, 1]
    assert explanation["evaluations"] == 65
    assert np.asarray(explanation["saliency"]).shape == GRID
    assert store.export(rule.record_id, reason="reject").explanation == {
        "method": "rule",
        "rule": "seam_width_mm > 2.5",
        "detail": "measured 3.1 mm at x=14",
    }
