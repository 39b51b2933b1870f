"""TensorRT backend: runs a serialized engine through the core's C++ runner (m2f_edge._core.tensorrt).

The engine must have been built by the TensorRT version installed here, for this GPU model: build it
with `m2f-edge build model.onnx`, or let TensorRTBackend.from_onnx() build and cache one. An engine
with a JSON sidecar (written by both) is checked against this machine before it is loaded.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np

from .base import Backend, UnsupportedModelError, check_input_shape
from . import engine_cache

_TRT_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64,
               "uint8": np.uint8, "bool": np.bool_}


def _core_tensorrt():
    from .. import _core

    if not getattr(_core.tensorrt, "available", False):
        raise ImportError(getattr(_core.tensorrt, "unavailable_reason", "m2f_edge was built without TensorRT"))
    return _core


def check_engine_sidecar(path: str) -> None:
    """Raise a clear error when the engine's sidecar says it was built for another TensorRT or GPU.
    Engines without a sidecar (e.g. from trtexec) are left to TensorRT's own check."""
    record = engine_cache.read_sidecar(path)
    if not record:
        return
    meta = record.get("metadata") or {}
    here_trt = engine_cache.runtime_tensorrt_version()
    if meta.get("tensorrt_version") and here_trt and meta["tensorrt_version"] != here_trt:
        raise RuntimeError("engine '{}' was built with TensorRT {}, and this machine has TensorRT {}: rebuild it here "
                           "with `m2f-edge build` (engines are not portable across TensorRT versions)".format(
                               path, meta["tensorrt_version"], here_trt))
    built_for = meta.get("device") or {}
    here = engine_cache.target_device(built_for.get("dla_core"))
    if built_for.get("gpu_name") and here.get("gpu_name") and (
            built_for.get("gpu_name") != here.get("gpu_name")
            or built_for.get("compute_capability") != here.get("compute_capability")):
        raise RuntimeError("engine '{}' was built for {} (compute {}), and this GPU is {} (compute {}): rebuild it here "
                           "with `m2f-edge build`".format(path, built_for.get("gpu_name"),
                                                          built_for.get("compute_capability"), here.get("gpu_name"),
                                                          here.get("compute_capability")))


