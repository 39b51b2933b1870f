"""Export a Hugging Face ``Mask2FormerForUniversalSegmentation`` to ONNX in either m2f_edge contract.

``head="deployable"`` reproduces TAO's in-graph instance post-processor (node names under
``/post_processor/`` as in TAO's export): outputs ``pred_masks`` float 0/1 [B,K,H,W] at network
size, ``pred_scores`` float [B,K], ``pred_classes`` int64 [B,K] (K = ``topk``, not sorted).
``head="raw"`` stops before it: ``pred_logits`` [B,Q,C+1] and mask logits ``pred_masks``
[B,Q,H/4,W/4], which the core post-processes without ever writing K full-size float masks.

Hugging Face (like detectron2) puts the "no object" class LAST; TAO puts it first. The exported
model records its index in the metadata key ``m2f_edge.no_object_index`` (-1 = last) and the class
names from the checkpoint's ``id2label`` in ``m2f_edge.class_names`` (JSON list).

Needs the ``export`` extra (torch, transformers). Import of this module does not import torch.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

_log = logging.getLogger("m2f_edge.models.export")

HEADS = ("deployable", "raw")
PRESETS = ("tao-swin-t", "tiny")
DEFAULT_INPUT_SIZE = (800, 800)  # NGC's mask2former_swint_deployable_v1.0
SIZE_MULTIPLE = 32  # Swin downsamples by 32

METADATA_NO_OBJECT = "m2f_edge.no_object_index"
METADATA_CLASS_NAMES = "m2f_edge.class_names"
METADATA_HEAD = "m2f_edge.head"
METADATA_SOURCE = "m2f_edge.source"
METADATA_TOPK = "m2f_edge.topk"


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            "m2f-edge export needs PyTorch and Hugging Face transformers: "
            "pip install 'm2f-edge[export]' (or: pip install torch transformers)") from exc
    return torch, transformers


def preset_config(name: str = "tao-swin-t", num_labels: int = 1, num_queries: int = 100):
    """A ``Mask2FormerConfig`` with a Swin backbone.

    ``tao-swin-t``: TAO's instance model (Swin-T 96/[2,2,6,2]/[3,6,12,24], window 7, 100 queries,
    256-d pixel decoder with 6 deformable encoder layers, 9+1 decoder layers, 1 class) for timing
    work with random weights. ``tiny``: a few-layer network for tests and smoke runs.
    """
    _, transformers = _require_torch()
    from transformers import Mask2FormerConfig, SwinConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if name == "tao-swin-t":
        backbone = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                              drop_path_rate=0.3, out_features=stages)
        config = Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=num_queries,
                                   hidden_dim=256, feature_size=256, mask_feature_size=256, encoder_layers=6,
                                   decoder_layers=10, encoder_feedforward_dim=1024, dim_feedforward=2048,
                                   num_attention_heads=8)
    elif name == "tiny":
        backbone = SwinConfig(embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                              out_features=stages)
        config = Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=num_queries,
                                   hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_layers=1,
                                   decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64,
                                   num_attention_heads=2)
    else:
        raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    config.id2label = {i: ("object" if num_labels == 1 else f"class_{i}") for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    return config


def load_model(source: Union[str, os.PathLike, Any], *, num_labels: int = 1, num_queries: int = 100,
               seed: int = 0):
    """An eval-mode ``Mask2FormerForUniversalSegmentation`` from a checkpoint folder (or hub id), a
    ``config.json`` file, a preset name (random weights, seeded) or a model / config object."""
    torch, transformers = _require_torch()
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    if isinstance(source, Mask2FormerForUniversalSegmentation):
        return source.eval()
    if isinstance(source, Mask2FormerConfig):
        torch.manual_seed(seed)
        return Mask2FormerForUniversalSegmentation(source).eval()
    text = os.fspath(source)
    if text in PRESETS:
        torch.manual_seed(seed)
        return Mask2FormerForUniversalSegmentation(preset_config(text, num_labels, num_queries)).eval()
    if os.path.isfile(text):
        if not text.endswith(".json"):
            raise ValueError(f"model: a file must be a Hugging Face config.json; got {text!r} "
                             "(pass the checkpoint folder for trained weights)")
        config = Mask2FormerConfig.from_json_file(text)
        torch.manual_seed(seed)
        _log.warning("%s is a config only: the exported network has RANDOM weights", text)
        return Mask2FormerForUniversalSegmentation(config).eval()
    if os.path.isdir(text) and not os.path.isfile(os.path.join(text, "config.json")):
        raise FileNotFoundError(f"model: {text!r} is a folder without config.json; expected a Hugging Face "
                                "Mask2Former checkpoint folder")
    return Mask2FormerForUniversalSegmentation.from_pretrained(text).eval()


def class_names_of(model) -> List[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    count = int(model.config.num_labels)
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(count)]


def _build_wrappers(torch):
    nn = torch.nn
    functional = torch.nn.functional

    class RawNetwork(nn.Module):
        """pixel values -> (class logits of the last decoder layer, its low-resolution mask logits)."""

        def __init__(self, model):
            super().__init__()
            self.model = model.model
            self.class_predictor = model.class_predictor

        def forward(self, inputs):
            out = self.model(pixel_values=inputs, output_hidden_states=True, return_dict=True)
            logits = self.class_predictor(out.transformer_decoder_intermediate_states[-1].transpose(0, 1))
            return logits, out.masks_queries_logits[-1]

    class InstancePostProcessor(nn.Module):
        """TAO's batched instance inference, with the no-object slot where the source model puts it."""

        def __init__(self, num_classes, topk, height, width, no_object_last):
            super().__init__()
            self.num_classes = num_classes
            self.topk = topk
            self.size = (height, width)
            self.no_object_last = no_object_last

        def forward(self, pred_logits, mask_logits):
            probs = functional.softmax(pred_logits, dim=-1)
            probs = probs[:, :, :-1] if self.no_object_last else probs[:, :, 1:]
            scores, flat_index = probs.flatten(1, 2).topk(self.topk, dim=1, sorted=False)  # [B,K]
            classes = flat_index % self.num_classes
            queries = flat_index // self.num_classes
            # gather the chosen queries' low-resolution logits first: upsampling is per query, so
            # this equals TAO's upsample-then-select and costs K instead of Q resizes
            low = torch.gather(mask_logits, 1, queries[:, :, None, None].expand(
                -1, -1, mask_logits.shape[2], mask_logits.shape[3]))
            logits = functional.interpolate(low, size=self.size, mode="bilinear", align_corners=False)
            masks = (logits > 0).float()
            flat_masks = masks.flatten(2)
            mask_scores = (logits.sigmoid().flatten(2) * flat_masks).sum(2) / (flat_masks.sum(-1) + 1e-6)
            return masks, scores * mask_scores, classes.to(torch.int64)

    class Deployable(nn.Module):
        def __init__(self, network, post_processor):
            super().__init__()
            self.network = network
            self.post_processor = post_processor

        def forward(self, inputs):
            logits, mask_logits = self.network(inputs)
            return self.post_processor(logits, mask_logits)

    return RawNetwork, InstancePostProcessor, Deployable


