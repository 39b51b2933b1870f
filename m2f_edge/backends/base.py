"""The interface every inference backend implements, and the model-contract checks they share."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DEPLOYABLE_OUTPUTS = ("pred_masks", "pred_scores", "pred_classes")
RAW_OUTPUTS = ("pred_logits", "pred_masks")
# Hugging Face's Mask2FormerForUniversalSegmentation names for the raw head, accepted as aliases.
OUTPUT_ALIASES = {"class_queries_logits": "pred_logits", "masks_queries_logits": "pred_masks"}


class UnsupportedModelError(ValueError):
    """The model's inputs or outputs do not match a Mask2Former contract this SDK runs."""


class Backend:
    """One loaded model that turns an input tensor (B,3,H,W) into named output arrays.

    Attributes every backend sets:
        name: short backend name ("onnxruntime", "tensorrt").
        input_name: the model's single input tensor name.
        input_shape: (B, 3, H, W); B is None when the batch dimension is dynamic.
        input_dtype: numpy dtype the input tensor must have (float32 or float16).
        output_names: the model's output names, in model order.
        output_shapes: {output name: shape tuple, None for dynamic dimensions} where the model says.
        batch_range: (min, max) batch sizes the model accepts; max None = unbounded.
        metadata: dict of string key/values stored in the model (may be empty).
        runs_gpu_pipeline: True where m2f_edge.gpu.GpuPipeline can drive this backend (frame ->
            Instances on the GPU in one call); Segmenter.run then uses that path.
    """

    name = "backend"
    runs_gpu_pipeline = False
    input_name = ""
    input_shape = (None, 3, 0, 0)  # type: Tuple[Optional[int], int, int, int]
    input_dtype = np.dtype(np.float32)
    output_names = []  # type: List[str]
    output_shapes = {}  # type: Dict[str, Tuple[Optional[int], ...]]
    batch_range = (1, None)  # type: Tuple[int, Optional[int]]
    metadata = {}  # type: Dict[str, str]

    def run(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the model on a (B,3,H,W) tensor; returns {output name: array with leading batch B}."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model's resources; the backend cannot run afterwards."""

    def describe(self) -> str:
        """One line saying what runs the model (shown by `m2f-edge info`)."""
        return self.name

    def __repr__(self) -> str:
        return "{}(input {}={} {}, outputs={})".format(
            type(self).__name__, self.input_name, tuple(self.input_shape), np.dtype(self.input_dtype).name,
            list(self.output_names))


def canonical_output_names(names: Sequence[str]) -> Dict[str, str]:
    """Map each contract name (pred_masks, ...) to the model's own output name."""
    mapping = {}
    for name in names:
        mapping.setdefault(OUTPUT_ALIASES.get(name, name), name)
    return mapping


def detect_contract(output_names: Sequence[str]) -> str:
    """'deployable' (post-processing in the graph) or 'raw' (class and mask logits) from the outputs."""
    found = canonical_output_names(output_names)
    if all(n in found for n in DEPLOYABLE_OUTPUTS):
        return "deployable"
    if all(n in found for n in RAW_OUTPUTS):
        return "raw"
    raise UnsupportedModelError(
        "the model's outputs {} match no Mask2Former contract: expected either {} (TAO deployable) or {} "
        "(raw head; Hugging Face's class_queries_logits/masks_queries_logits are accepted too)".format(
            list(output_names), list(DEPLOYABLE_OUTPUTS), list(RAW_OUTPUTS)))


def check_input_shape(name: str, shape: Sequence, source: str) -> Tuple[Optional[int], int, int, int]:
    """Validate a model input shape as NCHW with 3 channels and a fixed H, W; returns it with B None if dynamic."""
    dims = list(shape)

    def fixed(d):
        return isinstance(d, (int, np.integer)) and int(d) > 0

    if len(dims) != 4 or not fixed(dims[1]) or int(dims[1]) != 3:
        raise UnsupportedModelError(
            "{}: input '{}' has shape {}; expected a 4-D NCHW image tensor with 3 channels (B,3,H,W)".format(
                source, name, dims))
    if not (fixed(dims[2]) and fixed(dims[3])):
        raise UnsupportedModelError(
            "{}: input '{}' has shape {} with a dynamic height or width; m2f_edge needs a fixed network "
            "size (export the model with a static H and W)".format(source, name, dims))
    batch = int(dims[0]) if fixed(dims[0]) else None
    return (batch, 3, int(dims[2]), int(dims[3]))
