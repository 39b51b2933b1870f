"""End-to-end: Segmenter on frames painted with red/green/blue shapes and tiny ONNX models
(tests/tiny_models.py) that segment exactly those colours. The references are the painted shapes."""

import logging
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tiny_models
from tiny_models import CLASS_NAMES_3, make_test_frame, mask_iou
from m2f_edge import Instances, Prepared, Segmenter
from m2f_edge.backends import UnsupportedModelError

# what the tiny models must find, by score (deployable scores are exact; raw ones are class prob x mask mean)
EXPECTED = [("red", 0.9, 0), ("green", 0.8, 1), ("blue", 0.7, 2)]


def check_instances(inst, shapes, num_classes, contract, min_iou=0.9, score_atol=1e-6):
    assert isinstance(inst, Instances)
    assert len(inst) == 3, inst
    assert inst.image_size == next(iter(shapes.values())).shape
    assert inst.masks.dtype == np.bool_ and inst.masks.shape == (3,) + inst.image_size
    assert np.all(np.diff(inst.scores) <= 0), "scores must be sorted descending"
    for i, (color, score, label3) in enumerate(EXPECTED):
        iou = mask_iou(inst.masks[i], shapes[color])
        assert iou > min_iou, "{} mask IoU {:.3f}".format(color, iou)
        assert inst.labels[i] == (label3 if num_classes == 3 else 0)
        if contract == "deployable":
            assert inst.scores[i] == pytest.approx(score, abs=score_atol)
        else:  # mask-quality factor of the raw head: sigmoid mean inside the mask, close to 1 here
            assert score * 0.85 < inst.scores[i] <= score + 1e-6
        ys, xs = np.nonzero(inst.masks[i])
        np.testing.assert_allclose(inst.boxes[i], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert inst.areas[i] == inst.masks[i].sum()


@pytest.mark.parametrize("contract", ["deployable", "raw"])
@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("color", ["bgr", "rgb"])
def test_end_to_end(tiny_model, contract, num_classes, resize, color):
    model = tiny_model(contract, num_classes=num_classes)
    frame, shapes = make_test_frame(color=color)
    seg = Segmenter(model, resize=resize, color=color)
    assert seg.contract == contract and seg.input_size == (64, 96) and seg.batch_range == (1, None)
    inst = seg.run(frame)
    check_instances(inst, shapes, num_classes, contract)
    # the query each instance came from (graph order: blue 0, red 1, red-low 2, green 3, empty 4)
    assert list(inst.query_indices) == [1, 3, 0]


def test_wrong_color_order_finds_swapped_colours(deployable_model_3):
    """A BGR frame declared RGB swaps red and blue: the colour path really is exercised."""
    frame, shapes = make_test_frame()
    inst = Segmenter(deployable_model_3, color="rgb").run(frame)
    by_label = {int(l): m for l, m in zip(inst.labels, inst.masks)}
    assert mask_iou(by_label[0], shapes["blue"]) > 0.9  # "red" class found on the blue shape
    assert mask_iou(by_label[2], shapes["red"]) > 0.9


def test_class_names_and_thresholds(deployable_model_3, raw_model_3):
    frame, shapes = make_test_frame()
    for model in (deployable_model_3, raw_model_3):
        seg = Segmenter(model, class_names=CLASS_NAMES_3)
        inst = seg.run(frame)
        assert inst.class_names == ["red", "green", "blue"]
        # below the default threshold: the second red query (0.3) appears; the empty query never does
        seg.score_threshold = 0.2
        low = seg.run(frame)
        assert len(low) == 4 and low.class_names.count("red") == 2
        assert mask_iou(low.masks[3], shapes["red"]) > 0.9
        seg.score_threshold = 0.0
        every = seg.run(frame)  # the empty mask (query 4) is dropped whatever its score
        assert 4 not in every.query_indices and (every.areas > 0).all()
        if seg.contract == "deployable":
            assert len(every) == 4
        else:  # raw head: top-k over (query, class) pairs also yields each query's near-zero other classes
            assert len(every) == 12 and (every.scores[4:] < 0.01).all()
        seg.max_instances = 2
        capped = seg.run(frame)
        assert capped.class_names == ["red", "green"]
        seg.score_threshold, seg.max_instances = 0.95, 100
        assert len(seg.run(frame)) == 0


def test_one_class_default_name(deployable_model, raw_model):
    frame, _ = make_test_frame()
    for model in (deployable_model, raw_model):
        inst = Segmenter(model).run(frame)
        assert inst.class_names == ["object"] * 3


@pytest.mark.parametrize("contract", ["deployable", "raw"])
def test_batch_equals_single(tiny_model, contract):
    seg = Segmenter(tiny_model(contract, num_classes=3))
    frames = [make_test_frame(h, w)[0] for h, w in [(240, 320), (100, 60), (480, 200), (33, 47)]]
    singles = [seg.run(f) for f in frames]
    for batch in (seg.run_batch(frames), seg.run_batch(frames, batch_size=3)):
        assert len(batch) == len(frames)
        for one, many in zip(singles, batch):
            assert one.image_size == many.image_size
            np.testing.assert_array_equal(one.masks, many.masks)
            np.testing.assert_array_equal(one.scores, many.scores)
            np.testing.assert_array_equal(one.labels, many.labels)
    # one (B,H,W,C) array: a single core call, the same results
    same_size = np.stack([make_test_frame()[0]] * 3)
    stacked = seg.run_batch(same_size)
    reference = seg.run(same_size[0])
    for inst in stacked:
        np.testing.assert_array_equal(inst.masks, reference.masks)
    assert seg.run_batch([]) == []


def test_stage_api(deployable_model_3):
    seg = Segmenter(deployable_model_3)
    frames = [make_test_frame()[0], make_test_frame(120, 200)[0]]
    prepared = seg.preprocess(frames)
    assert isinstance(prepared, Prepared) and len(prepared) == 2
    assert prepared.tensor.shape == (2, 3, 64, 96) and prepared.tensor.dtype == np.float32
    assert [(t.frame_height, t.frame_width) for t in prepared.transforms] == [(240, 320), (120, 200)]
    outputs = seg.infer(prepared.tensor)
    assert set(outputs) == {"pred_masks", "pred_scores", "pred_classes"}
    assert outputs["pred_masks"].shape == (2, 5, 64, 96)
    results = seg.postprocess(outputs, prepared.transforms)
    assert [r.image_size for r in results] == [(240, 320), (120, 200)]
    # the stages keep their own buffers: an earlier Prepared is not overwritten by the next call
    first = prepared.tensor.copy()
    seg.preprocess([np.zeros((50, 50, 3), np.uint8)] * 2)
    np.testing.assert_array_equal(prepared.tensor, first)
    out = np.empty((2, 3, 64, 96), np.float32)
    assert seg.preprocess(frames, out=out).tensor is out
    np.testing.assert_array_equal(out, first)
    with pytest.raises(ValueError, match="out"):
        seg.preprocess(frames, out=np.empty((2, 3, 64, 96), np.float16))


def test_frame_layouts_match_contiguous_copies(raw_model_3):
    seg = Segmenter(raw_model_3)
    frame, _ = make_test_frame(240, 320)
    canvas = np.zeros((300, 400, 3), np.uint8)
    canvas[30:270, 50:370] = frame
    variants = {
        "crop": canvas[30:270, 50:370],
        "flipped": frame[::-1, ::-1],
        "fortran": np.asfortranarray(frame),
        "every other": np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)[::2, ::2],
        "channel-reversed view as rgb": frame[:, :, ::-1],
    }
    for name, view in variants.items():
        rgb = name.endswith("rgb")
        seg.color = "rgb" if rgb else "bgr"
        got = seg.run(view)
        want = seg.run(np.ascontiguousarray(view))
        np.testing.assert_array_equal(got.masks, want.masks, err_msg=name)
        np.testing.assert_array_equal(got.scores, want.scores, err_msg=name)
        assert len(got) == 3, name


