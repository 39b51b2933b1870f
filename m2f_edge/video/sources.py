"""Video sources opened by URI, as Jetson users know them from jetson-utils.

    csi://0                      MIPI CSI camera through GStreamer nvarguscamerasrc (JetPack's OpenCV)
    v4l2:///dev/video0?width=1280&height=720&fps=30&format=MJPG    USB camera (OpenCV V4L2 backend)
    rtsp://host/stream?latency=200   RTSP via GStreamer (nvv4l2decoder where present) or FFmpeg
    gst://videotestsrc ! appsink     any GStreamer pipeline ending in appsink
    file:///path/video.mp4, video.mp4, image.jpg, a folder of images, "frames/*.png"

Live sources (cameras, RTSP, GStreamer) capture in a thread into a bounded queue that keeps the
newest frames and counts the ones it drops; RTSP and USB sources reconnect with backoff. File,
image and folder sources read on demand and never drop a frame.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._opencv import IMAGE_EXTENSIONS, require_cv2
from . import gstreamer
# public here before the GStreamer helpers had their own module; the video package exports them from here
from .gstreamer import (csi_pipeline, gstreamer_available, gstreamer_element_available,  # noqa: F401
                        missing_gstreamer_elements, rtsp_pipeline)

__all__ = [
    "Frame", "Source", "SourceError", "VideoFileSource", "ImageSource", "LiveSource", "open_source",
    "gstreamer_available", "IMAGE_EXTENSIONS",
]

log = logging.getLogger("m2f_edge.video")


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames."""


class Frame:
    """One captured frame: ``image`` (H, W, 3) uint8 BGR, ``index`` (0-based, in capture order, counting
    dropped frames out), ``timestamp`` (time.monotonic() at capture), ``pts`` (position in the stream in
    seconds when the source knows it, else None) and ``source`` (the source's URI)."""

    __slots__ = ("image", "index", "timestamp", "pts", "source")

    def __init__(self, image, index, timestamp, pts=None, source=""):
        self.image = image
        self.index = index
        self.timestamp = timestamp
        self.pts = pts
        self.source = source

    def __repr__(self):
        shape = getattr(self.image, "shape", None)
        return "Frame(index=%d, shape=%s, source=%r)" % (self.index, shape, self.source)


def _cv2():
    return require_cv2("video sources and sinks")


class Source:
    """Base class. Iterate for frames, or call :meth:`read` (None at end of stream).

    Attributes: ``uri``, ``fps`` (nominal frames per second or None), ``width``/``height`` (0 until
    known), ``is_live``, ``eos`` (the stream ended), ``frames_read``, ``dropped`` (live sources: frames
    replaced by newer ones before they were read), ``reconnects``, ``files`` (the files it reads, which
    a sink must not replace; empty for cameras and streams).
    """

    is_live = False
    files = ()

    def __init__(self, uri: str):
        self.uri = uri
        self.fps = None  # type: Optional[float]
        self.width = 0
        self.height = 0
        self.eos = False
        self.frames_read = 0
        self.dropped = 0
        self.reconnects = 0
        self.closed = False

    @property
    def size(self):
        """(height, width), or None while unknown."""
        return (self.height, self.width) if self.width and self.height else None

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "%s(%r, %dx%d, fps=%s)" % (type(self).__name__, self.uri, self.width, self.height, self.fps)

    def _note_size(self, image):
        if not self.width:
            self.height, self.width = int(image.shape[0]), int(image.shape[1])


