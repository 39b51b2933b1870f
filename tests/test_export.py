"""m2f-edge export: a Hugging Face Mask2Former to ONNX, checked in ONNX Runtime against the PyTorch model.

Small random-weight configs (tiny Swin, 10 queries, 64x64 input) keep this fast on a small CPU."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.slow  # exports take seconds each
pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_exports as hx  # noqa: E402
from m2f_edge.models.export import METADATA_CLASS_NAMES, METADATA_NO_OBJECT, export  # noqa: E402
from m2f_edge.models.portable import make_portable, needs_portable  # noqa: E402


def _session(model_or_path):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else model_or_path
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _metadata(path):
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def test_raw_head_dynamic_batch_matches_pytorch_through_tensorrt_plugin_and_portable(capfd):
    """Raw head exported with TAO's plugin node (dynamic batch), made portable, run at batch 1 and 3."""
    path, summary = hx.exported("raw", num_labels=1, batch=None, tensorrt_plugin=True)
    # the symbolic states the plugin's output type, so torch's C++ shape inference has nothing to warn about
    assert "shape inference" not in capfd.readouterr().err
    model = onnx.load(path)
    assert summary["tensorrt_plugin_nodes"] >= 1 and needs_portable(model)
    plugin_domains = {n.domain for n in model.graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"}
    assert plugin_domains == {"nvidia"}
    session = _session(make_portable(model))
    assert [o.name for o in session.get_outputs()] == ["pred_logits", "pred_masks"]
    for batch in (1, 3):
        inputs = hx.random_inputs(batch, seed=batch)
        logits, masks = session.run(None, {"inputs": inputs})
        ref_logits, ref_masks = hx.torch_outputs(1, inputs)
        assert logits.shape == (batch, hx.QUERIES, 2)
        assert masks.shape == (batch, hx.QUERIES, hx.SIZE // 4, hx.SIZE // 4)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(masks, ref_masks, atol=1e-4, rtol=1e-4)
    meta = _metadata(path)
    assert int(meta[METADATA_NO_OBJECT]) == -1  # Hugging Face: no-object is the LAST class
    assert json.loads(meta[METADATA_CLASS_NAMES]) == ["object"]
    assert int(meta["m2f_edge.topk"]) == hx.QUERIES  # min(100, Q*C) candidates for the core


def test_deployable_head_matches_reference_instance_inference():
    """Deployable head (2 classes, fixed batch 2): TAO's outputs, compared with numpy instance inference
    on the PyTorch model's logits."""
    path, summary = hx.exported("deployable", num_labels=2, batch=2)
    session = _session(path)
    inputs_meta = session.get_inputs()[0]
    assert inputs_meta.name == "inputs" and inputs_meta.shape == [2, 3, hx.SIZE, hx.SIZE]
    k = summary["topk"]
    assert k == hx.QUERIES * 2  # min(100, Q*C)
    inputs = hx.random_inputs(2, seed=7)
    masks, scores, classes = session.run(None, {"inputs": inputs})
    assert masks.shape == (2, k, hx.SIZE, hx.SIZE) and masks.dtype == np.float32
    assert scores.shape == (2, k) and classes.shape == (2, k) and classes.dtype == np.int64
    assert set(np.unique(masks)) <= {0.0, 1.0}
    ref_logits, ref_masks = hx.torch_outputs(2, inputs)
    for b in range(2):
        want_masks, want_scores, want_labels, _ = hx.instance_reference(
            ref_logits[b], ref_masks[b], k, (hx.SIZE, hx.SIZE), no_object_last=True)
        order = np.argsort(-scores[b], kind="stable")
        np.testing.assert_allclose(scores[b][order], want_scores, atol=1e-4)
        assert np.array_equal(classes[b][order], want_labels)
        got = masks[b][order].astype(bool)
        # a pixel whose upsampled logit is within float error of 0 may flip
        assert (got != want_masks).mean() < 1e-3
    assert len(set(np.round(want_scores, 5))) == k  # distinct scores: the comparison above is meaningful
    meta = _metadata(path)
    assert json.loads(meta[METADATA_CLASS_NAMES]) == hx.CLASS_NAMES
    assert int(meta[METADATA_NO_OBJECT]) == -1
    names = [n.name for n in onnx.load(path).graph.node]
    assert any(n.startswith("/post_processor/TopK") for n in names)
    assert "/post_processor/ReduceSum" in names


def test_fixed_batch_rejects_other_batch_sizes():
    path, _ = hx.exported("deployable", num_labels=2, batch=2)
    with pytest.raises(Exception):
        _session(path).run(None, {"inputs": hx.random_inputs(3)})


def test_cli_export_preset_and_class_names(tmp_path, capsys):
    from m2f_edge.cli import main

    out = tmp_path / "tiny_raw.onnx"
    status = main(["export", "tiny", "-o", str(out), "--head", "raw", "--input-size", "64x96", "--num-queries", "5",
                   "--num-labels", "2", "--class-names", "person,car", "--json"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["input_size"] == [64, 96] and summary["head"] == "raw"
    session = _session(str(out))
    logits, masks = session.run(None, {"inputs": np.zeros((1, 3, 64, 96), np.float32)})
    assert logits.shape == (1, 5, 3) and masks.shape == (1, 5, 16, 24)
    assert json.loads(_metadata(str(out))[METADATA_CLASS_NAMES]) == ["person", "car"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_size=(65, 64)), "multiples of 32"),
    (dict(head="panoptic"), "head"),
    (dict(topk=0), "topk"),
    (dict(opset=13), "opset"),
    (dict(class_names=["a", "b", "c"]), "class_names"),
])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, message):
    args = dict(input_size=(64, 64), num_queries=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        export("tiny", str(tmp_path / "x.onnx"), **args)
    assert not os.path.exists(tmp_path / "x.onnx")


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        export(str(tmp_path), str(tmp_path / "x.onnx"), input_size=(64, 64))
