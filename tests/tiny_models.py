"""Tiny Mask2Former-shaped ONNX models that really segment something, built with onnx.helper.

The models undo the ImageNet normalisation inside the graph and call a pixel "red", "green" or
"blue" when that channel exceeds both others by more than DOMINANCE_MARGIN. So an end-to-end run
on a frame painted with coloured shapes checks resize, colour order, normalisation, the output
contract and the mapping back to the frame at once.

Queries (in graph order, deliberately not sorted by score):
    0: blue  mask, score 0.7     3: green mask, score 0.8
    1: red   mask, score 0.9     4: empty mask, score 0.6 (must be dropped as empty)
    2: red   mask, score 0.3 (below the default threshold 0.5)
Classes: with num_classes=3, red=0, green=1, blue=2; with num_classes=1 all are 0 ("object").
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DOMINANCE_MARGIN = 0.25

# (colour channel index in RGB, score, class when num_classes == 3); None = empty mask
QUERIES = [(2, 0.7), (0, 0.9), (0, 0.3), (1, 0.8), (None, 0.6)]
COLOR_CLASS = {0: 0, 1: 1, 2: 2}
CLASS_NAMES_3 = ["red", "green", "blue"]


def _const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v"))


def _dominance_nodes(prefix="dom"):
    """Nodes computing float 0/1 masks (N,3,H,W), one per RGB channel, from the normalised input."""
    nodes = [
        _const("std", np.array(STD, np.float32).reshape(1, 3, 1, 1)),
        _const("mean", np.array(MEAN, np.float32).reshape(1, 3, 1, 1)),
        helper.make_node("Mul", ["inputs", "std"], ["x_scaled"]),
        helper.make_node("Add", ["x_scaled", "mean"], ["rgb"]),
        _const("split_sizes", np.array([1, 1, 1], np.int64)),
        helper.make_node("Split", ["rgb", "split_sizes"], ["r", "g", "b"], axis=1),
        _const("margin", np.array(DOMINANCE_MARGIN, np.float32)),
    ]
    channels = ["r", "g", "b"]
    masks = []
    for i, c in enumerate(channels):
        others = [o for o in channels if o != c]
        nodes += [
            helper.make_node("Max", others, [f"{prefix}_max_{c}"]),
            helper.make_node("Sub", [c, f"{prefix}_max_{c}"], [f"{prefix}_diff_{c}"]),
            helper.make_node("Greater", [f"{prefix}_diff_{c}", "margin"], [f"{prefix}_gt_{c}"]),
            helper.make_node("Cast", [f"{prefix}_gt_{c}"], [f"{prefix}_{c}"], to=TensorProto.FLOAT),
        ]
        masks.append(f"{prefix}_{c}")
    nodes.append(_const("zero_f", np.array(0.0, np.float32)))
    nodes.append(helper.make_node("Mul", ["r", "zero_f"], [f"{prefix}_none"]))
    return nodes, masks + [f"{prefix}_none"]


def _batch_expand_nodes(value_name, const_array, out_name):
    """Expand a [1, ...] constant to [N, ...] with N taken from the input's batch size."""
    tail = list(const_array.shape[1:])
    return [
        _const(value_name, const_array),
        helper.make_node("Shape", ["inputs"], [out_name + "_in_shape"]),
        _const(out_name + "_s0", np.array([0], np.int64)),
        _const(out_name + "_s1", np.array([1], np.int64)),
        helper.make_node("Slice", [out_name + "_in_shape", out_name + "_s0", out_name + "_s1"], [out_name + "_n"]),
        _const(out_name + "_tail", np.array(tail, np.int64)),
        helper.make_node("Concat", [out_name + "_n", out_name + "_tail"], [out_name + "_shape"], axis=0),
        helper.make_node("Expand", [value_name, out_name + "_shape"], [out_name]),
    ]


def _finish(nodes, outputs, height, width, batch, path, opset, metadata=None):
    batch_dim = batch if batch is not None else "batch"
    graph = helper.make_graph(
        nodes,
        "tiny_mask2former",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [batch_dim, 3, height, width])],
        outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(path))
    return path


