"""Replace TensorRT's deformable-attention plugin node with standard ONNX ops.

TAO's Mask2Former exported on a GPU holds ``MultiscaleDeformableAttnPlugin_TRT`` nodes in its pixel
decoder. TensorRT runs them from its plugin library; ONNX Runtime cannot. :func:`make_portable`
rewrites every such node (matched by op type, in any domain: exporters use "", "TRT" and "nvidia")
into GridSample-based standard ops that compute Deformable DETR's multi-scale deformable attention:

    inputs  value [N,S,M,D], spatial_shapes [L,2] (H,W per level), level_start_index [L],
            sampling_locations [N,Lq,M,L,P,2] (x,y in [0,1]), attention_weights [N,Lq,M,L,P]
    output  [N,Lq,M,D] = sum over levels l and points p of
            weight[n,q,m,l,p] * bilinear(value of level l, head m)(location[n,q,m,l,p])

Bilinear sampling is grid_sample's with grid = 2*location-1, align_corners=False and zero padding.
The number of levels L must be static; everything else may be dynamic. When spatial_shapes and
level_start_index are constants (TAO's export folds them) the level slices are constants too, so
ONNX shape inference still gives every tensor its shape.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PLUGIN_OP_TYPE = "MultiscaleDeformableAttnPlugin_TRT"
GRID_SAMPLE_MIN_OPSET = 16
# opset 20 renamed GridSample's "bilinear" mode to "linear"
GRID_SAMPLE_LINEAR_RENAMED_OPSET = 20

_log = logging.getLogger("m2f_edge.models.portable")


def find_plugin_nodes(model: onnx.ModelProto) -> List[onnx.NodeProto]:
    """The deformable-attention plugin nodes of the main graph, in graph order (any domain)."""
    return [node for node in model.graph.node if node.op_type == PLUGIN_OP_TYPE]


def needs_portable(model: onnx.ModelProto) -> bool:
    """True when the model holds a node ONNX Runtime cannot run as is (the TensorRT plugin)."""
    return bool(find_plugin_nodes(model))


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _set_default_opset(model: onnx.ModelProto, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
            return
    model.opset_import.append(helper.make_opsetid("", version))


def _constant_values(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    """Tensors whose values are known without running the graph (initializers, Constant nodes)."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


SMALL_INITIALIZER_ELEMENTS = 1024


def _weightless_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers turned into graph inputs of the same type and shape.

    Shape inference serialises the whole model; for a 190 MB network that costs seconds while the
    weights' values never matter to shapes (small ones, like Reshape targets, are kept)."""
    view = onnx.ModelProto()
    view.ir_version = model.ir_version
    view.opset_import.extend(model.opset_import)
    graph = view.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    declared = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        external = init.data_location == onnx.TensorProto.EXTERNAL
        if not external and int(np.prod(init.dims, dtype=np.int64)) <= SMALL_INITIALIZER_ELEMENTS:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return view


