"""``m2f-edge verify``: do this machine's runners give the answers they should?

What a user runs first on a new Jetson or GPU box, in the spirit of Polygraphy's backend comparison. The
same frames go through:

- the candidate: the device runner (the whole path on the GPU) where a GPU and TensorRT are found; else
  the device runner driven by the device pipeline's CPU twin (m2f_edge.cpu_twin), and the report says
  that no device was there;
- the reference: the host runner on the reference model (ONNX Runtime on the ONNX; or the same engine
  with host stages when only an engine is given);
- independent references of the core's own stages, written with numpy and OpenCV only: preprocessing
  (resize, normalise, NCHW) and post-processing of either contract (the raw head's instance inference;
  select, sort, bilinear resize to the frame, threshold), fed with the reference model's own outputs.

Instances are matched greedily by mask IoU within a label; every instance that scores clearly above the
threshold (by more than the score tolerance) must find a partner. Tolerances are stated in the report:
FP32 runners agree to rounding; an FP16 engine is held to wider ones. The verdict is PASS only when every
check is within its tolerance.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import build_info
from ._opencv import require_cv2
from .cpu_twin import CpuTwinPipeline
from .runners import DeviceRunner
from .segmenter import Segmenter

TOLERANCES = {
    # what two runners of the same model may differ by, per precision of the candidate
    "fp32": {"iou": 0.98, "score": 1e-3},
    "fp16": {"iou": 0.90, "score": 0.02},
}
PREPROCESS_TOLERANCE = {"float32": 2e-3, "float16": 2e-2}  # normalised units; one grey level is about 0.017
POSTPROCESS_TOLERANCE = {"iou": 0.99, "score": 1e-5}


class Check(dict):
    """One row of the verdict table: name, compared, worst, tolerance, passed, note."""


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match_instances(candidate, reference, threshold: float, tolerance: Dict[str, float]) -> Dict[str, Any]:
    """Greedy matching by mask IoU among same-label pairs, best IoU first. Returns the worst IoU and score
    difference over the matches and the instances left unmatched although they score more than the
    score tolerance above the threshold (those near it may fairly fall on either side)."""
    pairs = []
    for i in range(len(candidate)):
        for j in range(len(reference)):
            if int(candidate.labels[i]) == int(reference.labels[j]):
                pairs.append((_mask_iou(candidate.masks[i], reference.masks[j]), i, j))
    pairs.sort(key=lambda p: -p[0])
    used_c, used_r, ious, score_diffs = set(), set(), [], []
    for iou, i, j in pairs:
        if i in used_c or j in used_r or iou <= 0.5:
            continue
        used_c.add(i)
        used_r.add(j)
        ious.append(iou)
        score_diffs.append(abs(float(candidate.scores[i]) - float(reference.scores[j])))
    margin = threshold + tolerance["score"]
    lost = [float(reference.scores[j]) for j in range(len(reference)) if j not in used_r and reference.scores[j] > margin]
    extra = [float(candidate.scores[i]) for i in range(len(candidate)) if i not in used_c and candidate.scores[i] > margin]
    return {"matched": len(ious), "min_iou": min(ious) if ious else None,
            "max_score_diff": max(score_diffs) if score_diffs else None, "unmatched_reference": lost,
            "unmatched_candidate": extra}


def reference_preprocess(frame: np.ndarray, transform, mean, std, color: str) -> np.ndarray:
    """numpy/OpenCV preprocessing of one frame into (3, H, W) float32, for the frame geometry the core
    reports (the pixel math is independent of the core)."""
    cv2 = require_cv2("m2f-edge verify")
    image = frame if frame.ndim == 3 else frame[:, :, None]
    if image.shape[2] == 1:
        rgb = np.repeat(image, 3, axis=2)
    else:
        rgb = image[:, :, :3][:, :, ::-1] if color.startswith("bgr") else image[:, :, :3]
    out = np.zeros((3, transform.net_height, transform.net_width), np.float32)
    resized = cv2.resize(np.ascontiguousarray(rgb).astype(np.float32),
                         (transform.content_width, transform.content_height), interpolation=cv2.INTER_LINEAR)
    normalised = (resized / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    out[:, :transform.content_height, :transform.content_width] = normalised.transpose(2, 0, 1)
    return out


def reference_instances_raw(class_logits, mask_logits, transform, no_object_index: int, topk: int):
    """numpy/OpenCV instance inference of the raw head for one frame (softmax, drop no-object, top-k over
    Q*C, bilinear upsampling of the query's logits to the network size, mask = logit > 0, score = probability
    x mean sigmoid inside the mask): the deployable contract's (masks 0/1, scores, classes)."""
    cv2 = require_cv2("m2f-edge verify")
    logits = class_logits.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    probs = np.delete(probs, no_object_index % probs.shape[1], axis=1)
    classes = probs.shape[1]
    order = np.argsort(-probs.reshape(-1), kind="stable")[:topk]
    masks = np.zeros((len(order), transform.net_height, transform.net_width), np.float32)
    scores = np.zeros(len(order), np.float32)
    for n, index in enumerate(order):
        query, label = divmod(int(index), classes)
        up = cv2.resize(mask_logits[query].astype(np.float32), (transform.net_width, transform.net_height),
                        interpolation=cv2.INTER_LINEAR)
        inside = up > 0
        mean_sigmoid = float((1 / (1 + np.exp(-up[inside].astype(np.float64)))).sum() / (inside.sum() + 1e-6))
        masks[n] = inside
        scores[n] = probs[query, label] * mean_sigmoid
    return masks, scores, order % classes


