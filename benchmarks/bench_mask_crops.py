"""What masks cost now that post-processing keeps them cropped to their boxes (issue: masks cost
what they cover), against full-frame masks, in one process.

    python benchmarks/bench_mask_crops.py [--runs 15] [--threads 0] [--net 800] [--skip-8k] [--today DIR]

Inputs: the deployable contract's 100 masks (--dtype, float32 by default) at --net x --net, each a blob covering 1-2 % of
the frame, and K of them scoring above the threshold (K = 10, 50, 100), mapped to a 1080x1920 frame.
For each K (median of --runs calls after 2 warm-up calls):
  crops  _core.postprocess_deployable as it is now (masks computed and kept inside their boxes)
  full   the same plus the (N, H, W) masks built from the crops (_core.expand_crops: what
         Instances.masks costs, and the bytes today's full-mask results hold)
and the result bytes each holds. With --today DIR (a checkout of m2f_edge from before crops, with its
module built in place), the same calls through that version, in a child process, right after ours:
today's full-mask post-processing. Then 100 kept instances on a 7680x4320 frame in a fresh
subprocess: post-processing, Instances and COCO RLE, with the process's peak RSS, then the
instance map (an (H, W) int32 image, for drawing).
Ratios are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from bench_postprocess import median_time  # this folder is on sys.path when a script here runs

HERE = os.path.dirname(os.path.abspath(__file__))


def crowded_inputs(net, kept, frame_hw, seed=0, dtype="float32"):
    """100 masks (net x net, 0/1 of `dtype`), each one ellipse whose frame area is 1-2 % of the frame."""
    import cv2

    rng = np.random.default_rng(seed)
    masks = np.zeros((100, net, net), np.float32)
    for i in range(100):
        fraction = rng.uniform(0.01, 0.02)
        aspect = rng.uniform(0.6, 1.6)
        a = np.sqrt(fraction * net * net / np.pi * aspect)
        b = fraction * net * net / np.pi / a
        centre = (int(rng.integers(int(a), net - int(a))), int(rng.integers(int(b), net - int(b))))
        cv2.ellipse(masks[i], centre, (int(a), int(b)), 0.0, 0, 360, 1.0, -1)
    scores = np.concatenate([rng.uniform(0.6, 0.99, kept), rng.uniform(0.0, 0.3, 100 - kept)]).astype(np.float32)
    return masks.astype(dtype, copy=False), scores, np.zeros(100, np.int64)


def crowded_raw_inputs(net, kept, seed=0):
    """The raw head's outputs for the same kind of scene: 100 queries, 1 class + no-object (column 0, as
    TAO), mask logits at net / 4 positive on one ellipse each of 1-2 % of the image; `kept` confident."""
    rng = np.random.default_rng(seed)
    low = net // 4
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    mask_logits = np.empty((100, low, low), np.float32)
    for q in range(100):
        fraction = rng.uniform(0.01, 0.02)
        ry = np.sqrt(fraction * low * low / np.pi * rng.uniform(0.6, 1.6))
        rx = fraction * low * low / np.pi / ry
        cy, cx = rng.uniform(ry, low - ry), rng.uniform(rx, low - rx)
        mask_logits[q] = (1.0 - np.hypot((yy - cy) / ry, (xx - cx) / rx)) * 8.0
    class_logits = np.zeros((100, 2), np.float32)
    class_logits[:, 1] = np.concatenate([rng.uniform(4, 7, kept), rng.uniform(-7, -3, 100 - kept)])
    return class_logits, mask_logits


def result_bytes(result):
    return sum(v.nbytes for v in result.values() if isinstance(v, np.ndarray))


def peak_rss_bytes():
    """This process's peak resident set. VmHWM starts afresh at exec; ru_maxrss would carry the
    parent's peak over into a forked child."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def post_call(core, contract, net, kept, threads, dtype):
    """The post-processing call of one contract on its crowded inputs, as a function of no arguments."""
    transform = core.ResizeTransform("stretch", 1080, 1920, net, net)
    if contract == "raw":
        class_logits, mask_logits = crowded_raw_inputs(net, kept)
        return lambda: core.postprocess_raw(class_logits, mask_logits, transform, threads=threads)
    masks, scores, classes = crowded_inputs(net, kept, (1080, 1920), dtype=dtype)
    return lambda: core.postprocess_deployable(masks, scores, classes, transform, threads=threads)


def time_child(net, kept, runs, threads, dtype, contract):
    """In this process (possibly another m2f_edge): median post-processing time; prints a JSON line."""
    from m2f_edge import _core

    call = post_call(_core, contract, net, kept, threads, dtype)
    seconds = median_time(call, runs)
    result = call()
    print(json.dumps({"seconds": seconds, "kept": len(result["scores"]), "bytes": result_bytes(result)}))