def _open_video_file(path: str, uri: str, api_preference: Optional[int] = None):
    """(capture, first image): a video file opened with OpenCV and shown decodable by decoding its first
    frame. OpenCV opens files it cannot decode (FFmpeg a container whose frames are damaged; OpenCV 4.6's
    image-sequence backend any file that starts like an image, such as "BM"), and such a capture delivers
    no frame: without this check a broken file would read as an empty video instead of failing."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(path) if api_preference is None else cv2.VideoCapture(path, api_preference)
    if not cap.isOpened():
        cap.release()
        raise SourceError("source %r: OpenCV (%s) cannot decode this video file (no backend opens it)"
                          % (uri, cv2.__version__))
    ok, image = cap.read()
    if not ok or image is None:
        backend = cap.getBackendName()
        cap.release()
        raise SourceError("source %r: OpenCV (%s) cannot decode this video file (its %s backend opened it "
                          "but decodes no frame)" % (uri, cv2.__version__, backend))
    return cap, image


class _FirstFrameAgain:
    """A capture that hands out the already decoded first frame before the rest (for live file sources)."""

    def __init__(self, cap, first_image):
        self._cap = cap
        self._first = first_image

    def read(self):
        if self._first is not None:
            image, self._first = self._first, None
            return True, image
        return self._cap.read()

    def isOpened(self):  # noqa: N802 (cv2.VideoCapture's name)
        return self._cap.isOpened()

    def get(self, prop):
        return self._cap.get(prop)

    def release(self):
        self._cap.release()


class VideoFileSource(Source):
    """A video file decoded with OpenCV on demand; never drops a frame. Opening decodes the first frame
    (kept for the first read), so a file OpenCV cannot decode fails here with SourceError."""

    def __init__(self, path: str, uri: Optional[str] = None, api_preference: Optional[int] = None):
        super().__init__(uri or path)
        cv2 = _cv2()
        if not os.path.isfile(path):
            raise SourceError("source %r: no such video file" % (path,))
        self.files = (path,)
        self._cap, first_image = _open_video_file(path, self.uri, api_preference)
        self._pending = (first_image, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None  # OpenCV's estimate from the container
        self._lock = threading.Lock()

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        cv2 = _cv2()
        with self._lock:
            if self.closed:
                raise SourceError("source %r: read after close" % (self.uri,))
            if self.eos:
                return None
            if self._pending is not None:
                (image, pts), self._pending = self._pending, None
            else:
                ok, image = self._cap.read()
                if not ok or image is None:
                    self.eos = True
                    return None
                pts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            frame = Frame(image, self.frames_read, time.monotonic(), pts, self.uri)
            self.frames_read += 1
            self._note_size(image)
            return frame

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._cap.release()
                self._pending = None
            self.closed = True


class ImageSource(Source):
    """A list of image files (one image, a folder or a glob), read on demand in sorted order."""

    def __init__(self, paths: List[str], uri: str, fps: Optional[float] = None):
        super().__init__(uri)
        if not paths:
            raise SourceError("source %r: no image files found (extensions: %s)" % (uri, " ".join(IMAGE_EXTENSIONS)))
        self.paths = list(paths)
        self.files = tuple(self.paths)
        self.fps = float(fps) if fps else None
        self.frame_count = len(self.paths)
        self._next = 0
        self._lock = threading.Lock()

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        cv2 = _cv2()
        with self._lock:
            if self.closed:
                raise SourceError("source %r: read after close" % (self.uri,))
            if self._next >= len(self.paths):
                self.eos = True
                return None
            path = self.paths[self._next]
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError("source %r: cannot read image %r" % (self.uri, path))
            pts = self._next / self.fps if self.fps else None
            frame = Frame(image, self._next, time.monotonic(), pts, path)
            self._next += 1
            self.frames_read += 1
            self._note_size(image)
            return frame


class LiveSource(Source):
    """A capture running in its own thread into a bounded queue that keeps the newest frames.

    ``open_capture()`` returns an opened cv2.VideoCapture-like object (``read()``, ``release()``,
    ``isOpened()``, ``get()``). When a read fails, the source reconnects with exponential backoff if
    ``reconnect`` (counting ``reconnects`` and logging each attempt) and gives up after
    ``max_reconnects`` failed attempts in a row (None = never); otherwise a failed read is the end of
    the stream. ``read()`` raises :class:`SourceError` once the capture has given up.
    """

    is_live = True

    def __init__(self, open_capture: Callable[[], object], uri: str, *, reconnect: bool = True,
                 max_reconnects: Optional[int] = None, backoff=(0.25, 8.0), queue_size: int = 1,
                 stall_timeout: Optional[float] = None, describe: str = ""):
        super().__init__(uri)
        if queue_size < 1:
            raise ValueError("queue_size: expected >= 1, got %r" % (queue_size,))
        self._open_capture = open_capture
        self._reconnect = bool(reconnect)
        self._max_reconnects = max_reconnects
        self._backoff = (float(backoff[0]), float(backoff[1]))
        self._stall_timeout = stall_timeout
        self.describe = describe or uri
        self._queue = collections.deque(maxlen=queue_size)  # type: collections.deque
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error = None  # type: Optional[BaseException]
        self._captured = 0
        self._cap = self._open_or_raise()
        self._read_props(self._cap)
        self._thread = threading.Thread(target=self._run, name="m2f-capture[%s]" % uri, daemon=True)
        self._thread.start()

    def _open_or_raise(self):
        try:
            cap = self._open_capture()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError("source %r: cannot open %s: %s" % (self.uri, self.describe, exc)) from exc
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError("source %r: cannot open %s" % (self.uri, self.describe))
        return cap

    def _read_props(self, cap):
        try:
            import cv2
            fps = cap.get(cv2.CAP_PROP_FPS)
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        except Exception:  # a stand-in capture without properties
            return
        if fps and 0 < fps < 1000:
            self.fps = float(fps)
        if width > 0 and height > 0:
            self.width, self.height = width, height

    def _run(self):
        cap = self._cap
        failures = 0
        try:
            while not self._stop.is_set():
                ok, image = cap.read() if cap is not None else (False, None)
                if self._stop.is_set():
                    break
                if ok and image is not None:
                    failures = 0
                    self._push(image)
                    continue
                if not self._reconnect:
                    break  # end of stream
                # lost: reconnect with exponential backoff
                if cap is not None:
                    cap.release()
                    cap = None
                    self._cap = None
                delay = min(self._backoff[1], self._backoff[0] * (2 ** failures))
                failures += 1
                if self._max_reconnects is not None and failures > self._max_reconnects:
                    raise SourceError("source %r: lost and not recovered after %d reconnect attempts"
                                      % (self.uri, self._max_reconnects))
                log.warning("source %s: no frame; reconnecting in %.2f s (attempt %d)", self.uri, delay, failures)
                if self._stop.wait(delay):
                    break
                try:
                    cap = self._open_capture()
                    if cap is not None and not cap.isOpened():
                        cap.release()
                        cap = None
                except Exception as exc:  # keep trying; the next attempt may work
                    log.warning("source %s: reconnect attempt %d failed: %s", self.uri, failures, exc)
                    cap = None
                if cap is not None:
                    self._cap = cap
                    self.reconnects += 1
                    log.warning("source %s: reconnected (%d reconnects so far)", self.uri, self.reconnects)
        except BaseException as exc:  # reported to the reader
            self._error = exc if isinstance(exc, SourceError) else SourceError(
                "source %r: capture failed: %s" % (self.uri, exc))
            self._error.__cause__ = exc if self._error is not exc else None
        finally:
            if cap is not None:
                cap.release()
            self._cap = None
            with self._cond:
                self.eos = self._error is None
                self._finished = True
                self._cond.notify_all()

    _finished = False

    def _push(self, image):
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append((image, self._captured, time.monotonic()))
            self._captured += 1
            self._cond.notify_all()

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The oldest kept frame, waiting for one; None at end of stream. ``timeout`` (or the source's
        ``stall_timeout``) in seconds raises SourceError when no frame arrives in time."""
        limit = timeout if timeout is not None else self._stall_timeout
        deadline = None if limit is None else time.monotonic() + limit
        with self._cond:
            while True:
                if self.closed:
                    raise SourceError("source %r: read after close" % (self.uri,))
                if self._queue:
                    image, index, stamp = self._queue.popleft()
                    self.frames_read += 1
                    self._note_size(image)
                    return Frame(image, index, stamp, None, self.uri)
                if self._error is not None:
                    raise self._error
                if self._finished:
                    return None
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    raise SourceError("source %r: no frame for %.1f s" % (self.uri, limit))
                self._cond.wait(wait)

    def close(self, timeout: float = 5.0) -> None:
        if self.closed:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # The capture is blocked inside a driver call; it is a daemon thread and exits with the read.
            log.warning("source %s: capture thread still blocked in read() after %.1f s", self.uri, timeout)
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def captured(self) -> int:
        """Frames delivered by the capture so far (read + dropped + waiting)."""
        return self._captured


