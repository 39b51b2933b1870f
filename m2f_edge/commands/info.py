"""m2f-edge info [MODEL]: what a model is (contract, input, batch range, classes, backend), or the build."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "info", help="show a model's contract, input, batch range and classes (or the build, without a model)",
        description="Load a model and print what m2f_edge reads from it: contract (deployable or raw head), input "
                    "name, size and dtype, batch range, outputs, classes and the backend that runs it. Without a "
                    "model, print what m2f_edge was built with and whether a GPU is usable.")
    parser.add_argument("model", nargs="?", help="the model: .onnx, a TensorRT .engine/.plan, or demo (the shipped demo model)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime[-cpu|-cuda|-tensorrt] or tensorrt")
    parser.add_argument("--spec", help="a TAO experiment spec (YAML) or sidecar JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def model_info(seg) -> dict:
    backend = seg.backend
    low, high = seg.batch_range
    info = {
        "model": seg.model_path,
        "contract": seg.contract,
        "input_name": backend.input_name,
        "input_size": list(seg.input_size),
        "input_dtype": seg.input_dtype.name,
        "batch_range": [low, high],
        "outputs": {name: list(getattr(backend, "output_shapes", {}).get(name, ()) or ())
                    for name in backend.output_names},
        "num_classes": seg.num_classes,
        "class_names": list(seg.class_names),
        "category_ids": seg.category_ids,
        "backend": backend.name,
        "backend_detail": backend.describe(),
        "score_threshold": seg.score_threshold,
        "mean": list(seg.mean),
        "std": list(seg.std),
        "settings_from": [s for s in seg.settings.sources if s != "arguments"],
        "metadata": dict(backend.metadata),
    }
    if seg.contract == "raw":
        info["no_object_index"] = seg.no_object_index
        info["topk"] = seg.topk
    return info


def _onnxruntime() -> Tuple[Optional[str], List[str]]:
    """(version, providers), or (None, []) when ONNX Runtime does not import."""
    try:
        import onnxruntime
    except ImportError:
        return None, []
    return onnxruntime.__version__, list(onnxruntime.get_available_providers())


def runs_here(build: dict, providers: List[str]) -> str:
    """One plain sentence: which path a model takes on this machine, and why not the GPU when it is not."""
    ort_cuda = "CUDAExecutionProvider" in providers
    if not build.get("gpu_present"):
        return "CPU: ONNX Runtime (every model runs here, more slowly than on a GPU); no usable GPU: {}".format(
            build.get("gpu_error") or "none found")
    gpu = build.get("gpu_name") or "an NVIDIA GPU"
    onnx_path = "ONNX Runtime on the GPU (CUDA provider)" if ort_cuda else "ONNX Runtime on the CPU"
    if build.get("tensorrt"):
        return "GPU ({}): TensorRT engines with the core's CUDA pre- and post-processing; .onnx models: {}".format(
            gpu, onnx_path)
    if ort_cuda:
        return "GPU ({}): ONNX Runtime's CUDA provider (m2f_edge was built without TensorRT)".format(gpu)
    return ("CPU: ONNX Runtime; the GPU ({}) is not used: m2f_edge was built without TensorRT and this ONNX "
            "Runtime has no CUDA provider".format(gpu))


def _build_lines(build: dict) -> List[Tuple[str, object]]:
    from ..demo import MODEL_FILE

    version, providers = _onnxruntime()
    if build.get("cuda"):
        cuda = "built in (CUDA {}){}".format(build.get("cuda_version"), "; kernels emulated on the CPU (test build)"
                                             if build.get("cuda_emulation") else "")
    else:
        cuda = "not built in"
    if build.get("gpu_present"):
        gpu = "{} (compute capability {}{}), {} device(s)".format(
            build.get("gpu_name"), build.get("gpu_compute_capability"),
            ", integrated: Jetson" if build.get("gpu_integrated") else "", build.get("gpu_count"))
    else:
        gpu = "none usable ({})".format(build.get("gpu_error") or "none found")
    return [
        ("runs here", runs_here(build, providers)),
        ("m2f-edge", build.get("version")),
        ("CUDA", cuda),
        ("TensorRT", "built in (TensorRT {})".format(build.get("tensorrt_version")) if build.get("tensorrt")
         else "not built in"),
        ("GPU", gpu),
        ("ONNX Runtime", "{}, providers: {}".format(version, ", ".join(providers)) if version else "not installed"),
        ("demo model", MODEL_FILE if os.path.isfile(MODEL_FILE) else "not installed (expected at {})".format(MODEL_FILE)),
    ]


def _print_lines(lines) -> None:
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print("{:<{}}  {}".format(key, width, value))


def _classes(seg, shown: str) -> str:
    if seg.num_classes is not None:
        return "{}: {}".format(seg.num_classes, shown)
    # TAO's deployable outputs carry a class id per instance, not the number of classes
    return "number not stated by the model (its outputs give class ids only); names: {}".format(shown)


def _dims(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]" if shape else "[?]"


def run(args) -> int:
    if args.model is None:
        from .. import build_info

        info = build_info()
        if args.json:
            print(json.dumps(dict(info, runs_here=runs_here(info, _onnxruntime()[1])), indent=2))
        else:
            _print_lines(_build_lines(info))
        return 0
    from ..segmenter import Segmenter

    seg = Segmenter(args.model, backend=args.backend, spec=args.spec)
    info = model_info(seg)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    low, high = seg.batch_range
    names = info["class_names"]
    shown = ", ".join(names[:10]) + (", ... ({} in all)".format(len(names)) if len(names) > 10 else "")
    lines = [
        ("model", info["model"]),
        ("contract", "{} ({})".format(seg.contract, "post-processing inside the graph" if seg.contract == "deployable"
                                      else "class and mask logits, post-processed by m2f_edge")),
        ("input", "{} {} {}x{} (HxW), NCHW RGB".format(info["input_name"], info["input_dtype"], *seg.input_size)),
        ("batch range", "{}..{}".format(low, "unbounded" if high is None else high) if low != high
         else "{} (fixed)".format(low)),
        ("outputs", ", ".join("{} {}".format(n, _dims(s)) for n, s in info["outputs"].items())),
        ("classes", _classes(seg, shown)),
        ("backend", info["backend_detail"]),
        ("score threshold", seg.score_threshold),
    ]
    if seg.contract == "raw":
        lines.append(("no-object index", "{} ({})".format(seg.no_object_index, "TAO: first" if seg.no_object_index == 0
                                                          else "last (detectron2 / Hugging Face)")))
        lines.append(("top-k", seg.topk))
    if info["settings_from"]:
        lines.append(("settings from", ", ".join(info["settings_from"])))
    if info["metadata"]:
        lines.append(("metadata", ", ".join(sorted(info["metadata"]))))
    _print_lines(lines)
    return 0
