"""Post-processing against independent references: numpy + OpenCV for the deployable path, a
numpy/torch re-implementation of TAO's instance inference for the raw head, numpy for the
instance map. Disagreement is allowed only at exact ties of the bilinear blend (a handful of
pixels), so masks are compared by the fraction of differing pixels (observed: 0 everywhere)."""

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
_core = pytest.importorskip("m2f_edge._core")

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the numpy upsampling below is used instead
    torch = None

from mask_crops import check_crop_layout, full_masks

MAX_DIFF_FRACTION = 1e-4


# ---------------------------------------------------------------- references
def blob_masks(k, height, width, seed, filled=(1, 3, 4, 7), dtype=np.float32):
    """k masks at network size; the listed ones hold a few ellipses of various sizes."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, height, width), np.uint8)
    for i in filled:
        if i >= k:
            continue
        for _ in range(rng.integers(1, 4)):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(1, max(2, width // 4))), int(rng.integers(1, max(2, height // 4))))
            cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return masks.astype(dtype)


def cv2_resize_linear(image, width, height):
    """cv2.resize INTER_LINEAR with OpenCV's own code. x86 wheels route float resizes through Intel
    IPP, whose sample positions round differently and so break exact 0.5 ties the other way (seen:
    0.5 vs 0.5000012 at 64 -> 320); OpenCV on ARM (Jetson) has no IPP. So IPP is off here."""
    ipp = getattr(cv2, "ipp", None)
    was_on = ipp.useIPP() if ipp is not None else False
    if ipp is not None:
        ipp.setUseIPP(False)
    try:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    finally:
        if ipp is not None:
            ipp.setUseIPP(was_on)


def frame_from_net(mask, transform):
    """A network-size mask (any values) back to the frame the way users would: crop, cv2 resize, > 0.5."""
    crop = np.ascontiguousarray(mask[: transform.content_height, : transform.content_width], dtype=np.float32)
    return cv2_resize_linear(crop, transform.frame_width, transform.frame_height) > 0.5


def box_of(mask):
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


def select(scores, threshold, max_instances):
    scores = np.asarray(scores, np.float64)
    keep = np.flatnonzero(scores >= threshold)  # NaN never passes
    order = keep[np.argsort(-scores[keep], kind="stable")]
    return order[:max_instances]


def reference_deployable(masks, scores, classes, transform, threshold=0.5, max_instances=100):
    out = dict(masks=[], scores=[], labels=[], query_indices=[])
    for i in select(scores, threshold, max_instances):
        frame_mask = frame_from_net(masks[i], transform)
        if not frame_mask.any():
            continue
        out["masks"].append(frame_mask)
        out["scores"].append(float(scores[i]))
        out["labels"].append(int(classes[i]))
        out["query_indices"].append(int(i))
    return out


def upsample_bilinear(logits, height, width):
    """(Q,h,w) -> (Q,H,W), bilinear with align_corners=False, as PyTorch's F.interpolate."""
    logits = np.asarray(logits, np.float32)
    if torch is not None:
        return F.interpolate(torch.from_numpy(np.ascontiguousarray(logits))[None], size=(height, width),
                             mode="bilinear", align_corners=False)[0].numpy()

    def taps(n_out, n_in):
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
        i0 = src.astype(np.int64)
        w1 = (src - i0).astype(np.float32)
        i1 = i0 + (i0 < n_in - 1)
        return i0, i1, np.float32(1) - w1, w1

    y0, y1, hy0, hy1 = taps(height, logits.shape[1])
    x0, x1, wx0, wx1 = taps(width, logits.shape[2])
    horizontal = logits[:, :, x0] * wx0 + logits[:, :, x1] * wx1
    return horizontal[:, y0, :] * hy0[:, None] + horizontal[:, y1, :] * hy1[:, None]