def _plugin_attention(torch, original):
    """A drop-in for transformers' multi_scale_deformable_attention that exports as TensorRT's
    MultiscaleDeformableAttnPlugin_TRT node (domain "nvidia", like TAO's GPU export) and computes the
    original function in PyTorch."""

    class PluginAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value, sampling_locations, attention_weights, spatial_shapes):
            out = original(value, list(spatial_shapes), sampling_locations, attention_weights)
            return out.view(value.shape[0], sampling_locations.shape[1], value.shape[2], value.shape[3])

        @staticmethod
        def symbolic(g, value, sampling_locations, attention_weights, spatial_shapes):
            shapes = torch.tensor([list(s) for s in spatial_shapes], dtype=torch.int32)
            sizes = [int(h) * int(w) for h, w in spatial_shapes]
            starts = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], dtype=torch.int32)
            out = g.op("nvidia::" + "MultiscaleDeformableAttnPlugin_TRT", value,
                       g.op("Constant", value_t=shapes), g.op("Constant", value_t=starts),
                       sampling_locations, attention_weights)
            # the exporter cannot infer a custom op's output: state it (batch, queries, heads, channels per
            # head), batch left symbolic so that a dynamic-batch export stays dynamic
            value_sizes, location_sizes = value.type().varyingSizes(), sampling_locations.type().varyingSizes()
            if value_sizes and location_sizes:
                out.setType(value.type().with_sizes([None, location_sizes[1], value_sizes[2], value_sizes[3]]))
            return out

    def attention(value, value_spatial_shapes, sampling_locations, attention_weights):
        spatial = tuple((int(h), int(w)) for h, w in value_spatial_shapes)
        out = PluginAttention.apply(value, sampling_locations, attention_weights, spatial)
        return out.flatten(2)

    return attention


