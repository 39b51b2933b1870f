"""make_portable: the TensorRT deformable-attention plugin node rewritten into standard ONNX ops.

The reference is an independent numpy implementation of Deformable DETR's multi-scale deformable
attention with the CUDA kernel's own sampling rule (pixel coordinate = location * size - 0.5, the
four neighbours weighted bilinearly, neighbours outside the map count as zero).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from m2f_edge.models.portable import PLUGIN_OP_TYPE, make_portable, needs_portable, plugin_summary


def ms_deform_attn_reference(value, spatial_shapes, level_start, locations, weights):
    """numpy reference: value [N,S,M,D], locations [N,Lq,M,L,P,2], weights [N,Lq,M,L,P] -> [N,Lq,M,D]."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    out = np.zeros((n, lq, m, d), np.float64)
    for level in range(num_levels):
        h, w = (int(v) for v in spatial_shapes[level])
        start = int(level_start[level])
        vmap = value[:, start:start + h * w].reshape(n, h, w, m, d).astype(np.float64)
        x = locations[:, :, :, level, :, 0] * w - 0.5  # [N,Lq,M,P]
        y = locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi, yi = x0 + dx, y0 + dy
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                xc, yc = np.clip(xi, 0, w - 1), np.clip(yi, 0, h - 1)
                bi = np.arange(n)[:, None, None, None]
                mi = np.arange(m)[None, None, :, None]
                corner = vmap[bi, yc, xc, mi]  # [N,Lq,M,P,D]
                coeff = (wy * wx * inside * weights[:, :, :, level, :])[..., None]
                out += (coeff * corner).sum(axis=3)
    return out.astype(np.float32)


LEVELS = [(6, 5), (3, 3), (2, 1)]
HEADS, HEAD_DIM, POINTS, QUERIES = 2, 4, 3, 7


def _level_tables(levels=LEVELS):
    shapes = np.array(levels, np.int32)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in levels])[:-1]]).astype(np.int32)
    return shapes, starts


def _random_inputs(batch, seed, levels=LEVELS, margin=0.15):
    rng = np.random.default_rng(seed)
    total = sum(h * w for h, w in levels)
    value = rng.standard_normal((batch, total, HEADS, HEAD_DIM)).astype(np.float32)
    # locations slightly outside [0,1] too, to exercise the zero padding
    locations = rng.uniform(-margin, 1 + margin, (batch, QUERIES, HEADS, len(levels), POINTS, 2)).astype(np.float32)
    weights = rng.uniform(0, 1, (batch, QUERIES, HEADS, len(levels), POINTS)).astype(np.float32)
    weights /= weights.sum(axis=(3, 4), keepdims=True)
    return value, locations, weights


def make_plugin_model(domain="nvidia", constant_tables=True, batch=None, opset=17, levels=LEVELS,
                      tao_attrs=False):
    """value/locations/weights as graph inputs -> plugin -> Add 1 (so the output feeds a real op)."""
    total = sum(h * w for h, w in levels)
    batch_dim = batch if batch is not None else "batch"
    inputs = [
        helper.make_tensor_value_info("value", TensorProto.FLOAT, [batch_dim, total, HEADS, HEAD_DIM]),
        helper.make_tensor_value_info("sampling_locations", TensorProto.FLOAT,
                                      [batch_dim, QUERIES, HEADS, len(levels), POINTS, 2]),
        helper.make_tensor_value_info("attention_weights", TensorProto.FLOAT,
                                      [batch_dim, QUERIES, HEADS, len(levels), POINTS]),
    ]
    shapes, starts = _level_tables(levels)
    initializers = []
    if constant_tables:
        initializers = [numpy_helper.from_array(shapes, "spatial_shapes"),
                        numpy_helper.from_array(starts, "level_start_index")]
    else:
        inputs += [helper.make_tensor_value_info("spatial_shapes", TensorProto.INT32, [len(levels), 2]),
                   helper.make_tensor_value_info("level_start_index", TensorProto.INT32, [len(levels)])]
    attrs = {"name": PLUGIN_OP_TYPE, "version": "1", "namespace": ""} if tao_attrs else {}
    plugin = helper.make_node(PLUGIN_OP_TYPE, ["value", "spatial_shapes", "level_start_index",
                                               "sampling_locations", "attention_weights"], ["attn"],
                              name="/pixel_decoder/msda", domain=domain)
    # TAO's exporter gives the node string attributes, one of them called "name"
    plugin.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    nodes = [
        plugin,
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, np.float32), "one")),
        helper.make_node("Add", ["attn", "one"], ["out"], name="/after"),
    ]
    graph = helper.make_graph(nodes, "plugin_graph", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch_dim, QUERIES, HEADS, HEAD_DIM])], initializers)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("domain", ["nvidia", "TRT", ""])
