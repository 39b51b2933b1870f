"""Facts about NVIDIA TAO's Mask2Former that the engine builder and the FP16 converter share.

TAO's own engine builder keeps these layers in FP32 in an FP16 engine; m2f_edge does the same, by
precision constraints (TensorRT < 11, m2f_edge.models.tensorrt_build) or by keeping them float32 in the
FP16 conversion of the ONNX (m2f_edge.models.fp16, for strongly typed TensorRT 11).
"""

# Layers TAO builds in FP32 even in an FP16 engine (its mask2former engine builder): matched by prefix.
TAO_FP32_LAYERS = (
    "/sem_seg_head/predictor/transformer_cross_attention_layers",
    "/post_processor/Div",
    "/post_processor/ReduceSum",
    "/post_processor/Add",
)

