"""Shared helpers for the video tests: real video files written with OpenCV, thread-leak checks."""

import threading
import time

import numpy as np


def frame_level(i):
    """The grey level painted into frame i (distinct and far apart so lossy codecs keep them apart)."""
    return (20 + 37 * i) % 236


def make_video(path, count=12, size=(64, 48), fps=20.0, fourcc=None, painter=None):
    """Write `count` frames with OpenCV; frame i is flat grey frame_level(i) unless painter(i) is given."""
    import cv2

    fourcc = fourcc or ("MJPG" if str(path).endswith(".avi") else "mp4v")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), "OpenCV cannot write %s" % path
    for i in range(count):
        frame = painter(i) if painter else np.full((size[1], size[0], 3), frame_level(i), np.uint8)
        writer.write(frame)
    writer.release()
    return str(path)


def decoded_level(image):
    return int(round(float(image.mean())))


def wait_for_threads(before, timeout=5.0):
    """Threads started since `before` that are still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)