def reference_raw(class_logits, mask_logits, transform, no_object_index=0, topk=100, threshold=0.5,
                  max_instances=100):
    """TAO's instance inference (detectron2 with the no-object column first) written out in numpy."""
    logits = np.asarray(class_logits, np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    probs = np.delete(probs, no_object_index % probs.shape[1], axis=1).astype(np.float32)
    classes = probs.shape[1]
    flat = probs.reshape(-1)
    k = min(topk, flat.size)
    top = np.argsort(-flat, kind="stable")[:k]  # ties: lower index first
    queries, labels, class_probs = top // classes, top % classes, flat[top]
    upsampled = upsample_bilinear(np.asarray(mask_logits)[queries], transform.net_height, transform.net_width)
    binary = upsampled > 0
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-upsampled.astype(np.float64)))
    mask_scores = (sig * binary).reshape(k, -1).sum(1) / (binary.reshape(k, -1).sum(1) + 1e-6)
    scores = class_probs * mask_scores
    out = dict(masks=[], scores=[], labels=[], query_indices=[])
    for j in select(scores, threshold, max_instances):
        frame_mask = frame_from_net(binary[j].astype(np.float32), transform)
        if not frame_mask.any():
            continue
        out["masks"].append(frame_mask)
        out["scores"].append(float(scores[j]))
        out["labels"].append(int(labels[j]))
        out["query_indices"].append(int(queries[j]))
    return out


def check_against(result, reference, transform, score_tol=1e-5):
    n = len(reference["scores"])
    assert tuple(result["image_size"]) == (transform.frame_height, transform.frame_width)
    check_crop_layout(result)
    masks = full_masks(result)
    np.testing.assert_array_equal(_core.expand_crops(result["crops"], result["crop_offsets"], result["boxes"],
                                                     result["image_size"]), masks)
    assert result["scores"].dtype == np.float32 and result["scores"].shape == (n,)
    assert result["labels"].dtype == np.int64 and result["areas"].dtype == np.int64
    assert result["query_indices"].dtype == np.int64
    assert result["boxes"].dtype == np.float32 and result["boxes"].shape == (n, 4)
    np.testing.assert_array_equal(result["query_indices"], reference["query_indices"])
    np.testing.assert_array_equal(result["labels"], reference["labels"])
    np.testing.assert_allclose(result["scores"], reference["scores"], rtol=0, atol=score_tol)
    assert np.all(np.diff(result["scores"]) <= 0)
    for i in range(n):
        ours = masks[i].astype(bool)
        differing = np.count_nonzero(ours != reference["masks"][i]) / ours.size
        assert differing < MAX_DIFF_FRACTION, (i, differing)
        # boxes and areas must describe the returned masks exactly
        assert result["areas"][i] == np.count_nonzero(ours)
        np.testing.assert_array_equal(result["boxes"][i], box_of(ours))


# ---------------------------------------------------------------- deployable
FRAME_CASES = [
    ("stretch", 1080, 1920, 160, 160),   # upscale, aspect change
    ("stretch", 61, 97, 128, 96),        # downscale on one axis, odd frame size
    ("letterbox", 480, 640, 96, 160),    # content region narrower than the network input
    ("letterbox", 300, 120, 128, 128),   # tall frame: padding on the right
    ("stretch", 64, 64, 64, 64),         # identity
    ("stretch", 33, 45, 64, 96),         # exact-ish 2x downscale
]


