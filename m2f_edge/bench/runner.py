"""Timing what ``Segmenter.run`` does: the Segmenter's runner (see m2f_edge.runners), in latency mode
(one batch at a time) and throughput mode (the runner's steps overlapped in threads with bounded
queues, as the stream runs them).

Each batch goes through ``segmenter.runner.steps()``; the bench times each step with its clock and reads
what the runner measured itself (``Job.timings``). The columns:

- host runner: preprocess, inference, postprocess = its three steps on the host clock; enqueue and gpu
  from the backend's own timings where it has them (TensorRT's CUDA events), else not available.
- device runner: preprocess, inference, postprocess = the pipeline's CUDA-event times of each GPU stage;
  upload = the host step that stages the frames; enqueue = host time to enqueue (or launch) the GPU work;
  gpu = the GPU time of the whole path. A batch that replayed a CUDA graph (one launch) has no stage
  times: it is counted in ``cuda_graph_batches`` instead of being reported as missing stages.

Nothing is guessed: a column nothing measured is None.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..runners import Job

STAGES = ("e2e", "preprocess", "inference", "postprocess", "upload", "enqueue", "gpu")
HIGH_CV = 0.10


class BenchConfig(object):
    def __init__(self, warmup_s: float = 2.0, duration_s: Optional[float] = 10.0, iterations: Optional[int] = None,
                 queue_depth: int = 2, min_iterations: int = 3):
        if iterations is not None and iterations < 1:
            raise ValueError("iterations must be >= 1, got {}".format(iterations))
        if iterations is None and (duration_s is None or duration_s <= 0):
            raise ValueError("duration must be > 0 seconds when no iteration count is given")
        if warmup_s < 0:
            raise ValueError("warmup must be >= 0 seconds, got {}".format(warmup_s))
        if queue_depth < 1:
            raise ValueError("queue depth must be >= 1, got {}".format(queue_depth))
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.iterations = iterations
        self.queue_depth = queue_depth
        self.min_iterations = min_iterations

    def as_dict(self) -> Dict[str, Any]:
        return {"warmup_s": self.warmup_s, "duration_s": None if self.iterations else self.duration_s,
                "iterations": self.iterations, "queue_depth": self.queue_depth}


def latency_stats(values_ms) -> Optional[Dict[str, float]]:
    """min, mean, p50, p90, p95, p99, max, std and coefficient of variation of a list of ms."""
    values = np.asarray([v for v in values_ms if v is not None], dtype=np.float64)
    if values.size == 0:
        return None
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, [50, 90, 95, 99]))
    return {"count": int(values.size), "min": float(values.min()), "mean": mean, "p50": p50, "p90": p90,
            "p95": p95, "p99": p99, "max": float(values.max()), "std": std,
            "cv": (std / mean) if mean > 0 else 0.0}


def _columns(runner_name: str, step_ms: Dict[str, float], timings: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The bench's columns of one batch, from the step times (host clock) and the runner's own timings."""
    if runner_name == "device":
        stages = {"preprocess": timings.get("preprocess_gpu_ms"), "inference": timings.get("infer_gpu_ms"),
                  "postprocess": timings.get("postprocess_gpu_ms")}
    else:
        stages = {"preprocess": step_ms.get("preprocess"), "inference": step_ms.get("infer"),
                  "postprocess": step_ms.get("postprocess")}
    stages.update(upload=step_ms.get("upload"), enqueue=timings.get("enqueue_ms"), gpu=timings.get("gpu_ms"))
    return stages


def _record(times: Dict[str, list], graphs: List[int], runner_name: str, e2e_ms: float,
            step_ms: Dict[str, float], timings: Dict[str, Any], results=None) -> None:
    times["e2e"].append(e2e_ms)
    sizes = [getattr(r, "nbytes", None) for r in (results or [])]
    if sizes and all(isinstance(n, int) for n in sizes):
        times["result_bytes"].extend(sizes)
    for name, value in _columns(runner_name, step_ms, timings).items():
        if value is not None:
            times[name].append(value)
    if timings.get("cuda_graph"):
        graphs[0] += 1


def _done(start, now, count, config) -> bool:
    if config.iterations is not None:
        return count >= config.iterations
    return count >= config.min_iterations and now - start >= config.duration_s


def _result(mode, batch, count, start, end, times, cv_source, cv_label, runner_name="host", graphs=0):
    frames = count * batch
    sizes = times.get("result_bytes") or []
    elapsed = end - start
    latency = {stage: latency_stats(times.get(stage, [])) for stage in STAGES}  # result_bytes is not a time
    cv_stats = latency_stats(cv_source)
    return {"mode": mode, "batch": batch, "iterations": count, "frames": frames, "elapsed_s": elapsed,
            "fps": frames / elapsed if elapsed > 0 else None, "latency_ms": latency,
            "cv": None if cv_stats is None else cv_stats["cv"], "cv_of": cv_label,
            "window": [start, end], "runner": runner_name, "cuda_graph_batches": graphs,
            "result_bytes_per_frame": float(np.mean(sizes)) if sizes else None}


