#!/usr/bin/env python3
"""Segment a USB (V4L2) camera and show or record the masks.

    python3 examples/camera_usb.py --model model.onnx --source v4l2:///dev/video0 --width 1280 --height 720
    python3 examples/camera_usb.py --model model.onnx --format MJPG --output usb.mp4
    python3 examples/camera_usb.py --model demo --source examples/data/scenes.mp4 --output scenes_masks.mp4

The camera reconnects with backoff when it is unplugged and plugged back in. q or Ctrl-C stops.
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
    parser.add_argument("--source", default="v4l2:///dev/video0", help="camera URI (default v4l2:///dev/video0)")
    parser.add_argument("--output", default="display://",
                        help="display://, a video file or a folder/ (default: window)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the model's spec or sidecar, else 0.5)")
    parser.add_argument("--width", type=int, help="capture width")
    parser.add_argument("--height", type=int, help="capture height")
    parser.add_argument("--fps", type=int, help="capture frame rate")
    parser.add_argument("--format", help="pixel format FOURCC, e.g. MJPG or YUYV")
    args = parser.parse_args(argv)

    segmenter = m2f_edge.Segmenter(args.model, score_threshold=args.threshold)
    with open_source(args.source, width=args.width, height=args.height, fps=args.fps, format=args.format) as camera, \
            segmenter.stream(camera, output=args.output) as stream:
        for result in stream:
            if result.sequence % 100 == 0:
                print("frame %d: %d instances, latency %.0f ms" % (
                    result.index, len(result.instances), 1000 * result.latency))
    print("%d frames, %.1f FPS, %d dropped, %d reconnects" % (
        stream.stats.frames, stream.stats.fps, stream.stats.dropped, camera.reconnects))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # errors as one line, as the m2f-edge command prints them
