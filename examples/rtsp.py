#!/usr/bin/env python3
"""Segment an RTSP stream (an IP camera) and record or show the masks.

    python3 examples/rtsp.py --model model.onnx --source rtsp://192.168.1.20:554/stream1 --output cam.mp4
    python3 examples/rtsp.py --model demo --source examples/data/scenes.mp4 --output scenes_masks.mp4  # no camera

With JetPack's OpenCV the stream is decoded by GStreamer on the hardware decoder (nvv4l2decoder);
elsewhere by OpenCV's FFmpeg. A dropped connection is retried with backoff. Ctrl-C stops and keeps
a complete output file.
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
    parser.add_argument("--source", required=True, help="rtsp://host:port/path (or any other source URI)")
    parser.add_argument("--output", default="rtsp_overlay.mp4", help="video file, folder/ or display:// "
                                                                     "(default rtsp_overlay.mp4)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold (default: the model's spec or sidecar, else 0.5)")
    parser.add_argument("--latency", type=int, default=200, help="RTSP jitter buffer in ms (200)")
    parser.add_argument("--codec", default="h264", choices=["h264", "h265"], help="stream codec (h264)")
    args = parser.parse_args(argv)

    options = {"latency": args.latency, "codec": args.codec} if args.source.startswith("rtsp") else {}
    segmenter = m2f_edge.Segmenter(args.model, score_threshold=args.threshold)
    with open_source(args.source, **options) as camera, segmenter.stream(camera, output=args.output) as stream:
        try:
            for result in stream:
                pass
        except KeyboardInterrupt:
            print("stopped")
    print("%d frames, %.1f FPS, %d dropped, %d reconnects" % (
        stream.stats.frames, stream.stats.fps, stream.stats.dropped, camera.reconnects))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # errors as one line, as the m2f-edge command prints them