class TensorRTBackend(Backend):
    """A TensorRT engine. dla_core: run on that DLA core (engine built with --dla). use_cuda_graph:
    replay inference from a CUDA graph while the input shape stays the same (falls back silently)."""

    name = "tensorrt"
    runs_gpu_pipeline = True

    def __init__(self, path: str, *, dla_core: Optional[int] = None, use_cuda_graph: bool = False, device: int = 0):
        core = _core_tensorrt()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError("model: no such engine file: '{}'".format(path))
        check_engine_sidecar(path)
        self.path = path
        self._engine = core.tensorrt.Engine(path, dla_core=-1 if dla_core is None else int(dla_core), device=device,
                                            use_cuda_graph=use_cuda_graph)
        info = core.gpu.device_info()
        if info.get("zero_copy"):
            # Jetson: outputs in mapped memory, so the host reads them without a copy.
            self._engine.set_mapped_outputs(True)
        self._zero_copy = bool(info.get("zero_copy"))
        self._gpu_name = info.get("name")
        tensors = self._engine.tensors
        inputs = [t for t in tensors if t["mode"] == "input"]
        outputs = [t for t in tensors if t["mode"] == "output"]
        if len(inputs) != 1:
            raise UnsupportedModelError("engine '{}' has {} inputs ({}); a Mask2Former engine has one image input".format(
                path, len(inputs), [t["name"] for t in inputs]))
        self._input = inputs[0]
        self.input_name = self._input["name"]
        self.input_shape = check_input_shape(self.input_name, [d if d >= 0 else None for d in self._input["shape"]],
                                             path)
        if self._input["dtype"] not in ("float32", "float16"):
            raise UnsupportedModelError("engine input '{}' is {}; expected float32 or float16".format(
                self.input_name, self._input["dtype"]))
        self.input_dtype = np.dtype(_TRT_DTYPES[self._input["dtype"]])
        self.output_names = [t["name"] for t in outputs]
        self.output_shapes = {t["name"]: tuple(d if d >= 0 else None for d in t["shape"]) for t in outputs}
        if "min_shape" in self._input and self.input_shape[0] is None:
            self.batch_range = (int(self._input["min_shape"][0]), int(self._input["max_shape"][0]))
        else:
            batch = self.input_shape[0] or 1
            self.batch_range = (batch, batch)
        # The engine does not keep its ONNX's metadata_props; its sidecar does (m2f-edge build and the
        # engine cache both write them), so a raw-head engine from a Hugging Face export gets the same
        # no-object index here as its ONNX gets from ONNX Runtime.
        self.metadata = engine_cache.engine_model_metadata(path)

    @classmethod
    def from_onnx(cls, onnx_path: str, options=None, cache_dir: Optional[str] = None, **kwargs) -> "TensorRTBackend":
        """Build (first time) or reuse the cached engine for this ONNX file, TensorRT, GPU, precision
        and batch range (see m2f_edge.models.tensorrt_build.cached_engine), then load it."""
        # The builder is offline work (TensorRT's Python package, the model tools): loaded only here.
        from ..models.tensorrt_build import cached_engine

        engine = cached_engine(onnx_path, options, cache_dir=cache_dir)
        return cls(engine, dla_core=getattr(options, "dla_core", None), **kwargs)

    def _check_batch(self, batch: int) -> None:
        lo, hi = self.batch_range
        if batch < lo or (hi is not None and batch > hi):
            raise ValueError("tensor: batch {} is outside the engine's range {}..{} (rebuild with --batch MIN:OPT:MAX)"
                             .format(batch, lo, hi))

    def run(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Host in, host out. The input is copied to the GPU once; each output is copied back once
        (on Jetson the outputs live in mapped memory and .numpy() views them without a copy, but
        the copy is still made so that the next call cannot overwrite a result)."""
        tensor = np.ascontiguousarray(tensor, dtype=self.input_dtype)
        if tensor.ndim != 4 or tuple(tensor.shape[1:]) != tuple(self.input_shape[1:]):
            raise ValueError("tensor: expected (B, {}, {}, {}), got {}".format(*self.input_shape[1:],
                                                                               tuple(tensor.shape)))
        self._check_batch(tensor.shape[0])
        outputs = self._engine.infer({self.input_name: tensor})
        return {name: outputs[name].to_numpy() for name in self.output_names}

    def run_device(self, tensor: Any, stream: Any = None, synchronize: bool = True) -> Dict[str, Any]:
        """GPU in, GPU out: tensor is any GPU array (DeviceArray, CuPy, PyTorch; read in place).
        Returns {output name: DeviceArray}; a returned array is never reused while you hold it."""
        shape = tuple(getattr(tensor, "shape", ()))
        if len(shape) != 4 or tuple(shape[1:]) != tuple(self.input_shape[1:]):
            raise ValueError("tensor: expected (B, {}, {}, {}), got {}".format(*self.input_shape[1:], shape))
        self._check_batch(int(shape[0]))
        return self._engine.infer({self.input_name: tensor}, stream=stream, synchronize=synchronize)

    def last_timings(self) -> Optional[Dict[str, Optional[float]]]:
        """Timings of the last run()/run_device(): {"enqueue_ms": host time of the enqueue call,
        "gpu_ms": GPU time of the inference between two CUDA events recorded on its stream}. gpu_ms is
        None while that work has not finished (run_device(..., synchronize=False)): it is read, never
        waited for. None before the first run."""
        if self._engine is None:
            return None
        return self._engine.last_timings()

    @property
    def cuda_graph_active(self) -> bool:
        return bool(self._engine.cuda_graph_active)

    def close(self) -> None:
        self._engine = None

    def describe(self) -> str:
        lo, hi = self.batch_range
        return "tensorrt {} on {} ({} input, batch {}..{}{})".format(
            engine_cache.runtime_tensorrt_version(), self._gpu_name, self.input_dtype.name, lo, hi,
            ", zero-copy outputs" if self._zero_copy else "")
