"""Instances: views, indexing, filtering, the instance map and COCO output (checked with pycocotools)."""

import json
import sys

import numpy as np
import pytest

from m2f_edge import Instances, Segmenter, _core
from mask_crops import crop_of, full_masks
from tiny_models import CLASS_NAMES_3, make_test_frame

mask_api = pytest.importorskip("pycocotools.mask")


def make_instances(masks, scores=None, labels=None, **kwargs):
    masks = np.asarray(masks, np.uint8)
    n = masks.shape[0]
    scores = np.linspace(0.9, 0.5, n).astype(np.float32) if scores is None else scores
    labels = np.zeros(n, np.int64) if labels is None else labels
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    return Instances(masks, scores, labels, np.array(boxes, np.float32).reshape(n, 4), **kwargs)


@pytest.fixture(scope="module")
def overlapping():
    """Three overlapping rectangles on 30x40, plus labels 0, 2, 1."""
    masks = np.zeros((3, 30, 40), np.uint8)
    masks[0, 5:20, 5:25] = 1
    masks[1, 10:28, 15:35] = 1
    masks[2, 0:12, 20:40] = 1
    return make_instances(masks, labels=np.array([0, 2, 1]), class_table=CLASS_NAMES_3)


@pytest.fixture(scope="module")
def segmented(deployable_model_3):
    frame, shapes = make_test_frame()
    return Segmenter(deployable_model_3, class_names=CLASS_NAMES_3).run(frame), shapes


def test_crops_are_views_of_the_core_result_and_masks_are_built_once(deployable_model_3):
    seg = Segmenter(deployable_model_3)
    prepared = seg.preprocess([make_test_frame()[0]])
    outputs = seg.infer(prepared.tensor)
    result = _core.postprocess_deployable(outputs["pred_masks"][0], outputs["pred_scores"][0],
                                          outputs["pred_classes"][0], prepared.transforms[0])
    inst = Instances.from_core(result, (240, 320))
    assert len(inst) == 3
    for i in range(len(inst)):
        crop, window = inst.crop(i)
        assert crop.dtype == np.bool_ and np.shares_memory(crop, result["crops"])
        np.testing.assert_array_equal(crop, crop_of(result, i).astype(bool))
        assert window == tuple(int(v) for v in result["boxes"][i])
    cropped_bytes = inst.nbytes
    assert cropped_bytes == sum(v.nbytes for v in result.values() if isinstance(v, np.ndarray))
    assert inst.masks.dtype == np.bool_ and inst.masks is not None
    np.testing.assert_array_equal(inst.masks, full_masks(result).astype(bool))
    assert inst.nbytes == cropped_bytes + 3 * 240 * 320
    assert np.shares_memory(inst.masks, inst.masks)  # cached: the same array each time
    assert inst.boxes.dtype == np.float32 and inst.scores.dtype == np.float32
    assert inst.labels.dtype == np.int64 and inst.areas.dtype == np.int64


@pytest.fixture(scope="module")
def cropped():
    """The `overlapping` rectangles as the core returns them (identity transform): cropped masks,
    plus a one-pixel instance at the bottom-right corner and one touching the left and top borders."""
    masks = np.zeros((5, 30, 40), np.uint8)
    masks[0, 5:20, 5:25] = 1
    masks[1, 10:28, 15:35] = 1
    masks[2, 0:12, 20:40] = 1
    masks[3, 29, 39] = 1
    masks[4, 0:30, 0:3] = 1
    masks[4, 0, 0:40] = 1
    transform = _core.ResizeTransform("stretch", 30, 40, 30, 40)
    scores = np.array([0.9, 0.7, 0.5, 0.45, 0.4], np.float32)
    result = _core.postprocess_deployable(masks, scores, np.array([0, 2, 1, 0, 1]), transform, score_threshold=0.1)
    inst = Instances.from_core(result, (30, 40), class_table=CLASS_NAMES_3)
    return inst, masks


