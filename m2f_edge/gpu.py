"""The GPU path from Python: device facts, GPU arrays from other libraries, and a pipeline that keeps
a frame on the GPU from preprocessing through TensorRT to post-processing.

GPU arrays from CuPy, PyTorch, Numba, jetson-utils (cudaImage) or anything else exposing
``__cuda_array_interface__`` or ``__dlpack__`` are read in place: no copy. m2f_edge's own
``DeviceArray`` is such an array too. Streams may be given as m2f_edge ``Stream`` objects, raw
handles (int), cuda-python ``cudaStream_t``/``CUstream`` objects, CuPy streams or torch streams.

On integrated GPUs (every Jetson: ``device_info()["zero_copy"]``) buffers are mapped host memory:
the CPU writes a frame into ``GpuPipeline.frame_buffer()``'s numpy view and the GPU reads the same
bytes, with no cudaMemcpy. On discrete GPUs the input is copied once to device memory.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core

_gpu = _core.gpu


def built_with_cuda() -> bool:
    return bool(_gpu.built_with_cuda)


def available() -> bool:
    """True when the core was built with CUDA and a CUDA device is usable now."""
    return bool(_gpu.available())


def device_info() -> Dict[str, Any]:
    """name, compute_capability, integrated, can_map_host_memory, zero_copy, driver_version, error."""
    return dict(_gpu.device_info())


def require_gpu() -> None:
    """Raise a clear error unless the GPU path can run here."""
    if not built_with_cuda():
        raise RuntimeError("m2f_edge was built without CUDA: reinstall it where the CUDA toolkit (nvcc) is found "
                           "(M2F_CUDA=ON pip install ...); the CPU path needs no GPU")
    if not available():
        raise RuntimeError("no usable CUDA device: {}".format(device_info().get("error")))


def is_gpu_array(obj: Any) -> bool:
    """True for objects whose memory is on a CUDA device (CUDA array interface or a CUDA DLPack device)."""
    if isinstance(obj, np.ndarray):
        return False
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        device_type = int(dev()[0])
    except Exception:
        return False
    return device_type in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def stream_handle(stream: Any) -> int:
    """The cudaStream_t value of any stream object named in the module docstring (0 = legacy default)."""
    if stream is None:
        return 0
    for attribute in ("handle", "ptr", "cuda_stream"):
        value = getattr(stream, attribute, None)
        if value is not None and not callable(value):
            return int(value)
    try:
        return int(stream)  # int, cuda-python's cudaStream_t and CUstream
    except TypeError:
        getter = getattr(stream, "getPtr", None)  # older cuda-python objects
        if getter is not None:
            return int(getter())
        raise TypeError("stream: expected a CUDA stream handle or stream object, got {!r}".format(stream)) from None


def cuda_python_stream():
    """A new stream created through cuda-python (optional dependency: pip install 'm2f-edge[cuda]');
    returns (stream object, handle int)."""
    try:
        from cuda import cudart  # type: ignore
    except ImportError:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore
        except ImportError as exc:
            raise ImportError("cuda-python is needed for this (pip install 'm2f-edge[cuda]'): {}".format(exc)) from exc
    err, stream = cudart.cudaStreamCreate()
    if int(err) != 0:
        raise RuntimeError("cudaStreamCreate failed: {}".format(err))
    return stream, int(stream)


DeviceArray = getattr(_gpu, "DeviceArray", None)
Stream = getattr(_gpu, "Stream", None)


class GpuPipeline:
    """Preprocess -> TensorRT -> post-process with every intermediate on the GPU.

    backend: a TensorRTBackend. contract: "deployable" or "raw" (see DESIGN.md). The input tensor is
    allocated once for the engine's largest batch (mapped memory on integrated GPUs) and reused; the
    engine's outputs come from a pool that never hands out a buffer still held elsewhere; the results
    are copied into new numpy arrays, so an Instances never changes when the next frame runs.
    """

    def __init__(self, backend, contract: str, *, resize: str = "stretch", color: str = "bgr",
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 score_threshold: float = 0.5, max_instances: int = 100, no_object_index: int = 0, topk: int = 100,
                 output_map: Optional[Dict[str, str]] = None):
        require_gpu()
        if contract not in ("deployable", "raw"):
            raise ValueError("contract: expected 'deployable' or 'raw', got {!r}".format(contract))
        self.backend = backend
        self.contract = contract
        self.resize = resize
        self.color = color
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.score_threshold = float(score_threshold)
        self.max_instances = int(max_instances)
        self.no_object_index = int(no_object_index)
        self.topk = int(topk)
        self.outputs = dict(output_map or {})
        self.stream = Stream()
        self._inputs = {}  # type: Dict[int, Any]
        self._frames = {}  # type: Dict[Tuple[int, ...], Any]

    def _input(self, batch: int):
        if batch not in self._inputs:
            _, _, h, w = self.backend.input_shape
            self._inputs[batch] = DeviceArray((batch, 3, h, w), np.dtype(self.backend.input_dtype).name, "auto")
        return self._inputs[batch]

    def frame_buffer(self, height: int, width: int, channels: int = 3):
        """A reusable frame buffer: on Jetson mapped memory (fill its .numpy() view, e.g. with
        cv2.VideoCapture.read(image=view), and pass the buffer to run(): no copy at all); on a
        discrete GPU device memory."""
        key = (height, width, channels)
        if key not in self._frames:
            self._frames[key] = DeviceArray(key, "uint8", "auto")
        return self._frames[key]

    def _name(self, contract_name: str) -> str:
        return self.outputs.get(contract_name, contract_name)

    def run(self, frames: Sequence[Any]) -> List[Dict[str, np.ndarray]]:
        """frames: GPU arrays or numpy arrays (numpy is copied to the GPU once). Returns one result
        dict per frame, as _core.postprocess_* (masks at the frame size, scores, labels, boxes...)."""
        frames = list(frames)
        if not frames:
            return []
        tensor = self._input(len(frames))
        transforms = _gpu.preprocess(frames, tensor, color=self.color, resize=self.resize, mean=self.mean,
                                     std=self.std, stream=self.stream, synchronize=False)
        outputs = self.backend.run_device(tensor, stream=self.stream.handle, synchronize=False)
        results = []
        for b, transform in enumerate(transforms):
            if self.contract == "deployable":
                masks, scores, classes = (_batch_item(outputs[self._name(n)], b)
                                          for n in ("pred_masks", "pred_scores", "pred_classes"))
                results.append(_gpu.postprocess_deployable(
                    masks, scores, classes, transform, score_threshold=self.score_threshold,
                    max_instances=self.max_instances, stream=self.stream))
            else:
                logits, masks = (_batch_item(outputs[self._name(n)], b) for n in ("pred_logits", "pred_masks"))
                results.append(_gpu.postprocess_raw(
                    logits, masks, transform, no_object_index=self.no_object_index, topk=self.topk,
                    score_threshold=self.score_threshold, max_instances=self.max_instances, stream=self.stream))
        return results


class _BatchItem:
    """Item b of a C-contiguous GPU array, as a GPU array view (no copy)."""

    def __init__(self, array: Any, b: int):
        cai = dict(array.__cuda_array_interface__)
        shape = tuple(cai["shape"])
        itemsize = np.dtype(cai["typestr"]).itemsize
        per_item = int(np.prod(shape[1:])) * itemsize
        ptr, readonly = cai["data"]
        self._owner = array  # keeps the memory alive
        self.__cuda_array_interface__ = {"shape": shape[1:], "typestr": cai["typestr"],
                                         "data": (int(ptr) + b * per_item, readonly), "strides": None,
                                         "version": 3, "stream": None}


def _batch_item(array: Any, b: int) -> Any:
    return _BatchItem(array, b)


__all__ = ["available", "built_with_cuda", "device_info", "require_gpu", "is_gpu_array", "stream_handle",
           "cuda_python_stream", "DeviceArray", "Stream", "GpuPipeline"]
