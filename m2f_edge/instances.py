"""Instances: the masks, scores, labels and boxes found in one frame."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core


class Instances:
    """Instance-segmentation results for one frame, sorted by score (highest first).

    Attributes (N instances, frame of H x W pixels):
        masks: (N,H,W) bool, at the frame's size. A view of the core's uint8 0/1 masks (no copy).
        scores: (N,) float32.
        labels: (N,) int64, 0-based model class index (TAO's binary model: 0 = "object").
        class_names: list of N names, one per instance (from the model's class-name list).
        boxes: (N,4) float32 xyxy in pixels; x2 = last column + 1, y2 = last row + 1 (detectron2).
        areas: (N,) int64 mask pixel counts.
        query_indices: (N,) int64, the model query each instance came from.
        instance_map: (H,W) int32, 0 = background, i+1 = instance i; where masks overlap the higher score
            wins. Computed on first use.
        image_size: (H, W).

    Indexing with an int, a slice, a bool array of length N or an array of indices gives another
    Instances (an int gives one of length 1). Slices keep views of the masks; the other forms copy.
    """

    __slots__ = ("_masks_u8", "scores", "labels", "boxes", "areas", "query_indices", "image_size", "_class_table",
                 "_category_ids", "_instance_map")

    def __init__(self, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                 areas: Optional[np.ndarray] = None, *, image_size: Optional[Tuple[int, int]] = None,
                 class_table: Optional[Sequence[str]] = None, category_ids=None,
                 query_indices: Optional[np.ndarray] = None):
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError("masks: expected (N,H,W), got shape {}".format(masks.shape))
        if masks.dtype == np.bool_:
            masks = masks.view(np.uint8)
        elif masks.dtype != np.uint8:
            raise TypeError("masks: expected uint8 0/1 or bool, got {}".format(masks.dtype))
        n = masks.shape[0]
        self._masks_u8 = masks
        self.scores = _vector(scores, np.float32, n, "scores")
        self.labels = _vector(labels, np.int64, n, "labels")
        boxes = np.asarray(boxes, np.float32)
        if boxes.shape != (n, 4):
            raise ValueError("boxes: expected shape ({}, 4), got {}".format(n, boxes.shape))
        self.boxes = boxes
        if areas is None:
            areas = masks.reshape(n, -1).sum(axis=1, dtype=np.int64) if n else np.zeros(0, np.int64)
        self.areas = _vector(areas, np.int64, n, "areas")
        self.query_indices = (_vector(query_indices, np.int64, n, "query_indices") if query_indices is not None
                              else np.full(n, -1, np.int64))
        self.image_size = tuple(int(v) for v in image_size) if image_size is not None else tuple(masks.shape[1:])
        if self.image_size != tuple(masks.shape[1:]):
            raise ValueError("image_size {} differs from the masks' {}".format(self.image_size, masks.shape[1:]))
        self._class_table = list(class_table) if class_table is not None else None
        self._category_ids = category_ids
        self._instance_map = None

    @classmethod
    def from_core(cls, result: Mapping[str, np.ndarray], image_size: Tuple[int, int],
                  class_table: Optional[Sequence[str]] = None, category_ids=None) -> "Instances":
        """Wrap the dict returned by _core.postprocess_deployable / postprocess_raw (no copies)."""
        return cls(result["masks"], result["scores"], result["labels"], result["boxes"], result["areas"],
                   image_size=image_size, class_table=class_table, category_ids=category_ids,
                   query_indices=result.get("query_indices"))

    # --- views ------------------------------------------------------------------------------------------------

    @property
    def masks(self) -> np.ndarray:
        return self._masks_u8.view(np.bool_)

    @property
    def class_names(self) -> List[str]:
        return [self.class_name(int(label)) for label in self.labels]

    def class_name(self, label: int) -> str:
        """The name of a model class index (falls back to "class_<k>" where the model has no name for it)."""
        table = self._class_table
        if table is not None and 0 <= label < len(table):
            return table[label]
        return "class_{}".format(label)

    @property
    def instance_map(self) -> np.ndarray:
        if self._instance_map is None:
            if len(self):
                self._instance_map = _core.instance_map(self._masks_u8)
            else:
                self._instance_map = np.zeros(self.image_size, np.int32)
        return self._instance_map

    def __len__(self) -> int:
        return int(self._masks_u8.shape[0])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index) -> "Instances":
        n = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError("instance index {} out of range for {} instances".format(i, n))
            index = slice(i % n, i % n + 1)
        elif isinstance(index, slice):
            pass
        else:
            array = np.asarray(index)
            if array.dtype == np.bool_:
                if array.shape != (n,):
                    raise IndexError("boolean index must have shape ({},), got {}".format(n, array.shape))
            elif np.issubdtype(array.dtype, np.integer) or (array.size == 0 and array.ndim == 1):
                array = array.astype(np.int64).reshape(-1)
                if array.size and (array.min() < -n or array.max() >= n):
                    raise IndexError("instance indices out of range for {} instances".format(n))
            else:
                raise IndexError("index instances with an int, a slice, a bool array or an integer array; got {}".format(
                    type(index).__name__ if not isinstance(index, np.ndarray) else index.dtype))
            index = array
        picked = Instances(self._masks_u8[index], self.scores[index], self.labels[index], self.boxes[index],
                           self.areas[index], image_size=self.image_size, class_table=self._class_table,
                           category_ids=self._category_ids, query_indices=self.query_indices[index])
        return picked

    def filter(self, min_score: Optional[float] = None, labels=None) -> "Instances":
        """The instances scoring at least min_score and whose label is in `labels` (ints or class names)."""
        keep = np.ones(len(self), bool)
        if min_score is not None:
            keep &= self.scores >= float(min_score)
        if labels is not None:
            if isinstance(labels, (str, int, np.integer)):
                labels = [labels]
            wanted = set()
            for label in labels:
                if isinstance(label, str):
                    matches = [k for k in range(len(self._class_table or [])) if self._class_table[k] == label]
                    if not matches and label.startswith("class_") and label[6:].isdigit():
                        matches = [int(label[6:])]
                    if not matches:
                        raise ValueError("labels: unknown class name {!r} (known: {})".format(label, self._class_table))
                    wanted.update(matches)
                else:
                    wanted.add(int(label))
            keep &= np.isin(self.labels, sorted(wanted))
        return self[keep]

    # --- output -----------------------------------------------------------------------------------------------

    def category_id(self, label: int, category_ids=None) -> int:
        """The dataset category id of a model class index: from `category_ids` (sequence indexed by label, or
        mapping label -> id), else the model's label map, else label + 1 (TAO's convention)."""
        table = category_ids if category_ids is not None else self._category_ids
        if table is None:
            return int(label) + 1
        if isinstance(table, Mapping):
            if label in table:
                return int(table[label])
            raise KeyError("category_ids has no entry for label {}".format(label))
        if 0 <= label < len(table):
            return int(table[label])
        raise IndexError("category_ids has {} entries; label {} has none".format(len(table), label))

    def to_coco(self, image_id: Any, category_ids=None) -> List[Dict[str, Any]]:
        """COCO result dicts: image_id, category_id, segmentation (RLE with "size" [H,W] and "counts" str, as
        pycocotools writes it), bbox [x, y, w, h], score. category_ids: see category_id()."""
        if not len(self):
            return []
        counts = _core.rle_encode(self._masks_u8)
        height, width = self.image_size
        results = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            results.append({
                "image_id": image_id,
                "category_id": self.category_id(int(self.labels[i]), category_ids),
                "segmentation": {"size": [int(height), int(width)], "counts": counts[i].decode("ascii")},
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(self.scores[i]),
            })
        return results

    def draw(self, frame: np.ndarray, **kwargs) -> np.ndarray:
        """Draw the masks onto `frame` (H,W,3 uint8, in place); see m2f_edge.drawing.draw_instances."""
        try:
            from .drawing import draw_instances
        except ImportError as exc:
            raise ImportError("Instances.draw needs m2f_edge.drawing, which is missing from this installation "
                              "({})".format(exc)) from exc
        return draw_instances(frame, self, **kwargs)

    def __repr__(self) -> str:
        head = "Instances({} in {}x{}".format(len(self), *self.image_size)
        shown = []
        for i in range(min(len(self), 5)):
            x1, y1, x2, y2 = (int(round(float(v))) for v in self.boxes[i])
            shown.append("{} {:.2f} [{},{},{},{}] area={}".format(self.class_name(int(self.labels[i])),
                                                                   float(self.scores[i]), x1, y1, x2, y2,
                                                                   int(self.areas[i])))
        if len(self) > 5:
            shown.append("... {} more".format(len(self) - 5))
        return head + (": " + "; ".join(shown) if shown else "") + ")"


def _vector(values, dtype, n: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype != dtype:
        array = array.astype(dtype)
    if array.shape != (n,):
        raise ValueError("{}: expected shape ({},), got {}".format(name, n, array.shape))
    return array


def empty_instances(image_size: Tuple[int, int], class_table=None, category_ids=None) -> Instances:
    h, w = image_size
    return Instances(np.zeros((0, h, w), np.uint8), np.zeros(0, np.float32), np.zeros(0, np.int64),
                     np.zeros((0, 4), np.float32), np.zeros(0, np.int64), image_size=image_size,
                     class_table=class_table, category_ids=category_ids)