# ---------------------------------------------------------------------------------------------------------
# URI parsing

_TRUE = ("1", "true", "yes", "on")
_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp")


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE


def _split_options(uri: str):
    """(uri without the query, options dict) for our own schemes; values stay strings."""
    parts = urlsplit(uri)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), parts, options


def _gst_live(pipeline: str, uri: str, describe: str, live_kw) -> "LiveSource":
    problem = gstreamer.missing_elements_message(pipeline)
    if problem:
        raise SourceError("source %r: %s" % (uri, problem))
    return LiveSource(lambda: gstreamer.open_capture(pipeline), uri, describe=describe, **live_kw)


def _require_gstreamer(uri: str) -> None:
    if not gstreamer_available():
        raise SourceError(gstreamer.gstreamer_missing_message(uri))


def _looks_like_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _open_v4l2(device: str, options: Dict[str, str], uri: str, live_kw) -> LiveSource:
    cv2 = _cv2()
    width = int(options.get("width", 0) or 0)
    height = int(options.get("height", 0) or 0)
    fps = float(options.get("fps", 0) or 0)
    fourcc = str(options.get("format", "") or "").upper()
    live_kw.setdefault("reconnect", True)
    if str(options.get("backend", "v4l2")).lower() == "gstreamer":
        _require_gstreamer(uri)
        pipeline = gstreamer.v4l2_pipeline(device, fourcc, width, height, fps)
        return _gst_live(pipeline, uri, "GStreamer pipeline %r" % pipeline, live_kw)

    target = int(device) if device.isdigit() else device

    def open_capture():
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if cap.isOpened():
            if fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc[:4].ljust(4)))
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
        return cap

    if isinstance(target, str) and not os.path.exists(target):
        raise SourceError("source %r: no such device %s" % (uri, target))
    return LiveSource(open_capture, uri, describe="V4L2 device %s" % device, **live_kw)