@pytest.mark.parametrize("mode,fh,fw,nh,nw", FRAME_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8, bool])
def test_deployable_matches_numpy_opencv(mode, fh, fw, nh, nw, dtype):
    transform = _core.ResizeTransform(mode, fh, fw, nh, nw)
    k = 10
    masks = blob_masks(k, nh, nw, seed=fh * 7 + nw, dtype=dtype)
    masks[5, transform.content_height // 2, transform.content_width // 2] = 1  # a single-pixel mask
    scores = np.array([0.9, 0.6, 0.3, 0.8, 0.75, 0.95, 0.5, 0.55, np.nan, 0.6], np.float32)
    classes = np.arange(k, dtype=np.int64) % 3
    result = _core.postprocess_deployable(masks, scores, classes, transform)
    reference = reference_deployable(masks, scores, classes, transform)
    assert len(reference["scores"]) >= 3
    check_against(result, reference, transform)


def test_deployable_soft_values_and_strided_views():
    """Non-binary float values and views of a bigger batch tensor are read in place, as is."""
    transform = _core.ResizeTransform("stretch", 200, 300, 64, 96)
    rng = np.random.default_rng(3)
    batch = blob_masks(12, 64, 96, seed=5, filled=range(12)).astype(np.float32)
    batch *= rng.uniform(0.3, 1.0, size=batch.shape).astype(np.float32)
    full = np.zeros((2, 12, 64, 192), np.float32)
    full[1, :, :, ::2] = batch
    masks = full[1, :, :, ::2]                      # strided columns
    scores_all = np.linspace(0.1, 0.99, 24).astype(np.float32)
    scores = scores_all[::2]                         # strided scores
    classes = np.arange(12, dtype=np.int32)
    result = _core.postprocess_deployable(masks, scores, classes, transform, score_threshold=0.4, max_instances=5)
    reference = reference_deployable(batch, scores, classes, transform, threshold=0.4, max_instances=5)
    check_against(result, reference, transform)
    assert len(result["scores"]) == 5


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_deployable_runs_of_other_values(dtype):
    """Dense rows are scanned as runs of 0/1 a word at a time; runs of other values (soft masks,
    0/255 uint8, a lone -0.0 or NaN) must still be blended exactly as OpenCV does."""
    transform = _core.ResizeTransform("stretch", 150, 230, 64, 96)
    masks = np.zeros((4, 64, 96), np.float32)
    masks[0, 5:40, 3:90] = 1
    masks[0, 10:20, 20:70] = 0.75 if dtype != np.uint8 else 255
    masks[1, 30:60, 10:50] = 0.5 if dtype != np.uint8 else 2
    masks[1, 31, 12] = 1
    masks[2, 0:64, 0:96] = 1
    masks[2, 40:41, 0:96] = 0
    if dtype != np.uint8:
        masks[3, 20:30, 20:40] = 1
        masks[3, 25, 30] = -0.0
        masks[3, 22, 22] = np.nan
    else:
        masks[3, 20:30, 20:40] = 1
    masks = masks.astype(dtype)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.zeros(4, np.int64)
    result = _core.postprocess_deployable(masks, scores, classes, transform)
    reference = reference_deployable(masks, scores, classes, transform)
    check_against(result, reference, transform)


def test_results_survive_later_calls():
    """Output masks come from a recycled pool: a result still held must never be reused."""
    transform = _core.ResizeTransform("stretch", 240, 320, 64, 64)
    masks = blob_masks(6, 64, 64, seed=30, filled=range(6))
    scores = np.linspace(0.9, 0.6, 6).astype(np.float32)
    classes = np.zeros(6, np.int64)
    held = _core.postprocess_deployable(masks, scores, classes, transform)
    copy = full_masks(held)
    for seed in range(5):
        other = blob_masks(6, 64, 64, seed=100 + seed, filled=range(6))
        _core.postprocess_deployable(other, scores, classes, transform)  # dropped at once: recycled
        kept = _core.postprocess_deployable(other, scores, classes, transform)
        np.testing.assert_array_equal(full_masks(held), copy)
        reference = reference_deployable(other, scores, classes, transform)
        check_against(kept, reference, transform)
    del held
    again = _core.postprocess_deployable(masks, scores, classes, transform)
    np.testing.assert_array_equal(full_masks(again), copy)


def test_deployable_ties_keep_graph_order_and_cap():
    transform = _core.ResizeTransform("stretch", 40, 40, 32, 32)
    masks = np.zeros((6, 32, 32), np.float32)
    for i in range(6):
        masks[i, i * 4 : i * 4 + 3, 2:9] = 1
    scores = np.array([0.7, 0.9, 0.7, 0.9, 0.7, 0.2], np.float32)
    result = _core.postprocess_deployable(masks, scores, np.zeros(6, np.int64), transform, max_instances=4)
    np.testing.assert_array_equal(result["query_indices"], [1, 3, 0, 2])


def test_deployable_cap_before_empty_masks_are_dropped():
    """Empty masks are skipped after the cap (as the contract orders it), never returned."""
    transform = _core.ResizeTransform("stretch", 50, 50, 32, 32)
    masks = np.zeros((3, 32, 32), np.float32)
    masks[1, 4:10, 4:10] = 1
    masks[2, 10:20, 10:20] = 1
    scores = np.array([0.99, 0.9, 0.8], np.float32)
    result = _core.postprocess_deployable(masks, scores, np.zeros(3, np.int64), transform, max_instances=2)
    np.testing.assert_array_equal(result["query_indices"], [1])


def test_deployable_reads_only_the_content_region():
    """Letterbox: whatever the model says in the padding never reaches the frame."""
    transform = _core.ResizeTransform("letterbox", 100, 200, 64, 64)
    assert transform.content_height < 64
    masks = np.zeros((2, 64, 64), np.float32)
    masks[0, transform.content_height :, :] = 1          # only in the padding
    masks[1, :10, :10] = 1
    masks[1, transform.content_height :, :] = 1
    result = _core.postprocess_deployable(masks, np.array([0.9, 0.8], np.float32), np.zeros(2, np.int64), transform)
    np.testing.assert_array_equal(result["query_indices"], [1])
    reference = reference_deployable(masks, np.array([0.9, 0.8], np.float32), np.zeros(2, np.int64), transform)
    check_against(result, reference, transform)


def test_deployable_thread_counts_agree():
    transform = _core.ResizeTransform("stretch", 333, 517, 128, 128)
    masks = blob_masks(8, 128, 128, seed=11, filled=range(8))
    scores = np.linspace(0.95, 0.55, 8).astype(np.float32)
    classes = np.zeros(8, np.int64)
    one = _core.postprocess_deployable(masks, scores, classes, transform, threads=1)
    many = _core.postprocess_deployable(masks, scores, classes, transform, threads=3)
    for key in one:
        np.testing.assert_array_equal(one[key], many[key])


@pytest.mark.parametrize("k", [0, 3])
def test_deployable_nothing_kept_gives_empty_shaped_arrays(k):
    transform = _core.ResizeTransform("stretch", 48, 64, 32, 32)
    masks = blob_masks(k, 32, 32, seed=1, filled=range(k))
    scores = np.full(k, 0.1, np.float32)
    result = _core.postprocess_deployable(masks, scores, np.zeros(k, np.int64), transform)
    assert result["crops"].shape == (0,) and result["crops"].dtype == np.uint8
    assert result["crop_offsets"].tolist() == [0] and tuple(result["image_size"]) == (48, 64)
    assert result["scores"].shape == (0,) and result["scores"].dtype == np.float32
    assert result["labels"].shape == (0,) and result["labels"].dtype == np.int64
    assert result["boxes"].shape == (0, 4) and result["boxes"].dtype == np.float32
    assert result["areas"].shape == (0,) and result["query_indices"].shape == (0,)


def test_deployable_all_nan_scores():
    transform = _core.ResizeTransform("stretch", 48, 64, 32, 32)
    masks = blob_masks(4, 32, 32, seed=2, filled=range(4))
    result = _core.postprocess_deployable(masks, np.full(4, np.nan, np.float32), np.zeros(4, np.int32), transform,
                                          score_threshold=-1.0)
    assert full_masks(result).shape == (0, 48, 64)


# ---------------------------------------------------------------- raw head
def raw_outputs(queries, classes, low_h, low_w, seed, no_object_index=0, strong=(2, 5, 9, 17)):
    """Mask logits with a few positive blobs (others negative) and class logits where a few queries
    are confident objects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:low_h, 0:low_w].astype(np.float32)
    mask_logits = np.empty((queries, low_h, low_w), np.float32)
    for q in range(queries):
        cy, cx = rng.uniform(0, low_h), rng.uniform(0, low_w)
        ry, rx = rng.uniform(1, low_h / 3), rng.uniform(1, low_w / 3)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        mask_logits[q] = (1.0 - d) * rng.uniform(2, 8) + rng.normal(0, 0.3, d.shape)
        if q not in strong and rng.uniform() < 0.5:
            mask_logits[q] -= 20.0  # an empty query
    class_logits = rng.normal(-2.0, 1.0, (queries, classes + 1)).astype(np.float32)
    no_obj = no_object_index % (classes + 1)
    class_logits[:, no_obj] = rng.normal(2.0, 1.0, queries)
    object_columns = [c for c in range(classes + 1) if c != no_obj]
    for q in strong:
        if q < queries:
            class_logits[q, no_obj] = -4.0
            class_logits[q, object_columns[q % classes]] = 5.0
    return class_logits, mask_logits


RAW_CASES = [
    ("stretch", 1080, 1920, 64, 64, 1, 0),
    ("stretch", 97, 131, 64, 96, 3, 0),
    ("letterbox", 480, 640, 96, 160, 1, -1),
    ("letterbox", 250, 90, 128, 128, 4, 4),
]


@pytest.mark.parametrize("mode,fh,fw,nh,nw,classes,no_object_index", RAW_CASES)
def test_raw_matches_reference_inference(mode, fh, fw, nh, nw, classes, no_object_index):
    transform = _core.ResizeTransform(mode, fh, fw, nh, nw)
    class_logits, mask_logits = raw_outputs(24, classes, nh // 4, nw // 4, seed=fh + nw,
                                            no_object_index=no_object_index)
    for threshold in (0.5, 0.2):
        result = _core.postprocess_raw(class_logits, mask_logits, transform, no_object_index=no_object_index,
                                       topk=20, score_threshold=threshold)
        reference = reference_raw(class_logits, mask_logits, transform, no_object_index=no_object_index, topk=20,
                                  threshold=threshold)
        assert len(reference["scores"]) >= 2
        check_against(result, reference, transform)


def test_raw_float16_and_strided_inputs():
    transform = _core.ResizeTransform("stretch", 120, 160, 64, 64)
    class_logits, mask_logits = raw_outputs(16, 2, 16, 16, seed=4)
    cl16 = class_logits.astype(np.float16)
    ml16 = mask_logits.astype(np.float16)
    batch = np.zeros((3, 16, 16, 32), np.float16)
    batch[2, :, :, 1::2] = ml16
    result = _core.postprocess_raw(np.asfortranarray(cl16), batch[2, :, :, 1::2], transform, topk=30,
                                   score_threshold=0.3)
    reference = reference_raw(cl16.astype(np.float32), ml16.astype(np.float32), transform, topk=30, threshold=0.3)
    assert len(reference["scores"]) >= 2
    check_against(result, reference, transform)


def test_raw_low_threshold_keeps_all_topk_with_masks():
    """With threshold 0 the pruning cannot skip anything: every top-k entry whose mask is not
    empty comes back, in reference order."""
    transform = _core.ResizeTransform("stretch", 100, 100, 64, 64)
    class_logits, mask_logits = raw_outputs(30, 1, 16, 16, seed=8)
    result = _core.postprocess_raw(class_logits, mask_logits, transform, topk=30, score_threshold=0.0)
    reference = reference_raw(class_logits, mask_logits, transform, topk=30, threshold=0.0)
    assert len(reference["scores"]) > 10
    check_against(result, reference, transform)


def test_raw_nan_logits_do_not_poison_other_queries():
    transform = _core.ResizeTransform("stretch", 100, 100, 64, 64)
    class_logits, mask_logits = raw_outputs(12, 1, 16, 16, seed=9)
    class_logits[5] = np.nan
    mask_logits[2, 3, 3] = np.nan
    result = _core.postprocess_raw(class_logits, mask_logits, transform, topk=12, score_threshold=0.3)
    assert 5 not in result["query_indices"]
    assert np.all(np.isfinite(result["scores"]))
    clean_c, clean_m = raw_outputs(12, 1, 16, 16, seed=9)
    again = _core.postprocess_raw(clean_c, clean_m, transform, topk=12, score_threshold=0.3)
    reference = reference_raw(clean_c, clean_m, transform, topk=12, threshold=0.3)
    check_against(again, reference, transform)


def test_raw_all_empty_masks():
    transform = _core.ResizeTransform("stretch", 50, 70, 32, 32)
    class_logits = np.tile(np.array([[-5.0, 5.0]], np.float32), (4, 1))
    mask_logits = np.full((4, 8, 8), -3.0, np.float32)
    result = _core.postprocess_raw(class_logits, mask_logits, transform, score_threshold=0.0)
    assert full_masks(result).shape == (0, 50, 70) and result["scores"].shape == (0,)


def test_raw_padding_only_mask_is_dropped_and_threads_agree():
    """Letterbox: a query whose mask lies only in the padding scores but never reaches the frame."""
    transform = _core.ResizeTransform("letterbox", 100, 200, 64, 64)
    class_logits, mask_logits = raw_outputs(8, 1, 16, 16, seed=12, strong=(0, 1, 2))
    mask_logits[1] = -5.0
    mask_logits[1, 14:, :] = 6.0  # rows 56.. of the network input: below content_height 32
    assert transform.content_height <= 40
    one = _core.postprocess_raw(class_logits, mask_logits, transform, topk=8, score_threshold=0.3, threads=1)
    many = _core.postprocess_raw(class_logits, mask_logits, transform, topk=8, score_threshold=0.3, threads=4)
    assert 1 not in one["query_indices"]
    for key in one:
        np.testing.assert_array_equal(one[key], many[key])
    check_against(one, reference_raw(class_logits, mask_logits, transform, topk=8, threshold=0.3), transform)


def test_max_instances_zero():
    transform = _core.ResizeTransform("stretch", 30, 40, 32, 32)
    masks = blob_masks(3, 32, 32, seed=3, filled=range(3))
    result = _core.postprocess_deployable(masks, np.full(3, 0.9, np.float32), np.zeros(3, np.int64), transform,
                                          max_instances=0)
    assert full_masks(result).shape == (0, 30, 40)
    class_logits, mask_logits = raw_outputs(4, 1, 8, 8, seed=3)
    result = _core.postprocess_raw(class_logits, mask_logits, transform, max_instances=0)
    assert full_masks(result).shape == (0, 30, 40) and result["boxes"].shape == (0, 4)


def test_random_small_sizes_both_paths():
    """Random sizes down to 1 pixel, up- and downscaling, both modes, thresholds and caps."""
    rng = np.random.default_rng(7)
    kept_total = 0
    for case in range(60):
        nh, nw, fh, fw = (int(v) for v in rng.integers(1, 70, 4))
        transform = _core.ResizeTransform(["stretch", "letterbox"][case % 2], fh * 2, fw, nh, nw)
        k = int(rng.integers(0, 6))
        if case % 3 == 0:
            masks = (rng.uniform(size=(k, nh, nw)) < 0.3).astype(np.float32)
        elif case % 3 == 1:
            masks = blob_masks(k, nh, nw, seed=case, filled=range(k)).astype(np.uint8)
        else:
            masks = (rng.uniform(size=(k, nh, nw)) * (rng.uniform(size=(k, nh, nw)) < 0.5)).astype(np.float32)
        scores = rng.uniform(size=k).astype(np.float32)
        threshold, cap = float(rng.uniform(0, 0.6)), int(rng.integers(0, 6))
        result = _core.postprocess_deployable(masks, scores, np.zeros(k, np.int64), transform,
                                              score_threshold=threshold, max_instances=cap)
        check_against(result, reference_deployable(masks, scores, np.zeros(k, np.int64), transform, threshold, cap),
                      transform)
        queries, classes = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        class_logits = rng.normal(0, 2, (queries, classes + 1)).astype(np.float32)
        mask_logits = rng.normal(-1, 3, (queries, max(1, nh // 4), max(1, nw // 4))).astype(np.float32)
        no_object, topk = int(rng.choice([0, -1])), int(rng.integers(1, 30))
        result = _core.postprocess_raw(class_logits, mask_logits, transform, no_object_index=no_object, topk=topk,
                                       score_threshold=threshold, max_instances=cap + 1)
        reference = reference_raw(class_logits, mask_logits, transform, no_object_index=no_object, topk=topk,
                                  threshold=threshold, max_instances=cap + 1)
        check_against(result, reference, transform)
        kept_total += len(reference["scores"])
    assert kept_total > 60


# ---------------------------------------------------------------- instance map
def test_instance_map_lower_index_wins():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(5, 37, 53)) < 0.3).astype(np.uint8)
    expected = np.zeros((37, 53), np.int32)
    for i in range(4, -1, -1):
        expected[masks[i] != 0] = i + 1
    out = _core.instance_map(masks)
    assert out.dtype == np.int32 and out.shape == (37, 53)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(_core.instance_map(masks.astype(bool)), expected)
    # strided views
    wide = np.zeros((5, 37, 106), np.uint8)
    wide[:, :, ::2] = masks
    np.testing.assert_array_equal(_core.instance_map(wide[:, :, ::2]), expected)
    assert _core.instance_map(np.zeros((0, 4, 6), np.uint8)).tolist() == np.zeros((4, 6), np.int32).tolist()


def test_instance_map_of_postprocess_output():
    transform = _core.ResizeTransform("stretch", 120, 160, 64, 64)
    masks = blob_masks(6, 64, 64, seed=21, filled=range(6))
    result = _core.postprocess_deployable(masks, np.linspace(0.9, 0.6, 6).astype(np.float32), np.zeros(6, np.int64),
                                          transform)
    masks = full_masks(result)
    out = _core.instance_map(masks)
    for i in range(len(result["scores"])):
        owned = out == i + 1
        assert np.all(masks[i][owned] == 1)
        assert np.all(masks[:i][:, owned] == 0)
    from_crops = _core.instance_map_crops(result["crops"], result["crop_offsets"], result["boxes"],
                                          result["image_size"])
    np.testing.assert_array_equal(from_crops, out)


# ---------------------------------------------------------------- bad input
def _good_deployable():
    transform = _core.ResizeTransform("stretch", 48, 64, 32, 32)
    masks = blob_masks(4, 32, 32, seed=1, filled=range(4))
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.zeros(4, np.int64)
    return masks, scores, classes, transform


@pytest.mark.parametrize(
    "change,error,words",
    [
        (lambda a: dict(a, masks=a["masks"].astype(np.float64)), TypeError, ["masks", "float32"]),
        (lambda a: dict(a, masks=a["masks"].astype(np.int32)), TypeError, ["masks"]),
        (lambda a: dict(a, masks=a["masks"][0]), ValueError, ["masks", "dimensions"]),
        (lambda a: dict(a, scores=a["scores"].astype(np.float64)), TypeError, ["scores"]),
        (lambda a: dict(a, scores=a["scores"][:3]), ValueError, ["scores", "4"]),
        (lambda a: dict(a, scores=a["scores"][None]), ValueError, ["scores", "dimensions"]),
        (lambda a: dict(a, classes=a["classes"].astype(np.float32)), TypeError, ["classes"]),
        (lambda a: dict(a, classes=a["classes"][:2]), ValueError, ["classes"]),
        (lambda a: dict(a, transform=_core.ResizeTransform("stretch", 48, 64, 32, 40)), ValueError,
         ["transform", "32x40"]),
        (lambda a: dict(a, max_instances=-1), ValueError, ["max_instances"]),
        (lambda a: dict(a, score_threshold=float("nan")), ValueError, ["score_threshold"]),
        (lambda a: dict(a, threads=-2), ValueError, ["threads"]),
    ],
)
def test_deployable_bad_input_names_the_argument(change, error, words):
    masks, scores, classes, transform = _good_deployable()
    args = change(dict(masks=masks, scores=scores, classes=classes, transform=transform))
    with pytest.raises(error) as info:
        _core.postprocess_deployable(**args)
    for word in words:
        assert word in str(info.value)
    good = _core.postprocess_deployable(masks, scores, classes, transform)  # the next call still works
    assert len(good["scores"]) == 4


@pytest.mark.parametrize(
    "change,error,words",
    [
        (lambda a: dict(a, class_logits=a["class_logits"].astype(np.float64)), TypeError, ["class_logits"]),
        (lambda a: dict(a, mask_logits=a["mask_logits"].astype(np.uint8)), TypeError, ["mask_logits"]),
        (lambda a: dict(a, class_logits=a["class_logits"][:, :1]), ValueError, ["class_logits", "C+1"]),
        (lambda a: dict(a, class_logits=a["class_logits"][0]), ValueError, ["class_logits", "dimensions"]),
        (lambda a: dict(a, mask_logits=a["mask_logits"][:5]), ValueError, ["mask_logits", "queries"]),
        (lambda a: dict(a, mask_logits=a["mask_logits"][:, 0]), ValueError, ["mask_logits", "dimensions"]),
        (lambda a: dict(a, transform=_core.ResizeTransform("stretch", 48, 64, 8, 8)), ValueError, ["transform"]),
        (lambda a: dict(a, no_object_index=5), ValueError, ["no_object_index"]),
        (lambda a: dict(a, topk=0), ValueError, ["topk"]),
        (lambda a: dict(a, max_instances=-3), ValueError, ["max_instances"]),
    ],
)
def test_raw_bad_input_names_the_argument(change, error, words):
    transform = _core.ResizeTransform("stretch", 48, 64, 64, 64)
    class_logits, mask_logits = raw_outputs(8, 1, 16, 16, seed=2)
    args = change(dict(class_logits=class_logits, mask_logits=mask_logits, transform=transform))
    with pytest.raises(error) as info:
        _core.postprocess_raw(**args)
    for word in words:
        assert word in str(info.value)
    good = _core.postprocess_raw(class_logits, mask_logits, transform, score_threshold=0.3)
    reference = reference_raw(class_logits, mask_logits, transform, threshold=0.3)
    check_against(good, reference, transform)


def test_instance_map_bad_input():
    with pytest.raises(TypeError, match="masks"):
        _core.instance_map(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="masks"):
        _core.instance_map(np.zeros((4, 4), np.uint8))
    assert _core.instance_map(np.ones((1, 2, 3), np.uint8)).sum() == 6


# ---------------------------------------------------------------- crops at the frame's borders
def border_masks(transform, dtype):
    """One instance touching each border of the content region, one covering all of it, a one-pixel
    mask in each corner, an empty mask, and a mask whose only value lies in the letterbox padding."""
    ch, cw = transform.content_height, transform.content_width
    masks = np.zeros((11, transform.net_height, transform.net_width), np.float32)
    masks[0, : ch // 3, cw // 4: cw // 2] = 1            # top
    masks[1, ch - ch // 4:ch, cw // 3: cw // 2] = 1      # bottom
    masks[2, ch // 4: ch // 2, : cw // 5] = 1            # left
    masks[3, ch // 3: ch // 2, cw - cw // 6:cw] = 1      # right
    masks[4, :ch, :cw] = 1                               # all four
    masks[5, 0, 0] = 1
    masks[6, 0, cw - 1] = 1
    masks[7, ch - 1, 0] = 1
    masks[8, ch - 1, cw - 1] = 1
    if ch < transform.net_height:
        masks[10, ch:, :] = 1                            # padding only: never reaches the frame
    elif cw < transform.net_width:
        masks[10, :, cw:] = 1
    return masks.astype(dtype)


BORDER_CASES = FRAME_CASES + [("letterbox", 7, 5, 32, 32), ("stretch", 1, 1, 16, 16), ("stretch", 3, 200, 8, 8)]


@pytest.mark.parametrize("mode,fh,fw,nh,nw", BORDER_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_crops_at_borders_empty_and_one_pixel(mode, fh, fw, nh, nw, dtype):
    """Crops equal the full reference masks inside their windows (and nothing is set outside) for
    instances touching each frame border, one-pixel masks (which may vanish when shrunk) and empty
    masks; the COCO RLE made from the crops is pycocotools' byte for byte."""
    mask_api = pytest.importorskip("pycocotools.mask")
    transform = _core.ResizeTransform(mode, fh, fw, nh, nw)
    masks = border_masks(transform, dtype)
    scores = np.linspace(0.95, 0.6, len(masks)).astype(np.float32)
    classes = np.zeros(len(masks), np.int64)
    result = _core.postprocess_deployable(masks, scores, classes, transform)
    reference = reference_deployable(masks, scores, classes, transform)
    check_against(result, reference, transform)
    assert 9 not in result["query_indices"] and 10 not in result["query_indices"]
    if len(result["scores"]):
        counts = _core.rle_encode_crops(result["crops"], result["crop_offsets"], result["boxes"], (fh, fw))
        full = full_masks(result)
        assert counts == [r["counts"] for r in mask_api.encode(np.asfortranarray(full.transpose(1, 2, 0)))]
    # the raw head: logits positive exactly where the masks are, at network size / 4
    low = np.where(masks[:, ::4, ::4].astype(np.float32) > 0, 6.0, -6.0).astype(np.float32)
    class_logits = np.tile(np.array([[-4.0, 4.0]], np.float32), (len(masks), 1))
    raw = _core.postprocess_raw(class_logits, low, transform, topk=len(masks), score_threshold=0.2)
    check_against(raw, reference_raw(class_logits, low, transform, topk=len(masks), threshold=0.2), transform)
