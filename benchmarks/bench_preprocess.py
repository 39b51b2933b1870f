"""Time m2f_edge's fused preprocessing against what users write with OpenCV and numpy.

    PYTHONPATH=$PWD python benchmarks/bench_preprocess.py [--frame 1080x1920] [--net 800x800] [--runs 200]
        [--threads 0] [--repeat 3]

Every case runs in this one process, baseline and core interleaved run by run, and reports the
median time of each and the ratio baseline / core; with --repeat N the whole measurement is
repeated and the medians of the N rounds are printed at the end (use it on a shared machine). The user's pipeline is the usual
cv2.resize + cv2.cvtColor + astype/normalise in numpy + transpose + np.ascontiguousarray (it
resizes in uint8, which rounds; the core samples in float, so the two differ by up to ~0.01).
The stretch case is also timed against cv2.dnn.blobFromImage followed by a divide by std.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - the baseline needs OpenCV
    sys.exit("bench_preprocess.py needs OpenCV: pip install opencv-python-headless")

from m2f_edge import _core

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def size(text):
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def opencv_numpy(frame, net_h, net_w, mode="stretch", dtype=np.float32):
    """The pipeline users write by hand (a fresh output array each call, as they do)."""
    height, width = frame.shape[:2]
    if mode == "stretch":
        resized = cv2.resize(frame, (net_w, net_h), interpolation=cv2.INTER_LINEAR)
    else:
        scale = min(net_h / height, net_w / width)
        content_h, content_w = int(height * scale + 0.5), int(width * scale + 0.5)
        resized = np.zeros((net_h, net_w, 3), np.uint8)
        resized[:content_h, :content_w] = cv2.resize(frame, (content_w, content_h), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    normalised = (rgb.astype(np.float32) / 255.0 - MEAN) / STD
    planar = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
    return planar if dtype == np.float32 else planar.astype(dtype)


def opencv_blob(frame, net_h, net_w):
    """cv2.dnn.blobFromImage does resize + swapRB + mean + scale + NCHW; std is divided after."""
    blob = cv2.dnn.blobFromImage(frame, 1.0 / 255.0, (net_w, net_h), tuple(float(m) * 255.0 for m in MEAN),
                                 swapRB=True, crop=False)
    blob /= STD[None, :, None, None]
    return blob


def median_ms(samples):
    return 1000.0 * statistics.median(samples)


def time_pair(baseline, core, runs, warmup=5):
    for _ in range(warmup):
        baseline()
        core()
    base_times, core_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        baseline()
        base_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        core()
        core_times.append(time.perf_counter() - start)
    return median_ms(base_times), median_ms(core_times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=size, default=(1080, 1920), help="frame HxW (default 1080x1920)")
    parser.add_argument("--net", type=size, default=(800, 800), help="network input HxW (default 800x800)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per case (default 200)")
    parser.add_argument("--threads", type=int, default=0, help="core threads, 0 = one per core (default)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat the whole measurement and print the median of each column (default 1)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        parser.error("--runs and --repeat must be at least 1")

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, args.frame + (3,), dtype=np.uint8)
    net_h, net_w = args.net
    print("frame %dx%d BGR uint8 -> network %dx%d, %d runs per case, median times" % (args.frame + args.net + (args.runs,)))
    print("cpu cores: %d, cv2 %s with %d threads, numpy %s, core threads: %s" % (
        os.cpu_count() or 0, cv2.__version__, cv2.getNumThreads(), np.__version__, args.threads or "one per core"))
    rounds = [measure(frame, net_h, net_w, args) for _ in range(args.repeat)]
    if args.repeat > 1:
        print("median of %d repeats:" % args.repeat)
        for i, (name, _, _, _) in enumerate(rounds[0]):
            base_ms = statistics.median(r[i][1] for r in rounds)
            core_ms = statistics.median(r[i][2] for r in rounds)
            ratio = statistics.median(r[i][1] / r[i][2] for r in rounds)
            print("%-34s %9.2f ms %9.2f ms %7.2fx" % (name, base_ms, core_ms, ratio))
    return 0


def measure(frame, net_h, net_w, args):
    """One round of every case; prints its lines and returns [(name, baseline ms, core ms, note)]."""
    print("%-34s %12s %12s %8s" % ("case", "opencv+numpy", "m2f_edge", "ratio"))
    results = []
    for mode, dtype in (("stretch", np.float32), ("letterbox", np.float32), ("stretch", np.float16),
                        ("letterbox", np.float16)):
        out = np.empty((1, 3, net_h, net_w), dtype)

        def core(mode=mode, out=out):
            _core.preprocess(frame, out, resize=mode, threads=args.threads)

        def baseline(mode=mode, dtype=dtype):
            opencv_numpy(frame, net_h, net_w, mode, dtype)

        core()
        difference = float(np.abs(out.astype(np.float32) - opencv_numpy(frame, net_h, net_w, mode, dtype)).max())
        base_ms, core_ms = time_pair(baseline, core, args.runs)
        name = "%s %s" % (mode, np.dtype(dtype).name)
        results.append((name, base_ms, core_ms, difference))
        print("%-34s %9.2f ms %9.2f ms %7.2fx   (max |difference| %.4f)" % (name, base_ms, core_ms, base_ms / core_ms,
                                                                        difference))

    out = np.empty((1, 3, net_h, net_w), np.float32)
    base_ms, core_ms = time_pair(lambda: opencv_blob(frame, net_h, net_w),
                                 lambda: _core.preprocess(frame, out, threads=args.threads), args.runs)
    name = "stretch float32 vs blobFromImage"
    results.append((name, base_ms, core_ms, None))
    print("%-34s %9.2f ms %9.2f ms %7.2fx" % (name, base_ms, core_ms, base_ms / core_ms))
    return results


if __name__ == "__main__":
    sys.exit(main())
