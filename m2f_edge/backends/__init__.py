"""Inference backends: ONNX Runtime (any machine) and TensorRT (NVIDIA GPUs, Jetson).

open_backend(model, backend=...) picks one from the model file and the backend name:

    "auto"                  .onnx -> ONNX Runtime (CUDA provider when installed, else CPU);
                            .engine / .plan -> TensorRT
    "onnxruntime" / "ort"   ONNX Runtime with the best provider it has (CUDA, else CPU)
    "onnxruntime-cpu"       ONNX Runtime, CPU provider only
    "onnxruntime-cuda"      ONNX Runtime, CUDA provider (falls back to the CPU per node)
    "onnxruntime-tensorrt"  ONNX Runtime, TensorRT provider (then CUDA, then CPU)
    "tensorrt" / "trt"      a serialized TensorRT engine (build one with `m2f-edge build model.onnx`), or an
                            .onnx, for which the TensorRT backend builds (first use) or reuses a cached engine
"""

from __future__ import annotations

import os
from typing import Union

from .base import Backend, UnsupportedModelError, detect_contract
from .engine_cache import onnx_model_metadata

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)
BACKEND_NAMES = ("auto", "onnxruntime", "ort", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt",
                 "tensorrt", "trt")


def _open_tensorrt(path: str, threads: int) -> Backend:
    try:
        from .tensorrt import TensorRTBackend
    except ImportError as exc:
        raise ImportError(
            "'{}' is a TensorRT engine, but the TensorRT backend cannot be loaded here ({}). It needs an NVIDIA GPU, "
            "TensorRT, and m2f_edge built with CUDA and TensorRT (see build_info()). The ONNX model runs anywhere "
            "with ONNX Runtime: Segmenter('model.onnx')".format(path, exc)) from exc
    try:
        return TensorRTBackend(path)
    except ImportError as exc:  # TensorRT or the core's runner missing at load time
        raise ImportError("cannot run the TensorRT engine '{}': {}. The ONNX model runs anywhere with ONNX Runtime: "
                          "Segmenter('model.onnx')".format(path, exc)) from exc


def _open_tensorrt_from_onnx(path: str) -> Backend:
    """An engine built from (first time) or cached for this ONNX by the TensorRT backend, carrying the ONNX's
    metadata, which the engine itself does not keep."""
    try:
        from .tensorrt import TensorRTBackend
    except ImportError as exc:
        raise ImportError(
            "backend 'tensorrt' needs TensorRT, an NVIDIA GPU and m2f_edge built with CUDA and TensorRT, and the "
            "TensorRT backend cannot be loaded here ({}). Run '{}' with backend='onnxruntime' instead".format(
                exc, path)) from exc
    from_onnx = getattr(TensorRTBackend, "from_onnx", None)
    if from_onnx is None:
        raise ValueError("backend 'tensorrt' runs a serialized engine, and '{}' is an ONNX model: build the engine with "
                         "`m2f-edge build {}`, or run the ONNX with backend='onnxruntime-tensorrt' or "
                         "'onnxruntime'".format(path, path))
    try:
        engine = from_onnx(path)
    except ImportError as exc:
        raise ImportError("cannot build or load a TensorRT engine for '{}': {}. Run it with backend='onnxruntime' "
                          "instead".format(path, exc)) from exc
    if not engine.metadata:
        engine.metadata = onnx_model_metadata(path)
    return engine


def open_backend(model: Union[str, os.PathLike], backend: str = "auto", *, providers=None,
                 threads: int = 0) -> Backend:
    """Load `model` (a path) with the backend named by `backend` (see the module docstring).

    providers: ONNX Runtime execution providers (names, short names "cpu"/"cuda"/"tensorrt", or
    (name, options) tuples); overrides the device part of the backend name. threads: CPU threads for
    ONNX Runtime's intra-op pool (0 = its default).
    """
    if not isinstance(backend, str) or backend.lower() not in BACKEND_NAMES:
        raise ValueError("backend: expected one of {}, got {!r}".format(list(BACKEND_NAMES), backend))
    backend = backend.lower()
    path = os.fspath(model)
    if not os.path.exists(path):
        raise FileNotFoundError("model: no such file: '{}'".format(path))
    if os.path.isdir(path):
        raise IsADirectoryError("model: '{}' is a directory; expected an .onnx file or a TensorRT engine".format(path))
    suffix = os.path.splitext(path)[1].lower()
    is_engine = suffix in ENGINE_SUFFIXES
    if backend == "auto":
        if suffix not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            raise ValueError("model: cannot tell the format of '{}' from its suffix: expected .onnx (ONNX Runtime) or "
                             "{} (TensorRT); or name the backend explicitly".format(path, "/".join(ENGINE_SUFFIXES)))
        backend = "tensorrt" if is_engine else "onnxruntime"
    if backend in ("tensorrt", "trt"):
        if suffix in ONNX_SUFFIXES:
            return _open_tensorrt_from_onnx(path)
        return _open_tensorrt(path, threads)
    if is_engine:
        raise ValueError("backend '{}' runs ONNX models, and '{}' is a TensorRT engine: use backend='tensorrt' "
                         "(or 'auto')".format(backend, path))
    from .onnxruntime import OnnxRuntimeBackend

    device = backend.split("-", 1)[1] if "-" in backend else "auto"
    return OnnxRuntimeBackend(path, device=device, providers=providers, threads=threads)


__all__ = ["Backend", "UnsupportedModelError", "detect_contract", "open_backend", "BACKEND_NAMES"]
