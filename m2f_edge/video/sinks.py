"""Where frames go, opened by URI:

    display://            an OpenCV window (needs an OpenCV with GUI support); "q" or Esc stops
    out.mp4, out.avi, out.mkv   a video file via cv2.VideoWriter, written under a temporary name and
                          renamed on a clean close, so an error never leaves a half-written file
    out_dir/              a folder of images (frame_000000.jpg, ...); "out/%05d.png" picks the pattern
    udp://host:port       RTP/H.264 over UDP through GStreamer (hardware encoder where present)
    rtsp://server/path    push to an RTSP server (e.g. mediamtx) through GStreamer's rtspclientsink
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Optional
from urllib.parse import urlsplit

import numpy as np

from .._outputs import create_hidden_beside, same_file
from .gstreamer import gstreamer_available, gstreamer_element_available, gstreamer_missing_message
from .sources import Source, _cv2

__all__ = ["Sink", "SinkError", "VideoFileSink", "ImageFolderSink", "DisplaySink", "GStreamerSink", "open_sink",
           "VIDEO_EXTENSIONS"]

log = logging.getLogger("m2f_edge.video")

VIDEO_EXTENSIONS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v"}


class SinkError(RuntimeError):
    """A sink could not be opened or written."""


def _check_image(image, sink) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image: %s expects (H, W, 3) uint8 BGR frames, got %s" % (
            sink, "%s %s" % (image.dtype, image.shape) if isinstance(image, np.ndarray) else type(image).__name__))
    return image


class Sink:
    """Base class: ``write(image)``, ``close()`` (keeps the output), ``abort()`` (drops an unfinished
    output where it can). As a context manager it closes on success and aborts on an exception.
    ``stop_requested`` becomes True when the user asks to stop (closing a display window)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.frames_written = 0
        self.closed = False
        self.stop_requested = False

    def write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.close()

    def would_replace(self, path: str) -> bool:
        """Whether writing this sink could replace the file ``path``."""
        return False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.uri)


class _VideoWriterSink(Sink):
    """A sink behind one cv2.VideoWriter, opened at the first frame, whose size the later frames keep."""

    def __init__(self, uri: str, fps: Optional[float]):
        super().__init__(uri)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._writer = None
        self._size = None

    def _open_writer(self, cv2, size):
        """An opened cv2.VideoWriter for frames of size (width, height), or SinkError."""
        raise NotImplementedError

    def write(self, image: np.ndarray) -> None:
        if self.closed:
            raise SinkError("sink %r: write after close" % (self.uri,))
        image = _check_image(image, self)
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            self._writer = self._open_writer(_cv2(), size)
            self._size = size
        elif size != self._size:
            raise ValueError("image: sink %r was opened for %dx%d frames, got %dx%d" % (
                self.uri, self._size[0], self._size[1], size[0], size[1]))
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1