def _static_shapes(model: onnx.ModelProto, types: Optional[Dict[str, int]] = None) -> Dict[str, List[Optional[int]]]:
    """Static dims of every tensor shape inference can reach (None for a dynamic dim); ``types``, when
    given, receives the element type of every tensor inference reached."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_weightless_view(model), strict_mode=False)
    except Exception as exc:  # shape inference is a help here, not a requirement
        _log.debug("shape inference failed before the rewrite: %s", exc)
        inferred = model
    shapes = {}
    graph = inferred.graph
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensor_type = info.type.tensor_type
        if types is not None and tensor_type.elem_type:
            types[info.name] = tensor_type.elem_type
        if not tensor_type.HasField("shape"):
            continue
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _elem_type(model: onnx.ModelProto, name: str) -> Optional[int]:
    graph = model.graph
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        if info.name == name and info.type.tensor_type.elem_type:
            return info.type.tensor_type.elem_type
    for init in graph.initializer:
        if init.name == name:
            return init.data_type
    return None


class _Builder:
    """Emits the nodes of one rewrite with unique names under a common prefix."""

    def __init__(self, prefix: str, taken: set):
        self.prefix = prefix
        self.taken = taken
        self.nodes: List[onnx.NodeProto] = []

    def name(self, hint: str) -> str:
        candidate = f"{self.prefix}/{hint}"
        i = 0
        while candidate in self.taken:
            i += 1
            candidate = f"{self.prefix}/{hint}_{i}"
        self.taken.add(candidate)
        return candidate

    def const(self, hint: str, array) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node",
                                           value=numpy_helper.from_array(np.asarray(array), out)))
        return out

    def op(self, op_type: str, inputs: Sequence[str], hint: str, **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out + "_node", **attrs))
        return out

    def dim(self, tensor: str, shape: Optional[List[Optional[int]]], axis: int, hint: str):
        """Dimension ``axis`` of ``tensor``: an int when static, else a 1-D int64 tensor name."""
        if shape is not None and axis < len(shape) and shape[axis] is not None:
            return int(shape[axis])
        full = self.op("Shape", [tensor], hint + "_shape")
        index = self.const(hint + "_axis", np.array([axis], np.int64))
        return self.op("Gather", [full, index], hint, axis=0)

    def shape_vector(self, parts, hint: str) -> str:
        """A Reshape target from ints and 1-D tensors; one constant when all parts are ints, so that
        shape inference (which does not evaluate Concat) still sees the target shape."""
        if all(isinstance(p, int) for p in parts):
            return self.const(hint, np.array(parts, np.int64))
        names = [self.const(f"{hint}_{i}", np.array([p], np.int64)) if isinstance(p, int) else p
                 for i, p in enumerate(parts)]
        return self.op("Concat", names, hint, axis=0)

    def product(self, a, b, hint: str):
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        a_name = self.const(hint + "_a", np.array([a], np.int64)) if isinstance(a, int) else a
        b_name = self.const(hint + "_b", np.array([b], np.int64)) if isinstance(b, int) else b
        return self.op("Mul", [a_name, b_name], hint)


def _rewrite_node(node: onnx.NodeProto, builder: _Builder, constants: Dict[str, np.ndarray],
                  shapes: Dict[str, List[Optional[int]]], grid_mode: str,
                  value_type: Optional[int], locations_type: Optional[int] = None) -> List[onnx.NodeProto]:
    if len(node.input) != 5 or len(node.output) != 1:
        raise ValueError(f"{PLUGIN_OP_TYPE} node {node.name!r} has {len(node.input)} inputs and "
                         f"{len(node.output)} outputs; expected 5 inputs (value, spatial_shapes, "
                         "level_start_index, sampling_locations, attention_weights) and 1 output")
    value, spatial_shapes, level_start, locations, weights = node.input
    b = builder
    loc_shape = shapes.get(locations)
    value_shape = shapes.get(value)
    weight_shape = shapes.get(weights)

    # --- number of levels and points: must be static
    spatial_const = constants.get(spatial_shapes)
    start_const = constants.get(level_start)
    num_levels = None
    if spatial_const is not None:
        num_levels = int(np.asarray(spatial_const).reshape(-1, 2).shape[0])
    elif loc_shape is not None and len(loc_shape) == 6 and loc_shape[3] is not None:
        num_levels = loc_shape[3]
    elif shapes.get(spatial_shapes) and shapes[spatial_shapes][0] is not None:
        num_levels = shapes[spatial_shapes][0]
    if num_levels is None:
        raise ValueError(f"{PLUGIN_OP_TYPE} node {node.name!r}: the number of feature levels is not "
                         "static (spatial_shapes is not a constant and its shape is unknown)")
    num_points = None
    if loc_shape is not None and len(loc_shape) == 6:
        num_points = loc_shape[4]
    if num_points is None and weight_shape is not None and len(weight_shape) == 5:
        num_points = weight_shape[4]
    head_dim = value_shape[3] if value_shape is not None and len(value_shape) == 4 else None

    # --- value [N,S,M,D] -> [N*M, D, S]
    value_nmds = b.op("Transpose", [value], "value_nmds", perm=[0, 2, 3, 1])
    value_flat = b.op("Flatten", [value_nmds], "value_flat", axis=2)  # [N*M, D*S]
    d_dim = head_dim if head_dim is not None else b.dim(value, value_shape, 3, "head_dim")
    value_heads = b.op("Reshape", [value_flat, b.shape_vector([0, d_dim, -1], "value_heads_shape")], "value_heads")

    # --- sampling grid [N,Lq,M,L,P,2] -> [N*M, Lq, L, P, 2] in grid_sample's [-1,1] coordinates
    p_dim = num_points if num_points is not None else b.dim(locations, loc_shape, 4, "points")
    loc_nm = b.op("Transpose", [locations], "loc_nm", perm=[0, 2, 1, 3, 4, 5])
    loc_flat = b.op("Flatten", [loc_nm], "loc_flat", axis=2)
    loc_heads = b.op("Reshape", [loc_flat, b.shape_vector([0, -1, num_levels, p_dim, 2], "loc_heads_shape")],
                     "loc_heads")
    # the grid's constants take the locations' own type: after an FP16 conversion the locations may be
    # float16 while the value's type is not recorded (or the other way round)
    loc_type = next((t for t in (locations_type, value_type) if t is not None), TensorProto.FLOAT)
    dtype = helper.tensor_dtype_to_np_dtype(loc_type)
    grid = b.op("Sub", [b.op("Mul", [loc_heads, b.const("two_f", np.array(2.0, dtype))], "loc_x2"),
                        b.const("one_f", np.array(1.0, dtype))], "grid")

    # --- attention weights [N,Lq,M,L,P] -> [N*M, 1, Lq, L*P]
    w_nm = b.op("Transpose", [weights], "weights_nm", perm=[0, 2, 1, 3, 4])
    w_flat = b.op("Flatten", [w_nm], "weights_flat", axis=2)
    lp_dim = b.product(num_levels, p_dim, "levels_x_points")
    w_heads = b.op("Reshape", [w_flat, b.shape_vector([0, 1, -1, lp_dim], "weights_heads_shape")], "weights_heads")

    # --- per level: slice its value map and sample it at that level's locations
    static_levels = spatial_const is not None and start_const is not None
    if not static_levels:
        shapes64 = b.op("Cast", [spatial_shapes], "spatial_shapes_i64", to=TensorProto.INT64)
        starts64 = b.op("Cast", [level_start], "level_start_i64", to=TensorProto.INT64)
    sampled_levels = []
    for level in range(num_levels):
        level_index = b.const(f"level{level}", np.array(level, np.int64))
        if static_levels:
            height, width = (int(v) for v in np.asarray(spatial_const).reshape(-1, 2)[level])
            start = int(np.asarray(start_const).reshape(-1)[level])
            begin = b.const(f"level{level}_begin", np.array([start], np.int64))
            end = b.const(f"level{level}_end", np.array([start + height * width], np.int64))
        else:
            hw = b.op("Gather", [shapes64, level_index], f"level{level}_hw", axis=0)  # [2]
            begin = b.op("Unsqueeze", [b.op("Gather", [starts64, level_index], f"level{level}_start", axis=0),
                                       b.const(f"level{level}_axes", np.array([0], np.int64))],
                         f"level{level}_begin")
            size = b.op("ReduceProd", [hw], f"level{level}_size", keepdims=1)
            end = b.op("Add", [begin, size], f"level{level}_end")
        level_flat = b.op("Slice", [value_heads, begin, end, b.const(f"level{level}_slice_axis",
                                                                      np.array([2], np.int64))],
                          f"level{level}_value_flat")
        if static_levels:
            map_shape = b.const(f"level{level}_map_shape", np.array([0, 0, height, width], np.int64))
        else:
            map_shape = b.op("Concat", [b.const(f"level{level}_zeros", np.array([0, 0], np.int64)), hw],
                             f"level{level}_map_shape", axis=0)
        level_map = b.op("Reshape", [level_flat, map_shape], f"level{level}_value_map")  # [N*M, D, H_l, W_l]
        level_grid = b.op("Gather", [grid, level_index], f"level{level}_grid", axis=2)  # [N*M, Lq, P, 2]
        sampled_levels.append(b.op("GridSample", [level_map, level_grid], f"level{level}_sampled",
                                   mode=grid_mode, padding_mode="zeros", align_corners=0))  # [N*M,D,Lq,P]

    sampled = (b.op("Concat", sampled_levels, "sampled", axis=3) if len(sampled_levels) > 1
               else sampled_levels[0])  # [N*M, D, Lq, L*P]
    weighted = b.op("Mul", [sampled, w_heads], "weighted")
    summed = b.op("ReduceSum", [weighted, b.const("sum_axis", np.array([3], np.int64))], "summed",
                  keepdims=0)  # [N*M, D, Lq]

    # --- [N*M, D, Lq] -> [N, M, D, Lq] -> [N, Lq, M, D]
    heads_dim = b.dim(locations, loc_shape, 2, "heads")
    lq_dim = b.dim(locations, loc_shape, 1, "queries")
    out_shape = b.shape_vector([-1, heads_dim, d_dim, lq_dim], "out_shape")
    unflat = b.op("Reshape", [summed, out_shape], "out_nmdq")
    b.nodes.append(helper.make_node("Transpose", [unflat], [node.output[0]], name=b.name("out") + "_node",
                                    perm=[0, 3, 1, 2]))
    return b.nodes


def make_portable(model: onnx.ModelProto, *, infer_shapes: bool = False) -> onnx.ModelProto:
    """Return a copy of ``model`` with every ``MultiscaleDeformableAttnPlugin_TRT`` node replaced.

    The replacement uses only standard ONNX ops (GridSample, Slice, Reshape, Transpose, ...), so the
    model runs in ONNX Runtime or any other ONNX engine. The default opset is raised to 16 when
    lower (GridSample needs it). A model without plugin nodes comes back unchanged (as a copy).
    The new nodes' shapes are inferable (onnx.shape_inference); infer_shapes=True also stores them
    in the returned model's value_info (slow for large models: it serialises the weights).
    Raises ValueError when a plugin node cannot be rewritten (wrong arity, non-static level count).
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model: expected an onnx.ModelProto, got {type(model).__name__}")
    nested = _nested_plugin_count(model.graph)
    if nested:
        raise ValueError(f"model: {nested} {PLUGIN_OP_TYPE} node(s) sit inside If/Loop/Scan subgraphs, which "
                         "make_portable does not rewrite; export the model without control flow around the "
                         "deformable attention")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    plugins = find_plugin_nodes(result)
    if not plugins:
        return result

    opset = _default_opset(result)
    if opset < GRID_SAMPLE_MIN_OPSET:
        _log.info("raising the model's default opset from %d to %d for GridSample", opset, GRID_SAMPLE_MIN_OPSET)
        _set_default_opset(result, GRID_SAMPLE_MIN_OPSET)
        opset = GRID_SAMPLE_MIN_OPSET
    grid_mode = "linear" if opset >= GRID_SAMPLE_LINEAR_RENAMED_OPSET else "bilinear"

    constants = _constant_values(result)
    types: Dict[str, int] = {}
    shapes = _static_shapes(result, types)
    taken = {n for node in result.graph.node for n in list(node.output) + [node.name]}
    taken.update(i.name for i in result.graph.input)
    taken.update(i.name for i in result.graph.initializer)

    new_nodes: List[onnx.NodeProto] = []
    plugin_domains = set()
    for index, node in enumerate(result.graph.node):
        if node.op_type != PLUGIN_OP_TYPE:
            new_nodes.append(node)
            continue
        plugin_domains.add(node.domain)
        prefix = (node.name or f"{PLUGIN_OP_TYPE}_{index}") + "/portable"
        builder = _Builder(prefix, taken)
        new_nodes.extend(_rewrite_node(node, builder, constants, shapes, grid_mode,
                                       _elem_type(result, node.input[0]),
                                       types.get(node.input[3]) or _elem_type(result, node.input[3])))
    del result.graph.node[:]
    result.graph.node.extend(new_nodes)

    _drop_unused_constants(result.graph)

    # drop custom-domain imports nothing uses any more
    used_domains = {node.domain for node in result.graph.node}
    for entry in list(result.opset_import):
        if entry.domain in plugin_domains and entry.domain not in ("", "ai.onnx") and entry.domain not in used_domains:
            result.opset_import.remove(entry)

    # the plugin's output value_info (if any) stays valid: same tensor name and shape
    if infer_shapes:
        try:
            result = onnx.shape_inference.infer_shapes(result, strict_mode=False)
        except Exception as exc:
            _log.warning("shape inference after the portable rewrite failed: %s", exc)
    _log.info("replaced %d %s node(s) with standard ONNX ops (GridSample, opset %d)",
              len(plugins), PLUGIN_OP_TYPE, opset)
    return result


def _nested_plugin_count(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                count += sum(1 for n in sub.node if n.op_type == PLUGIN_OP_TYPE) + _nested_plugin_count(sub)
    return count


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    """The plugin's level tables may now feed nothing: drop such initializers and Constant nodes."""
    used = {name for node in graph.node for name in node.input}
    used.update(o.name for o in graph.output)
    kept_nodes = [n for n in graph.node
                  if not (n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output[0] not in used)]
    if len(kept_nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept_nodes)
    graph_inputs = {i.name for i in graph.input}
    kept_inits = [i for i in graph.initializer if i.name in used or i.name in graph_inputs]
    if len(kept_inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)


def plugin_summary(model: onnx.ModelProto) -> Tuple[int, List[str]]:
    """(count, sorted domains) of the plugin nodes in ``model``; for logs and `m2f-edge info`."""
    nodes = find_plugin_nodes(model)
    return len(nodes), sorted({node.domain for node in nodes})
