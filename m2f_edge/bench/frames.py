"""Frames to benchmark on: synthetic at a given size, or real ones from a video or an image folder."""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from .._opencv import IMAGE_EXTENSIONS


class FramePool(object):
    """A fixed set of BGR uint8 frames handed out in turn, so decoding never enters the timing."""

    def __init__(self, frames: List[np.ndarray], description: str):
        if not frames:
            raise ValueError("no frames to benchmark on ({})".format(description))
        self.frames = frames
        self.description = description
        self._next = 0

    @property
    def frame_size(self):
        """(height, width) of the first frame."""
        return tuple(int(v) for v in self.frames[0].shape[:2])

    def batch(self, size: int) -> List[np.ndarray]:
        out = []
        for _ in range(size):
            out.append(self.frames[self._next])
            self._next = (self._next + 1) % len(self.frames)
        return out


def parse_size(text: str):
    """'1280x720' (WxH) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError("--input-size must look like WIDTHxHEIGHT, e.g. 1280x720; got {!r}".format(text))
    if width < 8 or height < 8 or width > 16384 or height > 16384:
        raise ValueError("--input-size {}x{} is out of range (8..16384 per side)".format(width, height))
    return height, width


def synthetic_frames(height: int, width: int, count: int = 8, seed: int = 0) -> FramePool:
    """Frames with a smooth background and a few saturated rectangles, so that a real model has
    something to segment and post-processing does real work; different per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    for index in range(count):
        frame = np.empty((height, width, 3), np.uint8)
        frame[..., 0] = ((ys * 0.3 + xs * 0.2 + index * 11) % 256).astype(np.uint8)
        frame[..., 1] = ((ys * 0.2 + xs * 0.3 + index * 7) % 256).astype(np.uint8)
        frame[..., 2] = 110
        for _ in range(4):
            h = int(rng.integers(height // 8, height // 2))
            w = int(rng.integers(width // 8, width // 2))
            y = int(rng.integers(0, height - h))
            x = int(rng.integers(0, width - w))
            color = np.zeros(3, np.uint8)
            color[int(rng.integers(0, 3))] = 230
            frame[y:y + h, x:x + w] = color + 25
        frames.append(frame)
    return FramePool(frames, "synthetic {}x{}".format(width, height))


def load_frames(path: str, max_frames: int = 64) -> FramePool:
    """Up to max_frames frames from a video file or a folder of images (decoded once, up front)."""
    try:
        import cv2
    except ImportError:
        raise RuntimeError("reading --frames needs OpenCV: pip install 'm2f-edge[opencv]' "
                           "(on a Jetson use JetPack's python3-opencv)")
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        frames = []
        for name in names[:max_frames]:
            image = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("--frames: cannot decode image {!r}".format(os.path.join(path, name)))
            frames.append(image)
        if not frames:
            raise ValueError("--frames: folder {!r} holds no images ({})".format(path, ", ".join(IMAGE_EXTENSIONS)))
        return FramePool(frames, "{} images from {}".format(len(frames), path))
    if not os.path.exists(path):
        raise ValueError("--frames: {!r} does not exist (expected a video file or an image folder)".format(path))
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        while len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise ValueError("--frames: no frame could be decoded from {!r}".format(path))
    return FramePool(frames, "{} frames of {}".format(len(frames), path))


def frames_from_args(input_size: Optional[str], frames_path: Optional[str]) -> FramePool:
    if frames_path:
        return load_frames(frames_path)
    height, width = parse_size(input_size or "1280x720")
    return synthetic_frames(height, width)
