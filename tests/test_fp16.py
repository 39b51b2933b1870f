"""m2f_edge.models.fp16: float32 -> float16 ONNX conversion keeping chosen nodes and the graph I/O in float32.

Converted models are checked with onnx.checker and ONNX shape inference (types of every tensor), and run
with ONNX Runtime's CPU provider (it has float16 kernels for every op used here, ORT >= 1.17) against the
float32 model and an independent numpy reference.

Tolerances: float16's unit roundoff is 2**-11 (about 4.9e-4). A score that is a float32 constant in the
model is only rounded once: relative error <= 2**-11. A score computed through a handful of float16 ops
(1x1 Conv of 3 channels plus bias, Max/Min, Resize, AveragePool, Sigmoid), then summed in float32, is within
a few roundings: |error| <= 2e-3 on values in [0, 1]. Masks are thresholds of such values: pixels within
that error of the threshold may flip, so masks are compared by IoU >= 0.99 (most are identical).
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from m2f_edge.tao import TAO_FP32_LAYERS
from m2f_edge.models.fp16 import (FLOAT16_MAX, FP32_OP_TYPES, METADATA_KEY, convert_float16, model_has_float16,
                                  tensor_types)
from m2f_edge.models.portable import PLUGIN_OP_TYPE
from tiny_models import MEAN, STD, make_deployable_model, make_raw_model, make_test_frame, mask_iou

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
UNIT_ROUNDOFF = 2.0 ** -11


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(model, feeds):
    session = _session(model)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _normalised(frame):
    """A BGR uint8 frame -> the float32 (1,3,H,W) network input, in numpy (no resize)."""
    rgb = frame[:, :, ::-1].astype(np.float64) / 255.0
    x = (rgb - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {i.name: i.data_type for i in inferred.graph.initializer}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[info.name] = info.type.tensor_type.elem_type
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _float_types_of(node, types):
    names = [n for n in list(node.input) + list(node.output) if n]
    return {types[n] for n in names if types.get(n) in (FLOAT, HALF)}


def _check_io_contract(original, converted):
    assert [(i.name, i.type.tensor_type.elem_type) for i in converted.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in original.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in converted.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in original.graph.output]


# ---- the tiny models of the SDK's two contracts ---------------------------------------------------------


@pytest.mark.parametrize("maker", [make_deployable_model, make_raw_model])
def test_tiny_models_convert_check_and_keep_their_io_contract(tmp_path, maker):
    original = onnx.load(str(maker(tmp_path / "m.onnx")))
    converted, report = convert_float16(original)
    onnx.checker.check_model(converted, full_check=True)
    _check_io_contract(original, converted)
    assert model_has_float16(converted) and not model_has_float16(original)
    types = _types(converted)
    io = {i.name for i in converted.graph.input} | {o.name for o in converted.graph.output}
    # every node but the boundary Casts computes in float16 (none of TAO's layer names occur here)
    for node in converted.graph.node:
        touches_io = any(n in io for n in list(node.input) + list(node.output))
        if node.op_type in ("Cast", "Shape") and touches_io:
            continue  # the boundary Casts; Shape reads any type (the batch size of the float32 input)
        assert _float_types_of(node, types) <= {HALF}, (node.name, node.op_type)
    # the only float32 tensors are the graph's own inputs and outputs
    assert {n for n, t in types.items() if t == FLOAT} <= io
    # Cast(bool -> float) inside the float16 region now casts to float16
    assert any(n.op_type == "Cast" and n.attribute[0].i == HALF and not n.input[0] in io
               for n in converted.graph.node)
    assert report["nodes_fp32"] == 0 and report["nodes_fp16"] > 10
    assert report["casts"] == 1 + sum(1 for o in original.graph.output if o.type.tensor_type.elem_type == FLOAT)
    assert METADATA_KEY in {p.key for p in converted.metadata_props}
    # the input model is left as it was
    assert not model_has_float16(original)


def test_deployable_model_float16_gives_the_same_instances(tmp_path):
    from m2f_edge import Segmenter

    source = str(make_deployable_model(tmp_path / "m.onnx", num_classes=3))
    converted, _ = convert_float16(onnx.load(source))
    half = str(tmp_path / "m16.onnx")
    onnx.save(converted, half)
    frame, _ = make_test_frame()
    x = np.zeros((1, 3, 64, 96), np.float32)
    from m2f_edge import _core

    _core.preprocess(frame, x)
    raw32, raw16 = _run(onnx.load(source), {"inputs": x}), _run(converted, {"inputs": x})
    assert raw16["pred_masks"].dtype == np.float32 and raw16["pred_scores"].dtype == np.float32
    np.testing.assert_array_equal(raw16["pred_masks"], raw32["pred_masks"])  # thresholds far from any pixel
    np.testing.assert_array_equal(raw16["pred_classes"], raw32["pred_classes"])
    # constants rounded once to float16
    np.testing.assert_allclose(raw16["pred_scores"], raw32["pred_scores"], rtol=UNIT_ROUNDOFF, atol=0)
    assert np.any(raw16["pred_scores"] != raw32["pred_scores"])  # really float16 inside

    expected, got = Segmenter(source).run(frame), Segmenter(half).run(frame)
    assert len(expected) == len(got) == 3
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=UNIT_ROUNDOFF)
    for a, b in zip(got.masks, expected.masks):
        assert mask_iou(a, b) >= 0.99


def test_raw_model_float16_gives_the_same_instances(tmp_path):
    from m2f_edge import Segmenter

    source = str(make_raw_model(tmp_path / "r.onnx", num_classes=3, no_object_index=-1))
    converted, _ = convert_float16(onnx.load(source))
    half = str(tmp_path / "r16.onnx")
    onnx.save(converted, half)
    frame, truth = make_test_frame()
    expected, got = Segmenter(source).run(frame), Segmenter(half).run(frame)
    assert Segmenter(half).no_object_index == -1  # the metadata survives the conversion
    assert len(expected) == len(got) == 3
    np.testing.assert_array_equal(got.labels, expected.labels)
    # score = softmax prob (logits rounded to float16) * mean sigmoid inside the mask: a few roundings
    np.testing.assert_allclose(got.scores, expected.scores, atol=2e-3)
    for a, b in zip(got.masks, expected.masks):
        assert mask_iou(a, b) >= 0.99
    names = {0: "red", 1: "green", 2: "blue"}
    for label, mask in zip(got.labels, got.masks):
        assert mask_iou(mask, truth[names[int(label)]]) > 0.9


def test_keep_io_types_off_gives_float16_io(tmp_path):
    original = onnx.load(str(make_deployable_model(tmp_path / "m.onnx")))
    converted, _ = convert_float16(original, keep_io_types=False)
    onnx.checker.check_model(converted, full_check=True)
    assert converted.graph.input[0].type.tensor_type.elem_type == HALF
    outputs = {o.name: o.type.tensor_type.elem_type for o in converted.graph.output}
    assert outputs == {"pred_masks": HALF, "pred_scores": HALF, "pred_classes": TensorProto.INT64}
    frame, _ = make_test_frame(64, 96)
    x = _normalised(frame)
    got = _run(converted, {"inputs": x.astype(np.float16)})
    want = _run(original, {"inputs": x})
    assert got["pred_masks"].dtype == np.float16
    np.testing.assert_array_equal(got["pred_masks"], want["pred_masks"])


# ---- a TAO-shaped model: TAO's FP32 layer names, overflow, Resize, shared constants -------------------------

SIDE = 272  # 272 * 272 = 73984 pixels: a full-frame mask's area and sum exceed float16's 65504
CHANNELS = 4
BIG = 1.0e5


def _conv_weights():
    rng = np.random.default_rng(3)
    weights = rng.normal(0, 1.5, (CHANNELS, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(0, 0.5, CHANNELS).astype(np.float32)
    weights[0] = 0.0
    bias[0] = 4.0  # query 0 covers the whole frame with probability sigmoid(4) = 0.982
    return weights, bias


def make_tao_like_model(path=None):
    """inputs -> /backbone (Conv, Add eps, Max -inf, Min 1e5) -> /pixel_decoder (Resize x2 nearest,
    AveragePool 2x2) -> /post_processor (Sigmoid, Greater, Cast, Mul, ReduceSum, ReduceSum_1, Add eps, Div).
    Outputs pred_masks (N,Q,H,W) float 0/1 and pred_scores (N,Q) = sum(prob in mask) / (area + eps)."""
    weights, bias = _conv_weights()
    const = lambda name, value: helper.make_node("Constant", [], [name], name="/const/" + name,  # noqa: E731
                                                 value=numpy_helper.from_array(np.asarray(value), name + "_v"))
    nodes = [
        helper.make_node("Conv", ["inputs", "conv_w", "conv_b"], ["conv"], name="/backbone/Conv"),
        helper.make_node("Add", ["conv", "eps"], ["conv_eps"], name="/backbone/Add"),
        const("minus_inf", np.array(-np.inf, np.float32)),
        helper.make_node("Max", ["conv_eps", "minus_inf"], ["conv_max"], name="/backbone/Max"),
        const("big", np.array(BIG, np.float32)),
        helper.make_node("Min", ["conv_max", "big"], ["feat"], name="/backbone/Min"),
        helper.make_node("Resize", ["feat", "roi", "scales"], ["up"], name="/pixel_decoder/Resize", mode="nearest"),
        helper.make_node("AveragePool", ["up"], ["logits"], name="/pixel_decoder/AveragePool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Sigmoid", ["logits"], ["prob"], name="/post_processor/Sigmoid"),
        const("half", np.array(0.5, np.float32)),
        helper.make_node("Greater", ["prob", "half"], ["is_in"], name="/post_processor/Greater"),
        helper.make_node("Cast", ["is_in"], ["pred_masks"], name="/post_processor/Cast", to=FLOAT),
        helper.make_node("Mul", ["prob", "pred_masks"], ["inside"], name="/post_processor/Mul"),
        helper.make_node("ReduceSum", ["inside", "axes"], ["total"], name="/post_processor/ReduceSum", keepdims=0),
        helper.make_node("ReduceSum", ["pred_masks", "axes"], ["area"], name="/post_processor/ReduceSum_1",
                         keepdims=0),
        helper.make_node("Add", ["area", "eps"], ["denominator"], name="/post_processor/Add"),
        helper.make_node("Div", ["total", "denominator"], ["pred_scores"], name="/post_processor/Div"),
    ]
    initializers = [
        numpy_helper.from_array(weights, "conv_w"), numpy_helper.from_array(bias, "conv_b"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),  # read by a float16 and a float32 node
        numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes, "tao_like",
        [helper.make_tensor_value_info("inputs", FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("pred_masks", FLOAT, ["batch", CHANNELS, SIDE, SIDE]),
         helper.make_tensor_value_info("pred_scores", FLOAT, ["batch", CHANNELS])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _reference(x):
    """numpy float64 reference of make_tao_like_model."""
    weights, bias = _conv_weights()
    logits = np.einsum("oc,nchw->nohw", weights[:, :, 0, 0].astype(np.float64), x) + bias[None, :, None, None]
    logits = np.minimum(logits + 1e-6, BIG)
    prob = 1.0 / (1.0 + np.exp(-logits))
    masks = prob > 0.5
    scores = (prob * masks).sum(axis=(2, 3)) / (masks.sum(axis=(2, 3)) + 1e-6)
    return masks, scores


def _tao_input():
    frame, _ = make_test_frame(SIDE, SIDE)
    return _normalised(frame)


def test_tao_layers_overflow_and_resize_choices():
    original = make_tao_like_model()
    converted, report = convert_float16(original)
    onnx.checker.check_model(converted, full_check=True)
    _check_io_contract(original, converted)
    types = _types(converted)
    nodes = {n.name: n for n in converted.graph.node}
    kept_by_name = ["/post_processor/ReduceSum", "/post_processor/ReduceSum_1", "/post_processor/Add",
                    "/post_processor/Div"]
    for name in kept_by_name:
        assert _float_types_of(nodes[name], types) == {FLOAT}, name
    # Min reads 1e5, beyond float16: kept float32 rather than the constant clipped
    assert _float_types_of(nodes["/backbone/Min"], types) == {FLOAT}
    assert report["kept_fp32"]["constant beyond float16"] == ["/backbone/Min"]
    assert sorted(report["kept_fp32"]["name"]) == sorted(kept_by_name)
    big = [n for n in converted.graph.node if n.output[0] == "big"][0]
    assert numpy_helper.to_array(big.attribute[0].t).item() == BIG
    # -inf fits float16: Max runs in float16
    for name in ("/backbone/Conv", "/backbone/Add", "/backbone/Max", "/pixel_decoder/AveragePool",
                 "/post_processor/Sigmoid", "/post_processor/Mul"):
        assert _float_types_of(nodes[name], types) == {HALF}, name
    assert types["conv_w"] == HALF and types["conv_b"] == HALF
    # Resize: float16 data, float32 roi and scales (the spec's float scales)
    resize = nodes["/pixel_decoder/Resize"]
    assert types[resize.input[0]] == HALF and types[resize.output[0]] == HALF
    assert types[resize.input[1]] == FLOAT and types[resize.input[2]] == FLOAT
    # eps is read by a float16 Add and the float32 post-processor Add: kept, with a float16 twin
    assert types["eps"] == FLOAT and nodes["/post_processor/Add"].input[1] == "eps"
    twin = nodes["/backbone/Add"].input[1]
    assert twin != "eps" and types[twin] == HALF and report["constant_twins"] == 1
    # every float16 <-> float32 edge has a Cast: shape inference (strict) above would have failed otherwise


def test_tao_like_model_runs_and_the_fp32_layers_prevent_overflow():
    original = make_tao_like_model()
    x = _tao_input()
    want_masks, want_scores = _reference(x.astype(np.float64))
    assert want_masks[0, 0].sum() > FLOAT16_MAX  # the area really leaves float16's range
    full = _run(original, {"inputs": x})
    # float32 sums over 73984 pixels: about 2e-5 relative from the float64 reference
    np.testing.assert_allclose(full["pred_scores"], want_scores, atol=1e-4)

    converted, _ = convert_float16(original)
    half = _run(converted, {"inputs": x})
    assert np.all(np.isfinite(half["pred_scores"]))
    np.testing.assert_allclose(half["pred_scores"], want_scores, atol=2e-3)
    for q in range(CHANNELS):
        assert mask_iou(half["pred_masks"][0, q] > 0.5, want_masks[0, q]) >= 0.99

    # why the sums stay float32: the full-frame query's area is not a float16 number. In the converted model it
    # is float32 and exact. (ONNX Runtime's CPU provider may run float16 nodes through float32 kernels with
    # Casts it inserts itself, so a fully float16 model is not a reliable overflow demonstration there.)
    area = float(want_masks[0, 0].sum())
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(area))
    converted.graph.output.extend([helper.make_tensor_value_info("area", FLOAT, ["batch", CHANNELS])])
    np.testing.assert_array_equal(_run(converted, {"inputs": x})["area"][0, 0], area)


def test_keep_prefixes_and_op_types_are_options():
    original = make_tao_like_model()
    _, report = convert_float16(original, keep_prefixes=("/pixel_decoder/",))
    assert sorted(report["kept_fp32"]["name"]) == ["/pixel_decoder/AveragePool", "/pixel_decoder/Resize"]
    assert sorted(report["kept_fp32"]["op type"]) == ["/post_processor/ReduceSum", "/post_processor/ReduceSum_1"]
    _, report = convert_float16(original, keep_prefixes=(), keep_op_types=())
    assert "name" not in report["kept_fp32"] and "op type" not in report["kept_fp32"]
    assert report["keep_prefixes"] == []
    _, default = convert_float16(original)
    assert default["keep_prefixes"] == list(TAO_FP32_LAYERS)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        convert_float16("model.onnx")
    converted, _ = convert_float16(make_tao_like_model())
    with pytest.raises(ValueError, match="already holds float16"):
        convert_float16(converted)


# ---- the TensorRT plugin ----------------------------------------------------------------------------------


def _plugin_model():
    from test_portable import make_plugin_model

    return make_plugin_model(domain="TRT")


def test_plugin_runs_in_float16_with_int32_tables_untouched():
    """MultiscaleDeformableAttnPlugin_TRT accepts FP32 or FP16 for value, sampling_locations,
    attention_weights and its output (one type for all four), INT32 for the two tables."""
    original = _plugin_model()
    types = tensor_types(original)
    plugin = [n for n in original.graph.node if n.op_type == PLUGIN_OP_TYPE][0]
    assert types[plugin.output[0]] == FLOAT  # typed like its value input although ONNX cannot infer it

    converted, report = convert_float16(original)
    onnx.checker.check_model(converted)
    _check_io_contract(original, converted)
    types = tensor_types(converted)
    plugin = [n for n in converted.graph.node if n.op_type == PLUGIN_OP_TYPE][0]
    assert [types[n] for n in plugin.input] == [HALF, TensorProto.INT32, TensorProto.INT32, HALF, HALF]
    assert types[plugin.output[0]] == HALF and report["plugin_fp16"]
    assert plugin.input[1] == "spatial_shapes" and plugin.input[2] == "level_start_index"

    kept, report = convert_float16(original, keep_op_types=FP32_OP_TYPES | {PLUGIN_OP_TYPE})
    types = tensor_types(kept)
    plugin = [n for n in kept.graph.node if n.op_type == PLUGIN_OP_TYPE][0]
    assert [types[n] for n in plugin.input] == [FLOAT, TensorProto.INT32, TensorProto.INT32, FLOAT, FLOAT]
    assert report["kept_fp32"]["op type"] == [plugin.name or plugin.op_type] and not report["plugin_fp16"]


def test_unknown_custom_op_stays_float32():
    original = _plugin_model()
    for node in original.graph.node:
        if node.op_type == PLUGIN_OP_TYPE:
            node.op_type = "SomeoneElsesPlugin"
    converted, report = convert_float16(original)
    onnx.checker.check_model(converted)
    assert report["kept_fp32"]["custom op"]
    node = [n for n in converted.graph.node if n.op_type == "SomeoneElsesPlugin"][0]
    assert set(node.input) & {i.name for i in converted.graph.input}  # reads the float32 graph inputs directly
    # its output has no known type: what reads it stays float32 too (no float16 constant meets a float32 tensor)
    readers = [n for n in converted.graph.node if node.output[0] in n.input]
    assert readers and report["kept_fp32"]["untyped"] == [r.name or r.op_type for r in readers]
    assert not model_has_float16(converted)


def test_portable_then_float16_runs_in_onnxruntime(tmp_path, capsys):
    from m2f_edge.cli import main
    from test_portable import _level_tables, _random_inputs, ms_deform_attn_reference

    source = tmp_path / "plugin.onnx"
    onnx.save(_plugin_model(), str(source))
    out = tmp_path / "portable16.onnx"
    assert main(["convert", str(source), "-o", str(out), "--portable", "--fp16"]) == 0
    assert "fp16:" in capsys.readouterr().out
    converted = onnx.load(str(out))
    assert model_has_float16(converted)
    value, locations, weights = _random_inputs(1, seed=5)
    shapes, starts = _level_tables()
    got = _run(converted, {"value": value, "sampling_locations": locations, "attention_weights": weights})
    want = ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1
    # |value| <= ~4 (standard normal), weights sum to 1 per query: a few float16 roundings of values ~5
    np.testing.assert_allclose(list(got.values())[0], want, atol=2e-2)


# ---- the CLI ----------------------------------------------------------------------------------------------


def test_cli_convert_fp16(tmp_path, capsys):
    from m2f_edge.cli import main

    source = str(make_tao_like_model(tmp_path / "tao.onnx") and tmp_path / "tao.onnx")
    out = str(tmp_path / "tao16.onnx")
    assert main(["convert", source, "-o", out, "--fp16"]) == 0
    printed = capsys.readouterr().out
    assert "wrote " + out in printed and "kept float32" in printed
    converted = onnx.load(out)
    onnx.checker.check_model(converted)
    assert model_has_float16(converted)

    # --keep-fp32 replaces TAO's prefixes; --keep-fp32-op adds op types
    assert main(["convert", source, "-o", out, "--fp16", "--force", "--keep-fp32", "/backbone/Conv",
                 "--keep-fp32-op", "Sigmoid"]) == 0
    types = _types(onnx.load(out))
    nodes = {n.name: n for n in onnx.load(out).graph.node}
    assert _float_types_of(nodes["/backbone/Conv"], types) == {FLOAT}
    assert _float_types_of(nodes["/post_processor/Sigmoid"], types) == {FLOAT}
    assert _float_types_of(nodes["/post_processor/Mul"], types) == {HALF}
    assert _float_types_of(nodes["/post_processor/ReduceSum"], types) == {FLOAT}  # by op type still
    capsys.readouterr()


def test_cli_convert_raw_head_and_fp16(tmp_path, capsys):
    from m2f_edge.cli import main

    source = str(make_deployable_model(tmp_path / "d.onnx"))
    out = str(tmp_path / "d16.onnx")
    # the tiny deployable model has no TAO post-processor to cut: raw-head refuses it clearly
    status = main(["convert", source, "-o", out, "--raw-head", "--fp16"])
    err = capsys.readouterr().err
    assert status != 0 and err and not os.path.exists(out)


def test_cli_convert_fp16_bad_inputs(tmp_path, capsys):
    from m2f_edge.cli import main

    out = str(tmp_path / "out.onnx")
    assert main(["convert", str(tmp_path / "absent.onnx"), "-o", out, "--fp16"]) != 0
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xfe this is not protobuf")
    assert main(["convert", str(junk), "-o", out, "--fp16"]) != 0
    assert "not a readable ONNX file" in capsys.readouterr().err
    text = tmp_path / "text.onnx"
    text.write_bytes(b"")
    assert main(["convert", str(text), "-o", out, "--fp16"]) != 0
    assert "not an ONNX model" in capsys.readouterr().err
    source = str(make_deployable_model(tmp_path / "m.onnx"))
    with open(out, "wb") as f:
        f.write(b"keep me")
    assert main(["convert", source, "-o", out, "--fp16"]) != 0
    assert "exists" in capsys.readouterr().err
    with open(out, "rb") as f:
        assert f.read() == b"keep me"
    assert main(["convert", source, "-o", out, "--keep-fp32", "/x"]) != 0
    assert "nothing to do" in capsys.readouterr().err
    assert main(["convert", source, "-o", out, "--portable", "--keep-fp32", "/x"]) != 0
    assert "only apply with --fp16" in capsys.readouterr().err
    half = str(tmp_path / "half.onnx")
    onnx.save(convert_float16(onnx.load(source))[0], half)
    assert main(["convert", half, "-o", str(tmp_path / "again.onnx"), "--fp16"]) != 0
    assert "already holds float16" in capsys.readouterr().err


# ---- a real (tiny, random-weight) Hugging Face Mask2Former export: Swin, pixel decoder, transformer decoder ----


@pytest.mark.slow
class TestOnExportedModel:
    """Exports of tests/hf_exports.py (Swin backbone, multi-scale deformable pixel decoder, masked-attention
    decoder, TAO-style post-processor named /post_processor/...). Tolerance: through some 40 float16
    layers (float32 accumulation in MatMul and Conv kernels) the error grows like a few tens of roundoffs;
    outputs are compared within 5e-3 of their own largest magnitude."""

    @staticmethod
    def _compare(original, converted, inputs):
        ort.set_default_logger_severity(3)  # ORT warns that it cannot constant-fold float16 nodes on the CPU
        want, got = _run(original, {"inputs": inputs}), _run(converted, {"inputs": inputs})
        assert set(want) == set(got)
        return want, got

    @staticmethod
    def _export_and_convert(head):
        """A tiny Hugging Face export of `head`, its FP16 conversion (valid, same I/O contract), the
        conversion report, and the hf_exports module."""
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
        import hf_exports as hx

        original = onnx.load(hx.exported(head, num_labels=2, batch=2)[0])
        converted, report = convert_float16(original)
        onnx.checker.check_model(converted)
        _check_io_contract(original, converted)
        return original, converted, report, hx

    def test_raw_head_export(self):
        original, converted, report, hx = self._export_and_convert("raw")
        assert report["nodes_fp16"] > 500 and report["kept_fp32"]["op type"]  # the layer norms
        want, got = self._compare(original, converted, hx.random_inputs(2, seed=3))
        for name in ("pred_logits", "pred_masks"):
            scale = float(np.abs(want[name]).max())
            np.testing.assert_allclose(got[name], want[name], atol=5e-3 * scale, rtol=0)
            assert np.any(got[name] != want[name])

    def test_deployable_export_keeps_the_post_processor_float32(self):
        original, converted, report, hx = self._export_and_convert("deployable")
        kept = report["kept_fp32"]["name"]
        assert kept and all(name.startswith(TAO_FP32_LAYERS) for name in kept)
        assert any(name.startswith("/post_processor/ReduceSum") for name in kept)
        want, got = self._compare(original, converted, hx.random_inputs(2, seed=4))
        np.testing.assert_array_equal(got["pred_classes"], want["pred_classes"])
        np.testing.assert_allclose(got["pred_scores"], want["pred_scores"], atol=2e-3)
        for image in range(2):
            for query in range(want["pred_masks"].shape[1]):
                a, b = got["pred_masks"][image, query] > 0.5, want["pred_masks"][image, query] > 0.5
                if b.sum() >= 50:
                    assert mask_iou(a, b) >= 0.99

    def test_tensorrt_plugin_export(self):
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
        import hf_exports as hx
        from m2f_edge.models.portable import make_portable

        original = onnx.load(hx.exported("raw", num_labels=2, batch=2, tensorrt_plugin=True)[0])
        plugins = [n for n in original.graph.node if n.op_type == PLUGIN_OP_TYPE]
        assert plugins
        converted, _ = convert_float16(original)
        onnx.checker.check_model(converted)
        types = tensor_types(converted)
        for node in (n for n in converted.graph.node if n.op_type == PLUGIN_OP_TYPE):
            float_inputs = [types.get(node.input[i]) for i in (0, 3, 4)]
            assert float_inputs == [HALF] * 3 and types.get(node.output[0]) == HALF
            assert {types.get(node.input[i]) for i in (1, 2)} <= {TensorProto.INT32, TensorProto.INT64}
        # the same graph made portable, then float16, runs in ONNX Runtime like the float32 portable one
        portable = make_portable(original)
        want, got = self._compare(portable, convert_float16(portable)[0], hx.random_inputs(2, seed=5))
        for name in ("pred_logits", "pred_masks"):
            scale = float(np.abs(want[name]).max())
            np.testing.assert_allclose(got[name], want[name], atol=5e-3 * scale, rtol=0)
