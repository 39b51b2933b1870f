"""m2f-edge eval --model M --coco ANNOTATIONS.json --images DIR: COCO mask/box AP, foreground mIoU, speed."""

from __future__ import annotations

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on a COCO dataset",
        description="Run a model on the images of a COCO-format dataset and print COCO mask AP/AP50/AP75, box AP "
                    "(pycocotools), foreground mIoU (object vs background IoU per image, averaged) and the speed. "
                    "Needs the eval extra: pip install 'm2f-edge[eval]'.")
    parser.add_argument("--model", required=True, help="the model: .onnx, a TensorRT .engine/.plan, or demo (the shipped demo model)")
    parser.add_argument("--coco", required=True, help="COCO annotation JSON (instances_*.json)")
    parser.add_argument("--images", required=True, help="folder holding the images named in the annotations")
    binary = parser.add_mutually_exclusive_group()
    binary.add_argument("--binary", dest="binary", action="store_true", default=None,
                        help="category-agnostic: all categories -> one 'object' (default for one-class models)")
    binary.add_argument("--per-category", dest="binary", action="store_false",
                        help="score per category (predictions use the model's label map, else label + 1)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images (by image id)")
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="keep instances above this score (default 0.05: COCO AP wants low-score detections)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime[-cpu|-cuda|-tensorrt] or tensorrt")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON")
    parser.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch",
                        help="frame to network resize (default stretch, as DeepStream / tao-deploy)")
    parser.add_argument("--output-dir", help="write results.json, per_image.json and summary.json here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def run(args) -> int:
    from ..models.evaluate import evaluate, format_summary

    result = evaluate(args.model, args.coco, args.images, binary=args.binary, limit=args.limit,
                      score_threshold=args.score_threshold, progress=not args.no_progress,
                      output_dir=args.output_dir, backend=args.backend, spec=args.spec, resize=args.resize)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}))
    else:
        print(format_summary(result))
        if args.output_dir:
            print("wrote results.json, per_image.json and summary.json to {}".format(args.output_dir))
    return 0
