#!/usr/bin/env python3
"""Throughput of the pipelined stream against its slowest single stage and against a sequential loop.

    python benchmarks/bench_stream.py                      # tiny generated model, CPU, 960x540 video
    python benchmarks/bench_stream.py --model model.onnx --size 1280x720 --batch 2

Each stage (decode, preprocess, inference, post-processing, drawing) is first timed alone over the same
frames in this process; then the sequential loop a user would write (read, run, draw, repeat); then
m2f_edge's stream, which overlaps the stages in threads. Each timing is the best of --repeat runs.
The stream should reach >= 90% of the slowest stage's rate when the machine has a core per busy stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cv2  # noqa: E402

import m2f_edge  # noqa: E402
from m2f_edge.drawing import draw_instances  # noqa: E402
from m2f_edge.instances import Instances  # noqa: E402
from m2f_edge.runners import HostRunner  # noqa: E402
from m2f_edge.video import open_source, stream  # noqa: E402


def parse_size(text):
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def make_video(path, frames, size):
    """Coloured rectangles moving over a grey background (MJPG AVI), as the tiny model segments them."""
    width, height = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for i in range(frames):
        image = np.full((height, width, 3), 128, np.uint8)
        for k, color in enumerate([(30, 30, 230), (40, 220, 40), (220, 40, 30)]):
            x0 = int((0.1 + 0.25 * k) * width + 3 * i) % (width // 2)
            y0 = int((0.15 + 0.25 * k) * height)
            image[y0:y0 + height // 4, x0:x0 + width // 4] = color
        writer.write(image)
    writer.release()


class SleepingRunner(HostRunner):
    """The host runner's three steps, each taking a fixed time per frame without using a CPU (time.sleep
    releases the GIL), in a real Segmenter: measures what the stream's threads and queues achieve when
    cores are not the limit."""

    name = "sleeping"

    def __init__(self, segmenter, seconds):
        super().__init__(segmenter)
        self.seconds = dict(zip((step.name for step in self.steps()), seconds))

    def _preprocess(self, job):
        time.sleep(self.seconds["preprocess"] * job.count)

    def _infer(self, job):
        time.sleep(self.seconds["infer"] * job.count)

    def _postprocess(self, job):
        time.sleep(self.seconds["postprocess"] * job.count)
        job.results = [Instances(np.zeros((0,) + frame.shape[:2], np.uint8), [], [], np.zeros((0, 4)))
                       for frame in job.frames]


def simulate(args, video):
    ms = [float(v) for v in args.simulate.split(",")]
    if len(ms) != 3:
        raise SystemExit("--simulate: expected three times in ms: preprocess,infer,postprocess")
    seconds = [v / 1000.0 for v in ms]
    seg = m2f_edge.Segmenter(tiny_model(args, os.path.dirname(video)),
                             runner=lambda segmenter: SleepingRunner(segmenter, seconds))
    n = args.frames
    rates = {name: 1.0 / v for name, v in seg.runner.seconds.items()}
    with open_source(video) as source:
        started = time.perf_counter()
        count = sum(1 for _ in source)
        rates["decode"] = count / (time.perf_counter() - started)
    stream_rate = 0.0
    for _ in range(args.repeat):
        pipeline = stream(seg, video, batch=args.batch)
        assert sum(1 for _ in pipeline) == n
        assert pipeline.stats.runner == SleepingRunner.name, pipeline.stats.runner
        stream_rate = max(stream_rate, pipeline.stats.fps)
    slowest = min(rates, key=rates.get)
    print("bench_stream --simulate: %d frames %s, stages sleeping %s ms (no CPU), real decoding, batch %d, "
          "best of %d" % (n, args.size, args.simulate, args.batch, args.repeat))
    for name, rate in rates.items():
        print("  stage %-12s %8.1f frames/s%s" % (name, rate, "   <- slowest" if name == slowest else ""))
    print("  sequential loop    %8.1f frames/s (sum of the stage times)" % (1.0 / sum(1.0 / r for r in rates.values())))
    print("  pipelined stream   %8.1f frames/s" % stream_rate)
    print("stream / slowest stage = %.2f (target >= 0.90)" % (stream_rate / rates[slowest]))
    return 0


def tiny_model(args, workdir):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from tiny_models import make_deployable_model
    net_h, net_w = (int(v) for v in args.net.lower().split("x"))
    return str(make_deployable_model(os.path.join(workdir, "tiny.onnx"), height=net_h, width=net_w))


def best_rate(fn, frames, repeat):
    """Frames per second of the fastest of `repeat` runs of fn()."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return frames / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="ONNX model or TensorRT engine (default: a tiny generated model)")
    parser.add_argument("--net", default="384x640", help="network HxW of the generated model (384x640)")
    parser.add_argument("--size", default="960x540", help="video WxH (960x540)")
    parser.add_argument("--frames", type=int, default=90, help="frames in the video (90)")
    parser.add_argument("--batch", type=int, default=1, help="frames per engine call (1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per core call and for ONNX Runtime (1: one core per stage)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best counts (3)")
    parser.add_argument("--simulate", metavar="PRE,INFER,POST",
                        help="stages that sleep these many ms per frame instead of computing: the stream's own "
                             "overhead, independent of the cores available")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="m2f_bench_stream_")
    video = os.path.join(workdir, "input.avi")
    make_video(video, args.frames, parse_size(args.size))
    if args.simulate:
        return simulate(args, video)
    model = args.model or tiny_model(args, workdir)
    seg = m2f_edge.Segmenter(model, threads=args.threads)
    batch, n = args.batch, args.frames

    # --- each stage alone, over the same frames
    def decode():
        with open_source(video) as source:
            return [f.image for f in source]

    images = decode()
    groups = [images[i:i + batch] for i in range(0, n, batch)]
    prepared = [seg.preprocess(g) for g in groups]
    outputs = [seg.infer(p.tensor) for p in prepared]
    results = [inst for o, p in zip(outputs, prepared) for inst in seg.postprocess(o, p.transforms)]
    rates = {
        "decode": best_rate(decode, n, args.repeat),
        "preprocess": best_rate(lambda: [seg.preprocess(g) for g in groups], n, args.repeat),
        "infer": best_rate(lambda: [seg.infer(p.tensor) for p in prepared], n, args.repeat),
        "postprocess": best_rate(lambda: [seg.postprocess(o, p.transforms) for o, p in zip(outputs, prepared)],
                                 n, args.repeat),
        "draw": best_rate(lambda: [draw_instances(im, r, copy=True, threads=args.threads)
                                   for im, r in zip(images, results)], n, args.repeat),
    }

    # --- the sequential loop a user would write
    def sequential():
        with open_source(video) as source:
            pending = []
            for frame in source:
                pending.append(frame.image)
                if len(pending) == batch:
                    for im, inst in zip(pending, seg.run_batch(pending)):
                        draw_instances(im, inst, copy=True, threads=args.threads)
                    pending = []
            for im, inst in zip(pending, seg.run_batch(pending) if pending else []):
                draw_instances(im, inst, copy=True, threads=args.threads)

    sequential_rate = best_rate(sequential, n, args.repeat)

    # --- the pipelined stream
    stream_rate = 0.0
    for _ in range(args.repeat):
        pipeline = stream(seg, video, batch=batch, draw=True, draw_options={"threads": args.threads})
        count = sum(1 for _ in pipeline)
        assert count == n, "the stream delivered %d of %d frames" % (count, n)
        stream_rate = max(stream_rate, pipeline.stats.fps)

    slowest = min(rates, key=rates.get)
    print("bench_stream: %d frames %s -> net %s, batch %d, threads %d per stage, %d CPU cores, best of %d" % (
        n, args.size, "x".join(str(v) for v in seg.input_size), batch, args.threads, os.cpu_count() or 0,
        args.repeat))
    print("model: %s (%s)" % (os.path.basename(model), seg.backend.name))
    for name, rate in rates.items():
        print("  stage %-12s %8.1f frames/s%s" % (name, rate, "   <- slowest" if name == slowest else ""))
    print("  sequential loop    %8.1f frames/s" % sequential_rate)
    print("  pipelined stream   %8.1f frames/s" % stream_rate)
    print("stream / slowest stage = %.2f (target >= 0.90)" % (stream_rate / rates[slowest]))
    print("stream / sequential loop = %.2f" % (stream_rate / sequential_rate))
    print("sum of stage times / slowest stage time = %.2f (cores the stream needs to keep every stage busy)" % (
        sum(rates[slowest] / r for r in rates.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
