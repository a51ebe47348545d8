"""On-edge privacy: masked pixels are blanked before any image leaves; only rejects leave."""

import json

import numpy as np
import pytest

from linegate_cli.edge.privacy import (
    EvidenceStore,
    ExportRefused,
    PrivacyError,
    RedactionMask,
    infer_layout,
    load_mask_config,
    redact,
)

# A concave L-shaped operator zone and a triangle, in pixel coordinates of a 40x48 image.
OPERATOR_ZONE = [(2, 3), (20, 3), (20, 10), (9, 10), (9, 30), (2, 30)]
TRIANGLE = [(30.5, 5.0), (46.0, 20.0), (28.0, 36.0)]
HEIGHT, WIDTH = 40, 48
SENTINEL = 0xAB  # appears only inside the polygons of the test image


def inside(polygon, x, y):
    """Reference even-odd point-in-polygon test, one point at a time."""
    result = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            result = not result
    return result


def reference_mask(polygons, height, width):
    return np.array(
        [
            [any(inside(p, c + 0.5, r + 0.5) for p in polygons) for c in range(width)]
            for r in range(height)
        ]
    )


@pytest.fixture
def mask():
    return RedactionMask.from_polygons([OPERATOR_ZONE, TRIANGLE])


def sentinel_image(mask, shape=(3, HEIGHT, WIDTH)):
    """uint8 CHW noise that never holds SENTINEL, except at every masked pixel."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, SENTINEL, shape, dtype=np.uint8)
    image[:, mask.rasterise(HEIGHT, WIDTH)] = SENTINEL
    return image


def test_rasterised_mask_matches_the_even_odd_rule(mask):
    pixels = mask.rasterise(HEIGHT, WIDTH)
    np.testing.assert_array_equal(pixels, reference_mask([OPERATOR_ZONE, TRIANGLE], HEIGHT, WIDTH))
    # The rectangle part of the L: rows 3..9, columns 2..19 exactly (pixel centres inside).
    assert pixels[3:10, 2:20].all()
    assert not pixels[3:10, 20].any()
    assert not pixels[2, :20].any()
    assert not pixels[15, 9:25].any()  # the notch of the L stays visible


def test_normalised_polygons_scale_with_the_resolution():
    mask = RedactionMask.from_polygons([[(0.25, 0.5), (0.75, 0.5), (0.75, 1.0), (0.25, 1.0)]])
    assert mask.units == "normalised"
    small, large = mask.rasterise(8, 8), mask.rasterise(80, 160)
    assert small.sum() == 4 * 4
    assert small[4:, 2:6].all()
    assert large.sum() == 40 * 80
    assert large[40:, 40:120].all()


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("CHW", (3, HEIGHT, WIDTH)), ("HWC", (HEIGHT, WIDTH, 3)), ("NCHW", (2, 3, HEIGHT, WIDTH))],
)
def test_every_masked_pixel_is_blanked_in_every_channel_and_nothing_else(mask, layout, shape):
    image = np.random.default_rng(0).uniform(0.1, 1.0, shape).astype(np.float32)
    original = image.copy()
    assert infer_layout(shape) == layout

    out = redact(image, mask)

    np.testing.assert_array_equal(image, original)  # the input is untouched
    pixels = mask.rasterise(HEIGHT, WIDTH)
    to_hw_first = {"CHW": (1, 2, 0), "HWC": (0, 1, 2), "NCHW": (2, 3, 0, 1)}[layout]
    after, before = out.transpose(to_hw_first), original.transpose(to_hw_first)
    assert (after[pixels] == 0).all()
    np.testing.assert_array_equal(after[~pixels], before[~pixels])


def test_ambiguous_layouts_must_be_named(mask):
    with pytest.raises(PrivacyError, match="pass layout"):
        redact(np.ones((3, 3, 3)), mask)
    pixels = mask.rasterise(HEIGHT, WIDTH)
    with pytest.raises(PrivacyError, match="40x3"):
        redact(np.ones((3, HEIGHT, 3)), pixels, layout="CHW")  # a raster fits one size only


def test_mask_config_from_json(tmp_path):
    path = tmp_path / "masks.json"
    path.write_text(
        json.dumps(
            {
                "cam-1": [OPERATOR_ZONE],
                "cam-2": {"units": "pixel", "polygons": [[[0, 0], [1, 0], [1, 1]]]},
                "cam-3": [],
            }
        )
    )
    masks = load_mask_config(path)
    assert (
        masks["cam-1"].rasterise(HEIGHT, WIDTH).sum()
        == reference_mask([OPERATOR_ZONE], HEIGHT, WIDTH).sum()
    )
    assert masks["cam-2"].units == "pixel"
    assert not masks["cam-3"].rasterise(4, 4).any()
    path.write_text(json.dumps({"cam-1": [[[0, 0], [1, 1]]]}))
    with pytest.raises(PrivacyError, match="3 or more"):
        load_mask_config(path)


def test_export_of_a_reject_carries_no_unmasked_pixel_from_inside_the_polygons(mask, tmp_path):
    store = EvidenceStore(tmp_path / "evidence", masks={"cam-1": mask})
    image = sentinel_image(mask)
    record = store.record(image, camera="cam-1", decision="reject", model="weld", version="2.1")

    upload = store.export(record.record_id, reason="reject")

    assert bytes([SENTINEL]) not in upload.image_npy
    assert bytes([SENTINEL]) not in json.dumps(upload.record).encode()
    exported = upload.image()
    pixels = mask.rasterise(HEIGHT, WIDTH)
    assert (exported[:, pixels] == 0).all()
    np.testing.assert_array_equal(exported[:, ~pixels], image[:, ~pixels])
    assert upload.redacted_pixels == int(pixels.sum())
    # The raw image is still on the device, unredacted, and the export is logged there.
    raw = np.load(next((tmp_path / "evidence" / "records").glob("*/image.npy")))
    np.testing.assert_array_equal(raw, image)
    exports = (tmp_path / "evidence" / "exports.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in exports]
    assert [entry["record_id"] for entry in log] == [record.record_id]


def test_a_pass_leaves_the_device_only_when_attached_to_an_incident(mask, tmp_path):
    store = EvidenceStore(tmp_path / "evidence", masks={"cam-1": mask})
    record = store.record(sentinel_image(mask), camera="cam-1", decision="pass")
    assert set(record.reference()) == {
        "record_id",
        "camera",
        "decision",
        "image_sha256",
        "incident_id",
    }

    with pytest.raises(ExportRefused, match="rejects and incidents"):
        store.export(record.record_id, reason="curious")
    store.attach_incident(record.record_id, "inc-42")
    upload = store.export(record.record_id, reason="incident inc-42")
    assert upload.record["incident_id"] == "inc-42"
    assert bytes([SENTINEL]) not in upload.image_npy


def test_export_is_refused_without_a_mask_for_the_camera_or_a_reason(mask, tmp_path):
    store = EvidenceStore(tmp_path / "evidence", masks={"cam-1": mask})
    record = store.record(sentinel_image(mask), camera="cam-9", decision="reject")
    with pytest.raises(ExportRefused, match="no redaction mask"):
        store.export(record.record_id, reason="reject")
    with pytest.raises(ExportRefused, match="reason"):
        store.export(record.record_id, reason=" ")
    with pytest.raises(ExportRefused, match="not on this device"):
        store.export("missing", reason="reject")


def test_the_store_is_bounded_and_evicts_the_oldest(mask, tmp_path):
    image = sentinel_image(mask)
    store = EvidenceStore(tmp_path / "evidence", masks={}, max_records=3)
    ids = [store.record(image, camera="c", decision="pass").record_id for _ in range(5)]
    assert len(store) == 3
    assert ids[:2] == [i for i in ids if i not in store]

    per_record = store.total_bytes // 3
    reopened = EvidenceStore(
        tmp_path / "evidence", masks={}, max_records=10, max_bytes=2 * per_record + 10
    )
    # Reloaded in order from disk, and the tighter byte bound evicts the oldest at once.
    assert [i for i in ids if i in reopened] == ids[3:]
    newest = reopened.record(image, camera="c", decision="pass").record_id
    assert [i for i in [*ids, newest] if i in reopened] == [ids[4], newest]
    assert reopened.total_bytes <= reopened.max_bytes
    with pytest.raises(PrivacyError, match="needs"):
        EvidenceStore(tmp_path / "tiny", masks={}, max_bytes=100).record(
            image, camera="c", decision="pass"
        )