def _float_reference_points(torch):
    """transformers' encoder reference points, built with arange instead of linspace: the ONNX
    exporter computes linspace in float64, and with a fixed batch the float64 reaches GridSample,
    which ONNX Runtime's CPU provider has no float64 kernel for. Same values."""

    def get_reference_points(spatial_shapes_list, valid_ratios, device):
        points = []
        for level, (height, width) in enumerate(spatial_shapes_list):
            ys = torch.arange(int(height), dtype=valid_ratios.dtype, device=device) + 0.5
            xs = torch.arange(int(width), dtype=valid_ratios.dtype, device=device) + 0.5
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
            points.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(points, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    return staticmethod(get_reference_points)


class _export_patches:
    """Context manager patching transformers' Mask2Former for export (restored on exit): float32
    reference points always; the plugin-emitting deformable attention when asked."""

    def __init__(self, tensorrt_plugin: bool):
        self.tensorrt_plugin = tensorrt_plugin
        self.restore = []

    def __enter__(self):
        torch, _ = _require_torch()
        from transformers.models.mask2former import modeling_mask2former as module
        encoder = module.Mask2FormerPixelDecoderEncoderOnly
        self.restore.append((encoder, "get_reference_points", encoder.__dict__["get_reference_points"]))
        encoder.get_reference_points = _float_reference_points(torch)
        if self.tensorrt_plugin:
            original = module.multi_scale_deformable_attention
            self.restore.append((module, "multi_scale_deformable_attention", original))
            module.multi_scale_deformable_attention = _plugin_attention(torch, original)
        return self

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.restore):
            setattr(owner, name, value)
        self.restore = []
        return False


def build_export_module(model, head: str = "deployable", input_size: Tuple[int, int] = DEFAULT_INPUT_SIZE,
                        topk: Optional[int] = None):
    """The torch module whose ONNX export gives the chosen contract (exposed for tests and tools)."""
    torch, _ = _require_torch()
    if head not in HEADS:
        raise ValueError(f"head: expected one of {', '.join(HEADS)}, got {head!r}")
    RawNetwork, InstancePostProcessor, Deployable = _build_wrappers(torch)
    network = RawNetwork(model).eval()
    if head == "raw":
        return network
    num_classes = int(model.config.num_labels)
    num_queries = int(model.config.num_queries)
    limit = num_queries * num_classes
    k = min(100, limit) if topk is None else int(topk)
    if k < 1 or k > limit:
        raise ValueError(f"topk: expected 1..{limit} (queries x classes), got {topk}")
    post = InstancePostProcessor(num_classes, k, input_size[0], input_size[1], no_object_last=True)
    return Deployable(network, post).eval()


def _check_size(input_size) -> Tuple[int, int]:
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size: expected (height, width), got {input_size!r}") from None
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"input_size: height and width must be positive multiples of {SIZE_MULTIPLE}, "
                         f"got {height}x{width}")
    return height, width


