"""Checks of the Segmenter's arguments and frames, and the Prepared batch: shared by the Segmenter and the
remote client (m2f_edge.serving.client), so that neither imports the other's module to reach them."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np


class Prepared:
    """Frames made ready for the model: tensor (B,3,H,W) in the model's input dtype, and one
    _core.ResizeTransform per frame saying where each frame sits in the tensor."""

    __slots__ = ("tensor", "transforms")

    def __init__(self, tensor: np.ndarray, transforms: List):
        self.tensor = tensor
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return "Prepared(tensor={} {}, {} frames)".format(self.tensor.dtype.name, tuple(self.tensor.shape),
                                                           len(self.transforms))


def _as_frame_list(frames):
    """A list of frames, or one (B,H,W,C) array kept whole (one core call)."""
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return frames
        if frames.ndim in (2, 3):
            return [frames]
        raise ValueError("frames: expected frames of shape (H,W), (H,W,C) or a batch (B,H,W,C), got shape {}".format(
            frames.shape))
    if isinstance(frames, (list, tuple)):
        return list(frames)
    try:
        return list(frames)
    except TypeError:
        raise TypeError("frames: expected a list of numpy uint8 frames or a (B,H,W,C) array, got {}".format(
            type(frames).__name__)) from None


def _check_frame(frame, name: str) -> None:
    """Checks whose core messages would be less helpful (Python objects that are not arrays, float images)."""
    if not isinstance(frame, np.ndarray):
        raise TypeError("{}: expected a numpy uint8 array (H,W,3), got {}".format(name, type(frame).__name__))
    if frame.dtype != np.uint8:
        hint = " (scale to 0-255 and convert with .astype(np.uint8))" if frame.dtype.kind == "f" else ""
        raise TypeError("{}: expected dtype uint8, got {}{}".format(name, frame.dtype, hint))
    if frame.ndim not in (2, 3):
        raise ValueError("{}: expected shape (H,W) or (H,W,C), got {}".format(name, frame.shape))
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError("{}: the frame is empty (shape {})".format(name, frame.shape))


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError("{}: expected one of {}, got {!r}".format(name, list(choices), value))


def _choice_arg(name: str, value, choices) -> str:
    _check_choice(name, value, choices)
    return value


def _threads_arg(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError("threads: expected an integer >= 0 (0 = all cores), got {!r}".format(value))
    return int(value)


def _names_arg(value, required: bool = False) -> Optional[List[str]]:
    if value is None and not required:
        return None
    if value is None:
        raise TypeError("class_names: expected a list of strings, got None")
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError("class_names: expected a list of strings, got {!r}".format(value))
    return list(value)


def _triple_arg(name: str, value, allow_zero: bool, required: bool = False) -> Optional[Tuple[float, float, float]]:
    if value is None and not required:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError("{}: expected 3 numbers (RGB, 0-1 units), got {!r}".format(name, value)) from None
    if len(numbers) != 3 or any(not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero) for v in numbers):
        raise ValueError("{}: expected 3 {} numbers (RGB, 0-1 units), got {!r}".format(
            name, "non-negative" if allow_zero else "positive", value))
    if max(numbers) > 1.0:
        raise ValueError("{}: expected 0-1 units (e.g. 0.485), got {!r}; divide 0-255 values by 255".format(
            name, value))
    return numbers  # type: ignore[return-value]


def _unit_arg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
            not 0.0 <= float(value) <= 1.0:
        raise ValueError("{}: expected a number in [0, 1], got {!r}".format(name, value))
    return float(value)


def _int_arg(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError("{}: expected an integer, got {!r}".format(name, value))
    return int(value)


def _positive_int_arg(name: str, value) -> int:
    value = _int_arg(name, value)
    if value < 1:
        raise ValueError("{}: expected a positive integer, got {}".format(name, value))
    return value


def _describe(array) -> str:
    if isinstance(array, np.ndarray):
        return "{} array of shape {}{}".format(array.dtype.name, tuple(array.shape),
                                               "" if array.flags.c_contiguous else " (not C-contiguous)")
    return type(array).__name__
