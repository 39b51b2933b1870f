"""The pipelined stream: capture, preprocess, inference, post-processing and drawing each run in their
own thread, joined by small bounded queues, so the stream runs at the rate of its slowest stage while
results still come out in capture order.

    for frame, instances in segmenter.stream("csi://0", batch=1): ...
    with m2f_edge.video.stream.stream(segmenter, "video.mp4", draw=True, output="out.mp4") as s:
        for result in s: result.index, result.timestamps, result.overlay

The heavy stages (the core's preprocess/postprocess, ONNX Runtime, TensorRT, OpenCV decoding) release
the GIL, which is what lets the threads overlap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from ..runners import Job
from .sinks import Sink, open_sink
from .sources import Frame, Source, SourceError, open_source

__all__ = ["StreamResult", "StreamStats", "Stream", "StreamError", "stream", "multi"]

log = logging.getLogger("m2f_edge.video")

STAGES = ("capture", "preprocess", "infer", "postprocess", "draw")  # with the host runner; see StreamStats.stages


class StreamError(RuntimeError):
    """A stage of the stream failed; ``stage`` names it and ``__cause__`` is the original exception."""

    def __init__(self, message, stage=""):
        super().__init__(message)
        self.stage = stage


class StreamResult:
    """One frame's result. Unpacks as ``frame, instances``.

    frame: the captured (H, W, 3) uint8 image; instances: its :class:`m2f_edge.Instances`;
    index: the frame's index in its source (gaps where a live source dropped frames);
    sequence: 0, 1, 2, ... in delivery order; source: the source's URI; source_index: which source
    (multi); overlay: the drawn copy of the frame when the stream draws, else None;
    timestamps: time.monotonic() when each stage finished with the frame ("captured", "preprocessed",
    "inferred", "postprocessed", "drawn", "delivered").
    """

    __slots__ = ("frame", "instances", "index", "sequence", "source", "source_index", "overlay", "timestamps", "pts")

    def __init__(self, frame: Frame, instances, sequence: int, source_index: int, timestamps: Dict[str, float]):
        self.frame = frame.image
        self.instances = instances
        self.index = frame.index
        self.pts = frame.pts
        self.sequence = sequence
        self.source = frame.source
        self.source_index = source_index
        self.overlay = None
        self.timestamps = timestamps

    def __iter__(self):
        yield self.frame
        yield self.instances

    def __len__(self):
        return 2

    @property
    def latency(self) -> float:
        """Seconds from capture to delivery."""
        return self.timestamps["delivered"] - self.timestamps["captured"]

    def __repr__(self):
        return "StreamResult(index=%d, source=%r, instances=%d, latency=%.1f ms)" % (
            self.index, self.source, len(self.instances), 1000.0 * self.latency)


class StreamStats:
    """Counters of a running or finished stream: ``frames`` delivered, ``batches``, ``elapsed`` seconds
    from start to the last delivery, ``fps``, ``busy`` (seconds each stage spent working),
    ``stage_fps`` (frames per busy second of each stage: its rate if it ran alone), ``dropped`` (by
    live sources), ``reconnects`` (of live sources), ``errors`` (batches skipped with on_error="skip"),
    ``runner`` (which of the Segmenter's runners ran: "host" or "device") and ``stages`` (capture, the
    runner's steps, draw: preprocess/infer/postprocess on the host runner, upload/device on the device
    runner)."""

    def __init__(self, runner: str = "host", stages: Sequence[str] = STAGES):
        self.runner = runner
        self.stages = tuple(stages)
        self.frames = 0
        self.batches = 0
        self.started = time.monotonic()
        self.finished = None  # type: Optional[float]
        self.busy = {name: 0.0 for name in self.stages}
        self.stage_frames = {name: 0 for name in self.stages}
        self.dropped = 0
        self.reconnects = 0
        self.errors = 0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def stage_fps(self) -> Dict[str, float]:
        return {name: (self.stage_frames[name] / self.busy[name] if self.busy[name] > 0 else float("inf"))
                for name in self.stages if self.stage_frames[name]}

    def __repr__(self):
        return "StreamStats(runner=%s, frames=%d, fps=%.2f, dropped=%d, reconnects=%d, stage_fps=%s)" % (
            self.runner, self.frames, self.fps, self.dropped, self.reconnects,
            {k: round(v, 1) for k, v in self.stage_fps.items()})


class _End:
    pass


class _Failure:
    def __init__(self, stage, exc, frames):
        self.stage, self.exc, self.frames = stage, exc, frames


_END = _End()
_POLL = 0.05


class _Batch:
    __slots__ = ("frames", "source_indices", "job", "instances", "overlays", "stamps")

    def __init__(self, frames, source_indices):
        self.frames = frames
        self.source_indices = source_indices
        self.job = Job([f.image for f in frames])  # what the runner's steps work on
        self.instances = None
        self.overlays = None
        self.stamps = {"captured": max(f.timestamp for f in frames)}


class Stream:
    """An iterable pipelined stream (see :func:`stream` and :func:`multi`). Iterate it once; use it as a
    context manager (or call :meth:`close`) to stop early. ``stats`` is a :class:`StreamStats`."""

    def __init__(self, segmenter, sources: List[Source], owned: List[Source], *, batch: int, grouped: bool,
                 draw: bool, draw_options: Optional[dict], sink: Optional[Sink], owns_sink: bool, queue_size: int,
                 max_frames: Optional[int], on_error: str, show_fps: bool):
        self.segmenter = segmenter
        self.sources = sources
        self._owned = owned
        self.batch = batch
        self._grouped = grouped
        self.draw = draw or sink is not None
        self._draw_options = dict(draw_options or {})
        self.sink = sink
        self._owns_sink = owns_sink
        self._queue_size = queue_size
        self._max_frames = max_frames
        self._on_error = on_error
        self._show_fps = show_fps
        self.stats = StreamStats(segmenter.runner.name, ["capture"] + [step.name for step in segmenter.runner.steps()]
                                 + (["draw"] if self.draw else []))
        self._stop = threading.Event()
        self._threads = []  # type: List[threading.Thread]
        self._started = False
        self._closed = False
        self._fps_ema = None  # type: Optional[float]
        self._last_delivery = None  # type: Optional[float]

    # ---- stages -----------------------------------------------------------------------------------
    def _read_batch(self) -> Optional[_Batch]:
        if self._grouped:
            frames, indices = [], []
            for i, source in enumerate(self.sources):
                if i in self._ended:
                    continue  # (a live source may still hold queued frames after its eos: read them)
                frame = source.read()
                if frame is None:
                    self._ended.add(i)
                    continue
                frames.append(frame)
                indices.append(i)
            return _Batch(frames, indices) if frames else None
        source = self.sources[0]
        frames = []
        while len(frames) < self.batch:
            if self._max_frames is not None and self._captured + len(frames) >= self._max_frames:
                break
            frame = source.read()
            if frame is None:
                break
            frames.append(frame)
        self._captured += len(frames)
        return _Batch(frames, [0] * len(frames)) if frames else None

    def _capture(self, out_q):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                item = self._read_batch()
            except BaseException as exc:  # a dying source ends the stream with its error, in order
                self._put(out_q, _Failure("capture", exc, []))
                return
            if item is None:
                self._put(out_q, _END)
                return
            item.stamps["captured"] = time.monotonic()
            self._account("capture", started, len(item.frames))
            if not self._put(out_q, item):
                return

    @staticmethod
    def _runner_step(step):
        def work(item: _Batch):
            step.work(item.job)
            if item.job.results is not None:
                item.instances = list(item.job.results)
        return work

    def _do_draw(self, item: _Batch):
        from ..drawing import draw_instances
        options = dict(self._draw_options)
        options.pop("copy", None)  # the overlay is always a copy: result.frame stays the captured image
        item.overlays = [draw_instances(f.image, inst, copy=True, **options)
                         for f, inst in zip(item.frames, item.instances)]

    def _worker(self, name, stamp, work: Callable, in_q, out_q):
        while True:
            item = self._get(in_q)
            if item is None:
                return  # stopped
            if isinstance(item, (_End, _Failure)):
                self._put(out_q, item)
                if isinstance(item, _End):
                    return
                continue
            started = time.monotonic()
            try:
                work(item)
            except BaseException as exc:
                item = _Failure(name, exc, item.frames)
            else:
                item.stamps[stamp] = time.monotonic()
                self._account(name, started, len(item.frames))
            if not self._put(out_q, item):
                return

    def _account(self, name, started, frames):
        self.stats.busy[name] += time.monotonic() - started
        self.stats.stage_frames[name] += frames

    def _put(self, q, item) -> bool:
        while True:
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                if self._stop.is_set():
                    return False

    def _get(self, q):
        while True:
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return None

    # ---- running ----------------------------------------------------------------------------------
    def _start(self):
        self._ended = set()
        self._captured = 0
        runner = self.segmenter.runner
        stages = [(step.name, step.stamp, self._runner_step(step)) for step in runner.steps()]
        if self.draw:
            stages.append(("draw", "drawn", self._do_draw))
        queues = [queue.Queue(maxsize=self._queue_size) for _ in range(len(stages) + 1)]
        self._threads = [threading.Thread(target=self._capture, args=(queues[0],), name="m2f-stream-capture",
                                          daemon=True)]
        for i, (name, stamp, work) in enumerate(stages):
            self._threads.append(threading.Thread(target=self._worker, args=(name, stamp, work, queues[i],
                                                                              queues[i + 1]),
                                                  name="m2f-stream-" + name, daemon=True))
        self._out_q = queues[-1]
        self.stats = StreamStats(self.stats.runner, self.stats.stages)  # the clock starts with the threads
        for thread in self._threads:
            thread.start()

    def __iter__(self):
        if self._started:
            raise RuntimeError("a Stream can be iterated once; open a new one")
        self._started = True
        self._start()
        sequence = 0
        try:
            while True:
                item = self._get(self._out_q)
                if item is None or isinstance(item, _End):
                    return
                if isinstance(item, _Failure):
                    if item.stage == "capture" or self._on_error == "raise":
                        raise self._wrap(item)
                    self.stats.errors += 1
                    log.warning("stream: skipped %d frame(s) after a %s error: %s", len(item.frames), item.stage,
                                item.exc)
                    continue
                results = []
                now = time.monotonic()
                for k, frame in enumerate(item.frames):
                    stamps = dict(item.stamps)
                    stamps["captured"] = frame.timestamp
                    stamps["delivered"] = now
                    result = StreamResult(frame, item.instances[k], sequence, item.source_indices[k], stamps)
                    if item.overlays is not None:
                        result.overlay = item.overlays[k]
                    sequence += 1
                    results.append(result)
                self._deliver(results)
                self.stats.batches += 1
                if self._grouped:
                    yield results
                else:
                    for result in results:
                        yield result
                if self.sink is not None and self.sink.stop_requested:
                    return
        except (GeneratorExit, KeyboardInterrupt):
            self.close()  # stopped by the caller: what was written is complete
            raise
        except BaseException:
            self.close(failed=True)
            raise
        finally:
            self.close()

    def _deliver(self, results):
        now = time.monotonic()
        if self._last_delivery is not None and now > self._last_delivery:
            rate = len(results) / (now - self._last_delivery)
            self._fps_ema = rate if self._fps_ema is None else 0.9 * self._fps_ema + 0.1 * rate
        self._last_delivery = now
        self.stats.frames += len(results)
        self.stats.finished = now
        self.stats.dropped = sum(s.dropped for s in self.sources)
        self.stats.reconnects = sum(s.reconnects for s in self.sources)
        if self.sink is not None:
            from ..drawing import draw_text_line
            for result in results:
                image = result.overlay if result.overlay is not None else result.frame
                if self._show_fps and self._fps_ema is not None and result.overlay is not None:
                    draw_text_line(image, "FPS %.1f" % self._fps_ema)
                self.sink.write(image)

    @staticmethod
    def _wrap(failure: _Failure) -> BaseException:
        exc = failure.exc
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
        if failure.stage == "capture" and isinstance(exc, SourceError):
            error = StreamError(str(exc), "capture")
        else:
            first = failure.frames[0].index if failure.frames else -1
            error = StreamError("stream: the %s stage failed on the batch starting at frame %d: %s: %s" % (
                failure.stage, first, type(exc).__name__, exc), failure.stage)
        error.__cause__ = exc
        return error

    @property
    def fps(self) -> Optional[float]:
        """Smoothed delivery rate (frames per second), None before the second batch."""
        return self._fps_ema

    def close(self, timeout: float = 10.0, failed: bool = False) -> None:
        """Stop the threads, close the sources this stream opened and its sink (``failed``: abort the
        sink instead, so no half-written video file is left); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + timeout
        for source in self._owned:  # unblocks a capture waiting on a live source
            try:
                source.close()
            except Exception as exc:  # closing must not hide the stream's own outcome
                log.warning("stream: closing source %s failed: %s", source.uri, exc)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("stream: thread %s did not stop within %.1f s", thread.name, timeout)
        if self.sink is not None and self._owns_sink:
            if failed:
                self.sink.abort()
            else:
                self.sink.close()
        if self.stats.finished is None:
            self.stats.finished = time.monotonic()

    def __del__(self):
        # A stream dropped without being iterated to the end still stops its sources' capture threads.
        try:
            self.close(timeout=1.0)
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None and not issubclass(exc_type, (KeyboardInterrupt, GeneratorExit)))
        return False


