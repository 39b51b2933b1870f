"""m2f-edge export MODEL -o OUT.onnx: a Hugging Face Mask2Former to ONNX (deployable or raw head)."""

from __future__ import annotations

import json
import os


def _size(text):
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError("expected HEIGHTxWIDTH, e.g. 800x800")
    return int(parts[0]), int(parts[1])


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a Hugging Face Mask2Former to ONNX",
        description="Export a Hugging Face Mask2FormerForUniversalSegmentation to ONNX in either m2f_edge contract: "
                    "'deployable' (TAO's outputs: 0/1 masks at network size, scores, classes; top-k in the graph) or "
                    "'raw' (pred_logits and low-resolution mask logits, post-processed by the core). MODEL is a "
                    "checkpoint folder (or hub id), a config.json (random weights), or a preset: 'tao-swin-t' "
                    "(TAO's Swin-T, 100 queries, 1 class, random weights: for timing) or 'tiny'. "
                    "Needs the export extra: pip install 'm2f-edge[export]'.")
    parser.add_argument("model", help="checkpoint folder / hub id, config.json, or preset tao-swin-t | tiny")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--head", choices=["deployable", "raw"], default="deployable",
                        help="output contract (default: deployable)")
    parser.add_argument("--input-size", default="800x800", metavar="HxW",
                        help="network input size, multiples of 32 (default 800x800, as NGC's deployable model)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--topk", type=int, default=None,
                        help="deployable head: instances kept in the graph (default min(100, queries x classes))")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17, >= 16)")
    parser.add_argument("--class-names", default=None,
                        help="comma-separated class names (default: the checkpoint's id2label)")
    parser.add_argument("--num-labels", type=int, default=1, help="presets only: number of classes (default 1)")
    parser.add_argument("--num-queries", type=int, default=100, help="presets only: number of queries (default 100)")
    parser.add_argument("--tensorrt-plugin", action="store_true",
                        help="export the deformable attention as TensorRT's MultiscaleDeformableAttnPlugin_TRT node, "
                             "as TAO's GPU export does (TensorRT only; ONNX Runtime rewrites it on load)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights (presets, config.json)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def _checkpoint_files(model: str):
    """The files an export reads from: a checkpoint folder's, or a config.json."""
    if os.path.isdir(model):
        return [os.path.join(model, name) for name in os.listdir(model)]
    return [model] if os.path.isfile(model) else []


def run(args) -> int:
    from .._outputs import refuse_replacing
    from ..models.export import export

    refuse_replacing([("--output", args.output)], [("the checkpoint's", p) for p in _checkpoint_files(args.model)])
    try:
        size = _size(args.input_size)
    except ValueError as exc:
        raise ValueError("--input-size: {} (got {!r})".format(exc, args.input_size)) from None
    names = None
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
    summary = export(args.model, args.output, head=args.head, input_size=size,
                     batch=None if args.dynamic_batch else args.batch, topk=args.topk, opset=args.opset,
                     class_names=names, num_labels=args.num_labels, num_queries=args.num_queries, seed=args.seed,
                     tensorrt_plugin=args.tensorrt_plugin)
    if args.json:
        print(json.dumps(summary))
    else:
        batch = "dynamic" if summary["batch"] is None else summary["batch"]
        print("wrote {output}: {head} head, input {h}x{w}, batch {batch}, {q} queries, classes {names}, "
              "opset {opset}, {plugins} TensorRT plugin nodes, {nodes} nodes, {mb:.1f} MB, {seconds:.1f} s".format(
                  output=summary["output"], head=summary["head"], h=summary["input_size"][0],
                  w=summary["input_size"][1], batch=batch, q=summary["num_queries"], names=summary["class_names"],
                  opset=summary["opset"], plugins=summary["tensorrt_plugin_nodes"], nodes=summary["nodes"], mb=summary["bytes"] / 1e6,
                  seconds=summary["seconds"]))
    return 0
