"""Instances: the masks, scores, labels and boxes found in one frame."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core


class Instances:
    """Instance-segmentation results for one frame, sorted by score (highest first).

    Attributes (N instances, frame of H x W pixels):
        masks: (N,H,W) bool, at the frame's size. Results of the Segmenter and the GPU pipeline hold
            each mask cropped to its box (see crop()); the full (N,H,W) array is built on first use
            and cached (N x H x W bytes). Instances built from full masks hold those (no copy).
        scores: (N,) float32.
        labels: (N,) int64, 0-based model class index (TAO's binary model: 0 = "object").
        class_names: list of N names, one per instance (from the model's class-name list).
        boxes: (N,4) float32 xyxy in pixels; x2 = last column + 1, y2 = last row + 1 (detectron2).
        areas: (N,) int64 mask pixel counts.
        query_indices: (N,) int64, the model query each instance came from.
        instance_map: (H,W) int32, 0 = background, i+1 = instance i; where masks overlap the higher score
            wins. Computed on first use, from the crops.
        image_size: (H, W).
        nbytes: the bytes held (crops and arrays; full masks and instance map once built).

    mask(i) gives one full-size mask and crop(i) one cropped mask with its window, without building
    the others. Indexing with an int, a slice, a bool array of length N or an array of indices gives
    another Instances (an int gives one of length 1). Slices keep views of the masks; the other forms copy.
    """

    __slots__ = ("_masks_u8", "_crops", "_crop_offsets", "_windows", "scores", "labels", "boxes", "areas",
                 "query_indices", "image_size", "_class_table", "_category_ids", "_instance_map")

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
        if areas is None:
            areas = masks.reshape(n, -1).sum(axis=1, dtype=np.int64) if n else np.zeros(0, np.int64)
        if image_size is not None and tuple(int(v) for v in image_size) != tuple(masks.shape[1:]):
            raise ValueError("image_size {} differs from the masks' {}".format(tuple(image_size), masks.shape[1:]))
        self._set(n, scores, labels, boxes, areas, query_indices, masks.shape[1:], class_table, category_ids)
        self._masks_u8 = masks
        self._crops = self._crop_offsets = self._windows = None

    def _set(self, n, scores, labels, boxes, areas, query_indices, image_size, class_table, category_ids):
        self.scores = _vector(scores, np.float32, n, "scores")
        self.labels = _vector(labels, np.int64, n, "labels")
        boxes = np.asarray(boxes, np.float32)
        if boxes.shape != (n, 4):
            raise ValueError("boxes: expected shape ({}, 4), got {}".format(n, boxes.shape))
        self.boxes = boxes
        self.areas = _vector(areas, np.int64, n, "areas")
        self.query_indices = (_vector(query_indices, np.int64, n, "query_indices") if query_indices is not None
                              else np.full(n, -1, np.int64))
        self.image_size = tuple(int(v) for v in image_size)
        self._class_table = list(class_table) if class_table is not None else None
        self._category_ids = category_ids
        self._instance_map = None

    @classmethod
    def from_core(cls, result: Mapping[str, np.ndarray], image_size: Tuple[int, int],
                  class_table: Optional[Sequence[str]] = None, category_ids=None) -> "Instances":
        """Wrap the dict returned by _core.postprocess_deployable / postprocess_raw or the GPU pipeline
        (crops, crop_offsets, boxes, ...; no copies). The one way results become Instances."""
        return cls._from_crops(result["crops"], result["crop_offsets"], result["scores"], result["labels"],
                               result["boxes"], result["areas"], result.get("query_indices"), image_size,
                               class_table, category_ids)

    @classmethod
    def _from_crops(cls, crops, crop_offsets, scores, labels, boxes, areas, query_indices, image_size, class_table,
                    category_ids, masks=None) -> "Instances":
        self = cls.__new__(cls)
        crop_offsets = np.asarray(crop_offsets, np.int64)
        n = crop_offsets.shape[0] - 1
        self._set(n, scores, labels, boxes, areas, query_indices, image_size, class_table, category_ids)
        self._crops = np.asarray(crops).view(np.uint8)
        self._crop_offsets = crop_offsets
        self._windows = self.boxes.astype(np.int64)
        if n and not (np.array_equal(self._windows, self.boxes)
                      and np.array_equal(np.diff(crop_offsets), _window_areas(self._windows))):
            raise ValueError("crops: boxes must be the integer crop windows and crop_offsets must step by their areas")
        self._masks_u8 = masks
        return self

    # --- views ------------------------------------------------------------------------------------------------

    @property
    def masks(self) -> np.ndarray:
        """(N,H,W) bool; built from the crops on first use (N x H x W bytes) and cached."""
        if self._masks_u8 is None:
            self._masks_u8 = _core.expand_crops(*self._crop_args())
        return self._masks_u8.view(np.bool_)

    def mask(self, i: int) -> np.ndarray:
        """Instance i's full-size (H,W) bool mask: H x W bytes, without building the others."""
        i = self._index(i)
        if self._masks_u8 is not None:
            return self._masks_u8[i].view(np.bool_)
        out = np.zeros(self.image_size, np.bool_)
        crop, (x1, y1, x2, y2) = self.crop(i)
        out[y1:y2, x1:x2] = crop
        return out

    def crop(self, i: int) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
        """Instance i's mask inside its box, as (crop (h,w) bool, (x1, y1, x2, y2) integer window): the
        frame mask is crop at rows y1:y2, columns x1:x2 and 0 elsewhere. A view, no copy, for results of
        the Segmenter; for Instances built from full masks, a view of the full mask inside its box."""
        i = self._index(i)
        if self._crops is not None:
            x1, y1, x2, y2 = (int(v) for v in self._windows[i])
            piece = self._crops[self._crop_offsets[i]:self._crop_offsets[i + 1]]
            return piece.reshape(y2 - y1, x2 - x1).view(np.bool_), (x1, y1, x2, y2)
        height, width = self.image_size
        x1, y1, x2, y2 = self.boxes[i]
        x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        x2, y2 = min(width, max(x1, int(np.ceil(x2)))), min(height, max(y1, int(np.ceil(y2))))
        return self._masks_u8[i, y1:y2, x1:x2].view(np.bool_), (x1, y1, x2, y2)

    @property
    def nbytes(self) -> int:
        """Bytes this result holds: the crops, the per-instance arrays, and the full masks and instance map
        once they were built."""
        arrays = [self._crops, self._crop_offsets, self._masks_u8, self._instance_map, self.scores, self.labels,
                  self.boxes, self.areas, self.query_indices]
        return int(sum(a.nbytes for a in arrays if a is not None))

    def _index(self, i) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)):
            raise TypeError("instance index: expected an int, got {}".format(type(i).__name__))
        if not -n <= int(i) < n:
            raise IndexError("instance index {} out of range for {} instances".format(int(i), n))
        return int(i) % n

    def _crop_args(self):
        return self._crops, self._crop_offsets, self.boxes, self.image_size


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
            if not len(self):
                self._instance_map = np.zeros(self.image_size, np.int32)
            elif self._crops is not None:
                self._instance_map = _core.instance_map_crops(*self._crop_args())
            else:
                self._instance_map = _core.instance_map(self._masks_u8)
        return self._instance_map

    def __len__(self) -> int:
        return int(self.scores.shape[0])

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
        if self._crops is None:
            return Instances(self._masks_u8[index], self.scores[index], self.labels[index], self.boxes[index],
                             self.areas[index], image_size=self.image_size, class_table=self._class_table,
                             category_ids=self._category_ids, query_indices=self.query_indices[index])
        offsets = self._crop_offsets
        if isinstance(index, slice) and index.step in (None, 1):
            first, stop, _ = index.indices(n)
            stop = max(first, stop)
            crops = self._crops[offsets[first]:offsets[stop]]  # a view
            picked_offsets = offsets[first:stop + 1] - offsets[first]
        else:
            chosen = np.arange(n)[index]
            sizes = offsets[chosen + 1] - offsets[chosen]
            picked_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            crops = (np.concatenate([self._crops[offsets[i]:offsets[i + 1]] for i in chosen]) if len(chosen)
                     else np.zeros(0, np.uint8))
        masks = self._masks_u8[index] if self._masks_u8 is not None else None
        return Instances._from_crops(crops, picked_offsets, self.scores[index], self.labels[index], self.boxes[index],
                                     self.areas[index], self.query_indices[index], self.image_size,
                                     self._class_table, self._category_ids, masks=masks)

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
        if self._crops is not None:
            counts = _core.rle_encode_crops(*self._crop_args())
        else:
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


def _window_areas(windows: np.ndarray) -> np.ndarray:
    return (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
