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


def _not_a_stream(stream: Any) -> TypeError:
    return TypeError("argument 'stream': expected a CUDA stream (m2f_edge, CuPy, PyTorch or cuda-python stream, or "
                     "a handle as int), got {!r}".format(stream))


def stream_handle(stream: Any) -> int:
    """The cudaStream_t value of any stream object named in the module docstring (0 = legacy default)."""
    if stream is None:
        return 0
    for attribute in ("handle", "ptr", "cuda_stream"):
        value = getattr(stream, attribute, None)
        if value is not None and not callable(value):
            return int(value)
    if isinstance(stream, (str, bytes, float)):  # int() would read these as numbers
        raise _not_a_stream(stream)
    try:
        return int(stream)  # int, cuda-python's cudaStream_t and CUstream
    except (TypeError, ValueError):
        getter = getattr(stream, "getPtr", None)  # older cuda-python objects
        if getter is not None:
            return int(getter())
        raise _not_a_stream(stream) from None


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
    """Preprocess -> TensorRT -> post-process with every intermediate on the GPU, in one C++ call
    (_core.tensorrt.Pipeline).

    backend: a TensorRTBackend. contract: "deployable" or "raw" (see docs/design.md). output_map: the
    engine's names for the contract outputs where they differ. Frames already on the GPU are read in
    place; numpy frames are copied into a reusable frame buffer: on Jetson mapped memory (a CPU
    memcpy into memory the GPU reads directly, no cudaMemcpy); on a discrete GPU device memory, filled
    from pinned staging by an asynchronous copy on the pipeline's stream. Because the
    buffers stay put, the second call with same-sized frames captures the whole pipeline in a CUDA
    graph and later calls replay it (use_cuda_graph=False to stay eager). Results are copied into new
    arrays (masks_to: "host", "packed" or "device"), so a result never changes when the next frame runs.
    """

    def __init__(self, backend, contract: str, *, resize: str = "stretch", color: str = "bgr",
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 score_threshold: float = 0.5, max_instances: int = 100, no_object_index: int = 0, topk: int = 100,
                 output_map: Optional[Dict[str, str]] = None, use_cuda_graph: bool = True):
        require_gpu()
        if not getattr(_core.tensorrt, "available", False):
            raise ImportError(getattr(_core.tensorrt, "unavailable_reason", "m2f_edge was built without TensorRT"))
        if contract not in ("deployable", "raw"):
            raise ValueError("contract: expected 'deployable' or 'raw', got {!r}".format(contract))
        self.backend = backend
        self.contract = contract
        self.stream = Stream()
        self._options = dict(output_map=dict(output_map or {}), color=color, resize=resize,
                             mean=tuple(float(m) for m in mean), std=tuple(float(v) for v in std),
                             score_threshold=float(score_threshold), max_instances=int(max_instances),
                             no_object_index=int(no_object_index), topk=int(topk), use_cuda_graph=use_cuda_graph)
        self._pipeline = self._make_pipeline(self._options)
        self._frames = {}  # type: Dict[Tuple[int, ...], Any]

    def _make_pipeline(self, options: Dict[str, Any]):
        settings = dict(options)
        outputs = settings.pop("output_map")
        return _core.tensorrt.Pipeline(self.backend._engine, self.contract, input=self.backend.input_name,
                                       outputs=outputs, **settings)

    @property
    def cuda_graph_active(self) -> bool:
        return bool(self._pipeline.cuda_graph_active)

    def last_timings(self) -> Optional[Dict[str, Any]]:
        """Timings of the last run(): enqueue_ms (host), gpu_ms and per stage preprocess_gpu_ms,
        infer_gpu_ms, postprocess_gpu_ms (CUDA events on the pipeline's stream; the frame upload is not
        included; stage times are None for a replayed CUDA graph). See _core.tensorrt.Pipeline.last_timings."""
        return self._pipeline.last_timings()

    def frame_buffer(self, height: int, width: int, channels: int = 3, index: int = 0):
        """The reusable frame buffer for batch position `index`: on Jetson mapped memory (fill its
        .numpy() view, e.g. cv2.VideoCapture.read(image=view), and pass the buffer to run(): no copy
        at all); on a discrete GPU device memory."""
        key = (index, height, width, channels)
        if key not in self._frames:
            self._frames[key] = DeviceArray((height, width, channels), "uint8", "auto")
        return self._frames[key]

    def _slot_buffer(self, slot: int, index: int, shape: Tuple[int, ...]):
        # Page-locked host memory, one per (slot, batch position): the frames of one batch are staged
        # before any of their copies has run, and a slot is not reused before its batch has finished.
        key = ("slot", slot, index) + tuple(shape)
        if key not in self._frames:
            self._frames[key] = DeviceArray(tuple(shape), "uint8", "mapped")
        return self._frames[key]

    def stage(self, frames: Sequence[Any], slot: Optional[int] = None) -> List[Any]:
        """Bring host frames to where run_staged() reads them (a CPU copy; the GPU is not touched, so it
        may run in another thread while an earlier batch is on the GPU). slot: a staging slot owned by
        the caller until its run_staged() has returned; None when nothing else is in flight, which on
        Jetson writes straight into the frame buffers the GPU reads (no copy on the GPU at all). GPU
        frames pass through untouched."""
        staged = []
        for i, frame in enumerate(frames):
            if is_gpu_array(frame) or isinstance(frame, DeviceArray):
                staged.append((frame, None))
                continue
            frame = np.asarray(frame)
            if frame.ndim == 2:
                frame = frame[:, :, None]
            if frame.ndim != 3 or frame.dtype != np.uint8:
                raise ValueError("frames[{}]: expected an (H, W, C) uint8 array, got {} {}".format(
                    i, frame.dtype, frame.shape))
            buffer = self.frame_buffer(frame.shape[0], frame.shape[1], frame.shape[2], index=i)
            if slot is None and buffer.mapped:
                buffer.numpy()[...] = frame  # Jetson: the GPU reads these very bytes
                staged.append((buffer, None))
                continue
            staging = self._slot_buffer(0 if slot is None else slot, i, buffer.shape)
            staging.numpy()[...] = frame
            staged.append((buffer, staging))
        return staged

    def run_staged(self, staged: Sequence[Any], masks_to: str = "host") -> List[Dict[str, Any]]:
        """Run frames from stage(): staged copies go into the fixed frame buffers on the pipeline's stream
        (so a captured CUDA graph keeps its pointers), then the pipeline. One dict per frame with the
        keys of _core.postprocess_* plus "transform"."""
        buffers = []
        for buffer, staging in staged:
            if staging is not None:
                _gpu.copy(buffer, staging, stream=self.stream, synchronize=False)
            buffers.append(buffer)
        if not buffers:
            return []
        return list(self._pipeline.run(buffers, stream=self.stream, masks_to=masks_to))

    def run(self, frames: Sequence[Any], masks_to: str = "host") -> List[Dict[str, Any]]:
        """frames: GPU arrays or numpy (H, W, C) uint8 arrays. Returns one dict per frame with the
        keys of _core.postprocess_* plus "transform"."""
        return self.run_staged(self.stage(frames), masks_to=masks_to)

    def apply_settings(self, **settings) -> None:
        """Change settings (those of the constructor but backend and contract) from the next run on. The
        C++ pipeline is updated in place where it can be, else made anew on the same engine; either way a
        CUDA graph captured with the old settings is never replayed."""
        unknown = sorted(set(settings) - set(self._options))
        if unknown:
            raise TypeError("apply_settings: unknown setting(s) {}".format(", ".join(unknown)))
        options = dict(self._options, **settings)
        update = getattr(self._pipeline, "update", None)
        if callable(update):
            update(**settings)
        else:
            self._pipeline = self._make_pipeline(options)
        self._options = options


__all__ = ["available", "built_with_cuda", "device_info", "require_gpu", "is_gpu_array", "stream_handle",
           "cuda_python_stream", "DeviceArray", "Stream", "GpuPipeline"]