def export(source, output: Union[str, os.PathLike], *, head: str = "deployable",
           input_size: Sequence[int] = DEFAULT_INPUT_SIZE, batch: Optional[int] = 1,
           topk: Optional[int] = None, opset: int = 17, class_names: Optional[Sequence[str]] = None,
           num_labels: int = 1, num_queries: int = 100, seed: int = 0,
           tensorrt_plugin: bool = False) -> Dict[str, Any]:
    """Export ``source`` (see :func:`load_model`) to ``output`` (.onnx) and return a summary dict.

    batch: a fixed batch size, or None / 0 / -1 for a dynamic batch dimension named "batch".
    topk: K of the deployable head (default min(100, queries x classes), TAO's test_topk_per_image).
    class_names: override the checkpoint's id2label names (length must equal its num_labels).
    tensorrt_plugin: export the pixel decoder's deformable attention as TensorRT's
    MultiscaleDeformableAttnPlugin_TRT node, as TAO's GPU export does (TensorRT runs its fused plugin;
    ONNX Runtime needs `m2f-edge convert --portable` or the in-memory rewrite on load).
    """
    torch, _ = _require_torch()
    import onnx

    if head not in HEADS:
        raise ValueError(f"head: expected one of {', '.join(HEADS)}, got {head!r}")
    height, width = _check_size(input_size)
    dynamic = batch is None or int(batch) <= 0
    trace_batch = 1 if dynamic else int(batch)
    if opset < 16:
        raise ValueError(f"opset: expected >= 16 (GridSample in the pixel decoder), got {opset}")

    started = time.perf_counter()
    model = load_model(source, num_labels=num_labels, num_queries=num_queries, seed=seed)
    names = list(class_names) if class_names is not None else class_names_of(model)
    if len(names) != int(model.config.num_labels):
        raise ValueError(f"class_names: expected {model.config.num_labels} names (the model's num_labels), "
                         f"got {len(names)}")
    module = build_export_module(model, head, (height, width), topk)
    output_names = ["pred_logits", "pred_masks"] if head == "raw" else ["pred_masks", "pred_scores", "pred_classes"]
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {name: {0: "batch"} for name in ["inputs"] + output_names}
    dummy = torch.zeros(trace_batch, 3, height, width)
    kwargs = dict(input_names=["inputs"], output_names=output_names, opset_version=opset,
                  dynamic_axes=dynamic_axes, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, stable node names
    output = os.fspath(output)
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    import warnings
    if tensorrt_plugin:
        kwargs["custom_opsets"] = {"nvidia": 1}
    with torch.no_grad(), warnings.catch_warnings(), _export_patches(tensorrt_plugin):
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on fixed shapes
        torch.onnx.export(module, (dummy,), output, **kwargs)

    onnx_model = onnx.load(output)
    metadata = {
        METADATA_NO_OBJECT: "-1",
        METADATA_CLASS_NAMES: json.dumps(names),
        METADATA_HEAD: head,
        METADATA_SOURCE: "huggingface:" + type(model).__name__,
    }
    if head == "deployable":
        metadata[METADATA_TOPK] = str(module.post_processor.topk)
    else:  # what the core's raw-head post-processing should keep: TAO's test_topk_per_image, at most Q*C
        limit = int(model.config.num_queries) * int(model.config.num_labels)
        metadata[METADATA_TOPK] = str(min(100, limit) if topk is None else min(int(topk), limit))
    set_metadata(onnx_model, metadata)
    onnx_model.producer_name = "m2f_edge"
    batch_dim = "batch" if dynamic else trace_batch
    queries, labels = int(model.config.num_queries), int(model.config.num_labels)
    if head == "raw":
        static = {"pred_logits": [batch_dim, queries, labels + 1],
                  "pred_masks": [batch_dim, queries, height // 4, width // 4]}
    else:
        k = module.post_processor.topk
        static = {"pred_masks": [batch_dim, k, height, width], "pred_scores": [batch_dim, k],
                  "pred_classes": [batch_dim, k]}
    set_output_shapes(onnx_model, static)
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, output)
    seconds = time.perf_counter() - started
    summary = {
        "output": output, "head": head, "input_size": (height, width),
        "batch": None if dynamic else trace_batch, "opset": opset, "class_names": names,
        "num_queries": int(model.config.num_queries), "no_object_index": -1,
        "topk": int(metadata[METADATA_TOPK]),
        "tensorrt_plugin_nodes": sum(1 for n in onnx_model.graph.node
                                     if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"),
        "nodes": len(onnx_model.graph.node), "bytes": os.path.getsize(output), "seconds": seconds,
    }
    _log.info("exported %s head to %s in %.1f s", head, output, seconds)
    return summary


def set_metadata(model, items: Dict[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries of an onnx.ModelProto."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in items]
    del model.metadata_props[:]
    for key, value in keep + sorted(items.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def set_output_shapes(model, shapes: Dict[str, Sequence[Union[int, str]]]) -> None:
    """Give graph outputs their known shapes (the tracer leaves made-up symbolic names)."""
    for output in model.graph.output:
        if output.name not in shapes:
            continue
        shape = output.type.tensor_type.shape
        del shape.dim[:]
        for value in shapes[output.name]:
            dim = shape.dim.add()
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = int(value)


def get_metadata(model) -> Dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