def test_cropped_instances_behave_as_full_masks(cropped):
    inst, masks = cropped
    full = make_instances(masks, scores=inst.scores, labels=inst.labels, class_table=CLASS_NAMES_3)
    assert len(inst) == 5 and inst.image_size == (30, 40)
    np.testing.assert_array_equal(inst.boxes, full.boxes)
    np.testing.assert_array_equal(inst.areas, masks.reshape(5, -1).sum(1))
    reference_map = np.zeros((30, 40), np.int32)
    for i in reversed(range(5)):
        reference_map[masks[i] != 0] = i + 1
    np.testing.assert_array_equal(inst.instance_map, reference_map)
    for i in range(5):
        np.testing.assert_array_equal(inst.mask(i), masks[i].astype(bool))
        crop, (x1, y1, x2, y2) = inst.crop(i)
        np.testing.assert_array_equal(crop, masks[i, y1:y2, x1:x2].astype(bool))
        assert masks[i].sum() == crop.sum()  # nothing outside the window
    assert inst.crop(3)[0].shape == (1, 1) and inst.crop(3)[1] == (39, 29, 40, 30)
    assert inst.mask(-1).shape == (30, 40)
    with pytest.raises(IndexError, match="out of range"):
        inst.mask(5)
    with pytest.raises(TypeError, match="int"):
        inst.crop(0.5)
    # indexing and filter work on the crops (no full masks built) and agree with full masks
    for index in (1, -2, slice(1, 4), slice(None, None, 2), np.array([True, False, True, True, False]),
                  [4, 0, 2], []):
        picked, want = inst[index], full[index]
        assert picked._masks_u8 is None
        np.testing.assert_array_equal(picked.scores, want.scores)
        np.testing.assert_array_equal(picked.instance_map, want.instance_map)
        np.testing.assert_array_equal(picked.masks, want.masks)
    assert np.shares_memory(inst[1:3].crop(0)[0], inst.crop(1)[0])  # slices are views
    filtered = inst.filter(labels="blue")
    assert list(filtered.labels) == [2] and filtered._masks_u8 is None
    np.testing.assert_array_equal(filtered.mask(0), masks[1].astype(bool))


def test_cropped_to_coco_is_byte_identical_to_pycocotools(cropped):
    inst, masks = cropped
    fresh = inst[:]  # no full masks built yet on this one
    results = fresh.to_coco(image_id=1)
    assert fresh._masks_u8 is None
    for i, r in enumerate(results):
        reference = mask_api.encode(np.asfortranarray(masks[i]))
        assert r["segmentation"]["counts"].encode("ascii") == reference["counts"]
        assert r["segmentation"]["size"] == [30, 40]
        np.testing.assert_allclose(r["bbox"], mask_api.toBbox(reference), atol=1e-6)


def test_crops_checks():
    crops = np.ones(6, np.uint8)
    boxes = np.array([[0, 0, 3, 2]], np.float32)
    _core.expand_crops(crops, np.array([0, 6]), boxes, (4, 4))
    with pytest.raises(ValueError, match="crop_offsets"):
        _core.expand_crops(crops, np.array([0, 5]), boxes, (4, 4))
    with pytest.raises(ValueError, match="crop_offsets"):
        _core.rle_encode_crops(crops, np.array([0]), boxes, (4, 4))
    with pytest.raises(ValueError, match="boxes"):
        _core.instance_map_crops(crops, np.array([0, 6]), boxes, (1, 4))
    with pytest.raises(ValueError, match="boxes"):
        _core.expand_crops(crops, np.array([0, 6]), boxes + 0.5, (4, 4))
    with pytest.raises(ValueError, match="crops"):
        _core.expand_crops(crops[:4], np.array([0, 6]), boxes, (4, 4))
    with pytest.raises(TypeError, match="crops"):
        _core.expand_crops(crops.astype(np.float32), np.array([0, 6]), boxes, (4, 4))


def test_instance_map_matches_numpy(overlapping):
    reference = np.zeros((30, 40), np.int32)
    for i in reversed(range(len(overlapping))):  # paint low scores first: the highest score wins overlaps
        reference[overlapping.masks[i]] = i + 1
    np.testing.assert_array_equal(overlapping.instance_map, reference)
    assert overlapping.instance_map is overlapping.instance_map  # computed once


def test_to_coco_round_trip(segmented):
    inst, shapes = segmented
    results = inst.to_coco(image_id=42)
    assert json.loads(json.dumps(results)) == results  # plain JSON types
    assert len(results) == 3
    for i, r in enumerate(results):
        assert r["image_id"] == 42
        assert r["category_id"] == int(inst.labels[i]) + 1
        assert r["score"] == pytest.approx(float(inst.scores[i]))
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode("ascii"))
        assert r["segmentation"]["size"] == [240, 320]
        np.testing.assert_array_equal(mask_api.decode(rle).astype(bool), inst.masks[i])
        # the same bytes as pycocotools' own encoder
        reference = mask_api.encode(np.asfortranarray(inst.masks[i].astype(np.uint8)))
        assert rle["counts"] == reference["counts"]
        assert int(mask_api.area(rle)) == int(inst.areas[i])
        np.testing.assert_allclose(r["bbox"], mask_api.toBbox(rle), atol=1e-6)


def test_category_ids(segmented):
    inst, _ = segmented
    assert [r["category_id"] for r in inst.to_coco(1)] == [1, 2, 3]
    assert [r["category_id"] for r in inst.to_coco(1, category_ids=[10, 20, 30])] == [10, 20, 30]
    assert [r["category_id"] for r in inst.to_coco(1, category_ids={0: 7, 1: 8, 2: 9})] == [7, 8, 9]
    with pytest.raises(KeyError, match="label 1"):
        inst.to_coco(1, category_ids={0: 7})
    with pytest.raises(IndexError, match="label 2"):
        inst.to_coco(1, category_ids=[5, 6])


