"""Convert an ONNX model to float16, keeping chosen nodes in float32.

TensorRT >= 11 builds every network strongly typed: there is no FP16 builder flag and no per-layer
precision, so an engine runs in the precisions its ONNX file carries. :func:`convert_float16` writes
those precisions into the file: float32 tensors become float16 except around the nodes kept in float32,
with Cast nodes at every boundary between the two.

What stays float32 (each choice is a default that can be changed):

- nodes whose names start with one of ``keep_prefixes`` (default: TAO's FP32 layers, the ones TAO's own
  engine builder constrains to FP32: the transformer decoder's cross-attention and the post-processor's
  Div, ReduceSum and Add);
- nodes whose op type is in ``keep_op_types`` (default :data:`FP32_OP_TYPES`: sums and products over many
  elements, which exceed float16's 65504 long before their inputs do; the layer-norm statistics; Range,
  whose float outputs count past 2048 where float16 stops holding every integer; and ops whose output type
  comes from an attribute, such as the random generators);
- nodes of other domains than ONNX's own, except TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` (its
  ``supportsFormatCombination`` accepts FP32 or FP16 for value, sampling_locations, attention_weights and
  the output, all of one type, and INT32 for spatial_shapes and level_start_index: NVIDIA/TensorRT
  plugin/multiscaleDeformableAttnPlugin), so it runs in float16 unless its op type is added to
  keep_op_types;
- nodes holding subgraphs (If, Loop, Scan): left as they are, with everything they read from outside;
- nodes with a tensor ONNX shape inference cannot type (downstream of an unknown custom op);
- nodes reading a constant with a finite value beyond float16's range (|x| > 65504): such a value is never
  clipped; the nodes reading it stay float32 instead, so no weight changes meaning;
- Resize's roi and scales and Upsample's scales inputs (the spec wants float scales), even in a float16
  Resize; integer tensors and shape computations are never touched;
- the graph's inputs and outputs with ``keep_io_types`` (default): the SDK's contract (float32 image in,
  float32 masks and scores out) is unchanged, with a Cast after each input and before each output.

Constants (initializers and Constant nodes) read only by float16 nodes are stored as float16; a constant
read by both kinds is kept and gets a float16 twin, so no Cast runs on a weight.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..tao import TAO_FP32_LAYERS
from .portable import PLUGIN_OP_TYPE, _weightless_view

_log = logging.getLogger("m2f_edge.models.fp16")

FLOAT16_MAX = 65504.0

# Bump when the defaults below change what a conversion produces: engines built from an automatically
# converted ONNX carry it in their cache key.
RECIPE_VERSION = 1

FP32_OP_TYPES = frozenset([
    # sums and products over many elements: the result overflows float16 long before the inputs do
    "ReduceSum", "ReduceSumSquare", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "CumSum",
    # layer-norm statistics (TensorRT warns that FP16 layer norms after attention may overflow)
    "LayerNormalization", "Pow", "ReduceMean",
    # float counters: float16 holds every integer only up to 2048
    "Range",
    # output type given by an attribute
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli",
    "Multinomial",
])

# Op types of other domains known to run in float16.
FP16_CUSTOM_OP_TYPES = frozenset([PLUGIN_OP_TYPE])

# Inputs that stay float32 even in a float16 node (op type -> input indices).
FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
# Inputs of any type, read for their shape or converted by the op itself: never given a Cast.
ANY_TYPE_INPUTS = {"Shape": (0,), "Size": (0,), "Cast": (0,)}

METADATA_KEY = "m2f_edge.float16"

_STANDARD_DOMAINS = ("", "ai.onnx")
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


class Float16Report(dict):
    """What convert_float16 did: counts, the float32 nodes and why, and the options used."""


def model_has_float16(model: onnx.ModelProto) -> bool:
    """Whether the main graph declares or makes any float16 tensor (inputs, outputs, value_info,
    initializers, Cast to float16, float16 Constants). Reads no weights' values."""
    graph = model.graph
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            return True
    if any(init.data_type == TensorProto.FLOAT16 for init in graph.initializer):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                return True
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                return True
    return False


