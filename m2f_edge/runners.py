"""Runners: the one path from frames to Instances that every door of a Segmenter takes.

A Segmenter picks its runner when it is built:

- ``HostRunner``: the core's CPU preprocessing, the backend (ONNX Runtime, or TensorRT with host
  input and output copies), the core's CPU post-processing. Every backend can run it.
- ``DeviceRunner``: the whole frame -> Instances path on the GPU in one C++ call
  (``m2f_edge.gpu.GpuPipeline`` over ``_core.tensorrt.Pipeline``). Picked for TensorRT backends.

``run``, ``run_batch``, ``stream``, ``m2f-edge run``, ``m2f-edge-bench``, ``m2f-edge eval``,
``m2f-edge segment`` and ``m2f-edge verify`` call the runner; none strings the stages together itself.
A runner is split into steps (:meth:`Runner.steps`) so that a pipelined caller (the stream, the bench's
throughput mode) can run each step in its own thread: the host runner's steps are preprocess, infer and
postprocess; the device runner's are upload (frames into a free staging slot, on the CPU) and device
(the GPU work and the read-back), so the upload of frame N+1 overlaps the GPU work of frame N.

Settings (score threshold, mean, ...) are read from the Segmenter on every batch, so a change takes
effect on the next frame on both runners.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .gpu import GpuPipeline

RUNNER_CHOICES = ("auto", "host", "device")


class Step(NamedTuple):
    """One step of a runner: ``work(job)`` fills the job's fields for the next step."""
    name: str       # "preprocess", "infer", "postprocess" / "upload", "device"
    stamp: str      # the timestamp a stream records when the step is done with a batch
    work: Callable[["Job"], None]


class Job:
    """One batch moving through a runner's steps. ``results`` (one Instances per frame) is set by the
    last step; ``timings`` holds what the runner measured (ms per step, and the device's own)."""

    __slots__ = ("frames", "count", "prepared", "outputs", "staged", "slot", "results", "timings")

    def __init__(self, frames: Sequence[Any]):
        self.frames = list(frames)
        self.count = len(self.frames)
        self.prepared = None
        self.outputs = None
        self.staged = None
        self.slot = None
        self.results = None  # type: Optional[List[Any]]
        self.timings = {}  # type: Dict[str, Any]


def fixed_batch_padding(count: int, batch_range: Tuple[Optional[int], Optional[int]]) -> int:
    """How many frames a batch of ``count`` must be padded with for a model whose smallest batch is
    ``batch_range[0]`` (fixed-batch engines and ONNX files). The one place this policy lives."""
    low = batch_range[0] if batch_range else None
    return int(low) - count if low and count < int(low) else 0


