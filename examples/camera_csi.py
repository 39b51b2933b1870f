#!/usr/bin/env python3
"""Segment a Jetson MIPI CSI camera and show or record the masks.

    python3 examples/camera_csi.py --model mask2former_swint.engine
    python3 examples/camera_csi.py --model model.onnx --source csi://1 --output csi.mp4
    python3 examples/camera_csi.py --model demo --source examples/data/scenes.mp4 --output scenes_masks.mp4

The camera is read through GStreamer (nvarguscamerasrc), which needs JetPack's own OpenCV: do not
install opencv-python from PyPI into the same environment. Press q in the window (or Ctrl-C) to stop.
"""

import argparse
import sys

import m2f_edge
from m2f_edge.cli import run_script
from m2f_edge.video import open_source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a TensorRT engine, an ONNX model, or demo (the demo model that ships with m2f_edge)")
    parser.add_argument("--source", default="csi://0", help="camera URI (default csi://0)")
    parser.add_argument("--output", default="display://",
                        help="display://, a video file or a folder/ (default: window)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the model's spec or sidecar, else 0.5)")
    parser.add_argument("--width", type=int, default=1280, help="capture width (1280)")
    parser.add_argument("--height", type=int, default=720, help="capture height (720)")
    parser.add_argument("--fps", type=int, default=30, help="capture frame rate (30)")
    parser.add_argument("--flip", type=int, default=0, help="nvvidconv flip-method, 0-7 (0)")
    args = parser.parse_args(argv)

    segmenter = m2f_edge.Segmenter(args.model, score_threshold=args.threshold)
    with open_source(args.source, width=args.width, height=args.height, fps=args.fps, flip=args.flip) as camera, \
            segmenter.stream(camera, output=args.output) as stream:
        for frame, instances in stream:
            pass  # the masks are in `instances` (masks, scores, boxes); the overlay goes to --output
    print("%d frames, %.1f FPS, %d dropped by the camera queue" % (
        stream.stats.frames, stream.stats.fps, stream.stats.dropped))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # errors as one line, as the m2f-edge command prints them