def _collect_types(inferred: onnx.ModelProto) -> Dict[str, int]:
    graph = inferred.graph
    types = {}
    for init in graph.initializer:
        types[init.name] = init.data_type
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        elem = info.type.tensor_type.elem_type
        if elem:
            types[info.name] = elem
    return types


def tensor_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor of the main graph that ONNX shape inference can reach. Custom
    nodes have no inference; the deformable-attention plugin's output is typed like its value input (the
    plugin's getOutputDataType), and inference is repeated until that settles."""
    view = _weightless_view(model)
    plugins = [n for n in view.graph.node if n.op_type in FP16_CUSTOM_OP_TYPES and n.input and n.output]
    types = {}  # type: Dict[str, int]
    for _ in range(len(plugins) + 1):
        try:
            inferred = onnx.shape_inference.infer_shapes(view, strict_mode=False)
        except Exception as exc:  # inference is partial here; what it gives is still used
            _log.debug("shape inference failed: %s", exc)
            inferred = view
        types = _collect_types(inferred)
        for node in view.graph.node:  # Constant nodes are typed by their value even without inference
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        types.setdefault(node.output[0], attr.t.data_type)
        added = False
        for node in plugins:
            if node.output[0] not in types and node.input[0] in types:
                view.graph.value_info.append(helper.make_tensor_value_info(node.output[0], types[node.input[0]], None))
                added = True
        if not added:
            break
    return types


def _float_value(array: np.ndarray) -> bool:
    """Whether a float32 constant fits float16 (infinities do; finite values beyond 65504 do not)."""
    finite = array[np.isfinite(array)]
    return finite.size == 0 or float(np.max(np.abs(finite))) <= FLOAT16_MAX


def _subgraph_reads(node: onnx.NodeProto) -> Set[str]:
    """Names a node's subgraphs read from the enclosing scope."""
    names = set()  # type: Set[str]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                defined.update(inner.output)
            for inner in graph.node:
                names.update(n for n in inner.input if n and n not in defined)
                names.update(n for n in _subgraph_reads(inner) if n not in defined)
    return names


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def convert_float16(model: onnx.ModelProto, keep_prefixes: Optional[Sequence[str]] = None,
                    keep_op_types: Optional[Iterable[str]] = None, keep_io_types: bool = True
                    ) -> Tuple[onnx.ModelProto, Float16Report]:
    """A float16 copy of `model` (the input is not changed) and a report of what was done.

    keep_prefixes: node-name prefixes kept float32 (default: m2f_edge.tao.TAO_FP32_LAYERS; () for none).
    keep_op_types: op types kept float32 (default FP32_OP_TYPES; give a set to replace it, e.g.
    FP32_OP_TYPES | {"MultiscaleDeformableAttnPlugin_TRT"} to keep the plugin in float32 too).
    keep_io_types: graph inputs and outputs keep their types (Casts inside the graph)."""
    if not isinstance(model, onnx.ModelProto):
        raise TypeError("model: expected an onnx.ModelProto, got {}".format(type(model).__name__))
    if keep_prefixes is None:
        keep_prefixes = TAO_FP32_LAYERS
    keep_prefixes = tuple(str(p) for p in keep_prefixes)
    keep_ops = FP32_OP_TYPES if keep_op_types is None else frozenset(str(t) for t in keep_op_types)
    if model_has_float16(model):
        raise ValueError("model: already holds float16 tensors; convert_float16 takes a float32 model")
    conversion = _Conversion(model, keep_prefixes, keep_ops, bool(keep_io_types))
    conversion.rewrite()
    return conversion.out, conversion.finish()


def _to_float16(tensor: onnx.TensorProto, name: str, base_dir: Optional[str] = None) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor) if base_dir is None else numpy_helper.to_array(tensor, base_dir=base_dir)
    return numpy_helper.from_array(array.astype(np.float16), name)


