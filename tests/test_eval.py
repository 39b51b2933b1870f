"""m2f-edge eval: COCO mask/box AP and foreground mIoU on a small COCO-format dataset made here.

References: pycocotools' COCOeval called directly in the test, and numpy for the foreground IoU."""

import contextlib
import copy
import io
import json

import cv2
import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

import tiny_models  # noqa: E402
from m2f_edge.models.evaluate import evaluate, format_summary, load_ground_truth, score  # noqa: E402

HEIGHT, WIDTH = 120, 160
CATEGORIES = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}, {"id": 3, "name": "blue"}]
NAME_TO_CAT = {"red": 1, "green": 2, "blue": 3}


def _polygon(mask):
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]], \
        [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 images with red/green/blue rectangles (the third without the blue one); polygons as COCO writes."""
    folder = tmp_path_factory.mktemp("coco")
    images_dir = folder / "images"
    images_dir.mkdir()
    frame, masks = tiny_models.make_test_frame(HEIGHT, WIDTH)
    doc = {"images": [], "annotations": [], "categories": CATEGORIES}
    truth = {}
    for image_id in (1, 2, 3):
        image = frame.copy()
        names = ["red", "green", "blue"] if image_id != 3 else ["red", "green"]
        if image_id == 3:
            image[masks["blue"]] = 128
        name = "img_{}.png".format(image_id)
        cv2.imwrite(str(images_dir / name), image)
        doc["images"].append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
        truth[image_id] = []
        for shape in names:
            poly, bbox = _polygon(masks[shape])
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "category_id": NAME_TO_CAT[shape], "segmentation": poly, "bbox": bbox,
                                       "area": float(masks[shape].sum()), "iscrowd": 0})
            truth[image_id].append((NAME_TO_CAT[shape], masks[shape]))
    path = folder / "annotations.json"
    path.write_text(json.dumps(doc))
    return str(path), str(images_dir), truth, doc


def _results(truth, shift=0, score_of=lambda i: 0.9 - 0.1 * i):
    out = []
    for image_id, items in truth.items():
        for i, (cat, mask) in enumerate(items):
            moved = np.roll(mask, shift, axis=1)
            rle = mask_utils.encode(np.asfortranarray(moved.astype(np.uint8)))
            out.append({"image_id": image_id, "category_id": cat, "score": score_of(i),
                        "segmentation": {"size": rle["size"], "counts": str(rle["counts"], "ascii")},
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return out


def _direct_coco_ap(doc, results, iou_type, binary):
    """pycocotools on its own: the independent reference."""
    doc = copy.deepcopy(doc)
    results = copy.deepcopy(results)
    if binary:
        doc["categories"] = [{"id": 1, "name": "object"}]
        for item in doc["annotations"] + results:
            item["category_id"] = 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = doc
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:3]


@pytest.mark.parametrize("binary", [True, False])
def test_perfect_predictions_score_one(dataset, binary):
    path, _, truth, _ = dataset
    gt = load_ground_truth(path, binary=binary)
    results = _results(truth)
    if binary:
        for r in results:
            r["category_id"] = 1
    metrics = score(gt, results)
    for kind in ("mask", "box"):
        assert metrics[kind]["AP"] == pytest.approx(1.0)
        assert metrics[kind]["AP50"] == pytest.approx(1.0)
        assert metrics[kind]["AP75"] == pytest.approx(1.0)
    assert metrics["foreground_miou"] == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [3, 12])
def test_shifted_masks_score_as_pycocotools_and_numpy_say(dataset, shift):
    path, _, truth, doc = dataset
    gt = load_ground_truth(path, binary=True)
    results = _results(truth, shift=shift)
    for r in results:
        r["category_id"] = 1
    metrics = score(gt, results)
    want_mask = _direct_coco_ap(doc, results, "segm", binary=True)
    want_box = _direct_coco_ap(doc, results, "bbox", binary=True)
    np.testing.assert_allclose([metrics["mask"][k] for k in ("AP", "AP50", "AP75")], want_mask, atol=1e-9)
    np.testing.assert_allclose([metrics["box"][k] for k in ("AP", "AP50", "AP75")], want_box, atol=1e-9)
    assert metrics["mask"]["AP"] < 1.0
    ious = []
    for image_id, items in truth.items():
        fg = np.zeros((HEIGHT, WIDTH), bool)
        for _, m in items:
            fg |= m
        pred = np.roll(fg, shift, axis=1)
        ious.append((fg & pred).sum() / (fg | pred).sum())
    assert metrics["foreground_miou"] == pytest.approx(float(np.mean(ious)), abs=1e-12)
    assert metrics["foreground_miou"] < 1.0


def test_no_predictions_score_zero(dataset):
    path, _, _, _ = dataset
    metrics = score(load_ground_truth(path, binary=True), [])
    assert metrics["mask"]["AP"] == 0.0 and metrics["box"]["AP"] == 0.0
    assert metrics["foreground_miou"] == 0.0


def test_evaluate_tiny_model_end_to_end(dataset, tiny_model, tmp_path):
    path, images, truth, doc = dataset
    model = tiny_model("deployable")  # one class: category-agnostic by default
    out_dir = tmp_path / "eval"
    result = evaluate(model, path, images, score_threshold=0.05, progress=False, output_dir=str(out_dir))
    assert result["binary"] is True and result["images"] == 3
    assert result["mask"]["AP50"] == pytest.approx(1.0)
    assert result["mask"]["AP"] > 0.8 and result["box"]["AP"] > 0.8
    assert result["foreground_miou"] > 0.95
    assert result["speed"]["fps"] > 0 and result["speed"]["ms_per_image"] > 0
    per_image = json.loads((out_dir / "per_image.json").read_text())
    assert [p["image_id"] for p in per_image] == [1, 2, 3]
    assert [p["gt_instances"] for p in per_image] == [3, 3, 2]
    # the tiny model also emits a duplicate red mask at score 0.3: kept at threshold 0.05
    assert [p["pred_instances"] for p in per_image] == [4, 4, 3]
    written = json.loads((out_dir / "results.json").read_text())
    want = _direct_coco_ap(doc, written, "segm", binary=True)
    np.testing.assert_allclose([result["mask"][k] for k in ("AP", "AP50", "AP75")], want, atol=1e-9)
    table = format_summary(result)
    assert "mask" in table and "foreground mIoU" in table and "ms/image" in table


def test_evaluate_per_category_and_limit(dataset, tiny_model):
    path, images, _, _ = dataset
    model = tiny_model("deployable", num_classes=3)
    result = evaluate(model, path, images, binary=False, limit=2, progress=False, score_threshold=0.5,
                      class_names=["red", "green", "blue"])
    assert result["binary"] is False and result["images"] == 2
    # labels 0,1,2 -> category ids 1,2,3 (TAO's label + 1) = red, green, blue here
    assert result["mask"]["AP50"] == pytest.approx(1.0)
    assert len(result["per_image"]) == 2


def test_cli_eval(dataset, tiny_model, capsys):
    from m2f_edge.cli import main

    path, images, _, _ = dataset
    status = main(["eval", "--model", str(tiny_model("deployable")), "--coco", path, "--images", images,
                   "--no-progress", "--json"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["mask"]["AP50"] == pytest.approx(1.0)


def test_clear_errors(dataset, tiny_model, tmp_path):
    path, images, _, doc = dataset
    model = str(tiny_model("deployable"))
    with pytest.raises(FileNotFoundError, match="annotation"):
        evaluate(model, str(tmp_path / "missing.json"), images, progress=False)
    with pytest.raises(FileNotFoundError, match="images"):
        evaluate(model, path, str(tmp_path / "nowhere"), progress=False)
    broken = copy.deepcopy(doc)
    broken["images"][0]["file_name"] = "absent.png"
    with pytest.raises(FileNotFoundError, match="absent.png"):
        evaluate(model, broken, images, progress=False)
    with pytest.raises(ValueError, match="limit"):
        evaluate(model, path, images, limit=0, progress=False)