def _open_csi(uri: str, parts, opts, live_kw) -> LiveSource:
    _require_gstreamer(uri)
    sensor = (parts.netloc or parts.path.strip("/") or "0")
    pipeline = gstreamer.csi_pipeline(int(sensor), int(opts.get("width", 1280)), int(opts.get("height", 720)),
                                      int(float(opts.get("fps", 30))), int(opts.get("flip", 0)),
                                      int(opts["sensor_mode"]) if "sensor_mode" in opts else None)
    live_kw.setdefault("reconnect", True)
    return _gst_live(pipeline, uri, "CSI camera pipeline %r (is nvargus-daemon running?)" % pipeline, live_kw)


def _open_network_stream(uri: str, scheme: str, opts, live_kw) -> LiveSource:
    """RTSP and other network streams; the URL is passed on untouched, options come as keywords only."""
    cv2 = _cv2()
    backend = str(opts.get("backend", "gstreamer" if (scheme in ("rtsp", "rtsps") and gstreamer_available())
                            else "ffmpeg")).lower()
    live_kw.setdefault("reconnect", True)
    if backend == "gstreamer":
        _require_gstreamer(uri)
        pipeline = gstreamer.rtsp_pipeline(uri, int(opts.get("latency", 200)), str(opts.get("codec", "h264")))
        return _gst_live(pipeline, uri, "GStreamer pipeline %r" % pipeline, live_kw)
    return LiveSource(lambda: cv2.VideoCapture(uri, cv2.CAP_FFMPEG), uri, describe="stream (OpenCV/FFmpeg)",
                      **live_kw)


def _open_gst(uri: str, live_kw) -> LiveSource:
    pipeline = gstreamer.appsink_pipeline(uri.split("://", 1)[1])
    _require_gstreamer(uri)
    live_kw.setdefault("reconnect", False)
    return _gst_live(pipeline, uri, "GStreamer pipeline %r" % pipeline, live_kw)