def test_gray_and_alpha_frames(deployable_model_3):
    seg = Segmenter(deployable_model_3)
    frame, shapes = make_test_frame()
    bgra = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    check_instances(seg.run(bgra), shapes, 3, "deployable")
    gray = frame.mean(axis=2).astype(np.uint8)
    assert len(seg.run(gray)) == 0  # no dominant colour in gray: nothing to find, and no error
    assert len(seg.run(gray[:, :, None])) == 0
    # mixed channel counts in one batch
    results = seg.run_batch([frame, gray, bgra])
    assert [len(r) for r in results] == [3, 0, 3]


def test_fixed_batch_model(tiny_model):
    seg = Segmenter(tiny_model("deployable", num_classes=3, batch=2))
    assert seg.batch_range == (2, 2)
    frame, shapes = make_test_frame()
    check_instances(seg.run(frame), shapes, 3, "deployable")  # padded to the fixed batch of 2
    results = seg.run_batch([frame] * 3)
    assert len(results) == 3
    for inst in results:
        check_instances(inst, shapes, 3, "deployable")
    tensor = seg.preprocess([frame] * 5).tensor
    outputs = seg.infer(tensor)  # 5 > 2: run in chunks of 2 (the last padded)
    assert outputs["pred_scores"].shape == (5, 5)