def _open_all(uris, source_options) -> (List[Source], List[Source]):
    sources, owned = [], []
    try:
        for uri in uris:
            source = open_source(uri, **(source_options or {}))
            sources.append(source)
            if source is not uri:
                owned.append(source)
    except BaseException:
        for source in owned:
            source.close()
        raise
    return sources, owned


def _check_common(segmenter, batch, queue_size, on_error):
    if not callable(getattr(getattr(segmenter, "runner", None), "steps", None)):
        raise TypeError("segmenter: expected an m2f_edge.Segmenter (an object with a runner), got %s"
                        % type(segmenter).__name__)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError("batch: expected an integer >= 1, got %r" % (batch,))
    batch_range = getattr(segmenter, "batch_range", None)
    if batch_range and batch_range[1] is not None and batch > batch_range[1]:
        raise ValueError("batch: the model takes at most %d frames per call, got batch=%d" % (batch_range[1], batch))
    if not isinstance(queue_size, int) or queue_size < 1:
        raise ValueError("queue_size: expected an integer >= 1, got %r" % (queue_size,))
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error: expected 'raise' or 'skip', got %r" % (on_error,))


def _sink_for(output, sources):
    if output is None:
        return None, False
    fps = next((s.fps for s in sources if s.fps), None)
    return open_sink(output, fps=fps, inputs=sources), not isinstance(output, Sink)


