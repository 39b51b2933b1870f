"""Model tools: export Hugging Face Mask2Formers, rewrite ONNX graphs, evaluate on COCO data.

    portable  make_portable(model): TensorRT's deformable-attention plugin -> standard ONNX ops
    rawhead   cut_raw_head(model): TAO's in-graph post-processor cut off, raw head exposed
    export    export(source, output, head=...): Hugging Face -> ONNX (extra "export": torch, transformers)
    evaluate  evaluate(model, annotations, images): COCO AP, foreground mIoU, speed (extra "eval": pycocotools)

The CLI commands are `m2f-edge convert`, `m2f-edge export` and `m2f-edge eval`. Importing this package
imports neither torch nor pycocotools.
"""

from .portable import make_portable, needs_portable
from .rawhead import cut_raw_head

__all__ = ["make_portable", "needs_portable", "cut_raw_head"]