def _float16_input_model(src, dst):
    """The tiny model with a float16 input, cast to float inside (as an FP16-input export would be)."""
    model = onnx.load(src)
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "inputs":
                node.input[i] = "inputs_f32"
    graph.node.insert(0, helper.make_node("Cast", ["inputs"], ["inputs_f32"], to=TensorProto.FLOAT))
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    onnx.save(model, dst)
    return dst


def test_float16_input(tmp_path, tiny_model):
    model = _float16_input_model(tiny_model("raw", num_classes=3), str(tmp_path / "fp16.onnx"))
    seg = Segmenter(model)
    assert seg.input_dtype == np.float16
    prepared = seg.preprocess([make_test_frame()[0]])
    assert prepared.tensor.dtype == np.float16
    frame, shapes = make_test_frame()
    check_instances(seg.run(frame), shapes, 3, "raw")


def _float16_outputs_model(src, dst, names):
    """The tiny model with the named float outputs cast to float16 (as an FP16 engine returns them)."""
    model = onnx.load(src)
    graph = model.graph
    for output in graph.output:
        if output.name in names:
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == output.name:
                        node.output[i] = output.name + "_f32"
            graph.node.append(helper.make_node("Cast", [output.name + "_f32"], [output.name], to=TensorProto.FLOAT16))
            output.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("contract, names", [("deployable", ["pred_masks", "pred_scores"]),
                                             ("raw", ["pred_logits", "pred_masks"])])
def test_float16_outputs(tmp_path, tiny_model, contract, names):
    model = _float16_outputs_model(tiny_model(contract, num_classes=3), str(tmp_path / "fp16out.onnx"), names)
    seg = Segmenter(model)
    frame, shapes = make_test_frame()
    outputs = seg.infer(seg.preprocess([frame]).tensor)
    assert all(outputs[n].dtype == np.float16 for n in names)
    inst = seg.run(frame)
    assert inst.scores.dtype == np.float32
    check_instances(inst, shapes, 3, contract, score_atol=1e-3)  # float16 scores: close, not exact


def test_no_object_last(tiny_model):
    model = tiny_model("raw", num_classes=3, no_object_index=-1)
    frame, shapes = make_test_frame()
    seg = Segmenter(model)  # from the model's metadata
    assert seg.no_object_index == -1
    check_instances(seg.run(frame), shapes, 3, "raw")
    wrong = Segmenter(model, no_object_index=0).run(frame)  # an explicit wrong index really changes the answer
    colour_of = {0: "red", 1: "green", 2: "blue"}
    matches = [mask_iou(m, shapes[colour_of[int(l)]]) > 0.9 for m, l in zip(wrong.masks, wrong.labels)]
    assert not all(matches)


# --- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("frame, error, words", [
    (np.zeros((0, 0, 3), np.uint8), ValueError, ["frame", "empty"]),
    (np.zeros((10, 10, 3), np.uint8), ValueError, ["at least"]),
    (np.zeros((64, 64, 3), np.float32), TypeError, ["uint8", "float32"]),
    (np.zeros((64, 64, 2), np.uint8), ValueError, ["1, 3 or 4 channels"]),
    (np.zeros((2, 64, 64, 3, 1), np.uint8), ValueError, ["shape"]),
    (np.zeros((1, 64, 64, 3), np.uint8), ValueError, ["run_batch"]),
    ([np.zeros((64, 64, 3), np.uint8)], TypeError, ["run_batch"]),
    ("frame.jpg", TypeError, ["numpy uint8 array"]),
])
def test_bad_frames_then_a_good_one(deployable_model_3, frame, error, words):
    seg = Segmenter(deployable_model_3)
    with pytest.raises(error) as info:
        seg.run(frame)
    for word in words:
        assert word in str(info.value)
    good, shapes = make_test_frame()
    check_instances(seg.run(good), shapes, 3, "deployable")


def test_bad_frames_in_a_batch_name_the_index(deployable_model_3):
    seg = Segmenter(deployable_model_3)
    good, _ = make_test_frame()
    with pytest.raises(TypeError, match=r"frames\[1\].*uint8"):
        seg.run_batch([good, good.astype(np.float64)])
    with pytest.raises(TypeError, match=r"frames\[0\].*numpy"):
        seg.run_batch([None])
    with pytest.raises(ValueError, match="gray"):
        Segmenter(deployable_model_3, color="gray").run(good)