def reference_postprocess_deployable(masks, scores, classes, transform, threshold: float, max_instances: int):
    """numpy/OpenCV post-processing of the deployable contract for one frame: (masks, scores, labels)
    sorted by score, masks at the frame's size."""
    cv2 = require_cv2("m2f-edge verify")
    order = [k for k in np.argsort(-scores, kind="stable") if scores[k] >= threshold]
    kept_masks, kept_scores, kept_labels = [], [], []
    for k in order:
        content = masks[k, :transform.content_height, :transform.content_width].astype(np.float32)
        full = cv2.resize(content, (transform.frame_width, transform.frame_height), interpolation=cv2.INTER_LINEAR)
        mask = full > 0.5
        if not mask.any():
            continue
        kept_masks.append(mask)
        kept_scores.append(float(scores[k]))
        kept_labels.append(int(classes[k]))
        if len(kept_masks) == max_instances:
            break
    shape = (len(kept_masks), transform.frame_height, transform.frame_width)
    return (np.array(kept_masks, bool).reshape(shape), np.array(kept_scores, np.float32),
            np.array(kept_labels, np.int64))


class _Plain:
    """Instances-like triple for matching."""

    def __init__(self, masks, scores, labels):
        self.masks, self.scores, self.labels = masks, scores, labels

    def __len__(self):
        return len(self.scores)


def _timed_runs(segmenter, frames) -> Tuple[List[Any], float]:
    segmenter.run(frames[0])  # warm-up: the first run builds pipelines and graphs
    started = time.perf_counter()
    results = [segmenter.run(frame) for frame in frames]
    return results, (time.perf_counter() - started) * 1e3 / max(1, len(frames))


def _worst(values, pick):
    values = [v for v in values if v is not None]
    return pick(values) if values else None


def _runner_check(name, candidates, references, threshold, tolerance) -> Check:
    matches = [match_instances(c, r, threshold, tolerance) for c, r in zip(candidates, references)]
    min_iou = _worst([m["min_iou"] for m in matches], min)
    max_diff = _worst([m["max_score_diff"] for m in matches], max)
    unmatched = sum(len(m["unmatched_reference"]) + len(m["unmatched_candidate"]) for m in matches)
    passed = unmatched == 0 and (min_iou is None or min_iou >= tolerance["iou"]) and \
        (max_diff is None or max_diff <= tolerance["score"])
    return Check(name=name, compared="{} frames, {} instances matched".format(
        len(matches), sum(m["matched"] for m in matches)),
        worst="IoU {} / score diff {} / unmatched {}".format(
            "-" if min_iou is None else "{:.4f}".format(min_iou),
            "-" if max_diff is None else "{:.2e}".format(max_diff), unmatched),
        tolerance="IoU >= {} / score diff <= {} / unmatched 0".format(tolerance["iou"], tolerance["score"]),
        passed=bool(passed), min_iou=min_iou, max_score_diff=max_diff, unmatched=unmatched)


