"""GStreamer for the video sources and sinks: whether OpenCV has it, which elements GStreamer has, and the
pipeline strings for Jetson's CSI cameras, RTSP streams, V4L2 devices and user pipelines.

Only OpenCV's GStreamer backend is used (cv2.VideoCapture / cv2.VideoWriter with CAP_GSTREAMER); the
element checks ask gst-inspect-1.0 when it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional

from .._opencv import require_cv2

__all__ = ["gstreamer_available", "gstreamer_element_available", "missing_gstreamer_elements",
           "missing_elements_message", "gstreamer_missing_message", "csi_pipeline", "rtsp_pipeline",
           "v4l2_pipeline", "appsink_pipeline", "open_capture"]

APPSINK = "appsink drop=true max-buffers=1 sync=false"


def _cv2():
    return require_cv2("video sources and sinks")


def gstreamer_available() -> bool:
    """Whether the imported OpenCV was built with GStreamer (cv2.getBuildInformation())."""
    cv2 = _cv2()
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def gstreamer_missing_message(uri: str) -> str:
    """Why ``uri`` cannot open with this OpenCV, and which OpenCV to use instead."""
    cv2 = _cv2()
    return (
        "%s needs OpenCV built with GStreamer, but the OpenCV in use (%s, %s) has none. On Jetson use "
        "JetPack's system OpenCV: remove pip's opencv-python* from this environment (pip uninstall "
        "opencv-python opencv-python-headless) or create the venv with --system-site-packages; elsewhere "
        "install python3-opencv from your distribution. PyPI's opencv-python wheels lack GStreamer."
        % (uri, cv2.__version__, os.path.dirname(getattr(cv2, "__file__", "") or "?"))
    )


_ELEMENT_CACHE = {}  # type: Dict[str, Optional[bool]]


def _element_exists(name: str) -> Optional[bool]:
    """True/False from gst-inspect-1.0 --exists, None when the tool is not installed."""
    if name not in _ELEMENT_CACHE:
        tool = shutil.which("gst-inspect-1.0")
        if tool is None:
            return None
        try:
            result = subprocess.run([tool, "--exists", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    timeout=10)
            _ELEMENT_CACHE[name] = result.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return None
    return _ELEMENT_CACHE[name]


def gstreamer_element_available(name: str) -> bool:
    """Whether GStreamer has element ``name`` (e.g. nvv4l2decoder), asked with gst-inspect-1.0."""
    return bool(_element_exists(name))


def missing_gstreamer_elements(pipeline: str) -> List[str]:
    """The elements of a gst-launch style pipeline that GStreamer lacks (empty when gst-inspect-1.0 is
    not installed). Checked before opening: OpenCV can block forever on a pipeline naming a missing
    element (seen with OpenCV 4.6 / GStreamer 1.22 and nvarguscamerasrc)."""
    missing = []
    for part in pipeline.split("!"):
        words = part.strip().split()
        if not words:
            continue
        name = words[0]
        if "/" in name or "=" in name or name.startswith(("(", "'", '"')) or "." in name:
            continue  # caps such as video/x-raw, or a pad reference such as t.
        if _element_exists(name) is False:
            missing.append(name)
    return missing


def missing_elements_message(pipeline: str) -> Optional[str]:
    """None when GStreamer has every element of ``pipeline`` (or cannot be asked); else what is missing."""
    missing = missing_gstreamer_elements(pipeline)
    if not missing:
        return None
    hint = ""
    if any(m.startswith("nv") for m in missing):
        hint = " (NVIDIA's elements come with JetPack's multimedia packages on a Jetson)"
    return "GStreamer has no element %s%s; pipeline: %s" % (", ".join(missing), hint, pipeline)


def open_capture(pipeline: str):
    """cv2.VideoCapture of a pipeline ending in appsink."""
    cv2 = _cv2()
    return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0,
                 sensor_mode: Optional[int] = None) -> str:
    """The GStreamer pipeline for a Jetson CSI camera (Argus), delivering BGR frames to appsink."""
    mode = " sensor-mode=%d" % sensor_mode if sensor_mode is not None else ""
    return (
        "nvarguscamerasrc sensor-id=%d%s ! "
        "video/x-raw(memory:NVMM), width=(int)%d, height=(int)%d, framerate=(fraction)%d/1, format=(string)NV12 ! "
        "nvvidconv flip-method=%d ! video/x-raw, format=(string)BGRx ! videoconvert ! "
        "video/x-raw, format=(string)BGR ! %s"
        % (sensor_id, mode, width, height, fps, flip, APPSINK)
    )


def rtsp_pipeline(url: str, latency: int = 200, codec: str = "h264", hardware: Optional[bool] = None) -> str:
    """The GStreamer pipeline for an RTSP stream: Jetson's nvv4l2decoder where present, else decodebin."""
    codec = codec.lower()
    if codec not in ("h264", "h265"):
        raise ValueError("codec: expected 'h264' or 'h265', got %r" % (codec,))
    if hardware is None:
        hardware = gstreamer_element_available("nvv4l2decoder")
    if hardware:
        return (
            "rtspsrc location=%s latency=%d ! rtp%sdepay ! %sparse ! nvv4l2decoder ! nvvidconv ! "
            "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "%s" % (url, latency, codec, codec, APPSINK)
        )
    return (
        "rtspsrc location=%s latency=%d ! decodebin ! videoconvert ! video/x-raw, format=(string)BGR ! "
        "%s" % (url, latency, APPSINK)
    )


def v4l2_pipeline(device: str, fourcc: str = "", width: int = 0, height: int = 0, fps: float = 0) -> str:
    """The GStreamer pipeline for a V4L2 camera (MJPG decoded with jpegdec), delivering BGR to appsink."""
    caps = "image/jpeg" if fourcc in ("MJPG", "MJPEG") else "video/x-raw"
    fields = "".join([",width=%d" % width if width else "", ",height=%d" % height if height else "",
                      ",framerate=%d/1" % int(fps) if fps else ""])
    decode = " ! jpegdec" if caps == "image/jpeg" else ""
    return "v4l2src device=%s ! %s%s%s ! videoconvert ! video/x-raw,format=BGR ! %s" % (
        device, caps, fields, decode, APPSINK)


def appsink_pipeline(pipeline: str) -> str:
    """A user's gst:// pipeline, ended with a BGR appsink when it has none."""
    if "appsink" not in pipeline:
        pipeline += " ! videoconvert ! video/x-raw,format=BGR ! appsink"
    return pipeline