def test_category_ids_from_a_label_map(tmp_path, deployable_model_3):
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset:\n  contiguous_id: true\n  label_map:\n"
                    "    - {id: 5, name: red}\n    - {id: 9, name: green}\n    - {id: 11, name: blue}\n")
    inst = Segmenter(deployable_model_3, spec=str(spec)).run(make_test_frame()[0])
    assert inst.class_names == ["red", "green", "blue"]
    assert [r["category_id"] for r in inst.to_coco("img")] == [5, 9, 11]


def test_indexing(overlapping):
    one = overlapping[1]
    assert isinstance(one, Instances) and len(one) == 1 and one.labels[0] == 2
    assert one.class_names == ["blue"]
    np.testing.assert_array_equal(overlapping[-1].masks[0], overlapping.masks[2])
    sliced = overlapping[1:]
    assert len(sliced) == 2 and np.shares_memory(sliced.masks, overlapping.masks)  # slices are views
    picked = overlapping[np.array([True, False, True])]
    assert list(picked.labels) == [0, 1] and picked.image_size == (30, 40)
    reordered = overlapping[[2, 0]]
    np.testing.assert_array_equal(reordered.scores, overlapping.scores[[2, 0]])
    np.testing.assert_array_equal(reordered.masks, overlapping.masks[[2, 0]])
    assert len(overlapping[[]]) == 0 and overlapping[[]].masks.shape == (0, 30, 40)
    assert [len(x) for x in overlapping] == [1, 1, 1]
    with pytest.raises(IndexError, match="out of range"):
        overlapping[3]
    with pytest.raises(IndexError, match="out of range"):
        overlapping[[0, 5]]
    with pytest.raises(IndexError, match="shape"):
        overlapping[np.array([True, False])]
    with pytest.raises(IndexError, match="int, a slice"):
        overlapping[0.5]


def test_filter(overlapping):
    assert list(overlapping.filter(min_score=0.7).scores) == pytest.approx([0.9, 0.7])
    assert list(overlapping.filter(labels=[1, 2]).labels) == [2, 1]
    assert list(overlapping.filter(labels="red").labels) == [0]
    assert list(overlapping.filter(labels=["green"], min_score=0.6).labels) == []
    with pytest.raises(ValueError, match="purple"):
        overlapping.filter(labels=["purple"])


def test_empty_instances(deployable_model_3):
    seg = Segmenter(deployable_model_3, score_threshold=0.99)
    inst = seg.run(make_test_frame()[0])
    assert len(inst) == 0 and inst.masks.shape == (0, 240, 320)
    assert inst.to_coco(3) == []
    assert inst.instance_map.shape == (240, 320) and not inst.instance_map.any()
    assert "Instances(0 in 240x320" in repr(inst)


def test_repr(segmented):
    text = repr(segmented[0])
    assert text.startswith("Instances(3 in 240x320") and "red 0.90" in text and "blue 0.70" in text


def test_draw_delegates_to_the_drawing_module(segmented, monkeypatch):
    inst, _ = segmented
    calls = []
    fake = type(sys)("m2f_edge.drawing")
    fake.draw_instances = lambda frame, instances, **kw: calls.append((frame, instances, kw)) or frame
    monkeypatch.setitem(sys.modules, "m2f_edge.drawing", fake)
    frame = np.zeros((240, 320, 3), np.uint8)
    assert inst.draw(frame, alpha=0.3) is frame
    assert calls[0][1] is inst and calls[0][2] == {"alpha": 0.3}
    monkeypatch.setitem(sys.modules, "m2f_edge.drawing", None)
    with pytest.raises(ImportError, match="m2f_edge.drawing"):
        inst.draw(frame)


def test_constructor_checks():
    masks = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="masks"):
        Instances(np.zeros((8, 8), np.uint8), [], [], np.zeros((0, 4)))
    with pytest.raises(TypeError, match="masks"):
        Instances(masks.astype(np.float32), [1, 1], [0, 0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="scores"):
        Instances(masks, [1], [0, 0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="boxes"):
        Instances(masks, [1, 1], [0, 0], np.zeros((2, 3)))
    inst = Instances(masks.astype(bool), [0.5, 0.4], [0, 3], np.zeros((2, 4)))
    assert list(inst.areas) == [0, 0] and inst.class_names == ["class_0", "class_3"]


def test_pickle_round_trip(segmented):
    import pickle

    inst, _ = segmented
    copy = pickle.loads(pickle.dumps(inst))
    np.testing.assert_array_equal(copy.masks, inst.masks)
    np.testing.assert_array_equal(copy.boxes, inst.boxes)
    assert copy.class_names == inst.class_names and copy.image_size == inst.image_size
    np.testing.assert_array_equal(copy.instance_map, inst.instance_map)
