"""Timing the pipeline's stages: latency mode (one batch at a time) and throughput mode (stages
overlapped in threads with bounded queues, as a streaming pipeline runs them).

The object timed is anything with the Segmenter's public stages::

    prepared = seg.preprocess(frames)          # .tensor (B,3,H,W) and .transforms
    outputs = seg.infer(prepared.tensor)       # dict name -> array
    results = seg.postprocess(outputs, prepared.transforms)

When the backend can say how long the GPU took (CUDA events) and how long enqueueing took on the
host, it exposes ``backend.last_timings() -> {"enqueue_ms": float, "gpu_ms": float}`` for the
last ``infer``; otherwise those columns are reported as not available, never guessed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

STAGES = ("e2e", "preprocess", "inference", "postprocess", "enqueue", "gpu")
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


def _backend_timings(segmenter) -> Optional[Dict[str, float]]:
    backend = getattr(segmenter, "backend", None)
    hook = getattr(backend, "last_timings", None)
    if not callable(hook):
        return None
    try:
        timings = hook()
    except Exception:
        return None
    return timings if isinstance(timings, dict) else None


def _done(start, now, count, config) -> bool:
    if config.iterations is not None:
        return count >= config.iterations
    return count >= config.min_iterations and now - start >= config.duration_s


def _result(mode, batch, count, start, end, times, cv_source, cv_label):
    frames = count * batch
    elapsed = end - start
    latency = {stage: latency_stats(times.get(stage, [])) for stage in STAGES}
    cv_stats = latency_stats(cv_source)
    return {"mode": mode, "batch": batch, "iterations": count, "frames": frames, "elapsed_s": elapsed,
            "fps": frames / elapsed if elapsed > 0 else None, "latency_ms": latency,
            "cv": None if cv_stats is None else cv_stats["cv"], "cv_of": cv_label,
            "window": [start, end]}


def run_latency(segmenter, pool, batch: int, config: BenchConfig,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """One batch at a time: each stage waits for the one before; e2e = the sum, per batch."""

    def once(times):
        frames = pool.batch(batch)
        t0 = clock()
        prepared = segmenter.preprocess(frames)
        t1 = clock()
        outputs = segmenter.infer(prepared.tensor)
        t2 = clock()
        timings = _backend_timings(segmenter)
        segmenter.postprocess(outputs, prepared.transforms)
        t3 = clock()
        if times is not None:
            times["e2e"].append((t3 - t0) * 1e3)
            times["preprocess"].append((t1 - t0) * 1e3)
            times["inference"].append((t2 - t1) * 1e3)
            times["postprocess"].append((t3 - t2) * 1e3)
            if timings:
                times["enqueue"].append(timings.get("enqueue_ms"))
                times["gpu"].append(timings.get("gpu_ms"))

    warm_start = clock()
    once(None)
    while clock() - warm_start < config.warmup_s:
        once(None)
    times = {stage: [] for stage in STAGES}
    start = clock()
    count = 0
    while not _done(start, clock(), count, config):
        once(times)
        count += 1
    end = clock()
    return _result("latency", batch, count, start, end, times, times["e2e"], "per-batch end-to-end latency")


_DONE = object()


def _pipeline(segmenter, pool, batch, config, duration_s, iterations, clock):
    """Three stages in three threads joined by bounded queues; returns (count, start, end, times)."""
    stop = threading.Event()
    errors = []  # type: List[BaseException]
    to_infer = queue.Queue(maxsize=config.queue_depth)
    to_post = queue.Queue(maxsize=config.queue_depth)
    times = {stage: [] for stage in STAGES}
    window = BenchConfig(0.0, duration_s, iterations, config.queue_depth, config.min_iterations)
    start = clock()

    def produce():
        try:
            count = 0
            while not stop.is_set() and not _done(start, clock(), count, window):
                frames = pool.batch(batch)
                t0 = clock()
                prepared = segmenter.preprocess(frames)
                to_infer.put((t0, (clock() - t0) * 1e3, prepared))
                count += 1
        except BaseException as error:
            errors.append(error)
            stop.set()
        finally:
            to_infer.put(_DONE)

    def infer():
        try:
            while True:
                item = to_infer.get()
                if item is _DONE:
                    break
                if stop.is_set():
                    continue  # keep draining so the producer never blocks forever
                t0, pre_ms, prepared = item
                a = clock()
                outputs = segmenter.infer(prepared.tensor)
                infer_ms = (clock() - a) * 1e3
                to_post.put((t0, pre_ms, infer_ms, _backend_timings(segmenter), outputs, prepared.transforms))
        except BaseException as error:
            errors.append(error)
            stop.set()
            while to_infer.get() is not _DONE:
                pass
        finally:
            to_post.put(_DONE)

    threads = [threading.Thread(target=produce, name="m2f-bench-pre", daemon=True),
               threading.Thread(target=infer, name="m2f-bench-infer", daemon=True)]
    for thread in threads:
        thread.start()
    completions = []
    try:
        while True:
            item = to_post.get()
            if item is _DONE:
                break
            if stop.is_set():
                continue
            t0, pre_ms, infer_ms, timings, outputs, transforms = item
            a = clock()
            segmenter.postprocess(outputs, transforms)
            done = clock()
            completions.append(done)
            times["preprocess"].append(pre_ms)
            times["inference"].append(infer_ms)
            times["postprocess"].append((done - a) * 1e3)
            times["e2e"].append((done - t0) * 1e3)
            if timings:
                times["enqueue"].append(timings.get("enqueue_ms"))
                times["gpu"].append(timings.get("gpu_ms"))
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        # keep draining so that stages blocked on a full queue can see the stop and end
        give_up = time.monotonic() + 60.0
        while any(thread.is_alive() for thread in threads) and time.monotonic() < give_up:
            try:
                to_post.get(timeout=0.05)
            except queue.Empty:
                pass
        for thread in threads:
            thread.join(timeout=1.0)
    if errors:
        raise errors[0]
    end = completions[-1] if completions else clock()
    return len(completions), start, end, times, completions


def run_throughput(segmenter, pool, batch: int, config: BenchConfig,
                   clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """Stages overlapped: preprocess of batch i+1 and post-processing of batch i-1 run while batch i
    is inferred. FPS = frames completed / time from the first submission to the last completion;
    e2e latency includes the time a batch waits in the queues."""
    _pipeline(segmenter, pool, batch, config, max(config.warmup_s, 1e-9), None, clock)
    count, start, end, times, completions = _pipeline(segmenter, pool, batch, config, config.duration_s,
                                                      config.iterations, clock)
    intervals = [(b - a) * 1e3 for a, b in zip(completions, completions[1:])]
    result = _result("throughput", batch, count, start, end, times, intervals, "interval between batch completions")
    return result


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