@pytest.mark.parametrize("kwargs, words", [
    (dict(resize="crop"), ["resize", "letterbox"]),
    (dict(color="yuv"), ["color", "bgr"]),
    (dict(score_threshold=1.5), ["score_threshold"]),
    (dict(max_instances=0), ["max_instances"]),
    (dict(threads=-1), ["threads"]),
    (dict(std=(0.2, 0, 0.2)), ["std"]),
    (dict(class_names="object"), ["class_names"]),
    (dict(backend="openvino"), ["backend", "onnxruntime"]),
    (dict(providers=["NoSuchExecutionProvider"]), ["NoSuchExecutionProvider", "available"]),
])
def test_bad_arguments(deployable_model, kwargs, words):
    with pytest.raises((ValueError, TypeError)) as info:
        Segmenter(deployable_model, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_bad_no_object_index(raw_model_3):
    with pytest.raises(ValueError, match="no_object_index"):
        Segmenter(raw_model_3, no_object_index=2)


def test_missing_and_wrong_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        Segmenter(str(tmp_path / "nowhere.onnx"))
    with pytest.raises(IsADirectoryError):
        Segmenter(str(tmp_path))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UnsupportedModelError, match="junk.onnx"):
        Segmenter(str(junk))
    other = tmp_path / "model.pt"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.onnx"):
        Segmenter(str(other))


def _save_graph(path, inputs, outputs, nodes):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_unsupported_models_list_what_was_found(tmp_path):
    image = helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["b", 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3, 32, 32])
    path = _save_graph(str(tmp_path / "classifier.onnx"), [image], [logits],
                       [helper.make_node("Identity", ["inputs"], ["logits"])])
    with pytest.raises(UnsupportedModelError) as info:
        Segmenter(path)
    assert "['logits']" in str(info.value) and "pred_scores" in str(info.value) and "pred_logits" in str(info.value)

    one_channel = helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [1, 1, 32, 32])
    masks = helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, [1, 1, 32, 32])
    cls = helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [1, 1, 32, 32])
    path = _save_graph(str(tmp_path / "gray.onnx"), [one_channel], [masks, cls],
                       [helper.make_node("Identity", ["inputs"], ["pred_masks"]),
                        helper.make_node("Identity", ["inputs"], ["pred_logits"])])
    with pytest.raises(UnsupportedModelError, match=r"\[1, 1, 32, 32\].*3 channels"):
        Segmenter(path)

    dynamic = helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [1, 3, "h", "w"])
    masks = helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, [1, 3, "h", "w"])
    cls = helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [1, 3, "h", "w"])
    path = _save_graph(str(tmp_path / "dynamic.onnx"), [dynamic], [masks, cls],
                       [helper.make_node("Identity", ["inputs"], ["pred_masks"]),
                        helper.make_node("Identity", ["inputs"], ["pred_logits"])])
    with pytest.raises(UnsupportedModelError, match="fixed network size"):
        Segmenter(path)


def _with_scores(src, dst, scores):
    """The tiny deployable model with other query scores baked in."""
    model = onnx.load(src)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == "scores_const":
            node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array([scores], np.float32), "v"))
    onnx.save(model, dst)
    return dst


def test_nan_scores_are_skipped(tmp_path, deployable_model_3):
    # queries: blue, red, red-low, green, empty -> blue's score is NaN
    path = _with_scores(deployable_model_3, str(tmp_path / "nan.onnx"), [np.nan, 0.9, 0.3, 0.8, 0.6])
    seg = Segmenter(path)
    frame, shapes = make_test_frame()
    inst = seg.run(frame)
    assert list(inst.labels) == [0, 1] and not np.isnan(inst.scores).any()
    assert mask_iou(inst.masks[0], shapes["red"]) > 0.9
    # and the next frame, on a sane model, is unaffected
    check_instances(Segmenter(deployable_model_3).run(frame), shapes, 3, "deployable")


# --- models that need help to run ----------------------------------------------------------------------------------

