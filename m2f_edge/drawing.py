"""Overlays: instance masks blended into the frame by the core, plus outlines, boxes, labels and an FPS line.

The per-pixel work (blend and outline) runs in ``_core.draw_instances`` with the GIL released; the
boxes and text are a handful of OpenCV calls per instance.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from ._opencv import require_cv2

__all__ = ["palette", "overlay", "draw_instances", "draw_text_line"]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def _cv2():
    return require_cv2("drawing boxes and labels")


def palette(count: int, saturation: float = 0.85, value: float = 0.95) -> np.ndarray:
    """``count`` well separated colours as a (count, 3) uint8 array (BGR), the same for every call.

    Hues step by the golden ratio so neighbouring instance indices get distant colours.
    """
    if count < 0:
        raise ValueError("count: expected >= 0, got %r" % (count,))
    hue = (np.arange(count, dtype=np.float64) * _GOLDEN_RATIO_CONJUGATE + 0.1) % 1.0
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * frac)
    t = value * (1.0 - saturation * (1.0 - frac))
    sector = sector.astype(np.int64) % 6
    r = np.choose(sector, [value, q, p, p, t, value])
    g = np.choose(sector, [t, value, value, q, p, p])
    b = np.choose(sector, [p, p, t, value, value, q])
    bgr = np.stack([b, g, r], axis=1) if count else np.zeros((0, 3))
    return np.round(bgr * 255.0).astype(np.uint8)


def overlay(frame: np.ndarray, instance_map: np.ndarray, colors: np.ndarray, *, alpha: float = 0.5,
            outline: bool = True, threads: int = 0) -> np.ndarray:
    """Blend ``colors[i]`` into ``frame`` (H, W, 3 uint8, in place) where ``instance_map == i + 1``.

    A thin wrapper of ``_core.draw_instances``; returns ``frame``.
    """
    _core.draw_instances(frame, instance_map, colors, alpha=float(alpha), outline=bool(outline), threads=int(threads))
    return frame


def draw_text_line(frame: np.ndarray, text: str, origin=(8, 22), scale: float = 0.6,
                   color=(255, 255, 255)) -> np.ndarray:
    """Draw one line of text with a dark backing box (used for the FPS line); in place, returns ``frame``."""
    cv2 = _cv2()
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = int(origin[0]), int(origin[1])
    cv2.rectangle(frame, (x - 3, y - th - 4), (x + tw + 3, y + base + 2), (0, 0, 0), -1)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in color), 1, cv2.LINE_AA)
    return frame


def _label_text(instances, i: int, show_scores: bool) -> str:
    label = int(instances.labels[i])
    if hasattr(instances, "class_name"):
        name = str(instances.class_name(label))
    else:
        names = getattr(instances, "class_names", None)
        name = str(names[i]) if names is not None and i < len(names) else str(label)
    if show_scores:
        return "%s %.2f" % (name, float(instances.scores[i]))
    return name


def draw_instances(frame: np.ndarray, instances, *, alpha: float = 0.5, outline: bool = True, boxes: bool = True,
                   labels: bool = True, scores: bool = True, colors: Optional[np.ndarray] = None,
                   color_by: str = "instance", fps: Optional[float] = None, text: Optional[str] = None,
                   copy: bool = False, threads: int = 0) -> np.ndarray:
    """Draw ``instances`` (an :class:`m2f_edge.Instances` for this frame) onto ``frame``.

    frame: (H, W, 3) uint8, drawn in place unless ``copy=True`` (then a copy is drawn and returned).
    colors: (N, 3) or (num_classes, 3) uint8 in the frame's channel order; default :func:`palette`.
    color_by: "instance" (one colour per instance) or "label" (one colour per class).
    fps / text: an optional status line drawn top-left ("FPS 23.4" and/or the text).
    Returns the drawn frame.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frame: expected an (H, W, 3) uint8 numpy array, got %s" % (
            "%s %s" % (frame.dtype, frame.shape) if isinstance(frame, np.ndarray) else type(frame).__name__))
    if color_by not in ("instance", "label"):
        raise ValueError("color_by: expected 'instance' or 'label', got %r" % (color_by,))
    image_size = tuple(int(v) for v in getattr(instances, "image_size", frame.shape[:2]))
    if image_size != tuple(frame.shape[:2]):
        raise ValueError("frame: its size %dx%d differs from the instances' image size %dx%d" % (
            frame.shape[0], frame.shape[1], image_size[0], image_size[1]))
    if copy:
        frame = frame.copy()
    count = len(instances)
    label_ids = np.asarray(instances.labels, dtype=np.int64).reshape(-1) if count else np.zeros(0, np.int64)
    if colors is None:
        needed = (int(label_ids.max()) + 1 if count else 0) if color_by == "label" else count
        colors = palette(needed)
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError("colors: expected an (N, 3) uint8 array, got shape %s" % (colors.shape,))
    per_instance = colors[label_ids] if color_by == "label" else colors
    if per_instance.shape[0] < count:
        raise ValueError("colors: %d colours for %d instances" % (per_instance.shape[0], count))
    if count:
        instance_map = np.asarray(instances.instance_map, dtype=np.int32)
        _core.draw_instances(frame, instance_map, per_instance[:count], alpha=float(alpha), outline=bool(outline),
                             threads=int(threads))
    if count and (boxes or labels):
        cv2 = _cv2()
        box_array = np.asarray(instances.boxes, dtype=np.float32).reshape(-1, 4)
        for i in range(count):
            x0, y0, x1, y1 = (int(round(float(v))) for v in box_array[i])
            color = tuple(int(c) for c in per_instance[i])
            if boxes:
                cv2.rectangle(frame, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, 1)
            if labels:
                txt = _label_text(instances, i, scores)
                (tw, th), base = cv2.getTextSize(txt, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
                ty = y0 - 3 if y0 - th - base - 3 >= 0 else y0 + th + 3
                cv2.rectangle(frame, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 1), color, -1)
                cv2.putText(frame, txt, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    status = []
    if fps is not None:
        status.append("FPS %.1f" % float(fps))
    if text:
        status.append(str(text))
    if status:
        draw_text_line(frame, "  ".join(status))
    return frame