def verify(model: str, frames: Sequence[np.ndarray], *, engine: Optional[str] = None,
           reference: Optional[str] = None, score_threshold: Optional[float] = None,
           segmenter_options: Optional[Dict[str, Any]] = None,
           reference_hook: Optional[Callable[[Segmenter], None]] = None) -> Dict[str, Any]:
    """Compare the runners on ``frames``; returns the report (``passed``, ``checks``, ``device``, ...).

    model: the ONNX (or an engine); engine: a TensorRT engine of it for the device runner; reference: the
    model the host reference runs (default: ``model``). reference_hook: called with the reference
    Segmenter before it runs (tests use it to perturb the reference on purpose)."""
    if not frames:
        raise ValueError("frames: expected at least one frame to verify on")
    options = dict(segmenter_options or {})
    if score_threshold is not None:
        options["score_threshold"] = score_threshold
    info = build_info()
    device_model = engine or (model if str(model).endswith((".engine", ".plan")) else None)
    has_device = bool(info.get("gpu_present") and info.get("tensorrt") and device_model)
    if has_device:
        candidate = Segmenter(device_model, runner="device", **options)
        precision = "fp16"  # engines are built FP16 (TAO's FP32 layers kept): hold them to FP16 tolerances
        device_note = "device runner on {} ({})".format(info.get("gpu_name"), device_model)
    else:
        candidate = Segmenter(model, runner=lambda seg: DeviceRunner(seg, pipeline_factory=CpuTwinPipeline),
                              **options)
        precision = "fp16" if candidate.input_dtype == np.float16 else "fp32"
        why = info.get("gpu_error") or ("no TensorRT engine given" if info.get("gpu_present") else "no usable GPU")
        device_note = "NO DEVICE: {}; the device runner ran on the device pipeline's CPU twin".format(why)
    ref_model = reference or (model if not str(model).endswith((".engine", ".plan")) else device_model)
    ref = Segmenter(ref_model, runner="host", **options)
    if reference_hook is not None:
        reference_hook(ref)
    tolerance = TOLERANCES[precision]
    threshold = float(ref.score_threshold)

    candidate_results, candidate_ms = _timed_runs(candidate, frames)
    reference_results, reference_ms = _timed_runs(ref, frames)
    checks = [_runner_check("{} runner vs host reference".format(candidate.runner.name), candidate_results,
                            reference_results, threshold, tolerance)]
    # the core's stages once per frame, shared by the two checks against numpy/OpenCV
    stages = [(frame, ref.preprocess([frame])) for frame in frames]
    checks.append(_preprocess_check(ref, stages))
    checks.append(_postprocess_check(ref, stages, reference_results))
    report = {
        "passed": all(c["passed"] for c in checks), "device": device_note, "device_present": has_device,
        "precision": precision, "frames": len(frames), "model": str(model), "reference_model": str(ref_model),
        "engine": engine, "score_threshold": threshold, "tolerances": {"runner": tolerance,
                                                                       "preprocess": PREPROCESS_TOLERANCE,
                                                                       "postprocess": POSTPROCESS_TOLERANCE},
        "timings_ms_per_frame": {"candidate ({})".format(candidate.runner.name): candidate_ms,
                                 "reference (host)": reference_ms},
        "checks": [dict(c) for c in checks],
    }
    return report


def _preprocess_check(ref: Segmenter, stages) -> Check:
    worst = 0.0
    for frame, prepared in stages:
        expected = reference_preprocess(frame, prepared.transforms[0], ref.mean, ref.std, ref.color)
        worst = max(worst, float(np.abs(prepared.tensor[0].astype(np.float32) - expected).max()))
    limit = PREPROCESS_TOLERANCE.get(ref.input_dtype.name, PREPROCESS_TOLERANCE["float32"])
    return Check(name="core preprocessing vs numpy/OpenCV", compared="{} frames".format(len(stages)),
                 worst="max abs diff {:.2e}".format(worst), tolerance="<= {:g}".format(limit),
                 passed=worst <= limit, max_abs_diff=worst)


def _postprocess_check(ref: Segmenter, stages, reference_results) -> Check:
    expected = []
    for _, prepared in stages:
        outputs = ref.infer(prepared.tensor)
        transform = prepared.transforms[0]
        if ref.contract == "deployable":
            masks, scores, classes = (outputs["pred_masks"][0], outputs["pred_scores"][0].astype(np.float32),
                                      outputs["pred_classes"][0])
        else:
            masks, scores, classes = reference_instances_raw(outputs["pred_logits"][0], outputs["pred_masks"][0],
                                                             transform, int(ref.no_object_index), int(ref.topk))
        expected.append(_Plain(*reference_postprocess_deployable(masks, scores, classes, transform,
                                                                 float(ref.score_threshold), int(ref.max_instances))))
    return _runner_check("core post-processing vs numpy/OpenCV", reference_results, expected,
                         float(ref.score_threshold), POSTPROCESS_TOLERANCE)


def format_report(report: Dict[str, Any]) -> str:
    lines = ["m2f-edge verify: {} on {} frame(s)".format(report["model"], report["frames"]),
             "device: {}".format(report["device"]),
             "reference: host runner on {}; precision of the candidate: {}".format(report["reference_model"],
                                                                                report["precision"]), ""]
    rows = [("check", "compared", "worst", "tolerance", "verdict")]
    for check in report["checks"]:
        rows.append((check["name"], check["compared"], check["worst"], check["tolerance"],
                     "PASS" if check["passed"] else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("")
    lines.append("timings (ms per frame, one frame at a time): " + ", ".join(
        "{} {:.1f}".format(name, ms) for name, ms in report["timings_ms_per_frame"].items()))
    lines.append("verdict: {}".format("PASS" if report["passed"] else "FAIL: see the rows marked FAIL"))
    return "\n".join(lines)


def write_json(report: Dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
