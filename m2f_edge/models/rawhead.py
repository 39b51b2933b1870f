"""Cut TAO's in-graph post-processor off a deployable Mask2Former and expose the raw head.

TAO's deployable ONNX ends in a post-processor (nodes named ``/post_processor/...``) that upsamples
all Q mask logits to the network size, takes the top-k and writes K full-size float masks. The core
does the same work from the low-resolution logits without ever writing those masks, so
:func:`cut_raw_head` removes the post-processor and makes the two tensors entering it graph outputs:

    pred_logits  float [B,Q,C+1]    class logits (TAO: no-object at index 0)
    pred_masks   float [B,Q,H/4,W/4] mask logits

The no-object index is recorded in the metadata (``m2f_edge.no_object_index``): kept when the model
already says it (m2f_edge's own Hugging Face export: -1), else 0 (TAO). The post-processor's top-k is
recorded as ``m2f_edge.topk`` so the core can keep the same number of candidates.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Set

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .export import (METADATA_HEAD, METADATA_NO_OBJECT, METADATA_TOPK, get_metadata, set_metadata,
                     set_output_shapes)

POST_PROCESSOR_SCOPE = "post_processor"
RAW_OUTPUTS = ("pred_logits", "pred_masks")

_log = logging.getLogger("m2f_edge.models.rawhead")


def _in_scope(node: onnx.NodeProto, scope: str) -> bool:
    name = node.name.lstrip("/")
    return name.startswith(scope + "/") or ("/" + scope + "/") in node.name


def _shapes(model: onnx.ModelProto) -> Dict[str, list]:
    try:
        # data propagation carries shapes through the Shape/Gather/Reshape chains tracers emit
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        _log.debug("shape inference failed: %s", exc)
        inferred = model
    out = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            out[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                              for d in tensor_type.shape.dim]
    return out


def _constant_names(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def has_post_processor(model: onnx.ModelProto, scope: str = POST_PROCESSOR_SCOPE) -> bool:
    return any(_in_scope(node, scope) for node in model.graph.node)


def cut_raw_head(model: onnx.ModelProto, *, scope: str = POST_PROCESSOR_SCOPE,
                 no_object_index: Optional[int] = None) -> onnx.ModelProto:
    """Return a copy of the deployable ``model`` ending at the raw head (see the module docstring).

    Raises ValueError when the model has no post-processor under ``scope`` or when the tensors
    entering it are not one rank-3 class-logit tensor and one rank-4 mask-logit tensor.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model: expected an onnx.ModelProto, got {type(model).__name__}")
    graph = model.graph
    post_nodes = [node for node in graph.node if _in_scope(node, scope)]
    if not post_nodes:
        raise ValueError(f"model: no post-processor found (no node named under /{scope}/); the raw head can "
                         "only be cut from a deployable model exported like TAO's")
    produced_inside: Set[str] = {o for node in post_nodes for o in node.output}
    constants = _constant_names(model)
    entering: List[str] = []
    for node in post_nodes:
        for name in node.input:
            if name and name not in produced_inside and name not in constants and name not in entering:
                entering.append(name)

    shapes = _shapes(model)
    by_rank: Dict[Optional[int], List[str]] = {}
    for name in entering:
        rank = len(shapes[name]) if name in shapes else None
        by_rank.setdefault(rank, []).append(name)
    if None in by_rank and len(entering) == 2:
        # shape inference does not reach through every traced op; the class logits are the
        # tensor the post-processor's Softmax reads, the mask logits the other one
        softmax_inputs = {n.input[0] for n in post_nodes if n.op_type == "Softmax"}
        logits = [n for n in entering if n in softmax_inputs]
        if len(logits) == 1:
            by_rank = {3: logits, 4: [n for n in entering if n != logits[0]]}
    if len(by_rank.get(3, [])) != 1 or len(by_rank.get(4, [])) != 1:
        described = ", ".join(f"{n} (rank {len(shapes[n]) if n in shapes else '?'})" for n in entering)
        raise ValueError(f"model: expected the post-processor to take one rank-3 class-logit tensor and one "
                         f"rank-4 mask-logit tensor; it takes {described or 'nothing'}")
    logits_name, masks_name = by_rank[3][0], by_rank[4][0]

    topk = None
    for node in post_nodes:
        if node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in constants:
            topk = int(np.asarray(constants[node.input[1]]).reshape(-1)[0])

    result = onnx.ModelProto()
    result.CopyFrom(model)
    g = result.graph
    kept = [node for node in g.node if not _in_scope(node, scope)]
    del g.node[:]
    g.node.extend(kept)
    renames = {logits_name: RAW_OUTPUTS[0], masks_name: RAW_OUTPUTS[1]}
    existing = {o.name for o in g.output}
    # the deployable outputs (pred_masks among them) go away, freeing the raw names
    del g.output[:]
    taken = {o for node in g.node for o in node.output} | {i.name for i in g.input}
    for new in RAW_OUTPUTS:
        if new in taken and new not in renames:
            raise ValueError(f"model: a tensor named {new!r} already exists outside the post-processor")
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    input_batch = None
    if g.input and g.input[0].type.tensor_type.HasField("shape"):
        first = g.input[0].type.tensor_type.shape.dim[0]
        input_batch = first.dim_value if first.HasField("dim_value") else (first.dim_param or "batch")
    for old, new in renames.items():
        g.output.append(helper.make_tensor_value_info(new, onnx.TensorProto.FLOAT, None))
    out_shapes = {}
    dim_names = {RAW_OUTPUTS[0]: ["batch", "queries", "classes_plus_one"],
                 RAW_OUTPUTS[1]: ["batch", "queries", "mask_height", "mask_width"]}
    for old, new in renames.items():
        dims = list(shapes.get(old) or [None] * len(dim_names[new]))
        if input_batch is not None:
            dims[0] = input_batch
        # symbolic names from shape inference ("unk__12") say nothing: use the contract's names
        out_shapes[new] = [d if isinstance(d, int) or (isinstance(d, str) and not d.startswith("unk__"))
                           else dim_names[new][i] for i, d in enumerate(dims)]
    set_output_shapes(result, out_shapes)
    elem_types = {}
    for info in list(graph.value_info) + list(graph.output):
        elem_types[info.name] = info.type.tensor_type.elem_type
    for output in g.output:
        old = [o for o, n in renames.items() if n == output.name][0]
        if elem_types.get(old):
            output.type.tensor_type.elem_type = elem_types[old]

    _prune(result)
    meta = get_metadata(result)
    if no_object_index is None:
        no_object_index = int(meta[METADATA_NO_OBJECT]) if METADATA_NO_OBJECT in meta else 0
    updates = {METADATA_NO_OBJECT: str(int(no_object_index)), METADATA_HEAD: "raw"}
    if topk is not None:
        updates[METADATA_TOPK] = str(topk)
    set_metadata(result, updates)
    onnx.checker.check_model(result)
    _log.info("cut %d post-processor nodes; raw outputs from %s and %s (removed outputs: %s)",
              len(post_nodes), logits_name, masks_name, ", ".join(sorted(existing)))
    return result


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes, initializers and value_info the outputs no longer need."""
    g = model.graph
    needed = {o.name for o in g.output}
    kept = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            # subgraph attributes (If/Loop) may read outer tensors by name
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    needed.update(_outer_names(attr.g))
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        needed.update(_outer_names(sub))
    kept.reverse()
    del g.node[:]
    g.node.extend(kept)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    infos = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(infos)


def _outer_names(graph: onnx.GraphProto) -> Set[str]:
    names = set()
    for node in graph.node:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names.update(_outer_names(attr.g))
    return names
