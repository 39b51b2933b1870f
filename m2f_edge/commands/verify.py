"""m2f-edge verify MODEL [IMAGES... | --source URI] [--engine E] [--json F]: do the runners agree?"""

from __future__ import annotations

import itertools


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "verify", help="check that this machine's runners agree with the host reference (run this first)",
        description="Run the same frames through the device runner (the whole path on the GPU, where a GPU and "
                    "TensorRT are found; else its CPU twin, and the report says no device was there) and the host "
                    "reference (ONNX Runtime on the ONNX, or the engine with host stages), and check the core's "
                    "preprocessing and post-processing against numpy/OpenCV references. Prints a verdict table "
                    "with the tolerances and timings; exits 1 when a check is outside its tolerance.")
    parser.add_argument("model", help="the model: .onnx (the reference), or a TensorRT .engine/.plan")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files or folders (default: generated demo scenes)")
    parser.add_argument("--source", help="take frames from a video, camera or stream URI instead")
    parser.add_argument("--frames", type=int, default=8, help="frames from --source or generated scenes (8)")
    parser.add_argument("--engine", help="a TensorRT engine of MODEL for the device runner")
    parser.add_argument("--reference", help="run the host reference on this model instead of MODEL")
    parser.add_argument("-t", "--threshold", type=float, default=None, help="score threshold (default: the model's)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    return parser


def _frames(args):
    import cv2

    if args.frames < 1:
        raise ValueError("--frames: expected at least 1, got {}".format(args.frames))
    if args.images and args.source:
        raise ValueError("give images or --source, not both")
    if args.images:
        from .segment import collect_images

        frames = []
        for path in collect_images(args.images):
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("{}: not an image OpenCV can read".format(path))
            frames.append(image)
        return frames, "{} image(s)".format(len(frames))
    if args.source:
        from ..video import open_source

        with open_source(args.source) as source:
            frames = [frame.image.copy() for frame in itertools.islice(source, args.frames)]
        return frames, "{} frame(s) of {}".format(len(frames), args.source)
    from .. import demo

    return [scene.image for scene in demo.scenes(args.frames, seed=7, size=(240, 320))], \
        "{} generated demo scenes".format(args.frames)


def run(args) -> int:
    from ..demo import resolve_model
    from ..verify import format_report, verify, write_json

    frames, where = _frames(args)
    report = verify(resolve_model(args.model), frames, engine=args.engine, reference=args.reference,
                    score_threshold=args.threshold)
    report["frames_from"] = where
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print("wrote {}".format(args.json))
    return 0 if report["passed"] else 1
