"""The shipped demo model: it still finds the objects of fresh generated scenes (so a broken pre- or
post-processing change fails here), its deployable and raw-head forms agree, and its FP16 conversion
loses little. Ground truth comes from the scene generator; AP from pycocotools."""

import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("pycocotools")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from m2f_edge import Segmenter, cli, demo  # noqa: E402
from m2f_edge.models.evaluate import evaluate  # noqa: E402
from repo_scripts import REPO_ROOT, load_script  # noqa: E402
from tiny_models import mask_iou  # noqa: E402

REPORT = os.path.join(REPO_ROOT, "docs", "demo_model_eval.json")
# Floors a little below what tools/train_demo_model.py measured on its 200 held-out scenes
# (docs/demo_model_eval.json); 50 fresh scenes of another seed vary by a few points.
AP50_FLOOR = 0.64
FOREGROUND_IOU_FLOOR = 0.66

pytestmark = pytest.mark.skipif(not os.path.isfile(demo.MODEL_FILE), reason="the demo model file is not built")


@pytest.fixture(scope="module")
def fresh_scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_scenes")
    return str(folder), demo.write_coco(str(folder), 50, seed=424242, size=(192, 256))


def test_the_generator_is_seeded_and_its_ground_truth_is_consistent():
    first = list(demo.scenes(3, seed=11))
    again = list(demo.scenes(3, seed=11))
    other = list(demo.scenes(3, seed=12))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
    assert any(a.image.shape != c.image.shape or not np.array_equal(a.image, c.image) for a, c in zip(first, other))
    for scene in first:
        assert scene.image.dtype == np.uint8 and scene.image.shape == (128, 128, 3)
        assert 1 <= len(scene.masks) <= demo.MAX_OBJECTS
        covered = np.zeros(scene.image.shape[:2], np.int32)
        for mask, box in zip(scene.masks, scene.boxes):
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0
            assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            covered += mask
        assert covered.max() == 1  # visible parts never overlap


def test_the_shipped_model_is_small_and_named(tmp_path):
    assert os.path.getsize(demo.MODEL_FILE) <= 12 * 1000 * 1000
    seg = Segmenter("demo")
    assert seg.class_names == ["object"] and seg.contract == "deployable" and seg.input_size == (128, 128)


def test_the_shipped_model_finds_the_objects_of_fresh_scenes(fresh_scenes):
    folder, annotations = fresh_scenes
    result = evaluate(demo.MODEL_FILE, annotations, folder, binary=True, score_threshold=0.5, progress=False)
    assert result["mask"]["AP50"] >= AP50_FLOOR, result["mask"]
    assert result["foreground_miou"] >= FOREGROUND_IOU_FLOOR, result


def test_the_deployable_and_raw_head_forms_agree(tmp_path):
    raw = str(tmp_path / "demo_raw.onnx")
    assert cli.main(["convert", "demo", "-o", raw, "--raw-head"]) == 0
    deployable = Segmenter("demo")
    raw_head = Segmenter(raw)
    assert raw_head.contract == "raw"
    matched = 0
    for scene in demo.scenes(12, seed=99, size=(160, 200)):
        a, b = deployable.run(scene.image), raw_head.run(scene.image)
        assert len(a) == len(b)
        for i in range(len(a)):
            best = max(mask_iou(a.masks[i], b.masks[j]) for j in range(len(b)))
            assert best >= 0.95
            matched += 1
    assert matched >= 12  # the comparison covered real instances


def test_fp16_conversion_loses_at_most_two_points_of_ap50(tmp_path, fresh_scenes):
    folder, annotations = fresh_scenes
    half = str(tmp_path / "demo_fp16.onnx")
    assert cli.main(["convert", "demo", "-o", half, "--fp16"]) == 0
    full = evaluate(demo.MODEL_FILE, annotations, folder, binary=True, score_threshold=0.05, progress=False)
    reduced = evaluate(half, annotations, folder, binary=True, score_threshold=0.05, progress=False)
    assert reduced["mask"]["AP50"] >= full["mask"]["AP50"] - 0.02, (full["mask"], reduced["mask"])


def test_the_training_report_is_shipped_and_above_the_floors():
    with open(REPORT, encoding="utf-8") as handle:
        report = json.load(handle)
    measured = report["thresholds"]["0.5"]
    assert measured["mask"]["AP50"] > AP50_FLOOR and measured["foreground_miou"] > FOREGROUND_IOU_FLOOR
    assert report["eval_scenes"] == 200


def test_a_restarted_learning_rate_cycle_warms_up_from_its_own_start_and_decays_to_two_percent():
    learning_rate = load_script("tools/train_demo_model.py").learning_rate
    cycle = {"start": 8500, "total": 20000, "peak": 1.5e-4, "warmup": 100}
    assert learning_rate(8500, cycle) == pytest.approx(1.5e-6)
    assert learning_rate(8599, cycle) == pytest.approx(1.5e-4)
    middle = 8600 + (20000 - 8600) // 2
    assert learning_rate(middle, cycle) == pytest.approx(1.5e-4 * 0.51, rel=1e-3)
    assert learning_rate(20000, cycle) == pytest.approx(1.5e-4 * 0.02)
    decay = [learning_rate(step, cycle) for step in range(8600, 20001, 100)]
    assert all(later <= earlier for earlier, later in zip(decay, decay[1:]))
    first = {"start": 0, "total": 8500, "peak": 3e-4, "warmup": 300}
    assert learning_rate(0, first) == pytest.approx(1e-6)
