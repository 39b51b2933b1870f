#!/usr/bin/env python3
"""The core's overlay (_core.draw_instances: blend + outline) against what users write otherwise.

    python benchmarks/bench_draw.py                 # 1280x720, 10 instances
    python benchmarks/bench_draw.py --size 1920x1080 --instances 30 --threads 0

Baselines, same frame and masks: numpy (blend each instance's mask with boolean indexing, the usual
loop) and OpenCV (paint a coloured layer from the instance map, cv2.addWeighted the whole frame, copy
the blended pixels back through the mask). Outlines are left out of the baselines, so they do less work.
Each timing is the median of --repeat calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cv2  # noqa: E402

from m2f_edge import _core  # noqa: E402
from m2f_edge.drawing import palette  # noqa: E402


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000.0 * sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="frame WxH (1280x720)")
    parser.add_argument("--instances", type=int, default=10, help="instances drawn (10)")
    parser.add_argument("--threads", type=int, default=1, help="core threads (1; 0 = all cores)")
    parser.add_argument("--repeat", type=int, default=30, help="calls per timing; the median counts (30)")
    args = parser.parse_args(argv)

    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((args.instances, height, width), bool)
    for i in range(args.instances):
        x0, y0 = rng.integers(0, width * 3 // 4), rng.integers(0, height * 3 // 4)
        cv2.ellipse(masks[i].view(np.uint8), (int(x0 + width // 8), int(y0 + height // 8)),
                    (int(width // 10), int(height // 8)), 0, 0, 360, 1, -1)
    instance_map = _core.instance_map(masks)
    colors = palette(args.instances)
    alpha = 0.5

    def core():
        out = frame.copy()
        _core.draw_instances(out, instance_map, colors, alpha=alpha, outline=True, threads=args.threads)
        return out

    def numpy_loop():
        out = frame.copy()
        for i in range(args.instances):
            m = instance_map == i + 1
            out[m] = (out[m] * (1 - alpha) + colors[i] * alpha).round().astype(np.uint8)
        return out

    def opencv():
        out = frame.copy()
        layer = np.zeros_like(frame)
        layer[instance_map > 0] = colors[instance_map[instance_map > 0] - 1]
        blended = cv2.addWeighted(out, 1 - alpha, layer, alpha, 0)
        np.copyto(out, blended, where=(instance_map > 0)[..., None])
        return out

    # the three agree away from the outlines (rounding may differ by one level)
    ids = np.pad(instance_map, 1, mode="edge")
    inner = (instance_map > 0) & (ids[:-2, 1:-1] == instance_map) & (ids[2:, 1:-1] == instance_map) & \
        (ids[1:-1, :-2] == instance_map) & (ids[1:-1, 2:] == instance_map)
    for name, fn in (("numpy", numpy_loop), ("opencv", opencv)):
        diff = np.abs(core()[inner].astype(int) - fn()[inner].astype(int)).max()
        assert diff <= 1, "%s differs from the core by %d" % (name, diff)

    t_core = median_ms(core, args.repeat)
    t_numpy = median_ms(numpy_loop, args.repeat)
    t_cv = median_ms(opencv, args.repeat)
    print("bench_draw: %dx%d frame, %d instances (%.0f%% of the pixels), threads %d, %d CPU cores, median of %d" % (
        width, height, args.instances, 100.0 * (instance_map > 0).mean(), args.threads, os.cpu_count() or 0,
        args.repeat))
    print("  core draw_instances (blend + outline)  %7.2f ms" % t_core)
    print("  numpy boolean-index loop (blend only)  %7.2f ms" % t_numpy)
    print("  OpenCV addWeighted + masked copy       %7.2f ms" % t_cv)
    print("numpy / core = %.1fx   opencv / core = %.1fx" % (t_numpy / t_core, t_cv / t_core))
    return 0


if __name__ == "__main__":
    sys.exit(main())