class VideoFileSink(_VideoWriterSink):
    """A video file. Opened at the first frame (its size); written to a hidden temporary file in the
    same folder and renamed to ``path`` by :meth:`close`; :meth:`abort` deletes the temporary file."""

    def __init__(self, path: str, fps: Optional[float] = None, fourcc: Optional[str] = None, uri: str = ""):
        super().__init__(uri or path, fps)
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_EXTENSIONS:
            raise SinkError("sink %r: unknown video extension %r (expected %s)" % (
                path, ext, ", ".join(sorted(VIDEO_EXTENSIONS))))
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SinkError("sink %r: folder %s does not exist" % (path, folder))
        self.path = path
        self.fourcc = (fourcc or VIDEO_EXTENSIONS[ext])[:4]
        self._temp_path = create_hidden_beside(path, suffix=".partial" + ext)

    def _open_writer(self, cv2, size):
        writer = cv2.VideoWriter(self._temp_path, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not writer.isOpened():
            self.abort()
            raise SinkError("sink %r: OpenCV (%s) cannot write %s video with codec %r" % (
                self.uri, cv2.__version__, os.path.splitext(self.path)[1], self.fourcc))
        return writer

    def would_replace(self, path: str) -> bool:
        return same_file(self.path, path)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is None:
            log.warning("sink %s: no frame was written; no file created", self.uri)
            self._remove_temp()
            return
        self._writer.release()
        self._writer = None
        os.replace(self._temp_path, self.path)

    def abort(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._remove_temp()

    def _remove_temp(self):
        try:
            os.remove(self._temp_path)
        except FileNotFoundError:
            pass

    def __del__(self):
        # Dropped without close(): leave no temporary file behind.
        try:
            if not self.closed:
                self.abort()
        except Exception:
            pass


class ImageFolderSink(Sink):
    """One image file per frame, named by a printf pattern (default frame_%06d.jpg) in ``folder``."""

    def __init__(self, folder: str, pattern: str = "frame_%06d.jpg", uri: str = ""):
        super().__init__(uri or folder)
        try:
            pattern % 0
        except (TypeError, ValueError) as exc:
            raise SinkError("sink %r: pattern %r needs one integer field such as %%06d" % (self.uri, pattern)) from exc
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.pattern = pattern
        # the names the pattern can produce: its integer field matches any digits (padded or not)
        pieces = re.split(r"%[-+ 0#]*\d*[di]", pattern.replace("%%", "\0"))
        self._names = re.compile("^" + r"[-+ ]*\d+".join(re.escape(p).replace("\0", "%") for p in pieces) + "$")

    def would_replace(self, path: str) -> bool:
        return same_file(self.folder, os.path.dirname(os.path.abspath(path))) and \
            bool(self._names.match(os.path.basename(path)))

    def write(self, image: np.ndarray) -> None:
        if self.closed:
            raise SinkError("sink %r: write after close" % (self.uri,))
        image = _check_image(image, self)
        cv2 = _cv2()
        path = os.path.join(self.folder, self.pattern % self.frames_written)
        if not cv2.imwrite(path, image):
            raise SinkError("sink %r: cannot write %s" % (self.uri, path))
        self.frames_written += 1


class DisplaySink(Sink):
    """An OpenCV window. Pressing q or Esc, or closing the window, sets ``stop_requested``."""

    def __init__(self, title: str = "m2f_edge", uri: str = "display://"):
        super().__init__(uri)
        cv2 = _cv2()
        self.title = title
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            # GTK builds of OpenCV abort the whole process when they find no display: refuse first.
            raise SinkError("sink %r: no display (DISPLAY is not set); write to a file instead, or run in a "
                            "desktop session / set DISPLAY" % (uri,))
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise SinkError(
                "sink %r: this OpenCV (%s) has no GUI support (opencv-python-headless has none, or there is no "
                "display): use JetPack's system OpenCV or opencv-python, or write to a file instead" % (
                    uri, cv2.__version__)) from exc

    def write(self, image: np.ndarray) -> None:
        cv2 = _cv2()
        image = _check_image(image, self)
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        self.frames_written += 1
        if key in (ord("q"), 27):
            self.stop_requested = True
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self.stop_requested = True
        except cv2.error:
            pass

    def close(self) -> None:
        if not self.closed:
            cv2 = _cv2()
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass
        self.closed = True


class GStreamerSink(_VideoWriterSink):
    """Frames pushed into a GStreamer pipeline starting with appsrc (cv2.VideoWriter, CAP_GSTREAMER)."""

    def __init__(self, pipeline: str, fps: Optional[float] = None, uri: str = ""):
        super().__init__(uri or pipeline, fps)
        if not gstreamer_available():
            raise SinkError(gstreamer_missing_message(self.uri))
        self.pipeline = pipeline

    def _open_writer(self, cv2, size):
        writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.fps, size, True)
        if not writer.isOpened():
            raise SinkError("sink %r: cannot open GStreamer pipeline %r" % (self.uri, self.pipeline))
        return writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.closed = True


def _encoder_chain(bitrate_kbps: int) -> str:
    if gstreamer_element_available("nvv4l2h264enc"):
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                "nvv4l2h264enc bitrate=%d insert-sps-pps=true ! h264parse" % (bitrate_kbps * 1000))
    return "videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=%d ! h264parse" % bitrate_kbps


def open_sink(uri, *, fps: Optional[float] = None, inputs=(), **options) -> Sink:
    """Open a sink by URI (see the module docstring). ``fps`` sets the output frame rate of video files
    and streams (default 30). Options: ``fourcc`` (video files), ``pattern`` (image folders),
    ``bitrate`` (kbit/s, streams), ``title`` (display). An open :class:`Sink` is returned unchanged.

    inputs: paths and :class:`Source` objects (their ``files``) that the sink must never replace: a sink
    that would raises SinkError naming both, before writing anything."""
    sink = uri if isinstance(uri, Sink) else _open_sink(uri, fps, options)
    for path in _input_files(inputs):
        if sink.would_replace(path):
            if sink is not uri:
                sink.abort()
            raise SinkError("sink %r: writing it would replace the input %s; nothing was written (choose another "
                            "output)" % (sink.uri, path))
    return sink


def _input_files(inputs):
    if isinstance(inputs, (str, os.PathLike, Source)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, Source):
            yield from item.files
        else:
            yield os.fspath(item)


def _open_sink(uri, fps: Optional[float], options) -> Sink:
    uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise ValueError("output: expected a URI or path string, got %r" % (uri,))
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "display":
        title = options.get("title") or uri.split("://", 1)[1] or "m2f_edge"
        return DisplaySink(title, uri)
    if scheme in ("udp", "rtsp"):
        parts = urlsplit(uri)
        bitrate = int(options.get("bitrate", 4000))
        if scheme == "udp":
            if not parts.hostname or not parts.port:
                raise SinkError("sink %r: expected udp://host:port" % (uri,))
            tail = "rtph264pay config-interval=1 pt=96 ! udpsink host=%s port=%d sync=false" % (
                parts.hostname, parts.port)
        else:
            tail = "rtspclientsink location=%s" % uri
        return GStreamerSink("appsrc ! %s ! %s" % (_encoder_chain(bitrate), tail), fps, uri)
    if scheme and scheme != "file":
        raise SinkError("sink %r: unknown scheme %r (expected display, udp, rtsp, file or a path)" % (uri, scheme))
    path = os.path.expanduser(urlsplit(uri).path if scheme == "file" else uri)
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return VideoFileSink(path, fps, options.get("fourcc"), uri)
    if "%" in os.path.basename(path):
        return ImageFolderSink(os.path.dirname(path) or ".", os.path.basename(path), uri)
    if path.endswith(("/", os.sep)) or os.path.isdir(path) or not ext:
        return ImageFolderSink(path, options.get("pattern", "frame_%06d.jpg"), uri)
    raise SinkError("sink %r: cannot tell what to write from the extension %r (video: %s; or a folder ending "
                    "in /)" % (uri, ext, ", ".join(sorted(VIDEO_EXTENSIONS))))
