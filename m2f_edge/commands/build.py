"""m2f-edge build MODEL.onnx [-o ENGINE] [--fp16|--fp32] [--batch MIN:OPT:MAX] [--workspace MIB]
[--dla N [--gpu-fallback]] [--timing-cache PATH] [--no-auto-fp16]: build a TensorRT engine with TensorRT's builder."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "build", help="build a TensorRT engine from an ONNX model",
        description="Build a TensorRT engine from an ONNX model with TensorRT's builder (needs TensorRT's Python "
                    "package and an NVIDIA GPU). TAO's FP32 layers stay FP32 in an FP16 engine. A JSON sidecar "
                    "(ENGINE.json) records the ONNX sha256, TensorRT version, GPU, precision and batch range, so "
                    "that a stale or foreign engine is rebuilt rather than loaded. TensorRT >= 11 takes precisions "
                    "from the ONNX file: there an FP16 build converts an ONNX without float16 to FP16 first "
                    "(TAO's FP32 layers kept float32; see m2f-edge convert --fp16).")
    parser.add_argument("model", help="the ONNX model (e.g. mask2former_swint.onnx from NGC, or demo)")
    parser.add_argument("-o", "--output", metavar="ENGINE",
                        help="where to write the engine (default: MODEL with .engine, e.g. model.fp16.engine)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="fp16", action="store_true", default=True,
                           help="FP16 engine with TAO's FP32 layers kept (default)")
    precision.add_argument("--fp32", dest="fp16", action="store_false", help="FP32 engine")
    parser.add_argument("--batch", metavar="MIN:OPT:MAX",
                        help="optimisation profile of a dynamic batch dimension, e.g. 1:4:8 (default: the model's "
                             "static batch, or 1:1:1)")
    parser.add_argument("--workspace", metavar="MIB", type=int, help="builder workspace limit in MiB")
    parser.add_argument("--dla", metavar="N", type=int, help="build for DLA core N (Jetson Xavier / Orin)")
    parser.add_argument("--gpu-fallback", action="store_true",
                        help="with --dla: run layers the DLA cannot run on the GPU")
    parser.add_argument("--timing-cache", metavar="PATH",
                        help="read and update TensorRT's timing cache here (faster rebuilds)")
    parser.add_argument("--no-fp32-layers", action="store_true",
                        help="do not keep TAO's FP32 layers in FP32 (faster, may lose accuracy)")
    parser.add_argument("--no-auto-fp16", action="store_true",
                        help="TensorRT >= 11: do not convert an FP32 ONNX to FP16 before building (the engine is "
                             "then FP32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    return parser


def default_output(model: str, fp16: bool) -> str:
    stem = os.path.splitext(model)[0]
    return "{}.{}.engine".format(stem, "fp16" if fp16 else "fp32")


def run(args: argparse.Namespace) -> int:
    from .._outputs import refuse_replacing
    from ..backends.engine_cache import BuildOptions, parse_batch, sidecar_path
    from ..demo import resolve_model
    from ..models.tensorrt_build import build_with_sidecar, import_tensorrt
    from ..tao import TAO_FP32_LAYERS

    named = args.model
    args.model = resolve_model(named)
    if not os.path.isfile(args.model):
        raise FileNotFoundError("no such ONNX model: '{}'".format(args.model))
    if not args.model.lower().endswith(".onnx"):
        raise ValueError("'{}' is not an .onnx file: build takes an ONNX model".format(args.model))
    if args.gpu_fallback and args.dla is None:
        raise ValueError("--gpu-fallback only applies with --dla N")
    options = BuildOptions(
        fp16=args.fp16,
        batch=parse_batch(args.batch) if args.batch else None,
        workspace_mib=args.workspace,
        dla_core=args.dla,
        gpu_fallback=args.gpu_fallback,
        timing_cache=args.timing_cache,
        fp32_layers=() if args.no_fp32_layers else TAO_FP32_LAYERS,
        auto_fp16=not args.no_auto_fp16,
    )
    # the demo model lives inside the installed package: its engine goes to the working folder instead
    output = args.output or default_output(args.model if args.model == named else os.path.basename(args.model),
                                           args.fp16)
    refuse_replacing([("--output", output), ("the engine's sidecar", sidecar_path(output))],
                     [("the ONNX model", args.model), ("the timing cache", args.timing_cache)])
    import_tensorrt()  # fail here, with the explanation, before any work
    report = build_with_sidecar(args.model, output, options, progress=not args.no_progress)
    for note in report.get("notes", []):
        print("note: " + note, file=sys.stderr)
    print("wrote {} ({}, {} FP32 layers kept, {:.0f} s, TensorRT {})".format(
        output, report.get("precision", options.precision), len(report.get("fp32_layers_marked", [])),
        report.get("seconds", 0.0), report.get("tensorrt_version")), file=sys.stdout)
    return 0