def _open_path(path: str, uri: str, opts, live_kw) -> Source:
    """A device path, an image folder, a glob, an image or a video file."""
    if path.startswith("/dev/video"):
        return _open_v4l2(path, opts, uri, live_kw)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMAGE_EXTENSIONS))
        return ImageSource(files, uri, opts.get("fps") and float(opts["fps"]))
    if _looks_like_glob(path) and not os.path.exists(path):
        files = sorted(p for p in glob.glob(path) if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p))
        return ImageSource(files, uri, opts.get("fps") and float(opts["fps"]))
    if path.lower().endswith(IMAGE_EXTENSIONS):
        if not os.path.isfile(path):
            raise SourceError("source %r: no such image file" % (uri,))
        return ImageSource([path], uri, opts.get("fps") and float(opts["fps"]))
    if not os.path.exists(path):
        raise SourceError("source %r: no such file, folder or device" % (uri,))
    if _as_bool(opts.get("live", False)):
        live_kw.setdefault("reconnect", False)

        def open_file():
            return _FirstFrameAgain(*_open_video_file(path, uri))

        source = LiveSource(open_file, uri, describe="video file %r" % path, **live_kw)
        source.files = (path,)
        return source
    return VideoFileSource(path, uri)


def _source_options(uri: str, scheme: str, options):
    """(the URI's split parts or None, options from its query updated by the keywords, live-source
    keywords for LiveSource). Only our own schemes carry options in a query; a stream URL is not parsed."""
    parts, query = None, {}
    if scheme in ("csi", "v4l2", "file"):
        _, parts, query = _split_options(uri)
    opts = dict(query)
    opts.update({k: v for k, v in options.items() if v is not None})
    live_kw = {}
    for key in ("max_reconnects", "queue_size"):
        if key in opts:
            live_kw[key] = int(opts.pop(key))
    if "stall_timeout" in opts:
        live_kw["stall_timeout"] = float(opts.pop("stall_timeout"))
    reconnect = opts.pop("reconnect", None)
    if reconnect is not None:  # else each kind of source has its own default
        live_kw["reconnect"] = _as_bool(reconnect)
    return parts, opts, live_kw


def open_source(uri, **options) -> Source:
    """Open a video source by URI (see the module docstring). Options may come in the URI's query
    (``?width=1280&fps=30``) or as keyword arguments (which win):

    - cameras: ``width``, ``height``, ``fps``; csi: ``flip``, ``sensor_mode``; v4l2: ``format``
      (FOURCC such as MJPG or YUYV), ``backend`` ("v4l2" or "gstreamer")
    - rtsp: ``latency`` (ms, default 200), ``codec`` ("h264"/"h265"), ``backend`` ("gstreamer" or
      "ffmpeg"; default gstreamer when OpenCV has it)
    - live sources: ``reconnect`` (default on for rtsp and v4l2), ``max_reconnects``, ``queue_size``
      (frames kept, default 1: the newest), ``stall_timeout`` (seconds without a frame -> error)
    - files: ``live=1`` plays a video file through the live capture thread (drops frames when the
      reader is slow, as a camera would); images: ``fps`` (sets the frames' pts)

    An already open :class:`Source` is returned unchanged. Raises SourceError when it cannot open.
    """
    if isinstance(uri, Source):
        return uri
    if isinstance(uri, int):
        uri = "v4l2://%d" % uri
    uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise ValueError("source: expected a URI or path string, got %r" % (uri,))

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    parts, opts, live_kw = _source_options(uri, scheme, options)
    if scheme == "csi":
        return _open_csi(uri, parts, opts, live_kw)
    if scheme == "v4l2":
        return _open_v4l2((parts.netloc + parts.path) or "/dev/video0", opts, uri, live_kw)
    if scheme in _STREAM_SCHEMES:
        return _open_network_stream(uri, scheme, opts, live_kw)
    if scheme == "gst":
        return _open_gst(uri, live_kw)
    if scheme and scheme != "file":
        raise SourceError("source %r: unknown scheme %r (expected csi, v4l2, rtsp, gst, file or a path)"
                          % (uri, scheme))
    return _open_path(os.path.expanduser(parts.path if scheme == "file" else uri), uri, opts, live_kw)
