"""Evaluate a model on a COCO-format dataset: COCO mask and box AP (pycocotools), foreground mIoU, speed.

    result = evaluate("model.onnx", "annotations.json", "images/", binary=True, limit=100)
    print(format_summary(result))

binary (category-agnostic, as TAO's model card data): every ground-truth category becomes one
"object" category (id 1) and every prediction is counted as "object". Otherwise predictions keep their
dataset category ids (the model's label map, else label + 1 as TAO) and are scored per category.

Foreground mIoU: per image, the IoU of "any predicted instance" against "any ground-truth instance"
(object vs background), averaged over images; an image with neither counts 1.0.

Needs the ``eval`` extra (pycocotools).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

_log = logging.getLogger("m2f_edge.models.evaluate")

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def _require_pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise ImportError("m2f-edge eval needs pycocotools: pip install 'm2f-edge[eval]' "
                          "(or: pip install pycocotools)") from exc
    return COCO, COCOeval, mask_utils


def load_ground_truth(annotations, binary: bool = True):
    """A pycocotools COCO from a path or a dataset dict; with ``binary`` all categories become one."""
    COCO, _, _ = _require_pycocotools()
    if isinstance(annotations, Mapping):
        dataset = copy.deepcopy(dict(annotations))
    else:
        path = os.fspath(annotations)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"coco: no such annotation file: {path}")
        with open(path, "r", encoding="utf-8") as handle:
            dataset = json.load(handle)
    for key in ("images", "annotations"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"coco: expected a COCO annotation file with a list under {key!r}")
    dataset.setdefault("categories", [])
    if binary:
        dataset["categories"] = [dict(OBJECT_CATEGORY)]
        for ann in dataset["annotations"]:
            ann["category_id"] = OBJECT_CATEGORY["id"]
    for index, ann in enumerate(dataset["annotations"]):
        ann.setdefault("id", index + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3]) if "bbox" in ann else 0.0
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def ground_truth_foreground(gt, image_id) -> np.ndarray:
    """bool (H,W): pixels covered by any annotation of the image (crowd regions included)."""
    info = gt.imgs[image_id]
    foreground = np.zeros((int(info["height"]), int(info["width"])), bool)
    for ann in gt.loadAnns(gt.getAnnIds(imgIds=[image_id], iscrowd=None)):
        foreground |= gt.annToMask(ann).astype(bool)
    return foreground


def foreground_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(predicted | truth)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(predicted & truth) / union)


def coco_metrics(gt, results: Sequence[Mapping[str, Any]], iou_type: str,
                 image_ids: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """COCO AP / AP50 / AP75 / APs / APm / APl (0-1 scale; -1 where the ground truth has no instance)."""
    _, COCOeval, _ = _require_pycocotools()
    if not results:
        return {name: (0.0 if gt.getAnnIds(imgIds=image_ids or []) else -1.0) for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        detections = gt.loadRes(copy.deepcopy(list(results)))
        evaluator = COCOeval(gt, detections, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(evaluator.stats[i]) for i, name in enumerate(METRIC_NAMES)}


def score(gt, results: Sequence[Mapping[str, Any]], image_ids: Optional[Sequence[int]] = None,
          predicted_foreground: Optional[Mapping[int, np.ndarray]] = None) -> Dict[str, Any]:
    """Metrics of COCO result dicts against ``gt`` (see :func:`load_ground_truth`).

    predicted_foreground: image id -> bool (H,W) union of the predicted masks; when None it is decoded
    from the results' RLE masks. Returns dict(mask={AP...}, box={AP...}, foreground_miou, foreground_iou
    {image_id: iou}).
    """
    _, _, mask_utils = _require_pycocotools()
    ids = list(image_ids) if image_ids is not None else sorted(gt.getImgIds())
    if predicted_foreground is None:
        predicted_foreground = {}
        for res in results:
            decoded = mask_utils.decode(res["segmentation"]).astype(bool)
            previous = predicted_foreground.get(res["image_id"])
            predicted_foreground[res["image_id"]] = decoded if previous is None else (previous | decoded)
    ious = {}
    for image_id in ids:
        truth = ground_truth_foreground(gt, image_id)
        predicted = predicted_foreground.get(image_id)
        if predicted is None:
            predicted = np.zeros_like(truth)
        if predicted.shape != truth.shape:
            raise ValueError(f"image {image_id}: predicted masks are {predicted.shape}, the annotation says "
                             f"{truth.shape}")
        ious[image_id] = foreground_iou(predicted, truth)
    return {
        "mask": coco_metrics(gt, results, "segm", ids),
        "box": coco_metrics(gt, results, "bbox", ids),
        "foreground_miou": float(np.mean(list(ious.values()))) if ious else float("nan"),
        "foreground_iou": ious,
    }


class _Progress:
    """One self-overwriting progress line on a terminal (or every 10% elsewhere)."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total = max(total, 1)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        fraction = done / self.total
        bar = "#" * int(fraction * 30)
        line = f"[{bar:<30}] {done}/{self.total} images, {rate:.1f} img/s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= self.total else ""))
            self.stream.flush()
        elif int(fraction * 10) != self.last_decile or done >= self.total:
            self.last_decile = int(fraction * 10)
            self.stream.write(line + "\n")
            self.stream.flush()


