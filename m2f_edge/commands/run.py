"""m2f-edge run --model M --source URI [--output URI]: segment a camera, stream, video or image folder."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "run", help="run a model on a video, camera or image folder",
        description="Run a Mask2Former model on a video source through the pipelined stream (capture, "
                    "preprocessing, inference, post-processing and drawing overlap) and write the overlays to "
                    "--output. Sources: csi://0, v4l2:///dev/video0?width=1280&height=720, rtsp://..., "
                    "gst://PIPELINE, a video file, an image, a folder or a glob of images. Outputs: display://, "
                    "out.mp4 / out.avi, a folder ending in /, udp://host:port.")
    parser.add_argument("-m", "--model", required=True, help="the model: .onnx, a TensorRT .engine/.plan, or demo (the shipped demo model)")
    parser.add_argument("-s", "--source", required=True, metavar="URI", help="where frames come from")
    parser.add_argument("-o", "--output", metavar="URI", help="where overlays go (none: only print statistics)")
    parser.add_argument("-t", "--threshold", type=float, default=None,
                        help="score threshold (default: the spec's / sidecar's, else 0.5)")
    parser.add_argument("-b", "--batch", type=int, default=1, help="frames per engine call (1)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch",
                        help="stretch frames to the network size (deployable model) or letterbox them")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime[-cpu|-cuda|-tensorrt] or tensorrt")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON with class names, thresholds")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay (0.5)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    return parser


def run(args) -> int:
    from ..segmenter import Segmenter
    from ..video import SinkError, SourceError, StreamError, stream

    if args.batch < 1:
        print("m2f-edge run: --batch must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.alpha <= 1.0:
        print("m2f-edge run: --alpha must be in [0, 1]", file=sys.stderr)
        return 2
    seg = Segmenter(args.model, backend=args.backend, score_threshold=args.threshold, resize=args.resize,
                    spec=args.spec, threads=args.threads)
    try:
        pipeline = stream(seg, args.source, batch=args.batch, output=args.output,
                          draw_options={"alpha": args.alpha}, max_frames=args.max_frames)
    except (SourceError, SinkError, ValueError) as exc:
        print("m2f-edge run: error: {}".format(exc), file=sys.stderr)
        return 1
    last_report = time.monotonic()
    instances_seen = 0
    try:
        with pipeline:
            for result in pipeline:
                instances_seen += len(result.instances)
                now = time.monotonic()
                if now - last_report >= 2.0:
                    last_report = now
                    logger.info("frame %d: %.1f FPS, %d dropped", result.index, pipeline.fps or 0.0,
                                pipeline.stats.dropped)
    except (StreamError, SinkError) as exc:
        print("m2f-edge run: error: {}".format(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("m2f-edge run: interrupted; outputs closed", file=sys.stderr)
        return 130
    stats = pipeline.stats
    print("{} frames in {:.2f} s: {:.2f} FPS, {} instances, {} dropped, {} reconnects{}".format(
        stats.frames, stats.elapsed, stats.fps, instances_seen, stats.dropped, stats.reconnects,
        ", written to {}".format(args.output) if args.output else ""))
    return 0