def run_latency(segmenter, pool, batch: int, config: BenchConfig,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """One batch at a time through the Segmenter's runner; e2e = the whole batch, per batch."""
    runner = segmenter.runner
    steps = runner.steps()

    def once(times, graphs):
        job = Job(pool.batch(batch))
        step_ms = {}
        t0 = clock()
        for step in steps:
            a = clock()
            step.work(job)
            step_ms[step.name] = (clock() - a) * 1e3
        if times is not None:
            _record(times, graphs, runner.name, (clock() - t0) * 1e3, step_ms, job.timings, job.results)

    warm_start = clock()
    once(None, None)
    while clock() - warm_start < config.warmup_s:
        once(None, None)
    times = {stage: [] for stage in STAGES + ("result_bytes",)}
    graphs = [0]
    start = clock()
    count = 0
    while not _done(start, clock(), count, config):
        once(times, graphs)
        count += 1
    end = clock()
    return _result("latency", batch, count, start, end, times, times["e2e"], "per-batch end-to-end latency",
                   runner.name, graphs[0])


_DONE = object()


class _InFlight(object):
    __slots__ = ("job", "started", "step_ms")

    def __init__(self, job, started):
        self.job, self.started, self.step_ms = job, started, {}


def _pipeline(segmenter, pool, batch, config, duration_s, iterations, clock):
    """The runner's steps in their own threads joined by bounded queues (the last step on this thread);
    returns (count, start, end, times, completions, graphs)."""
    runner = segmenter.runner
    steps = runner.steps()
    stop = threading.Event()
    errors = []  # type: List[BaseException]
    queues = [queue.Queue(maxsize=config.queue_depth) for _ in steps[1:]]
    times = {stage: [] for stage in STAGES + ("result_bytes",)}
    graphs = [0]
    window = BenchConfig(0.0, duration_s, iterations, config.queue_depth, config.min_iterations)
    start = clock()

    def timed(step, item):
        a = clock()
        step.work(item.job)
        item.step_ms[step.name] = (clock() - a) * 1e3

    def produce():
        try:
            count = 0
            while not stop.is_set() and not _done(start, clock(), count, window):
                item = _InFlight(Job(pool.batch(batch)), clock())
                timed(steps[0], item)
                queues[0].put(item)
                count += 1
        except BaseException as error:
            errors.append(error)
            stop.set()
        finally:
            queues[0].put(_DONE)

    def middle(step, inbox, outbox):
        try:
            while True:
                item = inbox.get()
                if item is _DONE:
                    break
                if stop.is_set():
                    continue  # keep draining so the step before never blocks forever
                timed(step, item)
                outbox.put(item)
        except BaseException as error:
            errors.append(error)
            stop.set()
            while inbox.get() is not _DONE:
                pass
        finally:
            outbox.put(_DONE)

    threads = [threading.Thread(target=produce, name="m2f-bench-" + steps[0].name, daemon=True)]
    for k, step in enumerate(steps[1:-1]):
        threads.append(threading.Thread(target=middle, args=(step, queues[k], queues[k + 1]),
                                        name="m2f-bench-" + step.name, daemon=True))
    for thread in threads:
        thread.start()
    completions = []
    last = queues[-1]
    try:
        while True:
            item = last.get()
            if item is _DONE:
                break
            if stop.is_set():
                continue
            timed(steps[-1], item)
            done = clock()
            completions.append(done)
            _record(times, graphs, runner.name, (done - item.started) * 1e3, item.step_ms, item.job.timings,
                    item.job.results)
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        # keep draining so that steps blocked on a full queue can see the stop and end
        give_up = time.monotonic() + 60.0
        while any(thread.is_alive() for thread in threads) and time.monotonic() < give_up:
            for inbox in queues:
                try:
                    inbox.get(timeout=0.02)
                except queue.Empty:
                    pass
        for thread in threads:
            thread.join(timeout=1.0)
    if errors:
        raise errors[0]
    end = completions[-1] if completions else clock()
    return len(completions), start, end, times, completions, graphs[0]


def run_throughput(segmenter, pool, batch: int, config: BenchConfig,
                   clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """The runner's steps overlapped: on the host runner, preprocess of batch i+1 and post-processing of
    batch i-1 run while batch i is inferred; on the device runner, the upload of batch i+1 runs while
    batch i is on the GPU. FPS = frames completed / time from the first submission to the last
    completion; e2e latency includes the time a batch waits in the queues."""
    _pipeline(segmenter, pool, batch, config, max(config.warmup_s, 1e-9), None, clock)
    count, start, end, times, completions, graphs = _pipeline(segmenter, pool, batch, config, config.duration_s,
                                                              config.iterations, clock)
    intervals = [(b - a) * 1e3 for a, b in zip(completions, completions[1:])]
    return _result("throughput", batch, count, start, end, times, intervals, "interval between batch completions",
                   segmenter.runner.name, graphs)


def warnings_for(result: Dict[str, Any]) -> List[str]:
    out = []
    cv = result.get("cv")
    if cv is not None and cv > HIGH_CV:
        out.append("{} batch {}: high variation, CV of {} = {:.1f}% (> {:.0f}%): lengthen --duration, close other "
                   "programs, lock the clocks".format(result["mode"], result["batch"], result["cv_of"], cv * 100,
                                                      HIGH_CV * 100))
    if result.get("iterations", 0) < 10:
        out.append("{} batch {}: only {} timed iterations; percentiles are rough".format(
            result["mode"], result["batch"], result["iterations"]))
    return out