def _select_images(gt, limit: Optional[int]) -> List[int]:
    ids = sorted(gt.getImgIds())
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit: expected a positive number of images, got {limit}")
        ids = ids[:limit]
    return ids


def evaluate(model, annotations, images_dir, *, binary: Optional[bool] = None, limit: Optional[int] = None,
             score_threshold: Optional[float] = None, progress: bool = True,
             output_dir: Optional[str] = None, **segmenter_kwargs) -> Dict[str, Any]:
    """Run ``model`` (a path or an m2f_edge.Segmenter) on the dataset's images and score it.

    binary: category-agnostic scoring; None = on when the model has one class.
    score_threshold: keep instances above it (None: the Segmenter's; COCO AP is best measured with a
    low threshold, e.g. 0.05).
    output_dir: when given, writes results.json (COCO results), per_image.json and summary.json there.
    Returns dict(mask, box, foreground_miou, images, binary, per_image, speed, ...).
    """
    import cv2

    from ..segmenter import Segmenter

    if output_dir:
        _refuse_replacing_inputs(output_dir, model, annotations, segmenter_kwargs.get("spec"))
    started = time.perf_counter()
    segmenter = model if isinstance(model, Segmenter) else Segmenter(model, **segmenter_kwargs)
    if score_threshold is not None:
        segmenter.score_threshold = float(score_threshold)
    if binary is None:
        binary = len(segmenter.class_names) == 1
    gt = load_ground_truth(annotations, binary=binary)
    image_ids = _select_images(gt, limit)
    if not os.path.isdir(os.fspath(images_dir)):
        raise FileNotFoundError(f"images: no such folder: {images_dir}")
    known_categories = set(gt.getCatIds())

    results: List[Dict[str, Any]] = []
    per_image: List[Dict[str, Any]] = []
    predicted_foreground: Dict[int, np.ndarray] = {}
    model_seconds = 0.0
    bar = _Progress(len(image_ids), progress)
    warned_categories = set()
    for done, image_id in enumerate(image_ids, 1):
        info = gt.imgs[image_id]
        path = os.path.join(os.fspath(images_dir), info["file_name"])
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is None:
            raise FileNotFoundError(f"images: cannot read {path} (image id {image_id})")
        if frame.shape[:2] != (int(info["height"]), int(info["width"])):
            raise ValueError(f"images: {path} is {frame.shape[1]}x{frame.shape[0]}, the annotation says "
                             f"{info['width']}x{info['height']}")
        t0 = time.perf_counter()
        instances = segmenter.run(frame)
        seconds = time.perf_counter() - t0
        model_seconds += seconds
        detections = instances.to_coco(image_id)
        if binary:
            for det in detections:
                det["category_id"] = OBJECT_CATEGORY["id"]
        else:
            for det in detections:
                if det["category_id"] not in known_categories and det["category_id"] not in warned_categories:
                    warned_categories.add(det["category_id"])
                    _log.warning("predicted category id %s is not in the annotations; pass --binary or a "
                                 "label map (spec) to map the model's classes", det["category_id"])
        results.extend(detections)
        predicted_foreground[image_id] = (instances.instance_map > 0) if len(instances) else \
            np.zeros(frame.shape[:2], bool)
        per_image.append({"image_id": image_id, "file_name": info["file_name"],
                          "gt_instances": len(gt.getAnnIds(imgIds=[image_id], iscrowd=False)),
                          "pred_instances": len(instances), "seconds": seconds})
        bar.update(done)

    scored = score(gt, results, image_ids, predicted_foreground)
    for entry in per_image:
        entry["foreground_iou"] = scored["foreground_iou"][entry["image_id"]]
    total = time.perf_counter() - started
    result = {
        "model": getattr(segmenter, "model_path", None),
        "backend": getattr(getattr(segmenter, "backend", None), "name", None),
        "input_size": list(segmenter.input_size),
        "binary": bool(binary),
        "score_threshold": float(segmenter.score_threshold),
        "images": len(image_ids),
        "mask": scored["mask"],
        "box": scored["box"],
        "foreground_miou": scored["foreground_miou"],
        "per_image": per_image,
        "speed": {"model_seconds": model_seconds, "total_seconds": total,
                  "fps": len(image_ids) / model_seconds if model_seconds > 0 else float("nan"),
                  "ms_per_image": 1000.0 * model_seconds / max(len(image_ids), 1)},
    }
    if output_dir:
        write_outputs(result, results, output_dir)
    return result


