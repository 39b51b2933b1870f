"""m2f-edge convert MODEL.onnx -o OUT.onnx [--portable] [--raw-head]: rewrite an ONNX model."""

from __future__ import annotations

import logging
import os

_log = logging.getLogger("m2f_edge.commands.convert")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert", help="rewrite an ONNX model (portable deformable attention, raw head)",
        description="Rewrite an ONNX model. --portable replaces every MultiscaleDeformableAttnPlugin_TRT node "
                    "(TensorRT plugin, in TAO's GPU-exported ONNX) with standard ONNX ops, so the model runs in "
                    "ONNX Runtime anywhere. --raw-head cuts TAO's in-graph post-processor off and exposes "
                    "pred_logits and the low-resolution pred_masks, so the core's faster post-processing runs. "
                    "Both may be given.")
    parser.add_argument("model", help="the input .onnx")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--portable", action="store_true", help="replace the TensorRT deformable-attention plugin")
    parser.add_argument("--raw-head", action="store_true", help="cut the post-processor, expose the raw head")
    parser.add_argument("--no-object-index", type=int, default=None,
                        help="raw head: index of the no-object class in pred_logits to record (default: the "
                             "model's metadata, else 0 as TAO)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def run(args) -> int:
    import onnx

    from ..models.portable import make_portable, plugin_summary
    from ..models.rawhead import cut_raw_head

    if not (args.portable or args.raw_head):
        raise ValueError("nothing to do: give --portable and/or --raw-head")
    if not os.path.isfile(args.model):
        raise FileNotFoundError("model: no such file: {}".format(args.model))
    if os.path.abspath(args.model) == os.path.abspath(args.output):
        raise ValueError("--output: must differ from the input model")
    if os.path.exists(args.output) and not args.force:
        raise FileExistsError("--output: {} exists (use --force to overwrite)".format(args.output))
    model = onnx.load(args.model)
    steps = []
    if args.raw_head:
        before = len(model.graph.node)
        model = cut_raw_head(model, no_object_index=args.no_object_index)
        steps.append("raw head: {} nodes removed, outputs {}".format(
            before - len(model.graph.node), ", ".join(o.name for o in model.graph.output)))
    if args.portable:
        count, domains = plugin_summary(model)
        model = make_portable(model)
        steps.append("portable: {} {} node(s) replaced".format(count, "MultiscaleDeformableAttnPlugin_TRT")
                     if count else "portable: no plugin node found, nothing to replace")
    onnx.checker.check_model(model)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(model, args.output)
    print("wrote {}: {}".format(args.output, "; ".join(steps)))
    return 0
