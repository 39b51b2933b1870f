"""Times m2f_edge's CPU post-processing against what users would write instead, in one process.

    python benchmarks/bench_postprocess.py [--runs 30] [--threads 0] [--frame 1080x1920] [--net 800]

Compared (median wall time of --runs calls each, after 2 warm-up calls):
  deployable: _core.postprocess_deployable on 100 float32 masks at net size (10 scoring >= 0.5)
      vs numpy + OpenCV: select/argsort the scores, then per kept mask cv2.resize(INTER_LINEAR) of
      the float mask to the frame, > 0.5 into a preallocated (N,H,W) bool array, boxes with
      np.any + np.flatnonzero, areas with count_nonzero.
  raw head: _core.postprocess_raw on 100 queries x (1 class + no-object) with (net/4)^2 mask logits
      vs Hugging Face transformers Mask2FormerImageProcessor.post_process_instance_segmentation
      (torch CPU; target_sizes = frame size, return_binary_maps=True). Note HF upsamples every
      query to a fixed 384x384 and resizes masks to the frame with nearest: cheaper than TAO's
      inference at network size, so the comparison favours HF. Also vs the same TAO inference
      written in plain torch (upsample the top-k queries to net size, scores, bilinear to frame).
  rle_encode vs pycocotools.mask.encode and instance_map vs a numpy loop on the kept masks.
Both sides use every core (OpenCV and torch their own pools, m2f_edge threads=0).
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import numpy as np


def median_time(fn, runs):
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blob_masks(rng, count, size, cv2):
    """count masks of a few ellipses of various sizes (from a few pixels to a third of the image)."""
    masks = np.zeros((count, size, size), np.float32)
    for i in range(count):
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            radius = float(np.exp(rng.uniform(np.log(4), np.log(size / 3))))
            axes = (int(radius), int(radius * rng.uniform(0.4, 1.6)))
            cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return masks


def deployable_inputs(rng, net, cv2):
    """TAO deployable output for one image: 100 masks; 10 confident objects, 30 low-score masks with
    blobs, 60 low-score empty masks; graph order shuffled (the graph does not sort)."""
    masks = np.zeros((100, net, net), np.float32)
    masks[:40] = blob_masks(rng, 40, net, cv2)
    scores = np.concatenate([rng.uniform(0.55, 0.98, 10), rng.uniform(0.0, 0.45, 90)]).astype(np.float32)
    order = rng.permutation(100)
    return masks[order], scores[order], np.zeros(100, np.int64)


def numpy_opencv_deployable(cv2, masks, scores, classes, frame_h, frame_w, threshold=0.5, max_instances=100):
    keep = np.flatnonzero(scores >= threshold)
    order = keep[np.argsort(-scores[keep], kind="stable")][:max_instances]
    out = np.empty((len(order), frame_h, frame_w), bool)
    boxes, areas, kept = [], [], []
    for i in order:
        resized = cv2.resize(masks[i], (frame_w, frame_h), interpolation=cv2.INTER_LINEAR)
        m = np.greater(resized, 0.5, out=out[len(kept)])
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=0))
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
        areas.append(np.count_nonzero(m))
        kept.append(i)
    return dict(masks=out[: len(kept)], scores=scores[kept], labels=classes[kept],
                boxes=np.array(boxes, np.float32).reshape(-1, 4), areas=np.array(areas, np.int64))


def raw_inputs(rng, net):
    """Raw head for one image: 100 queries, 1 class + no-object (last column, as HF), mask logits at
    net/4. 10 confident queries with blobs; the rest mostly no-object, half with weak blobs."""
    low = net // 4
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    mask_logits = np.empty((100, low, low), np.float32)
    for q in range(100):
        cy, cx = rng.uniform(0, low, 2)
        radius = float(np.exp(rng.uniform(np.log(2), np.log(low / 3))))
        d = np.hypot((yy - cy) / radius, (xx - cx) / (radius * rng.uniform(0.5, 1.5)))
        mask_logits[q] = (1.0 - d) * rng.uniform(3, 10)
        if q >= 10 and rng.uniform() < 0.5:
            mask_logits[q] -= 30.0
    class_logits = np.empty((100, 2), np.float32)
    class_logits[:, 0] = np.concatenate([rng.uniform(3, 6, 10), rng.uniform(-6, -1, 90)])
    class_logits[:, 1] = 0.0
    order = rng.permutation(100)
    return class_logits[order], mask_logits[order]


def torch_tao_raw(torch, F, class_logits, mask_logits, net, frame_h, frame_w, threshold=0.5, topk=100):
    """TAO's instance inference (no-object last here) in plain torch, then bilinear to the frame."""
    probs = torch.softmax(class_logits, -1)[:, :-1]
    classes = probs.shape[1]
    scores, idx = probs.flatten().topk(min(topk, probs.numel()))
    queries = idx // classes
    up = F.interpolate(mask_logits[queries][None], size=(net, net), mode="bilinear", align_corners=False)[0]
    binary = (up > 0).float()
    mask_scores = (up.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    final = scores * mask_scores
    keep = torch.nonzero(final >= threshold).flatten()
    keep = keep[torch.argsort(-final[keep], stable=True)]
    frame = F.interpolate(binary[keep][None], size=(frame_h, frame_w), mode="bilinear", align_corners=False)[0] > 0.5
    nonempty = frame.flatten(1).any(1)
    return frame[nonempty], final[keep][nonempty]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="m2f_edge threads (0 = all cores)")
    parser.add_argument("--frame", default="1080x1920", help="frame HxW")
    parser.add_argument("--net", type=int, default=800, help="square network input size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frame_h, frame_w = (int(v) for v in args.frame.lower().split("x"))
    net = args.net

    import cv2

    from m2f_edge import _core

    rng = np.random.default_rng(args.seed)
    transform = _core.ResizeTransform("stretch", frame_h, frame_w, net, net)
    print(f"frame {frame_h}x{frame_w}, network {net}x{net}, median of {args.runs} runs, "
          f"cv2 threads {cv2.getNumThreads()}, m2f_edge threads {args.threads or 'all'}")
    rows = []

    # ---- deployable
    masks, scores, classes = deployable_inputs(rng, net, cv2)
    ours = _core.postprocess_deployable(masks, scores, classes, transform, threads=args.threads)
    theirs = numpy_opencv_deployable(cv2, masks, scores, classes, frame_h, frame_w)
    ours_masks = _core.expand_crops(ours["crops"], ours["crop_offsets"], ours["boxes"], ours["image_size"])
    differing = np.count_nonzero(ours_masks.astype(bool) != theirs["masks"]) / max(1, theirs["masks"].size)
    assert len(ours["scores"]) == len(theirs["scores"]), "the two paths kept different instances"
    t_ours = median_time(lambda: _core.postprocess_deployable(masks, scores, classes, transform, threads=args.threads),
                         args.runs)
    t_theirs = median_time(lambda: numpy_opencv_deployable(cv2, masks, scores, classes, frame_h, frame_w), args.runs)
    print(f"\ndeployable: 100 masks float32 {net}x{net}, {len(ours['scores'])} kept -> {frame_h}x{frame_w} "
          f"(pixels differing from OpenCV: {differing:.2e})")
    rows.append(("deployable", "numpy + cv2.resize", t_ours, t_theirs))

    # ---- raw head
    class_logits, mask_logits = raw_inputs(rng, net)
    ours = _core.postprocess_raw(class_logits, mask_logits, transform, no_object_index=-1, threads=args.threads)
    print(f"raw head: 100 queries, 1 class + no-object, logits {net // 4}x{net // 4} -> net {net}x{net} -> "
          f"{frame_h}x{frame_w}, {len(ours['scores'])} kept")
    t_ours = median_time(
        lambda: _core.postprocess_raw(class_logits, mask_logits, transform, no_object_index=-1, threads=args.threads),
        args.runs)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("  torch is not installed: raw-head baselines skipped")
        torch = None
    if torch is not None:
        cl_t, ml_t = torch.from_numpy(class_logits), torch.from_numpy(mask_logits)
        with torch.inference_mode():
            t_torch = median_time(lambda: torch_tao_raw(torch, F, cl_t, ml_t, net, frame_h, frame_w), args.runs)
            t_masks, t_scores = torch_tao_raw(torch, F, cl_t, ml_t, net, frame_h, frame_w)
        print(f"  plain-torch TAO inference keeps {t_masks.shape[0]} (scores max |diff| "
              f"{np.abs(np.sort(t_scores.numpy())[::-1] - ours['scores']).max() if len(t_scores) == len(ours['scores']) else float('nan'):.1e})")
        rows.append(("raw head", "TAO inference in torch", t_ours, t_torch))
        try:
            import logging
            import warnings

            logging.getLogger("transformers").setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    from transformers import Mask2FormerImageProcessorPil as Processor
                except ImportError:
                    from transformers import Mask2FormerImageProcessor as Processor
                processor = Processor()
        except ImportError:
            print("  transformers is not installed: Hugging Face baseline skipped")
            processor = None
        if processor is not None:
            outputs = types.SimpleNamespace(class_queries_logits=cl_t[None], masks_queries_logits=ml_t[None])

            def hf():
                return processor.post_process_instance_segmentation(
                    outputs, threshold=0.5, target_sizes=[(frame_h, frame_w)], return_binary_maps=True)

            with torch.inference_mode():
                hf_result = hf()[0]
                t_hf = median_time(hf, max(3, args.runs // 3))
            print(f"  Hugging Face keeps {len(hf_result['segments_info'])} ({type(processor).__name__}, "
                  f"masks via 384x384 + nearest)")
            rows.append(("raw head", "HF post_process_instance_segmentation", t_ours, t_hf))

    # ---- RLE and instance map on the deployable result
    result = _core.postprocess_deployable(masks, scores, classes, transform)
    kept = _core.expand_crops(result["crops"], result["crop_offsets"], result["boxes"], result["image_size"])
    try:
        from pycocotools import mask as mask_api

        fortran = np.asfortranarray(kept.transpose(1, 2, 0))
        assert [r["counts"] for r in mask_api.encode(fortran)] == _core.rle_encode(kept)
        t_ours = median_time(lambda: _core.rle_encode(kept, threads=args.threads), args.runs)
        t_coco = median_time(lambda: mask_api.encode(np.asfortranarray(kept.transpose(1, 2, 0))), args.runs)
        rows.append((f"rle_encode {len(kept)} masks", "pycocotools.mask.encode (incl. asfortranarray)", t_ours, t_coco))
    except ImportError:
        print("pycocotools is not installed: RLE baseline skipped")

    def numpy_instance_map():
        out = np.zeros(kept.shape[1:], np.int32)
        for i in range(len(kept) - 1, -1, -1):
            out[kept[i] != 0] = i + 1
        return out

    assert np.array_equal(numpy_instance_map(), _core.instance_map(kept))
    rows.append((f"instance_map {len(kept)} masks", "numpy boolean assignment", 
                 median_time(lambda: _core.instance_map(kept, threads=args.threads), args.runs),
                 median_time(numpy_instance_map, args.runs)))

    print(f"\n{'task':<26} {'m2f_edge ms':>12} {'baseline ms':>12} {'speed-up':>9}  baseline")
    for task, baseline, t_ours, t_theirs in rows:
        print(f"{task:<26} {t_ours * 1e3:>12.2f} {t_theirs * 1e3:>12.2f} {t_theirs / t_ours:>8.1f}x  {baseline}")


if __name__ == "__main__":
    main()
