"""m2f-edge convert MODEL.onnx -o OUT.onnx [--portable] [--raw-head] [--fp16 [--keep-fp32 PREFIX ...]]:
rewrite an ONNX model."""

from __future__ import annotations

import logging
import os

_log = logging.getLogger("m2f_edge.commands.convert")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert", help="rewrite an ONNX model (portable deformable attention, raw head, float16)",
        description="Rewrite an ONNX model. --portable replaces every MultiscaleDeformableAttnPlugin_TRT node "
                    "(TensorRT plugin, in TAO's GPU-exported ONNX) with standard ONNX ops, so the model runs in "
                    "ONNX Runtime anywhere. --raw-head cuts TAO's in-graph post-processor off and exposes "
                    "pred_logits and the low-resolution pred_masks, so the core's faster post-processing runs. "
                    "--fp16 stores the model in float16 with TAO's FP32 layers, overflow-prone ops and the graph's "
                    "inputs and outputs kept float32 (Casts at the boundaries): the FP16 model TensorRT >= 11 needs, "
                    "whose engines take their precision from the ONNX. Any combination may be given; --fp16 runs "
                    "last.")
    parser.add_argument("model", help="the input .onnx (or demo, the shipped demo model)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--portable", action="store_true", help="replace the TensorRT deformable-attention plugin")
    parser.add_argument("--raw-head", action="store_true", help="cut the post-processor, expose the raw head")
    parser.add_argument("--fp16", action="store_true",
                        help="convert to float16, keeping TAO's FP32 layers and the graph I/O in float32")
    parser.add_argument("--keep-fp32", metavar="PREFIX", nargs="+", default=None,
                        help="with --fp16: node-name prefixes kept in float32 (replaces TAO's list; give '' for none)")
    parser.add_argument("--keep-fp32-op", metavar="OPTYPE", nargs="+", default=[],
                        help="with --fp16: also keep these op types in float32 (e.g. "
                             "MultiscaleDeformableAttnPlugin_TRT)")
    parser.add_argument("--no-object-index", type=int, default=None,
                        help="raw head: index of the no-object class in pred_logits to record (default: the "
                             "model's metadata, else 0 as TAO)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def run(args) -> int:
    import onnx

    from ..models.portable import make_portable, plugin_summary
    from .._outputs import refuse_replacing
    from ..demo import resolve_model
    from ..models.rawhead import cut_raw_head

    args.model = resolve_model(args.model)

    if not (args.portable or args.raw_head or args.fp16):
        raise ValueError("nothing to do: give --portable, --raw-head and/or --fp16")
    if (args.keep_fp32 is not None or args.keep_fp32_op) and not args.fp16:
        raise ValueError("--keep-fp32 and --keep-fp32-op only apply with --fp16")
    if not os.path.isfile(args.model):
        raise FileNotFoundError("model: no such file: {}".format(args.model))
    refuse_replacing([("--output", args.output)], [("the input model", args.model)])
    if os.path.exists(args.output) and not args.force:
        raise FileExistsError("--output: {} exists (use --force to overwrite)".format(args.output))
    try:
        model = onnx.load(args.model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError("model: {} is not a readable ONNX file ({})".format(args.model, exc)) from None
    if not model.ir_version or not model.HasField("graph"):
        raise ValueError("model: {} is not an ONNX model (no IR version or graph)".format(args.model))
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
    if args.fp16:
        from ..models.fp16 import FP32_OP_TYPES, convert_float16, summary

        prefixes = None if args.keep_fp32 is None else [p for p in args.keep_fp32 if p]
        model, report = convert_float16(model, keep_prefixes=prefixes,
                                        keep_op_types=FP32_OP_TYPES | frozenset(args.keep_fp32_op))
        steps.append("fp16: " + summary(report))
    onnx.checker.check_model(model)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    if args.fp16:
        from ..models.fp16 import save_model

        save_model(model, args.output)
    else:
        onnx.save(model, args.output)
    print("wrote {}: {}".format(args.output, "; ".join(steps)))
    return 0