class _Conversion:
    """One convert_float16 call, in its steps: what the copy holds (tensor types, float32 constants,
    tensors subgraphs read), which nodes run in float16 (roles), the type each float32 tensor ends
    with (final), then the rewrite (Casts and float16 twins where a reader needs the other type)."""

    def __init__(self, model: onnx.ModelProto, keep_prefixes: Tuple[str, ...], keep_ops: frozenset,
                 keep_io_types: bool):
        self.types = tensor_types(model)
        self.out = onnx.ModelProto()
        self.out.CopyFrom(model)
        self.graph = self.out.graph
        self.nodes = list(self.graph.node)
        self.keep_prefixes, self.keep_ops, self.keep_io_types = keep_prefixes, keep_ops, keep_io_types
        self.graph_inputs = {i.name for i in self.graph.input}
        self.outputs = {o.name for o in self.graph.output}
        self.initializers = {init.name: init for init in self.graph.initializer if init.name not in self.graph_inputs}
        self.constant_nodes = {}  # type: Dict[str, int]  output name -> index of a float32 Constant with a tensor value
        for index, node in enumerate(self.nodes):
            if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS and len(node.output) == 1:
                values = [a for a in node.attribute if a.name == "value"]
                if values and values[0].t.data_type == FLOAT:
                    self.constant_nodes[node.output[0]] = index
        # constants whose type follows their readers
        self.flexible = set(n for n, init in self.initializers.items() if init.data_type == FLOAT) | set(
            self.constant_nodes)
        self.fits_cache = {}  # type: Dict[str, bool]
        self.pinned = set()  # type: Set[str]  tensors read by subgraphs: they stay float32
        for node in self.nodes:
            if _has_subgraph(node):
                self.pinned |= _subgraph_reads(node)
        self.role = {}  # type: Dict[int, str]  index -> "fp16" | reason kept float32; absent: untouched
        for index, node in enumerate(self.nodes):
            why = self._role_of(node)
            if why is not None:
                self.role[index] = why
        self.final = self._final_types()
        self.taken = set(self.types) | {n for node in self.nodes for n in list(node.input) + list(node.output)} | set(
            self.initializers)
        # graph outputs keep their type: the float16 tensor is renamed and cast back
        self.renamed = {}  # type: Dict[str, str]
        if keep_io_types:
            for name in self.outputs:
                if self.final.get(name) == HALF and name not in self.flexible:
                    self.renamed[name] = self.fresh(name + "_fp16")
                    self.final[self.renamed[name]] = HALF
        # the rewrite's state
        self.converted_casts = {}  # type: Dict[Tuple[str, int], str]  (tensor, type) -> converted tensor
        self.new_nodes_after = {}  # type: Dict[int, List[onnx.NodeProto]]  producer index (-1: graph start)
        self.new_initializers = []  # type: List[onnx.TensorProto]
        self.producer = {name: index for index, node in enumerate(self.nodes) for name in node.output}
        self.report = Float16Report(casts=0, constant_twins=0)

    # ---- analysis

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == FLOAT

    def constant_fits(self, name: str) -> bool:
        if name not in self.fits_cache:
            if name in self.initializers:
                array = numpy_helper.to_array(self.initializers[name], base_dir="")
            else:
                array = numpy_helper.to_array(self._constant_value(name).t)
            self.fits_cache[name] = _float_value(np.asarray(array, np.float32))
        return self.fits_cache[name]

    def _constant_value(self, name: str) -> onnx.AttributeProto:
        return [a for a in self.nodes[self.constant_nodes[name]].attribute if a.name == "value"][0]

    def _role_of(self, node: onnx.NodeProto) -> Optional[str]:
        """"fp16", why the node stays float32, or None for a node with no float tensor (untouched)."""
        if node.op_type == "Constant" and node.output and node.output[0] in self.constant_nodes:
            return None  # typed by its readers
        names = [n for n in list(node.input) + list(node.output) if n]
        float_attr = any(a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT for a in node.attribute)
        untyped = any(n not in self.types for n in names)
        if not (any(self.is_float(n) for n in names) or float_attr or untyped):
            return None
        if _has_subgraph(node):
            return "subgraph"
        if any(node.name.startswith(p) for p in self.keep_prefixes):
            return "name"
        if node.op_type in self.keep_ops:
            return "op type"
        if node.domain not in _STANDARD_DOMAINS and node.op_type not in FP16_CUSTOM_OP_TYPES:
            return "custom op"
        if untyped:
            return "untyped"  # downstream of an op shape inference cannot type (an unknown custom op): as it was
        if node.op_type == "Constant":
            return "op type"  # value_float(s) and friends: cast where read
        if any(self.is_float(n) and n in self.pinned for n in node.output):
            return "read by a subgraph"
        if any(n in self.flexible and not self.constant_fits(n) for n in node.input if n) or any(
                a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT
                and not _float_value(numpy_helper.to_array(a.t)) for a in node.attribute):
            return "constant beyond float16"
        return "fp16"

    def wanted(self, index: int, slot: int) -> Optional[int]:
        """The type node `index` needs at input `slot` (None: any)."""
        node = self.nodes[index]
        if self.role.get(index, "fp16") != "fp16":
            return FLOAT
        if slot in ANY_TYPE_INPUTS.get(node.op_type, ()):
            return None
        if slot in FLOAT32_INPUTS.get(node.op_type, ()):
            return FLOAT
        return HALF

    def _final_types(self) -> Dict[str, int]:
        """The type each float32 tensor ends with."""
        readers = {}  # type: Dict[str, List[Tuple[int, int]]]
        for index, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if self.is_float(name):
                    readers.setdefault(name, []).append((index, slot))
        final = {}  # type: Dict[str, int]
        for name in self.graph_inputs:
            if self.is_float(name):
                final[name] = FLOAT if self.keep_io_types else HALF
        for index, node in enumerate(self.nodes):
            if index in self.role:
                for name in node.output:
                    if self.is_float(name):
                        final[name] = HALF if self.role[index] == "fp16" else FLOAT
        for name in self.flexible:
            if name in self.pinned:
                final[name] = FLOAT
                continue
            needs = {self.wanted(i, s) for i, s in readers.get(name, [])} - {None}
            if name in self.outputs:
                needs.add(FLOAT if self.keep_io_types else HALF)
            final[name] = HALF if needs == {HALF} else FLOAT
        return final

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.taken:
            name, k = "{}_{}".format(hint, k), k + 1
        self.taken.add(name)
        return name

    # ---- rewrite

    def converted(self, name: str, to: int) -> str:
        """`name` as type `to`: a float16 twin of a constant, or a Cast after its producer."""
        key = (name, to)
        if name in self.renamed and to == FLOAT:
            return name  # the graph output itself, cast back to float32
        if key in self.converted_casts:
            return self.converted_casts[key]
        suffix = "_fp16" if to == HALF else "_fp32"
        if name in self.initializers and to == HALF:
            twin = _to_float16(self.initializers[name], self.fresh(name + suffix), base_dir="")
            self.new_initializers.append(twin)
            result = twin.name
            self.report["constant_twins"] += 1
        elif name in self.constant_nodes and to == HALF:
            source = self.nodes[self.constant_nodes[name]]
            result = self.fresh(name + suffix)
            twin = helper.make_node("Constant", [], [result], name=self.fresh((source.name or name) + suffix),
                                    value=_to_float16(self._constant_value(name).t, ""))
            self.new_nodes_after.setdefault(self.constant_nodes[name], []).append(twin)
            self.report["constant_twins"] += 1
        else:
            result = self.fresh(name + suffix)
            cast = helper.make_node("Cast", [self.renamed.get(name, name)], [result], name=self.fresh(result + "_cast"),
                                    to=to)
            self.new_nodes_after.setdefault(self.producer.get(name, -1), []).append(cast)
            self.report["casts"] += 1
        self.converted_casts[key] = result
        return result

    def rewrite(self) -> None:
        for index, node in enumerate(self.nodes):
            self._retype_inputs(index, node)
            for slot, name in enumerate(node.output):
                if name in self.renamed:
                    node.output[slot] = self.renamed[name]
            if self.role.get(index) == "fp16":
                self._float16_attributes(node)
        self._convert_flexible_constants()
        for name, inner in self.renamed.items():
            cast = helper.make_node("Cast", [inner], [name], name=self.fresh(name + "_to_fp32_cast"), to=FLOAT)
            self.new_nodes_after.setdefault(self.producer.get(name, -1), []).append(cast)
            self.report["casts"] += 1
        ordered = list(self.new_nodes_after.get(-1, []))
        for index, node in enumerate(self.nodes):
            ordered.append(node)
            ordered.extend(self.new_nodes_after.get(index, []))
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        self.graph.initializer.extend(self.new_initializers)
        self._declare_types()

    def _retype_inputs(self, index: int, node: onnx.NodeProto) -> None:
        for slot, name in enumerate(node.input):
            if not self.is_float(name):
                continue
            need = self.wanted(index, slot)
            if need is None or need == self.final.get(name, FLOAT):
                if name in self.renamed:
                    node.input[slot] = self.renamed[name]
                continue
            node.input[slot] = self.converted(name, need)

    def _float16_attributes(self, node: onnx.NodeProto) -> None:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(_to_float16(attr.t, attr.t.name))
        if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute) and any(
                self.is_float(n) for n in node.output):
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))

    def _convert_flexible_constants(self) -> None:
        """Constants read only by float16 nodes become float16 in place."""
        for name in self.flexible:
            if self.final[name] != HALF:
                continue
            if name in self.initializers:
                init = self.initializers[name]
                init.CopyFrom(_to_float16(init, name, base_dir=""))
            else:
                attr = self._constant_value(name)
                attr.t.CopyFrom(_to_float16(attr.t, attr.t.name))

    def _declare_types(self) -> None:
        graph = self.graph
        for info in graph.value_info:
            if self.final.get(info.name) == HALF and info.type.tensor_type.elem_type == FLOAT:
                info.type.tensor_type.elem_type = HALF
        if not self.keep_io_types:
            for info in list(graph.input) + list(graph.output):
                if self.final.get(info.name) == HALF:
                    info.type.tensor_type.elem_type = HALF
        for name, inner in self.renamed.items():  # the float16 tensor before the output Cast keeps the output's shape
            for info in graph.output:
                if info.name == name:
                    twin = graph.value_info.add()
                    twin.CopyFrom(info)
                    twin.name = inner
                    twin.type.tensor_type.elem_type = HALF

    def finish(self) -> Float16Report:
        """The report, also recorded in the model's metadata_props (METADATA_KEY)."""
        kept = OrderedDict()  # type: Dict[str, List[str]]
        for index, why in self.role.items():
            if why != "fp16":
                kept.setdefault(why, []).append(self.nodes[index].name or self.nodes[index].op_type)
        report = self.report
        report.update(
            recipe=RECIPE_VERSION,
            nodes_fp16=sum(1 for why in self.role.values() if why == "fp16"),
            nodes_fp32=sum(len(v) for v in kept.values()),
            kept_fp32=dict(kept),
            constants_fp16=sum(1 for n in self.flexible if self.final[n] == HALF),
            keep_prefixes=list(self.keep_prefixes),
            keep_io_types=self.keep_io_types,
            plugin_fp16=PLUGIN_OP_TYPE not in self.keep_ops,
        )
        entry = self.out.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps({"recipe": RECIPE_VERSION, "keep_prefixes": list(self.keep_prefixes),
                                  "nodes_fp32": report["nodes_fp32"], "nodes_fp16": report["nodes_fp16"]},
                                 sort_keys=True)
        return report


def summary(report: Dict[str, Any]) -> str:
    """One line for logs and the CLI."""
    reasons = ", ".join("{} by {}".format(len(v), k) for k, v in report.get("kept_fp32", {}).items())
    return "{} nodes float16, {} kept float32{}, {} Casts, {} constants float16 ({} twins)".format(
        report.get("nodes_fp16", 0), report.get("nodes_fp32", 0), " ({})".format(reasons) if reasons else "",
        report.get("casts", 0), report.get("constants_fp16", 0), report.get("constant_twins", 0))


def save_model(model: onnx.ModelProto, path: str) -> None:
    """onnx.save, with the weights in a side file when the model is past protobuf's 2 GiB limit."""
    if model.ByteSize() > (2 << 30) - (64 << 20):
        import os

        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(path) + ".data")
    else:
        onnx.save(model, path)
