#!/usr/bin/env python3
"""Segment every frame of a video file and write an overlay video (no frame is dropped).

    python3 examples/video_file.py --model demo --source examples/data/scenes.mp4 --output scenes_masks.mp4
    python3 examples/video_file.py --model model.onnx --source street.mp4 --output street_masks.mp4 --batch 4

Capture, preprocessing, inference, post-processing and drawing run in overlapping threads, so the
run takes about as long as its slowest stage.
"""

import argparse
import sys

import m2f_edge
from m2f_edge.cli import run_script


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a TensorRT engine, an ONNX model, or demo (the demo model that ships with m2f_edge)")
    parser.add_argument("--source", required=True, help="a video file (or an image folder / glob)")
    parser.add_argument("--output", default="overlay.mp4", help="video file or folder/ (default overlay.mp4)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the model's spec or sidecar, else 0.5)")
    parser.add_argument("--batch", type=int, default=1, help="frames per engine call (1)")
    args = parser.parse_args(argv)

    segmenter = m2f_edge.Segmenter(args.model, score_threshold=args.threshold)
    counts = []
    with segmenter.stream(args.source, batch=args.batch, output=args.output) as stream:
        for frame, instances in stream:
            counts.append(len(instances))
    stats = stream.stats
    print("%d frames in %.1f s (%.1f FPS), %.1f instances per frame, written to %s" % (
        stats.frames, stats.elapsed, stats.fps, sum(counts) / max(1, len(counts)), args.output))
    print("stage rates (frames/s when run alone): " + ", ".join(
        "%s %.1f" % (name, rate) for name, rate in stats.stage_fps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # errors as one line, as the m2f-edge command prints them