def child_env(package_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_dir] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_8k(net, threads):
    """In this (fresh) process: 100 kept on 7680x4320; prints a JSON line."""
    from m2f_edge import Instances, _core

    frame_h, frame_w = 4320, 7680
    masks, scores, classes = crowded_inputs(net, 100, (frame_h, frame_w), seed=1)
    rss_inputs = peak_rss_bytes()
    transform = _core.ResizeTransform("stretch", frame_h, frame_w, net, net)
    t0 = time.perf_counter()
    result = _core.postprocess_deployable(masks, scores, classes, transform, threads=threads)
    t_post = time.perf_counter() - t0
    inst = Instances.from_core(result, (frame_h, frame_w))
    t2 = time.perf_counter()
    coco = inst.to_coco(image_id=0)
    t_coco = time.perf_counter() - t2
    peak = peak_rss_bytes()
    t1 = time.perf_counter()
    instance_map = inst.instance_map  # (H, W) int32: 133 MB at this size, wanted for drawing only
    t_map = time.perf_counter() - t1
    print(json.dumps({"kept": len(inst), "postprocess_s": t_post, "instance_map_s": t_map, "to_coco_s": t_coco,
                      "result_bytes": result_bytes(result), "instance_map_bytes": instance_map.nbytes,
                      "peak_rss_bytes": peak, "rss_after_inputs_bytes": rss_inputs,
                      "input_bytes": masks.nbytes, "coco_entries": len(coco)}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="m2f_edge threads (0 = all cores)")
    parser.add_argument("--net", type=int, default=800, help="square network input size")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "uint8", "bool"],
                        help="dtype of the model's masks (TAO's deployable graph: float32)")
    parser.add_argument("--contract", default="deployable", choices=["deployable", "raw"],
                        help="raw: 100 queries of mask logits at net / 4 (TAO's raw head), all upsampled in boxes")
    parser.add_argument("--skip-8k", action="store_true", help="leave out the 7680x4320 subprocess")
    parser.add_argument("--today", help="a checkout of m2f_edge before crops (module built in place) to time too")
    parser.add_argument("--8k-child", dest="child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--time-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_8k(args.net, args.threads)
        return
    if args.time_child:
        time_child(args.net, args.time_child, args.runs, args.threads, args.dtype, args.contract)
        return

    from m2f_edge import _core

    frame_h, frame_w = 1080, 1920
    what = ("100 {} masks".format(args.dtype) if args.contract == "deployable" else
            "raw head: 100 queries, logits {0}x{0} float32".format(args.net // 4))
    print("frame {}x{}, network {}x{}, {} of 1-2 % of the frame, median of {} runs, "
          "m2f_edge threads {}".format(frame_h, frame_w, args.net, args.net, what, args.runs, args.threads or "all"))
    print("\n{:>5} {:>10} {:>10} {:>8} {:>10} {:>8} {:>10} {:>10} {:>8}".format(
        "kept", "crops ms", "full ms", "speedup", "today ms", "speedup", "crops MB", "full MB", "smaller"))
    times = {}
    for kept in (10, 50, 100):
        crops = post_call(_core, args.contract, args.net, kept, args.threads, args.dtype)

        def full():
            r = crops()
            return r, _core.expand_crops(r["crops"], r["crop_offsets"], r["boxes"], r["image_size"],
                                         threads=args.threads)

        result = crops()
        r_full, full_masks = full()
        t_crops = median_time(crops, args.runs)
        t_full = median_time(full, args.runs)
        times[kept] = t_crops
        crop_bytes = result_bytes(result)
        full_bytes = result_bytes(r_full) - r_full["crops"].nbytes + full_masks.nbytes
        today = "{:>10} {:>8}".format("-", "-")
        if args.today:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--time-child", str(kept), "--net",
                                  str(args.net), "--runs", str(args.runs), "--threads", str(args.threads),
                                  "--dtype", args.dtype, "--contract", args.contract],
                                 env=child_env(os.path.abspath(args.today)), check=True, capture_output=True,
                                 text=True, cwd="/")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            today = "{:>10.2f} {:>7.1f}x".format(r["seconds"] * 1e3, r["seconds"] / t_crops)
        print("{:>5} {:>10.2f} {:>10.2f} {:>7.1f}x {} {:>10.2f} {:>10.2f} {:>7.1f}x".format(
            len(result["scores"]), t_crops * 1e3, t_full * 1e3, t_full / t_crops, today, crop_bytes / 1e6,
            full_bytes / 1e6, full_bytes / crop_bytes))
    print("\ncrops: post-processing time from 10 to 100 kept grows {:.2f}x".format(times[100] / times[10]))

    if not args.skip_8k and args.contract == "deployable":
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--8k-child", "--net", str(args.net),
                              "--threads", str(args.threads)], env=child_env(os.path.dirname(HERE)), check=True,
                             capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print("\n7680x4320, {} kept (fresh process): post-processing {:.3f} s, instance_map {:.3f} s, "
              "to_coco {:.3f} s".format(r["kept"], r["postprocess_s"], r["instance_map_s"], r["to_coco_s"]))
        print("  result {:.1f} MB (full masks would be {:.0f} MB); peak RSS through post-processing and "
              "to_coco {:.0f} MB, of which {:.0f} MB before post-processing (interpreter and the {:.0f} MB of "
              "float32 model outputs)".format(
                  r["result_bytes"] / 1e6, r["kept"] * 4320 * 7680 / 1e6, r["peak_rss_bytes"] / 1e6,
                  r["rss_after_inputs_bytes"] / 1e6, r["input_bytes"] / 1e6))


if __name__ == "__main__":
    main()
