"""The demo model and the scenes it was trained on.

``Segmenter("demo")`` (or ``--model demo``) loads a small Mask2Former of the real architecture (Swin
backbone, deformable-attention pixel decoder, masked-attention decoder, one class "object") that ships
with the package. It was trained from scratch by ``tools/train_demo_model.py`` on scenes made by
:func:`scenes`: textured, cluttered backgrounds with 1-4 textured objects that may occlude one
another. Objects and background draw their colours from the same distribution, so only shape and
texture tell an object from the background.

    from m2f_edge import demo
    for scene in demo.scenes(4, seed=7):
        scene.image          # H x W x 3 uint8 BGR
        scene.masks          # N x H x W bool, the visible part of each object
        scene.boxes          # N x 4 float xyxy

``write_coco(folder, n, seed)`` writes PNGs and a COCO instances JSON (RLE masks) for ``m2f-edge eval``.
The generator needs only numpy and OpenCV.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from ._opencv import require_cv2

MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_mask2former.onnx")
MODEL_NAME = "demo"
MAX_OBJECTS = 4
MIN_VISIBLE_FRACTION = 0.5   # an occluded object keeps at least half of itself in view
MIN_VISIBLE_PIXELS_FRACTION = 0.004  # of the frame: smaller leftovers are not counted as objects


class Scene(NamedTuple):
    image: np.ndarray   # H x W x 3 uint8, BGR
    masks: np.ndarray   # N x H x W bool, visible parts
    boxes: np.ndarray   # N x 4 float64 xyxy (x2, y2 exclusive, as Instances.boxes)


def model_path() -> str:
    """The shipped demo model's path; a clear error when the package was installed without it."""
    if not os.path.isfile(MODEL_FILE):
        raise FileNotFoundError(
            f"model: the demo model is not in this installation (expected {MODEL_FILE}); "
            "reinstall m2f-edge, or make it with tools/train_demo_model.py")
    return MODEL_FILE


def resolve_model(model):
    """``"demo"`` -> the shipped model's path (a file named ``demo`` in the working folder wins); anything
    else unchanged. Raises FileNotFoundError when the demo model is asked for but not installed."""
    if isinstance(model, str) and model == MODEL_NAME and not os.path.isfile(model):
        return model_path()
    return model


def _random_color(rng: np.random.Generator) -> np.ndarray:
    # one distribution for objects and background: uniform in HSV-like space, any brightness
    return rng.uniform(20, 235, size=3)