def test_matches_reference_in_any_domain(domain):
    model = make_plugin_model(domain=domain, tao_attrs=(domain == ""))
    assert needs_portable(model)
    portable = make_portable(model)
    assert not needs_portable(portable)
    assert {o.domain for o in portable.opset_import} == {""}
    onnx.checker.check_model(portable)
    value, locations, weights = _random_inputs(2, seed=1)
    got = _run(portable, {"value": value, "sampling_locations": locations, "attention_weights": weights})
    shapes, starts = _level_tables()
    want = ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1.0
    assert got.shape == (2, QUERIES, HEADS, HEAD_DIM)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_dynamic_tables_and_batch_sizes():
    """spatial_shapes / level_start_index as run-time inputs; batch 1 and 3 through one model."""
    portable = make_portable(make_plugin_model(constant_tables=False))
    shapes, starts = _level_tables()
    for batch in (1, 3):
        value, locations, weights = _random_inputs(batch, seed=10 + batch)
        got = _run(portable, {"value": value, "sampling_locations": locations, "attention_weights": weights,
                              "spatial_shapes": shapes, "level_start_index": starts})
        want = ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1.0
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_single_level_and_old_opset_is_raised():
    levels = [(4, 6)]
    model = make_plugin_model(opset=13, levels=levels)
    portable = make_portable(model)
    opset = [o.version for o in portable.opset_import if o.domain == ""][0]
    assert opset == 16
    value, locations, weights = _random_inputs(1, seed=3, levels=levels)
    shapes, starts = _level_tables(levels)
    got = _run(portable, {"value": value, "sampling_locations": locations, "attention_weights": weights})
    np.testing.assert_allclose(got, ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1,
                               atol=1e-5, rtol=1e-5)


def test_opset_20_uses_linear_mode():
    portable = make_portable(make_plugin_model(opset=20))
    modes = {helper.get_attribute_value(a) for n in portable.graph.node if n.op_type == "GridSample"
             for a in n.attribute if a.name == "mode"}
    assert modes == {b"linear"}
    value, locations, weights = _random_inputs(2, seed=4)
    shapes, starts = _level_tables()
    got = _run(portable, {"value": value, "sampling_locations": locations, "attention_weights": weights})
    np.testing.assert_allclose(got, ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1,
                               atol=1e-5, rtol=1e-5)


def test_shapes_stay_inferable():
    portable = make_portable(make_plugin_model(batch=2))
    inferred = onnx.shape_inference.infer_shapes(portable, strict_mode=True)
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    dims = [d.dim_value for d in infos["attn"].type.tensor_type.shape.dim]
    assert dims == [2, QUERIES, HEADS, HEAD_DIM]
    dims = [d.dim_value for d in infos["out"].type.tensor_type.shape.dim]
    assert dims == [2, QUERIES, HEADS, HEAD_DIM]


def test_model_without_plugin_is_unchanged_copy():
    model = make_plugin_model()
    plain = make_portable(model)
    again = make_portable(plain)
    assert again is not plain
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in plain.graph.node]
    assert plugin_summary(model) == (1, ["nvidia"])
    assert plugin_summary(plain) == (0, [])
    # the input model itself is not modified
    assert needs_portable(model)


def test_bad_plugin_node_is_a_clear_error():
    model = make_plugin_model()
    del model.graph.node[0].input[4]
    with pytest.raises(ValueError, match="expected 5 inputs"):
        make_portable(model)
    with pytest.raises(TypeError, match="model"):
        make_portable("model.onnx")


def test_cli_convert_portable_writes_a_runnable_model(tmp_path, capsys):
    from m2f_edge.cli import main

    source = tmp_path / "plugin.onnx"
    onnx.save(make_plugin_model(domain="TRT"), str(source))
    out = tmp_path / "portable.onnx"
    assert main(["convert", str(source), "-o", str(out), "--portable"]) == 0
    assert "1 MultiscaleDeformableAttnPlugin_TRT node(s) replaced" in capsys.readouterr().out
    converted = onnx.load(str(out))
    assert not needs_portable(converted)
    value, locations, weights = _random_inputs(2, seed=8)
    shapes, starts = _level_tables()
    got = _run(converted, {"value": value, "sampling_locations": locations, "attention_weights": weights})
    np.testing.assert_allclose(got, ms_deform_attn_reference(value, shapes, starts, locations, weights) + 1,
                               atol=1e-5, rtol=1e-5)
    # a missing input file is one clear error, not a traceback
    assert main(["convert", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "x.onnx"), "--portable"]) != 0
    assert "no such file" in capsys.readouterr().err


def test_plugin_inside_a_subgraph_is_refused_clearly():
    inner = make_plugin_model().graph
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    branch = helper.make_graph(list(inner.node), "branch", [], list(inner.output))
    if_node = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([if_node], "outer", [cond] + list(inner.input), list(inner.output),
                              list(inner.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nvidia", 1)])
    with pytest.raises(ValueError, match="subgraphs"):
        make_portable(model)