def _with_plugin_node(src, dst):
    """The tiny model with a MultiscaleDeformableAttnPlugin_TRT node (domain "TRT") on its input path.
    The fake node has one input so a stand-in rewrite can replace it by Identity."""
    model = onnx.load(src)
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "inputs":
                node.input[i] = "attended"
    graph.node.insert(0, helper.make_node("MultiscaleDeformableAttnPlugin_TRT", ["inputs"], ["attended"],
                                          domain="TRT", name="msda_0"))
    model.opset_import.append(helper.make_opsetid("TRT", 1))
    del graph.value_info[:]
    onnx.save(model, dst)
    return dst


def test_plugin_node_is_rewritten_on_load(tmp_path, monkeypatch, caplog, deployable_model_3):
    path = _with_plugin_node(deployable_model_3, str(tmp_path / "plugin.onnx"))
    calls = []

    def fake_make_portable(model):
        calls.append(model)
        for node in model.graph.node:
            if node.op_type == "MultiscaleDeformableAttnPlugin_TRT":
                node.op_type, node.domain = "Identity", ""
        return model

    fake = type(sys)("m2f_edge.models.portable")
    fake.make_portable = fake_make_portable
    monkeypatch.setitem(sys.modules, "m2f_edge.models.portable", fake)
    with caplog.at_level(logging.INFO, logger="m2f_edge"):
        seg = Segmenter(path)
    assert len(calls) == 1 and isinstance(calls[0], onnx.ModelProto)
    assert "rewrote 1 MultiscaleDeformableAttnPlugin_TRT" in caplog.text
    frame, shapes = make_test_frame()
    check_instances(seg.run(frame), shapes, 3, "deployable")
    assert onnx.load(path).graph.node[0].op_type == "MultiscaleDeformableAttnPlugin_TRT"  # file untouched


def test_plugin_node_without_the_rewriter(tmp_path, monkeypatch, deployable_model):
    path = _with_plugin_node(deployable_model, str(tmp_path / "plugin.onnx"))
    monkeypatch.setitem(sys.modules, "m2f_edge.models.portable", None)  # import fails
    with pytest.raises(ImportError, match="MultiscaleDeformableAttnPlugin_TRT.*m2f_edge.models.portable"):
        Segmenter(path)


def _with_real_plugin(src, dst, domain="nvidia"):
    """The tiny model with a MultiscaleDeformableAttnPlugin_TRT node of the real I/O (value, spatial_shapes,
    level_start_index, sampling_locations, attention_weights) whose output, times zero, is added to the
    input: the plugin must really run (after the rewrite) and must not change the answer."""
    rng = np.random.default_rng(0)
    levels, heads, dim, queries, points = [(4, 4), (2, 2)], 2, 4, 3, 2
    total = sum(h * w for h, w in levels)
    consts = {
        "msda_value": rng.standard_normal((1, total, heads, dim)).astype(np.float32),
        "msda_shapes": np.array(levels, np.int32),
        "msda_starts": np.array([0, levels[0][0] * levels[0][1]], np.int32),
        "msda_locations": rng.uniform(0, 1, (1, queries, heads, len(levels), points, 2)).astype(np.float32),
        "msda_weights": np.full((1, queries, heads, len(levels), points), 0.25, np.float32),
        "msda_zero": np.zeros((), np.float32),
    }
    model = onnx.load(src)
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "inputs":
                node.input[i] = "inputs_plus"
    nodes = [helper.make_node("Constant", [], [k], value=onnx.numpy_helper.from_array(v, k + "_v"))
             for k, v in consts.items()]
    nodes += [
        helper.make_node("MultiscaleDeformableAttnPlugin_TRT", ["msda_value", "msda_shapes", "msda_starts",
                                                                 "msda_locations", "msda_weights"],
                         ["msda_out"], domain=domain, name="msda"),
        helper.make_node("ReduceSum", ["msda_out"], ["msda_sum"], keepdims=0),
        helper.make_node("Mul", ["msda_sum", "msda_zero"], ["msda_nothing"]),
        helper.make_node("Add", ["inputs", "msda_nothing"], ["inputs_plus"]),
    ]
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    model.opset_import.append(helper.make_opsetid(domain, 1))
    del graph.value_info[:]
    onnx.save(model, dst)
    return dst


def test_real_plugin_rewrite(tmp_path, caplog, deployable_model_3):
    """With m2f_edge.models.portable present (helper "models"), a model holding the plugin runs as is."""
    pytest.importorskip("m2f_edge.models.portable")
    path = _with_real_plugin(deployable_model_3, str(tmp_path / "msda.onnx"))
    with caplog.at_level(logging.INFO, logger="m2f_edge"):
        seg = Segmenter(path)
    assert "rewrote 1 MultiscaleDeformableAttnPlugin_TRT" in caplog.text
    frame, shapes = make_test_frame()
    check_instances(seg.run(frame), shapes, 3, "deployable")


