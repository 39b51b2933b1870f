"""The wire format shared by the Triton model (m2f_edge.serving.triton_model) and the remote client.

A request carries one input, FRAMES: uint8 [b, H, W, 3] (b frames of one size; any H, W), and optional
request parameters (REQUEST_PARAMETERS). The response holds, per frame, the instances sorted by score,
padded to the largest count N in the request:

    num_instances  INT32 [b, 1]      how many of the N rows of each frame are real
    image_size     INT32 [b, 2]      (H, W) of the frame the masks are at
    boxes          FP32  [b, N, 4]   x1, y1, x2, y2 in pixels (x2 = last column + 1)
    scores         FP32  [b, N]
    labels         INT64 [b, N]      0-based model class
    areas          INT64 [b, N]      mask pixel counts
    query_indices  INT64 [b, N]      the model query each instance came from
    masks_rle      BYTES [b, N]      COCO compressed RLE "counts" (what pycocotools' encode gives; column-major)
    masks_bits     UINT8 [b, N, ceil(H*W/8)]  np.packbits of each row-major (H, W) mask (big bit order)

Only one of masks_rle / masks_bits is filled, the one the "masks" parameter asks for ("rle", the
default, "bits", or "none"); the other comes back with N = 0 columns.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

INPUT_NAME = "frames"
INFO_PARAMETER = "m2f_edge.info"  # model-config parameter: JSON with class names, input size, defaults

# name, Triton data type, dims after the batch dimension
OUTPUTS = (
    ("num_instances", "TYPE_INT32", (1,)),
    ("image_size", "TYPE_INT32", (2,)),
    ("boxes", "TYPE_FP32", (-1, 4)),
    ("scores", "TYPE_FP32", (-1,)),
    ("labels", "TYPE_INT64", (-1,)),
    ("areas", "TYPE_INT64", (-1,)),
    ("query_indices", "TYPE_INT64", (-1,)),
    ("masks_rle", "TYPE_STRING", (-1,)),
    ("masks_bits", "TYPE_UINT8", (-1, -1)),
)
OUTPUT_NAMES = tuple(name for name, _, _ in OUTPUTS)
MASK_FORMATS = ("rle", "bits", "none")
COLOR_ORDERS = ("bgr", "rgb")
REQUEST_PARAMETERS = {
    "color": "channel order of the frames: 'bgr' (OpenCV, the default) or 'rgb'",
    "score_threshold": "drop instances scoring below it (default: the server's)",
    "max_instances": "keep at most this many per frame (default: the server's)",
    "masks": "mask output: 'rle' (COCO RLE, default), 'bits' (bit-packed at frame size) or 'none'",
}


class RequestOptions:
    """The parameters of one request, checked; a bad value raises ValueError naming the parameter."""

    __slots__ = ("color", "score_threshold", "max_instances", "masks")

    def __init__(self, parameters: Optional[Mapping[str, object]], default_threshold: float,
                 default_max_instances: int):
        parameters = dict(parameters or {})
        unknown = sorted(set(parameters) - set(REQUEST_PARAMETERS))
        if unknown:
            raise ValueError("unknown request parameter(s) {}; known: {}".format(unknown, sorted(REQUEST_PARAMETERS)))
        self.color = _choice(parameters.get("color", "bgr"), "color", COLOR_ORDERS)
        self.masks = _choice(parameters.get("masks", "rle"), "masks", MASK_FORMATS)
        threshold = parameters.get("score_threshold", default_threshold)
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ValueError("score_threshold: expected a number in [0, 1], got {!r}".format(threshold)) from None
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("score_threshold: expected a number in [0, 1], got {!r}".format(threshold))
        self.score_threshold = threshold
        count = parameters.get("max_instances", default_max_instances)
        if isinstance(count, str) and count.strip().isdigit():
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("max_instances: expected a positive integer, got {!r}".format(count))
        self.max_instances = count

    def run_settings(self):
        """What the Segmenter must be set to for this request (requests sharing it run as one batch)."""
        return (self.score_threshold, self.max_instances)


def _choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError("{}: expected one of {}, got {!r}".format(name, list(choices), value))
    return str(value)


def encode_results(results: Sequence, mask_format: str, rle_encode) -> Dict[str, np.ndarray]:
    """The response arrays of one request from its frames' Instances (see the module docstring).

    rle_encode: masks (n,H,W) uint8 -> list of n bytes (m2f_edge._core.rle_encode).
    """
    count = len(results)
    widest = max((len(r) for r in results), default=0)
    out = {
        "num_instances": np.array([[len(r)] for r in results], np.int32).reshape(count, 1),
        "image_size": np.array([list(r.image_size) for r in results], np.int32).reshape(count, 2),
        "boxes": np.zeros((count, widest, 4), np.float32),
        "scores": np.zeros((count, widest), np.float32),
        "labels": np.zeros((count, widest), np.int64),
        "areas": np.zeros((count, widest), np.int64),
        "query_indices": np.full((count, widest), -1, np.int64),
    }
    rle_columns = widest if mask_format == "rle" else 0
    rle = np.full((count, rle_columns), b"", dtype=object)
    bits = None
    if mask_format == "bits":
        height, width = results[0].image_size if count else (0, 0)
        bits = np.zeros((count, widest, (height * width + 7) // 8), np.uint8)
    for i, found in enumerate(results):
        n = len(found)
        out["boxes"][i, :n] = found.boxes
        out["scores"][i, :n] = found.scores
        out["labels"][i, :n] = found.labels
        out["areas"][i, :n] = found.areas
        out["query_indices"][i, :n] = found.query_indices
        if not n:
            continue
        masks = found.masks.view(np.uint8)
        if mask_format == "rle":
            rle[i, :n] = rle_encode(np.ascontiguousarray(masks))
        elif mask_format == "bits":
            bits[i, :n] = np.packbits(masks.reshape(n, -1), axis=1)
    out["masks_rle"] = rle
    out["masks_bits"] = bits if bits is not None else np.zeros((count, 0, 0), np.uint8)
    return out


def rle_decode(counts: bytes, height: int, width: int) -> np.ndarray:
    """One COCO compressed-RLE string (as pycocotools writes it) -> (H, W) uint8 0/1 mask."""
    runs = _rle_string_counts(counts)
    total = height * width
    if sum(runs) != total:
        raise ValueError("masks_rle: the RLE covers {} pixels, the frame has {}x{} = {}".format(
            sum(runs), height, width, total))
    values = np.zeros(len(runs), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # COCO runs go down the columns


def _rle_string_counts(counts: bytes) -> List[int]:
    """COCO's LEB128-like text: 5 bits per character (offset 48), 0x20 = more follows, 0x10 of the last
    character = negative; from the third run on each value is a difference from the run two before."""
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    runs = []  # type: List[int]
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise ValueError("masks_rle: truncated RLE string")
            chunk = counts[position] - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_masks(outputs: Mapping[str, np.ndarray], index: int, count: int, height: int, width: int,
                 mask_format: str) -> np.ndarray:
    """The (count, H, W) uint8 masks of frame `index` of a response."""
    if mask_format == "none":
        return np.zeros((count, height, width), np.uint8)
    masks = np.empty((count, height, width), np.uint8)
    if mask_format == "bits":
        packed = outputs["masks_bits"][index, :count]
        if count:
            masks[:] = np.unpackbits(packed, axis=1, count=height * width).reshape(count, height, width)
        return masks
    for k in range(count):
        masks[k] = rle_decode(outputs["masks_rle"][index, k], height, width)
    return masks


def decode_results(outputs: Mapping[str, np.ndarray], mask_format: str, make_instances) -> List:
    """One Instances per frame of a response; make_instances(masks, scores, labels, boxes, areas,
    query_indices, image_size) builds each."""
    results = []
    for i in range(outputs["num_instances"].shape[0]):
        n = int(outputs["num_instances"][i, 0])
        height, width = (int(v) for v in outputs["image_size"][i])
        masks = decode_masks(outputs, i, n, height, width, mask_format)
        results.append(make_instances(masks, outputs["scores"][i, :n], outputs["labels"][i, :n],
                                      outputs["boxes"][i, :n], outputs["areas"][i, :n],
                                      outputs["query_indices"][i, :n], (height, width)))
    return results