OUTPUT_FILES = ("results.json", "per_image.json", "summary.json")


def _refuse_replacing_inputs(output_dir, model, annotations, spec) -> None:
    from .._outputs import refuse_replacing

    inputs = [("the annotations", os.fspath(annotations))]
    if isinstance(model, (str, os.PathLike)):
        inputs.append(("the model", os.fspath(model)))
    if isinstance(spec, (str, os.PathLike)):
        inputs.append(("the spec", os.fspath(spec)))
    refuse_replacing([("output_dir", os.path.join(output_dir, name)) for name in OUTPUT_FILES], inputs)


def write_outputs(result: Mapping[str, Any], results: Iterable[Mapping[str, Any]], output_dir: str) -> None:
    results_name, per_image_name, summary_name = OUTPUT_FILES
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, results_name), "w", encoding="utf-8") as handle:
        json.dump(list(results), handle)
    with open(os.path.join(output_dir, per_image_name), "w", encoding="utf-8") as handle:
        json.dump(result["per_image"], handle, indent=1)
    summary = {k: v for k, v in result.items() if k != "per_image"}
    with open(os.path.join(output_dir, summary_name), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)


def format_summary(result: Mapping[str, Any]) -> str:
    """A small text table of the metrics (percent) and the speed."""
    def pct(value):
        return "   n/a" if value is None or value < 0 else f"{100.0 * value:6.2f}"

    header = "        " + "".join(f"{name:>8}" for name in METRIC_NAMES)
    lines = [
        f"{result['images']} images, {'category-agnostic (binary)' if result.get('binary') else 'per category'}, "
        f"score threshold {result.get('score_threshold')}",
        header,
        "mask    " + "".join(f"{pct(result['mask'][n]):>8}" for n in METRIC_NAMES),
        "box     " + "".join(f"{pct(result['box'][n]):>8}" for n in METRIC_NAMES),
        f"foreground mIoU {pct(result['foreground_miou']).strip()}",
    ]
    speed = result.get("speed")
    if speed:
        lines.append(f"speed: {speed['ms_per_image']:.1f} ms/image (preprocess + inference + postprocess), "
                     f"{speed['fps']:.2f} images/s; whole run {speed['total_seconds']:.1f} s"
                     + (f" on {result['backend']}" if result.get("backend") else ""))
    return "\n".join(lines)