def test_engine_without_tensorrt(tmp_path, monkeypatch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "m2f_edge.backends.tensorrt", None)
    with pytest.raises(ImportError, match="TensorRT.*ONNX"):
        Segmenter(str(engine))
    with pytest.raises(ValueError, match="use backend='tensorrt'"):
        Segmenter(str(tmp_path / "model.engine"), backend="onnxruntime")  # wrong pairing is explained
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"")
    with pytest.raises(ImportError, match="TensorRT.*backend='onnxruntime'"):
        Segmenter(str(onnx_path), backend="tensorrt")


def test_tensorrt_from_onnx_keeps_the_onnx_metadata(monkeypatch, tiny_model):
    """backend='tensorrt' with an .onnx asks the TensorRT backend for a (cached) engine; the engine lacks the
    ONNX's metadata, so the Segmenter reads it from the ONNX. A stand-in TensorRT backend runs ONNX Runtime."""
    from m2f_edge.backends.onnxruntime import OnnxRuntimeBackend

    model = tiny_model("raw", num_classes=3, no_object_index=-1)
    built = []

    class StandInTensorRT(object):
        @classmethod
        def from_onnx(cls, path):
            built.append(path)
            backend = OnnxRuntimeBackend(path)
            backend.name, backend.metadata = "tensorrt", {}
            return backend

    fake = type(sys)("m2f_edge.backends.tensorrt")
    fake.TensorRTBackend = StandInTensorRT
    monkeypatch.setitem(sys.modules, "m2f_edge.backends.tensorrt", fake)
    seg = Segmenter(model, backend="tensorrt")
    assert built == [model] and seg.backend.name == "tensorrt"
    assert seg.no_object_index == -1  # from the ONNX's metadata
    frame, shapes = make_test_frame()
    check_instances(seg.run(frame), shapes, 3, "raw")
    del StandInTensorRT.from_onnx  # a TensorRT backend that cannot build: explained
    with pytest.raises(ValueError, match="m2f-edge build"):
        Segmenter(model, backend="tensorrt")


def test_backend_object_and_repr(deployable_model):
    from m2f_edge.backends import open_backend

    backend = open_backend(deployable_model, "onnxruntime-cpu", threads=1)
    assert backend.name == "onnxruntime" and backend.providers == ["CPUExecutionProvider"]
    assert backend.input_name == "inputs" and backend.input_shape == (None, 3, 64, 96)
    seg = Segmenter(backend)
    assert seg.backend is backend
    frame, shapes = make_test_frame()
    assert len(seg.run(frame)) == 3
    text = repr(seg)
    assert "deployable" in text and "64x96" in text and "onnxruntime" in text
    with pytest.raises(ValueError, match="tensor"):
        backend.run(np.zeros((1, 3, 32, 32), np.float32))
    import pathlib

    assert Segmenter(pathlib.Path(deployable_model)).model_path == deployable_model
    with Segmenter(deployable_model) as closing:
        closing.run(frame)
    with pytest.raises(RuntimeError, match="closed"):
        closing.run(frame)


def test_stream_needs_the_video_module(deployable_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "m2f_edge.video.stream", None)
    with pytest.raises(ImportError, match="m2f_edge.video"):
        Segmenter(deployable_model).stream("video.mp4")


def test_tiny_model_constants_are_what_the_tests_assume():
    """Guards EXPECTED above against edits of tests/tiny_models.py."""
    assert tiny_models.QUERIES == [(2, 0.7), (0, 0.9), (0, 0.3), (1, 0.8), (None, 0.6)]


class _FakeCudaFrame:
    """Stands in for a CuPy/PyTorch CUDA tensor: only the CUDA array interface is looked at."""

    __cuda_array_interface__ = {"shape": (64, 96, 3), "typestr": "|u1", "data": (0, False), "version": 3}


def test_gpu_frame_with_onnxruntime_is_refused_clearly(tiny_model):
    seg = Segmenter(tiny_model("deployable"))
    with pytest.raises(TypeError, match="frame: a frame on the GPU needs the device runner"):
        seg.run(_FakeCudaFrame())
    with pytest.raises(TypeError, match=r"frames\[0\]: a frame on the GPU needs the device runner"):
        seg.run_batch([_FakeCudaFrame()])
    frame, _ = make_test_frame()
    assert len(seg.run(frame)) == 3  # red, green, blue: the refusal leaves the segmenter usable