def _timed(job: Job, name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = work()
    job.timings[name + "_ms"] = (time.perf_counter() - started) * 1e3
    return value


class Runner:
    """The interface both runners share."""

    name = "runner"

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self._last_timings = None  # type: Optional[Dict[str, Any]]

    def steps(self) -> List[Step]:
        raise NotImplementedError

    def run(self, frames: Sequence[Any]) -> List[Any]:
        """Segment one batch (at most the model's largest batch); one Instances per frame."""
        job = Job(frames)
        for step in self.steps():
            step.work(job)
        return job.results

    def last_timings(self) -> Optional[Dict[str, Any]]:
        """What the runner measured for its last finished batch (see each runner's docstring)."""
        return self._last_timings

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "{}()".format(type(self).__name__)


class HostRunner(Runner):
    """The core's CPU stages around the backend. ``last_timings()``: preprocess_ms, infer_ms and
    postprocess_ms (host clock), plus enqueue_ms and gpu_ms when the backend measures them (TensorRT)."""

    name = "host"

    def steps(self) -> List[Step]:
        return [Step("preprocess", "preprocessed", self._preprocess), Step("infer", "inferred", self._infer),
                Step("postprocess", "postprocessed", self._postprocess)]

    def _preprocess(self, job: Job) -> None:
        job.prepared = _timed(job, "preprocess", lambda: self.segmenter.preprocess(job.frames))

    def _infer(self, job: Job) -> None:
        job.outputs = _timed(job, "infer", lambda: self.segmenter.infer(job.prepared.tensor))
        hook = getattr(getattr(self.segmenter, "backend", None), "last_timings", None)
        timings = hook() if callable(hook) else None
        if isinstance(timings, dict):
            job.timings.update({k: timings.get(k) for k in ("enqueue_ms", "gpu_ms") if k in timings})

    def _postprocess(self, job: Job) -> None:
        job.results = _timed(job, "postprocess",
                             lambda: self.segmenter.postprocess(job.outputs, job.prepared.transforms))
        job.outputs = None  # the network outputs can be large: free them with the step
        self._last_timings = dict(job.timings, runner=self.name)


class DeviceRunner(Runner):
    """The whole path on the GPU (``GpuPipeline``). Host frames are staged into pinned (or, on Jetson,
    mapped) slots by the upload step; the device step copies them into the pipeline's fixed frame
    buffers on its stream, runs preprocessing, TensorRT and post-processing there (replaying a CUDA
    graph once the shapes settle) and reads the kept masks back. Frames already on the GPU skip the
    upload. ``last_timings()``: upload_ms and device_ms (host clock), and the pipeline's own CUDA-event
    times: enqueue_ms, gpu_ms, preprocess_gpu_ms, infer_gpu_ms, postprocess_gpu_ms, and ``cuda_graph``
    (True when the batch replayed a CUDA graph: one launch, so its stage times are None, not missing).

    Settings are compared with those the pipeline was made with before each batch; a change rebuilds
    or updates the pipeline, so it takes effect on the next frame.
    """

    name = "device"

    def __init__(self, segmenter, slots: int = 4, pipeline_factory: Optional[Callable[..., Any]] = None):
        super().__init__(segmenter)
        if slots < 2:
            raise ValueError("slots: expected at least 2 staging slots, got {}".format(slots))
        self._factory = pipeline_factory
        self._pipeline = None
        self._settings = None  # type: Optional[Dict[str, Any]]
        self._lock = threading.Lock()
        self._free_slots = queue.Queue()  # type: queue.Queue
        for slot in range(slots):
            self._free_slots.put(slot)

    def settings(self) -> Dict[str, Any]:
        seg = self.segmenter
        return dict(resize=seg.resize, color=seg.color, mean=tuple(seg.mean), std=tuple(seg.std),
                    score_threshold=float(seg.score_threshold), max_instances=int(seg.max_instances),
                    no_object_index=int(seg.no_object_index), topk=int(seg.topk))

    def pipeline(self):
        """The GpuPipeline, made on first use with the Segmenter's settings."""
        with self._lock:
            if self._pipeline is None:
                factory = self._factory or GpuPipeline
                seg = self.segmenter
                self._settings = self.settings()
                self._pipeline = factory(seg.backend, seg.contract, output_map=dict(seg._output_names),
                                         **self._settings)
            return self._pipeline

    def _pipeline_with_current_settings(self):
        # Only the device step calls this: settings reach the pipeline between two of its runs, never
        # while the GPU work of a batch is being enqueued (the upload step touches host memory only).
        pipeline = self.pipeline()
        wanted = self.settings()
        if wanted != self._settings:
            changed = {k: v for k, v in wanted.items() if self._settings.get(k) != v}
            pipeline.apply_settings(**changed)
            self._settings = wanted
        return pipeline

    def steps(self) -> List[Step]:
        return [Step("upload", "uploaded", self._upload), Step("device", "processed", self._device)]

    def run(self, frames: Sequence[Any]) -> List[Any]:
        """One batch with nothing else in flight: frames are staged straight into the frame buffers
        (on Jetson that is the memory the GPU reads: no copy)."""
        job = Job(frames)
        self._upload(job, direct=True)
        self._device(job)
        return job.results

    def _upload(self, job: Job, direct: bool = False) -> None:
        pipeline = self.pipeline()
        frames = job.frames + job.frames[-1:] * fixed_batch_padding(job.count, self.segmenter.batch_range)
        job.slot = None if direct else self._free_slots.get()
        try:
            job.staged = _timed(job, "upload", lambda: pipeline.stage(frames, job.slot))
        except BaseException:
            self._free_slots.put(job.slot)
            job.slot = None
            raise

    def _device(self, job: Job) -> None:
        try:
            pipeline = self._pipeline_with_current_settings()
            records = _timed(job, "device", lambda: pipeline.run_staged(job.staged, masks_to="host"))
        finally:
            job.staged = None
            if job.slot is not None:
                self._free_slots.put(job.slot)
                job.slot = None
        timings = pipeline.last_timings() or {}
        job.timings.update(timings)
        job.results = [self.segmenter._instances_from_record(r) for r in records[:job.count]]
        self._last_timings = dict(job.timings, runner=self.name)

    def close(self) -> None:
        self._pipeline = None


def pick_runner(segmenter, choice="auto", **options) -> Runner:
    """The runner for ``segmenter``: "device" where its backend drives the GPU pipeline (TensorRT),
    else "host"; asking for "device" on a backend that cannot is refused with the reason. ``choice`` may
    also be a callable ``factory(segmenter) -> Runner`` (a runner of your own, e.g. one that records)."""
    if callable(choice):
        runner = choice(segmenter)
        if not callable(getattr(runner, "steps", None)) or not callable(getattr(runner, "run", None)):
            raise TypeError("runner: the factory must return a Runner (with run and steps), got {}".format(
                type(runner).__name__))
        return runner
    if choice not in RUNNER_CHOICES:
        raise ValueError("runner: expected one of {}, got {!r}".format(list(RUNNER_CHOICES), choice))
    capable = bool(getattr(segmenter.backend, "runs_gpu_pipeline", False))
    if choice == "device" and not capable:
        raise ValueError("runner: 'device' needs a TensorRT backend (the whole path on the GPU); this Segmenter "
                         "uses {}: use runner='host' or a .engine model".format(segmenter.backend.name))
    if choice == "device" or (choice == "auto" and capable):
        return DeviceRunner(segmenter, **options)
    return HostRunner(segmenter)
