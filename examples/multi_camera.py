#!/usr/bin/env python3
"""Segment several cameras at once, one engine call per round (the cameras' frames form the batch),
and show or record them side by side.

    python3 examples/multi_camera.py --model demo --source examples/data/scenes.mp4 examples/data/scenes.mp4 \
        --output both.mp4
    python3 examples/multi_camera.py --model model.engine --source csi://0 csi://1 --output display://
    python3 examples/multi_camera.py --model model.onnx --source a.mp4 b.mp4 --output both.mp4

A TensorRT engine must accept a batch of that many frames (build it with that batch size).
"""

import argparse
import sys

import cv2
import numpy as np

import m2f_edge
from m2f_edge.cli import run_script
from m2f_edge.video import multi, open_sink


def side_by_side(images, height):
    """The images scaled to one height and placed left to right."""
    scaled = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    return np.hstack(scaled)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a TensorRT engine, an ONNX model, or demo (the demo model that ships with m2f_edge)")
    parser.add_argument("--source", required=True, nargs="+", help="two or more source URIs")
    parser.add_argument("--output", default="display://", help="display://, a video file or a folder/")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the model's spec or sidecar, else 0.5)")
    parser.add_argument("--height", type=int, default=360, help="height of each tile in the output (360)")
    args = parser.parse_args(argv)

    segmenter = m2f_edge.Segmenter(args.model, score_threshold=args.threshold)
    tiles = {}
    with multi(segmenter, args.source, draw=True) as stream, open_sink(args.output, inputs=stream.sources) as sink:
        for results in stream:  # one list per engine call, one result per source still running
            for result in results:
                tiles[result.source_index] = result.overlay
            sink.write(side_by_side([tiles[i] for i in sorted(tiles)], args.height))
            if sink.stop_requested:
                break
    print("%d frames from %d sources in %.1f s (%.1f frames/s in all)" % (
        stream.stats.frames, len(args.source), stream.stats.elapsed, stream.stats.fps))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # errors as one line, as the m2f-edge command prints them