def make_deployable_model(path, height=64, width=96, batch=None, num_classes=1,
                          classes_dtype=np.int64, opset=17, metadata=None):
    """TAO's deployable contract: pred_masks 0/1 [N,K,H,W], pred_scores [N,K], pred_classes [N,K]."""
    nodes, channel_masks = _dominance_nodes()
    query_masks = [channel_masks[c] if c is not None else channel_masks[3] for c, _ in QUERIES]
    nodes.append(helper.make_node("Concat", query_masks, ["pred_masks"], axis=1))
    scores = np.array([[s for _, s in QUERIES]], np.float32)
    nodes += _batch_expand_nodes("scores_const", scores, "pred_scores")
    classes = np.array([[COLOR_CLASS[c] if (num_classes == 3 and c is not None) else 0 for c, _ in QUERIES]],
                       np.int64)
    nodes += _batch_expand_nodes("classes_const", classes, "pred_classes_i64")
    out_type = TensorProto.INT64 if np.dtype(classes_dtype) == np.int64 else TensorProto.INT32
    nodes.append(helper.make_node("Cast", ["pred_classes_i64"], ["pred_classes"], to=out_type))
    k = len(QUERIES)
    batch_dim = batch if batch is not None else "batch"
    outputs = [
        helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, [batch_dim, k, height, width]),
        helper.make_tensor_value_info("pred_scores", TensorProto.FLOAT, [batch_dim, k]),
        helper.make_tensor_value_info("pred_classes", out_type, [batch_dim, k]),
    ]
    return _finish(nodes, outputs, height, width, batch, path, opset, metadata)


def raw_class_logits(num_classes=1, no_object_index=0):
    """[1, Q, C+1] logits whose softmax gives each query its score for its class."""
    rows = []
    for c, score in QUERIES:
        row = np.full(num_classes + 1, -20.0, np.float32)
        cls = COLOR_CLASS[c] if (num_classes == 3 and c is not None) else 0
        # softmax([0 for no-object, logit]) = score for the class, 1-score for no-object
        obj_slot = cls + 1 if no_object_index == 0 else cls
        noobj_slot = 0 if no_object_index == 0 else num_classes
        row[noobj_slot] = 0.0
        row[obj_slot] = np.log(score / (1.0 - score))
        rows.append(row)
    return np.stack(rows)[None].astype(np.float32)


RAW_MASK_GAIN = 12.0  # logit = gain * (coverage of the 4x4 cell - 0.5)


def make_raw_model(path, height=64, width=96, batch=None, num_classes=1, no_object_index=0, opset=17,
                   metadata=None):
    """Raw-head contract: pred_logits [N,Q,C+1] and mask logits [N,Q,H/4,W/4]."""
    assert height % 4 == 0 and width % 4 == 0
    nodes, channel_masks = _dominance_nodes()
    query_masks = [channel_masks[c] if c is not None else channel_masks[3] for c, _ in QUERIES]
    nodes.append(helper.make_node("Concat", query_masks, ["full_masks"], axis=1))
    nodes.append(helper.make_node("AveragePool", ["full_masks"], ["coverage"], kernel_shape=[4, 4], strides=[4, 4]))
    nodes += [
        _const("half", np.array(0.5, np.float32)),
        _const("gain", np.array(RAW_MASK_GAIN, np.float32)),
        helper.make_node("Sub", ["coverage", "half"], ["centered"]),
        helper.make_node("Mul", ["centered", "gain"], ["pred_masks_body"]),
        # the empty query gets uniformly negative logits
        _const("empty_bias", np.array([0, 0, 0, 0, -20.0], np.float32).reshape(1, 5, 1, 1)),
        helper.make_node("Add", ["pred_masks_body", "empty_bias"], ["pred_masks"]),
    ]
    nodes += _batch_expand_nodes("logits_const", raw_class_logits(num_classes, no_object_index), "pred_logits")
    q = len(QUERIES)
    batch_dim = batch if batch is not None else "batch"
    outputs = [
        helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [batch_dim, q, num_classes + 1]),
        helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, [batch_dim, q, height // 4, width // 4]),
    ]
    meta = {"m2f_edge.no_object_index": no_object_index}
    meta.update(metadata or {})
    return _finish(nodes, outputs, height, width, batch, path, opset, meta)


# Shapes painted by make_test_frame, as fractions of the frame (x0, y0, x1, y1), BGR colours.
TEST_SHAPES = {
    "red": ((0.10, 0.15, 0.40, 0.55), (30, 30, 230)),
    "green": ((0.55, 0.10, 0.90, 0.45), (40, 220, 40)),
    "blue": ((0.30, 0.60, 0.75, 0.92), (220, 40, 30)),
}


def make_test_frame(height=240, width=320, color="bgr"):
    """A grey frame with a red, a green and a blue rectangle; returns (frame, {name: bool mask})."""
    frame = np.full((height, width, 3), 128, np.uint8)
    masks = {}
    for name, ((fx0, fy0, fx1, fy1), bgr) in TEST_SHAPES.items():
        x0, x1 = int(round(fx0 * width)), int(round(fx1 * width))
        y0, y1 = int(round(fy0 * height)), int(round(fy1 * height))
        frame[y0:y1, x0:x1] = bgr
        m = np.zeros((height, width), bool)
        m[y0:y1, x0:x1] = True
        masks[name] = m
    if color == "rgb":
        frame = frame[:, :, ::-1].copy()
    return frame, masks


def mask_iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
