"""Raw-head cut: TAO-style post-processor removed from a deployable export; the core's raw-head
post-processing of what is left gives the same instances as the deployable head."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from m2f_edge.models.export import METADATA_HEAD, METADATA_NO_OBJECT, METADATA_TOPK, get_metadata
from m2f_edge.models.rawhead import cut_raw_head, has_post_processor

import tiny_models
from mask_crops import check_crop_layout, full_masks


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_model_without_post_processor_is_a_clear_error(tmp_path):
    path = tiny_models.make_deployable_model(tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    assert not has_post_processor(model)
    with pytest.raises(ValueError, match="no post-processor"):
        cut_raw_head(model)
    with pytest.raises(TypeError, match="model"):
        cut_raw_head(str(path))


@pytest.fixture(scope="module")
def models():
    """(hf_exports, a Hugging Face deployable export, its raw head, the export summary), made once: a
    module-level fixture (pytest deprecates class-scoped fixtures written as instance methods)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_exports as hx

    path, summary = hx.exported("deployable", num_labels=2, batch=2)
    deployable = onnx.load(path)
    return hx, deployable, cut_raw_head(deployable), summary


@pytest.mark.slow
class TestOnExportedModel:
    def test_outputs_are_the_raw_head_of_the_pytorch_model(self, models):
        hx, deployable, raw, summary = models
        assert has_post_processor(deployable) and not has_post_processor(raw)
        assert [o.name for o in raw.graph.output] == ["pred_logits", "pred_masks"]
        dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in raw.graph.output]
        assert dims[0][0] == 2 and dims[0][2] == 3 and dims[1][2:] == [hx.SIZE // 4, hx.SIZE // 4]
        meta = get_metadata(raw)
        assert meta[METADATA_HEAD] == "raw"
        assert int(meta[METADATA_NO_OBJECT]) == -1  # kept from the Hugging Face export
        assert int(meta[METADATA_TOPK]) == summary["topk"]
        assert json.loads(meta["m2f_edge.class_names"]) == hx.CLASS_NAMES
        assert len(raw.graph.node) < len(deployable.graph.node)
        inputs = hx.random_inputs(2, seed=21)
        logits, masks = _session(raw).run(None, {"inputs": inputs})
        ref_logits, ref_masks = hx.torch_outputs(2, inputs)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(masks, ref_masks, atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize("frame_size", [(64, 64), (90, 120)])
    def test_core_gives_the_same_instances_from_both_heads(self, models, frame_size):
        from m2f_edge import _core

        hx, deployable, raw, summary = models
        inputs = hx.random_inputs(2, seed=5)
        d_masks, d_scores, d_classes = _session(deployable).run(None, {"inputs": inputs})
        logits, mask_logits = _session(raw).run(None, {"inputs": inputs})
        transform = _core.ResizeTransform("stretch", frame_size[0], frame_size[1], hx.SIZE, hx.SIZE)
        compared = 0
        for b in range(2):
            want = _core.postprocess_deployable(d_masks[b], d_scores[b], d_classes[b], transform,
                                                score_threshold=0.05)
            got = _core.postprocess_raw(logits[b], mask_logits[b], transform, no_object_index=-1,
                                        topk=summary["topk"], score_threshold=0.05)
            assert len(got["scores"]) == len(want["scores"]) > 0
            np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
            assert np.array_equal(got["labels"], want["labels"])
            check_crop_layout(got)
            check_crop_layout(want)
            for got_mask, want_mask in zip(full_masks(got), full_masks(want)):
                assert tiny_models.mask_iou(got_mask, want_mask) >= 0.99
                compared += 1
        assert compared >= 4

    def test_tao_default_no_object_index_and_cli(self, models, tmp_path):
        from m2f_edge.cli import main

        hx, deployable, _, _ = models
        plain = onnx.ModelProto()
        plain.CopyFrom(deployable)
        del plain.metadata_props[:]  # like TAO's own export: no m2f_edge metadata
        assert get_metadata(cut_raw_head(plain))[METADATA_NO_OBJECT] == "0"
        source = tmp_path / "deployable.onnx"
        onnx.save(plain, str(source))
        out = tmp_path / "raw.onnx"
        assert main(["convert", str(source), "-o", str(out), "--raw-head", "--no-object-index", "-1"]) == 0
        converted = onnx.load(str(out))
        assert get_metadata(converted)[METADATA_NO_OBJECT] == "-1"
        assert [o.name for o in converted.graph.output] == ["pred_logits", "pred_masks"]
        # refuses to overwrite, and needs something to do
        assert main(["convert", str(source), "-o", str(out), "--raw-head"]) != 0
        assert main(["convert", str(source), "-o", str(tmp_path / "x.onnx")]) != 0


def _export_tao_like(path, queries=6, classes=1, size=64):
    """A small torch network whose post-processor follows TAO's deployable graph as docs/design.md describes it:
    upsample ALL query mask logits to the network size first, softmax with no-object at index 0, top-k over
    Q*C, select the chosen queries, 0/1 masks, score = prob * mean sigmoid inside the mask."""
    import inspect
    import warnings

    import torch
    from torch.nn import functional as F

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.masks = torch.nn.Conv2d(3, queries, 4, stride=4)
            self.classes = torch.nn.Linear(3, queries * (classes + 1))

        def forward(self, x):
            pooled = x.mean(dim=(2, 3))
            return self.classes(pooled).view(-1, queries, classes + 1), self.masks(x)

    class TaoLikePostProcessor(torch.nn.Module):
        def forward(self, logits, mask_logits):
            full = F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False)
            probs = F.softmax(logits, dim=-1)[:, :, 1:]
            scores, index = probs.flatten(1, 2).topk(queries * classes, sorted=False)
            labels = index % classes
            chosen = torch.stack([torch.index_select(full[i], 0, idx // classes) for i, idx in enumerate(index)])
            masks = (chosen > 0).float()
            mask_scores = (chosen.sigmoid().flatten(2) * masks.flatten(2)).sum(2) / (masks.flatten(2).sum(-1) + 1e-6)
            return masks, scores * mask_scores, labels

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sem_seg_head = Head()
            self.post_processor = TaoLikePostProcessor()

        def forward(self, inputs):
            return self.post_processor(*self.sem_seg_head(inputs))

    torch.manual_seed(3)
    model = Model().eval()
    kwargs = dict(input_names=["inputs"], output_names=["pred_masks", "pred_scores", "pred_classes"], opset_version=17)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), **kwargs)
    return model


def test_tao_like_post_processor_is_cut_with_no_object_first(tmp_path):
    pytest.importorskip("torch")
    import torch

    from m2f_edge import _core

    path = tmp_path / "tao_like.onnx"
    model = _export_tao_like(path)
    deployable = onnx.load(str(path))
    raw = cut_raw_head(deployable)
    meta = get_metadata(raw)
    assert meta[METADATA_NO_OBJECT] == "0" and meta[METADATA_TOPK] == "6"
    frame = np.random.default_rng(2).uniform(-2, 2, (1, 3, 64, 64)).astype(np.float32)
    logits, mask_logits = _session(raw).run(None, {"inputs": frame})
    with torch.no_grad():
        want_logits, want_masks = model.sem_seg_head(torch.from_numpy(frame))
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(mask_logits, want_masks.numpy(), atol=1e-5)
    d_masks, d_scores, d_classes = _session(deployable).run(None, {"inputs": frame})
    transform = _core.ResizeTransform("stretch", 64, 64, 64, 64)
    want = _core.postprocess_deployable(d_masks[0], d_scores[0], d_classes[0], transform, score_threshold=0.0)
    got = _core.postprocess_raw(logits[0], mask_logits[0], transform, no_object_index=0, topk=6, score_threshold=0.0)
    assert len(got["scores"]) == len(want["scores"]) > 0
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
    check_crop_layout(got)
    for a, b in zip(full_masks(got), full_masks(want)):
        assert tiny_models.mask_iou(a, b) >= 0.99