def stream(segmenter, source, *, batch: int = 1, draw: bool = False, draw_options: Optional[dict] = None,
           output=None, queue_size: int = 2, max_frames: Optional[int] = None, on_error: str = "raise",
           show_fps: bool = True, source_options: Optional[dict] = None) -> Stream:
    """Run ``segmenter`` over ``source`` (a URI, a path or an open :class:`Source`) as a pipelined stream.

    batch: frames per engine call. draw: also draw each frame's overlay (``result.overlay``, a copy;
    ``draw_options`` go to :func:`m2f_edge.drawing.draw_instances`). output: a sink URI or
    :class:`Sink` receiving the overlays (implies draw; an FPS line is added when ``show_fps``).
    queue_size: batches waiting between two stages. max_frames: stop after this many frames.
    on_error: "raise" (a failing stage ends the stream with StreamError after the frames before it)
    or "skip" (log, count in ``stats.errors``, go on). A source failing always ends the stream.
    source_options: keyword options for :func:`open_source`.

    Returns a :class:`Stream`: iterate it for :class:`StreamResult` (unpacks as ``frame, instances``),
    in capture order. Sources and sinks it opened are closed when it ends, fails or is closed.
    """
    _check_common(segmenter, batch, queue_size, on_error)
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError("max_frames: expected an integer >= 1 or None, got %r" % (max_frames,))
    sources, owned = _open_all([source], source_options)
    try:
        sink, owns_sink = _sink_for(output, sources)
    except BaseException:
        for s in owned:
            s.close()
        raise
    return Stream(segmenter, sources, owned, batch=batch, grouped=False, draw=draw, draw_options=draw_options,
                  sink=sink, owns_sink=owns_sink, queue_size=queue_size, max_frames=max_frames, on_error=on_error,
                  show_fps=show_fps)


def multi(segmenter, sources: Sequence, *, draw: bool = False, draw_options: Optional[dict] = None,
          queue_size: int = 2, on_error: str = "raise", source_options: Optional[dict] = None) -> Stream:
    """Run ``segmenter`` over several sources at once, one frame from each per engine call (the batch).

    Iterating the returned :class:`Stream` yields, per engine call, a list of :class:`StreamResult`
    (``result.source_index`` tells which source). A source that ends drops out of the batch; the
    stream ends when all have ended. Other arguments as in :func:`stream`.
    """
    if isinstance(sources, (str, Source)) or not sources:
        raise ValueError("sources: expected a non-empty list of URIs or sources")
    _check_common(segmenter, len(sources), queue_size, on_error)
    opened, owned = _open_all(list(sources), source_options)
    return Stream(segmenter, opened, owned, batch=len(opened), grouped=True, draw=draw, draw_options=draw_options,
                  sink=None, owns_sink=False, queue_size=queue_size, max_frames=None, on_error=on_error,
                  show_fps=False)
