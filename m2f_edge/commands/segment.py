"""m2f-edge segment IMAGES... --model M: segment image files, write overlays and one COCO-results JSON."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import List, Optional

from .._opencv import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "segment", help="segment images and write overlays and COCO results",
        description="Segment image files (or every image in the folders given) with a Mask2Former model. Writes "
                    "overlay images to --out and all instances as COCO results to --json; prints one line per image.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument("-m", "--model", required=True, help="the model: .onnx, a TensorRT .engine/.plan, or demo (the shipped demo model)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write an overlay image per input into DIR")
    parser.add_argument("--json", metavar="FILE", help="write the instances of all images as a COCO results JSON")
    parser.add_argument("-t", "--threshold", type=float, default=None,
                        help="score threshold (default: the spec's / sidecar's, else 0.5)")
    parser.add_argument("--max-instances", type=int, default=100, help="most instances kept per image (100)")
    parser.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch",
                        help="stretch the image to the network size (deployable model, DeepStream) or letterbox it "
                             "(TAO's PyTorch inference); default stretch")
    parser.add_argument("--color", choices=["bgr", "gray"], default="bgr",
                        help="decode images in colour (bgr, default) or as one gray channel")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime[-cpu|-cuda|-tensorrt] or tensorrt")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON with class names, thresholds")
    parser.add_argument("--image-id", choices=["auto", "index", "stem"], default="auto",
                        help="COCO image_id: the file name's number (COCO's 000000397133.jpg -> 397133; 'stem'), "
                             "the 1-based position ('index'), or the number when every name is one ('auto')")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    return parser


def collect_images(paths: List[str]) -> List[str]:
    """Files as given, and the image files inside folders (sorted); missing paths raise FileNotFoundError."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
            if not inside:
                logger.warning("%s: no images (%s) in this folder", path, ", ".join(IMAGE_EXTENSIONS))
            found.extend(inside)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError("no such image file or folder: '{}'".format(path))
    return found


def _image_ids(images: List[str], mode: str) -> List[object]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
    numeric = all(s.isdigit() for s in stems)
    if mode == "stem" and not numeric:
        bad = next(s for s in stems if not s.isdigit())
        raise ValueError("--image-id stem needs numeric file names (like COCO's 000000397133.jpg); got '{}'".format(bad))
    if mode == "stem" or (mode == "auto" and numeric):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def overlay_paths(out_dir: str, images: List[str]) -> List[str]:
    """One overlay file per image in out_dir, named as the image (PNG where OpenCV would not write the
    image's own format); a name used twice gets _1, _2, ..."""
    used = set()
    paths = []
    for image in images:
        stem, suffix = os.path.splitext(os.path.basename(image))
        if suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
            suffix = ".png"
        candidate, n = stem + suffix, 1
        while candidate in used:
            candidate, n = "{}_{}{}".format(stem, n, suffix), n + 1
        used.add(candidate)
        paths.append(os.path.join(out_dir, candidate))
    return paths


def _refuse_replacing_inputs(args, images: List[str], overlays: List[str]) -> None:
    from .._outputs import refuse_replacing

    inputs = [("the input image", image) for image in images]
    inputs += [("the model", args.model), ("the spec", args.spec)]
    outputs = [("--out", path) for path in overlays] + [("--json", args.json)]
    refuse_replacing(outputs, inputs)


def run(args) -> int:
    try:
        import cv2
    except ImportError:
        print("m2f-edge segment: reading images needs OpenCV (pip install opencv-python-headless; on Jetson use "
              "JetPack's python3-opencv)", file=sys.stderr)
        return 1
    from ..segmenter import Segmenter

    images = collect_images(args.images)
    if not images:
        print("m2f-edge segment: no images to segment", file=sys.stderr)
        return 1
    ids = _image_ids(images, args.image_id)
    overlays = overlay_paths(args.out, images) if args.out else [None] * len(images)
    _refuse_replacing_inputs(args, images, [p for p in overlays if p])
    seg = Segmenter(args.model, backend=args.backend, score_threshold=args.threshold,
                    max_instances=args.max_instances, resize=args.resize,
                    color="gray" if args.color == "gray" else "bgr", spec=args.spec, threads=args.threads)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    draw_available: Optional[bool] = None
    results = []
    failures = 0
    flag = cv2.IMREAD_GRAYSCALE if args.color == "gray" else cv2.IMREAD_COLOR
    for image, image_id, target in zip(images, ids, overlays):
        frame = cv2.imread(image, flag)
        if frame is None:
            print("m2f-edge segment: error: cannot read '{}' as an image".format(image), file=sys.stderr)
            failures += 1
            continue
        try:
            instances = seg.run(frame)
        except (ValueError, TypeError) as exc:
            print("m2f-edge segment: error: {}: {}".format(image, exc), file=sys.stderr)
            failures += 1
            continue
        results.extend(instances.to_coco(image_id))
        top = ", ".join("{} {:.2f}".format(name, float(score))
                        for name, score in list(zip(instances.class_names, instances.scores))[:5])
        print("{}: {} instance{}{}".format(image, len(instances), "" if len(instances) == 1 else "s",
                                           " (" + top + (", ..." if len(instances) > 5 else "") + ")" if top else ""))
        if args.out and draw_available is not False:
            canvas = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame
            try:
                instances.draw(canvas)
                draw_available = True
            except ImportError as exc:
                draw_available = False
                print("m2f-edge segment: overlays skipped: {}".format(exc), file=sys.stderr)
                continue
            if not cv2.imwrite(target, canvas):
                print("m2f-edge segment: error: cannot write '{}'".format(target), file=sys.stderr)
                failures += 1
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
        print("wrote {} instances of {} images to {}".format(len(results), len(images) - failures, args.json))
    return 1 if failures else 0