def _low_frequency_noise(rng, height, width, amplitude) -> np.ndarray:
    cv2 = require_cv2("m2f_edge.demo")
    cells = int(rng.integers(2, 7))
    grid = rng.normal(0.0, amplitude, size=(cells, cells, 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _linear_gradient(rng, height, width, first, second) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return first[None, None, :] * (1 - t[..., None]) + second[None, None, :] * t[..., None]


def _texture(rng, height, width) -> np.ndarray:
    """A float32 H x W x 3 fill: solid, stripes, checkers or gradient, with mild colour noise."""
    first, second = _random_color(rng), _random_color(rng)
    kind = int(rng.integers(0, 4))
    size = min(height, width)
    if kind == 0:
        fill = np.broadcast_to(first, (height, width, 3)).astype(np.float32)
    elif kind == 1:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.03, 0.12) * size
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        on = (np.floor(phase) % 2 == 0)[..., None]
        fill = np.where(on, first, second).astype(np.float32)
    elif kind == 2:
        period = rng.uniform(0.04, 0.12) * size
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        on = ((np.floor(xs / period) + np.floor(ys / period)) % 2 == 0)[..., None]
        fill = np.where(on, first, second).astype(np.float32)
    else:
        fill = _linear_gradient(rng, height, width, first, second).astype(np.float32)
    return fill + _low_frequency_noise(rng, height, width, 10.0)


def _background(rng, height, width) -> np.ndarray:
    cv2 = require_cv2("m2f_edge.demo")
    image = _linear_gradient(rng, height, width, _random_color(rng), _random_color(rng)).astype(np.float32)
    image += _low_frequency_noise(rng, height, width, 25.0)
    size = min(height, width)
    # clutter: lines and arcs, thin and thick (thick lines are what a weak model mistakes for objects)
    for _ in range(int(rng.integers(2, 8))):
        color = tuple(float(c) for c in _random_color(rng))
        thickness = max(1, int(round(size * rng.choice([0.01, 0.02, 0.04, 0.07]))))
        if rng.random() < 0.5:
            p1 = tuple(int(v) for v in rng.integers(-size // 4, [width + size // 4, height + size // 4]))
            p2 = tuple(int(v) for v in rng.integers(-size // 4, [width + size // 4, height + size // 4]))
            cv2.line(image, p1, p2, color, thickness, cv2.LINE_AA)
        else:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(size * rng.uniform(0.1, 0.6)), int(size * rng.uniform(0.1, 0.6)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(40, 200)), color, thickness, cv2.LINE_AA)
    return image


def _shape_mask(rng, height, width) -> np.ndarray:
    """uint8 H x W mask (0/255) of one ellipse, polygon or rounded rectangle."""
    cv2 = require_cv2("m2f_edge.demo")
    size = min(height, width)
    mask = np.zeros((height, width), np.uint8)
    extent = size * rng.uniform(0.15, 0.5)
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    kind = int(rng.integers(0, 3))
    if kind == 0:
        axes = (max(2, int(extent / 2)), max(2, int(extent / 2 * rng.uniform(0.4, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_8)
    elif kind == 1:
        corners = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = extent / 2 * rng.uniform(0.55, 1.0, corners)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255, cv2.LINE_8)
    else:
        half_w, half_h = extent / 2, extent / 2 * rng.uniform(0.4, 1.0)
        radius = min(half_w, half_h) * rng.uniform(0.2, 0.6)
        box = np.zeros_like(mask)
        x0, y0, x1, y1 = (int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h))
        r = max(1, int(radius))
        cv2.rectangle(box, (x0 + r, y0), (x1 - r, y1), 255, -1)
        cv2.rectangle(box, (x0, y0 + r), (x1, y1 - r), 255, -1)
        for corner in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(box, corner, r, 255, -1, cv2.LINE_8)
        rotation = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(0, 180)), 1.0)
        mask = cv2.warpAffine(box, rotation, (width, height), flags=cv2.INTER_NEAREST)
    return mask


def _place_objects(rng, height, width, count) -> List[np.ndarray]:
    """Full (unoccluded) masks, drawn in order; each keeps enough of itself visible."""
    min_pixels = MIN_VISIBLE_PIXELS_FRACTION * height * width
    placed: List[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(12):
            candidate = _shape_mask(rng, height, width) > 0
            if candidate.sum() < min_pixels:
                continue
            trial = placed + [candidate]
            visible = _visible(trial)
            if all(v.sum() >= max(MIN_VISIBLE_FRACTION * full.sum(), min_pixels)
                   for v, full in zip(visible, trial)):
                placed = trial
                break
    return placed


def _visible(full_masks: List[np.ndarray]) -> List[np.ndarray]:
    covered = np.zeros_like(full_masks[0]) if full_masks else None
    visible = []
    for full in reversed(full_masks):
        visible.append(full & ~covered)
        covered = covered | full
    return visible[::-1]


def make_scene(rng: np.random.Generator, height: int = 128, width: int = 128) -> Scene:
    """One scene from ``rng`` (see the module doc)."""
    cv2 = require_cv2("m2f_edge.demo")
    image = _background(rng, height, width)
    full = _place_objects(rng, height, width, int(rng.integers(1, MAX_OBJECTS + 1)))
    for mask in full:
        fill = _texture(rng, height, width)
        image[mask] = fill[mask]
    image += rng.normal(0.0, 3.0, size=image.shape).astype(np.float32)
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks = np.stack(_visible(full)) if full else np.zeros((0, height, width), bool)
    return Scene(image=image, masks=masks, boxes=_boxes(masks))


def _boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), np.float64)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def scenes(n: int, seed: int = 0, size: Tuple[int, int] = (128, 128)) -> Iterator[Scene]:
    """``n`` scenes of ``size`` (height, width), the same for the same seed on every machine with the
    same numpy and OpenCV."""
    if int(n) < 0:
        raise ValueError(f"n: expected a count >= 0, got {n}")
    height, width = (int(v) for v in size)
    if height < 32 or width < 32:
        raise ValueError(f"size: expected (height, width) of at least 32x32, got {size!r}")
    rng = np.random.default_rng(seed)
    for _ in range(int(n)):
        yield make_scene(rng, height, width)


def write_coco(folder: str, n: int, seed: int = 0, size: Tuple[int, int] = (128, 128),
               annotations: Optional[str] = None) -> str:
    """Write ``n`` scenes as ``folder/scene_XXXX.png`` and a COCO instances file (one category,
    "object"; RLE masks from pycocotools' encoding) to ``annotations`` (default
    ``folder/annotations.json``). Returns the annotation file's path."""
    cv2 = require_cv2("m2f_edge.demo")
    from . import _core

    os.makedirs(folder, exist_ok=True)
    images, anns = [], []
    for index, scene in enumerate(scenes(n, seed, size)):
        name = f"scene_{index:04d}.png"
        if not cv2.imwrite(os.path.join(folder, name), scene.image):
            raise OSError(f"folder: could not write {os.path.join(folder, name)}")
        height, width = scene.image.shape[:2]
        images.append({"id": index + 1, "file_name": name, "height": height, "width": width})
        counts = _core.rle_encode(scene.masks.astype(np.uint8)) if len(scene.masks) else []
        for mask, box, count in zip(scene.masks, scene.boxes, counts):
            x0, y0, x1, y1 = (float(v) for v in box)
            rle = {"size": [height, width], "counts": count.decode("ascii")}
            anns.append({"id": len(anns) + 1, "image_id": index + 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle, "area": float(mask.sum()),
                         "bbox": [x0, y0, x1 - x0, y1 - y0]})
    path = annotations or os.path.join(folder, "annotations.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}, handle)
    return path
