"""Small random-weight Hugging Face Mask2Former models and their ONNX exports, built once per test
process (exports take seconds each on a small CPU) and shared by test_export.py and test_rawhead.py."""

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np

SIZE = 64          # network input (multiple of 32)
QUERIES = 10
CLASS_NAMES = ["cat", "dog"]

_folder = tempfile.mkdtemp(prefix="m2f_hf_exports_")
atexit.register(shutil.rmtree, _folder, True)


@functools.lru_cache(maxsize=None)
def hf_model(num_labels):
    """A tiny Mask2FormerForUniversalSegmentation with seeded random weights, saved as a checkpoint folder.
    Returns (model, folder)."""
    import torch
    from m2f_edge.models.export import preset_config
    from transformers import Mask2FormerForUniversalSegmentation

    config = preset_config("tiny", num_labels=num_labels, num_queries=QUERIES)
    if num_labels == len(CLASS_NAMES):
        config.id2label = dict(enumerate(CLASS_NAMES))
        config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(1234)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    # random init gives near-uniform class logits; spread them so scores and top-k order are distinct
    with torch.no_grad():
        model.class_predictor.weight.mul_(20.0)
    folder = os.path.join(_folder, "checkpoint_{}".format(num_labels))
    model.save_pretrained(folder)
    return model, folder


@functools.lru_cache(maxsize=None)
def exported(head, num_labels=2, batch=2, tensorrt_plugin=False):
    """(path, summary) of an export of hf_model(num_labels) from its checkpoint folder."""
    from m2f_edge.models.export import export

    _, folder = hf_model(num_labels)
    path = os.path.join(_folder, "{}_{}_{}_{}.onnx".format(head, num_labels, batch, int(tensorrt_plugin)))
    summary = export(folder, path, head=head, input_size=(SIZE, SIZE), batch=batch, tensorrt_plugin=tensorrt_plugin)
    return path, summary


def random_inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


def torch_outputs(num_labels, inputs):
    """(class_queries_logits, masks_queries_logits) of the PyTorch model, as numpy."""
    import torch

    model, _ = hf_model(num_labels)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(inputs))
    return out.class_queries_logits.numpy(), out.masks_queries_logits.numpy()


def instance_reference(class_logits, mask_logits, topk, size, no_object_last=True):
    """numpy instance inference from docs/design.md (raw-head contract) for one image: softmax, drop no-object, top-k over Q*C,
    upsample the query's logits bilinearly (align_corners=False, as cv2.resize INTER_LINEAR), mask = logit > 0,
    score = prob * mean sigmoid inside the mask. Returns (masks bool [K,H,W], scores [K], labels [K], queries [K])
    sorted by score, descending."""
    import cv2

    e = np.exp(class_logits - class_logits.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    probs = probs[:, :-1] if no_object_last else probs[:, 1:]
    num_classes = probs.shape[1]
    flat = probs.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:topk]
    masks, scores, labels, queries = [], [], [], []
    for index in order:
        query, label = index // num_classes, index % num_classes
        up = cv2.resize(mask_logits[query].astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        mask = up > 0
        sig = 1.0 / (1.0 + np.exp(-up.astype(np.float64)))
        mask_score = (sig * mask).sum() / (mask.sum() + 1e-6)
        masks.append(mask)
        scores.append(flat[index] * mask_score)
        labels.append(label)
        queries.append(query)
    scores = np.array(scores, np.float32)
    by_score = np.argsort(-scores, kind="stable")
    return (np.stack(masks)[by_score], scores[by_score], np.array(labels)[by_score], np.array(queries)[by_score])
