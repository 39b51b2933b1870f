"""Reading TAO experiment specs, JSON sidecars and model metadata (m2f_edge.spec), and how the Segmenter
ranks them: explicit arguments > spec > sidecar > model metadata > defaults."""

import json
import logging

import numpy as np
import onnx
import pytest

from m2f_edge import Segmenter, load_spec
from m2f_edge.spec import Spec, SpecError, coerce_spec, find_sidecar, from_metadata

# A TAO Mask2Former experiment spec as TAO writes it (trimmed): 0-255 pixel statistics, a label map file.
TAO_SPEC = """\
results_dir: /results/mask2former
model:
  mode: instance
  object_mask_threshold: 0.4
  overlap_threshold: 0.8
  test_topk_per_image: 50
  backbone:
    type: swin
  sem_seg_head:
    num_classes: 5
    norm: GN
  mask_former:
    num_object_queries: 100
dataset:
  contiguous_id: False
  label_map: colormap.json
  pixel_mean: [123.675, 116.28, 103.53]
  pixel_std: [58.395, 57.12, 57.375]
  test:
    img_dir: /data/test
    batch_size: 1
"""

TAO_COLORMAP = [
    {"id": 1, "name": "person", "color": [220, 20, 60], "isthing": 1},
    {"id": 2, "name": "car", "color": [0, 0, 142], "isthing": 1},
    {"id": 4, "name": "dog", "color": [0, 60, 100], "isthing": 1},
]


def write(path, text):
    path.write_text(text)
    return str(path)


def test_tao_yaml_spec(tmp_path):
    write(tmp_path / "colormap.json", json.dumps(TAO_COLORMAP))
    spec = load_spec(write(tmp_path / "spec.yaml", TAO_SPEC))
    assert spec.mode == "instance"
    assert spec.score_threshold == pytest.approx(0.4)
    assert spec.overlap_threshold == pytest.approx(0.8)
    assert spec.topk == 50
    assert spec.num_classes == 5
    # 0-255 statistics are brought to 0-1 units
    np.testing.assert_allclose(spec.mean, [0.485, 0.456, 0.406], atol=1e-6)
    np.testing.assert_allclose(spec.std, [0.229, 0.224, 0.225], atol=1e-6)
    # contiguous_id False: class index k is category id k+1; ids missing from the map get placeholder names,
    # and the list spans num_classes
    assert spec.class_names == ["person", "car", "class_2", "dog", "class_4"]
    assert spec.category_ids == [1, 2, 3, 4, 5]
    assert spec.no_object_index is None


def test_tao_spec_unit_statistics_and_data_section(tmp_path):
    text = ("model:\n  object_mask_threshold: 0.6\n"
            "data:\n  pixel_mean: [0.5, 0.5, 0.5]\n  pixel_std: [0.25, 0.25, 0.25]\n"
            "  contiguous_id: true\n  label_map:\n    - {id: 3, name: cat}\n    - {id: 17, name: bird}\n")
    spec = load_spec(write(tmp_path / "spec.yml", text))
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
    # contiguous ids: class index = position, category id kept
    assert spec.class_names == ["cat", "bird"]
    assert spec.category_ids == [3, 17]
    assert spec.score_threshold == pytest.approx(0.6)


def test_tao_spec_as_json(tmp_path):
    doc = {"model": {"test_topk_per_image": 20, "sem_seg_head": {"num_classes": 1}},
           "dataset": {"label_map": [{"id": 1, "name": "object"}]}}
    spec = load_spec(write(tmp_path / "experiment.json", json.dumps(doc)))
    assert spec.topk == 20 and spec.num_classes == 1 and spec.class_names == ["object"]


@pytest.mark.parametrize("label_map, names, ids", [
    (["a", "b", "c"], ["a", "b", "c"], [1, 2, 3]),
    ({"1": "a", "3": "c"}, ["a", "class_1", "c"], [1, 2, 3]),
    ({"a": 1, "b": 2}, ["a", "b"], [1, 2]),
    ({"categories": [{"id": 2, "name": "b", "supercategory": "x"}, {"id": 1, "name": "a"}]}, ["a", "b"], [1, 2]),
    ([{"category_id": 1, "label": "a"}, {"class_id": 2, "class_name": "b"}], ["a", "b"], [1, 2]),
])
def test_label_map_forms(tmp_path, label_map, names, ids):
    spec = load_spec(write(tmp_path / "side.json", json.dumps({"label_map": label_map})))
    assert spec.class_names == names
    assert spec.category_ids == ids


def test_label_map_file_in_yaml_and_relative_path(tmp_path):
    (tmp_path / "maps").mkdir()
    write(tmp_path / "maps" / "labels.yaml", "- {id: 1, name: bolt}\n- {id: 2, name: nut}\n")
    spec = load_spec(write(tmp_path / "spec.yaml", "dataset:\n  label_map: maps/labels.yaml\n"))
    assert spec.class_names == ["bolt", "nut"]


def test_missing_label_map_file_warns_and_falls_back(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="m2f_edge"):
        spec = load_spec(write(tmp_path / "spec.yaml",
                               "dataset:\n  label_map: /tlt3_experiments/nowhere/colormap.json\n"))
    assert spec.class_names is None
    assert "colormap.json" in caplog.text and "not found" in caplog.text


@pytest.mark.parametrize("text, words", [
    ("model:\n  object_mask_threshold: 1.5\n", ["model.object_mask_threshold", "[0.0, 1.0]"]),
    ("model:\n  test_topk_per_image: -3\n", ["model.test_topk_per_image", "positive"]),
    ("model:\n  sem_seg_head:\n    num_classes: two\n", ["model.sem_seg_head.num_classes", "integer"]),
    ("dataset:\n  pixel_mean: [1, 2]\n", ["dataset.pixel_mean", "3 numbers"]),
    ("dataset:\n  pixel_std: [0.2, 0, 0.2]\n", ["dataset.pixel_std", "positive"]),
    ("dataset:\n  label_map: [{name: x}]\n", ["dataset.label_map[0]", "integer id"]),
    ("dataset:\n  label_map: [{id: 0, name: x}]\n", ["ids must be >= 1"]),
    ("model: [1, 2]\n", ["'model' must be a mapping"]),
    ("model: {a: [1, 2}\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["mapping at the top level"]),
])
def test_bad_specs_name_the_key(tmp_path, text, words):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    for word in words:
        assert word in str(info.value)
    assert path in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_spec(str(tmp_path / "nope.yaml"))


def test_sidecar_keys_and_unknown_keys(tmp_path, caplog):
    doc = {"class_names": ["x", "y"], "mean": [0.1, 0.2, 0.3], "std": [0.3, 0.2, 0.1], "score_threshold": 0.25,
           "no_object_index": -1, "topk": 7, "note": "hello"}
    with caplog.at_level(logging.INFO, logger="m2f_edge"):
        spec = load_spec(write(tmp_path / "m.json", json.dumps(doc)))
    assert spec.class_names == ["x", "y"] and spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.3, 0.2, 0.1)
    assert spec.score_threshold == 0.25 and spec.no_object_index == -1 and spec.topk == 7
    assert "note" in caplog.text


def test_find_sidecar_names_and_skips_foreign_json(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(b"")
    assert find_sidecar(str(model)) is None
    # a JSON without sidecar keys (an engine cache record, say) is not a sidecar
    write(tmp_path / "net.json", json.dumps({"sha256": "abc", "tensorrt": "10.3"}))
    assert find_sidecar(str(model)) is None
    write(tmp_path / "net.onnx.json", json.dumps({"class_names": ["a"]}))
    assert find_sidecar(str(model)) == str(tmp_path / "net.onnx.json")
    write(tmp_path / "net.json", json.dumps({"topk": 3}))
    assert find_sidecar(str(model)) == str(tmp_path / "net.json")


def test_metadata_and_merging():
    meta = {"m2f_edge.no_object_index": "-1", "m2f_edge.class_names": json.dumps(["p", "q"]), "other": "x"}
    spec = from_metadata(meta)
    assert spec.no_object_index == -1 and spec.class_names == ["p", "q"]
    high = Spec(score_threshold=0.9, sources=["high"])
    merged = high.over(spec)
    assert merged.score_threshold == 0.9 and merged.no_object_index == -1 and merged.class_names == ["p", "q"]
    assert merged.sources == ["high", "model metadata"]
    assert coerce_spec({"model": {"object_mask_threshold": 0.3}}).score_threshold == 0.3
    assert coerce_spec({"topk": 4}).topk == 4
    with pytest.raises(TypeError, match="spec"):
        coerce_spec(42)


def _strip_metadata(src, dst):
    model = onnx.load(src)
    del model.metadata_props[:]
    onnx.save(model, dst)
    return dst


def test_segmenter_precedence(tmp_path, tiny_model):
    """explicit argument > spec > sidecar > model metadata > default, key by key."""
    model = str(tmp_path / "raw.onnx")
    _strip_metadata(tiny_model("raw", num_classes=3, no_object_index=-1), model)
    assert Segmenter(model).no_object_index == 0  # the default (TAO) without any source

    meta_model = tiny_model("raw", num_classes=3, no_object_index=-1)  # metadata says -1
    assert Segmenter(meta_model).no_object_index == -1

    write(tmp_path / "raw.json", json.dumps({"no_object_index": 3, "topk": 9, "score_threshold": 0.2,
                                             "class_names": ["r", "g", "b"]}))
    seg = Segmenter(model)
    assert (seg.no_object_index, seg.topk, seg.score_threshold) == (3, 9, 0.2)
    assert seg.class_names == ["r", "g", "b"]

    spec = write(tmp_path / "spec.yaml", "model:\n  object_mask_threshold: 0.4\n  test_topk_per_image: 11\n")
    seg = Segmenter(model, spec=spec)
    assert (seg.no_object_index, seg.topk, seg.score_threshold) == (3, 11, 0.4)

    seg = Segmenter(model, spec=spec, score_threshold=0.7, no_object_index=-1, class_names=["x", "y", "z"])
    assert (seg.no_object_index, seg.topk, seg.score_threshold) == (-1, 11, 0.7)
    assert seg.class_names == ["x", "y", "z"]


def test_segmenter_mean_std_and_defaults(tmp_path, deployable_model):
    seg = Segmenter(deployable_model)
    assert seg.mean == (0.485, 0.456, 0.406) and seg.std == (0.229, 0.224, 0.225)
    assert seg.score_threshold == 0.5 and seg.class_names == ["object"]
    spec = write(tmp_path / "s.yaml", "dataset:\n  pixel_mean: [127.5, 127.5, 127.5]\n  pixel_std: [0.5, 0.5, 0.5]\n")
    seg = Segmenter(deployable_model, spec=spec)
    np.testing.assert_allclose(seg.mean, [0.5] * 3)
    assert seg.std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="mean.*0-1 units"):
        Segmenter(deployable_model, mean=(123.675, 116.28, 103.53))


def test_bad_spec_fails_before_loading_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Segmenter(str(tmp_path / "no_model.onnx"), spec=str(tmp_path / "missing.yaml"))


def test_engine_record_carries_the_onnx_metadata(tmp_path):
    engine = tmp_path / "raw.engine"
    engine.write_bytes(b"")
    record = {"format": 1, "metadata": {"precision": "fp16"},
              "model_metadata": {"m2f_edge.no_object_index": "-1", "m2f_edge.class_names": "[\"a\", \"b\"]"}}
    write(tmp_path / "raw.engine.json", json.dumps(record))
    from m2f_edge.spec import load_sidecar

    spec = load_sidecar(str(engine))
    assert spec.no_object_index == -1 and spec.class_names == ["a", "b"]
    write(tmp_path / "raw.json", json.dumps({"class_names": ["x", "y"]}))  # a user sidecar ranks above it
    spec = load_sidecar(str(engine))
    assert spec.no_object_index == -1 and spec.class_names == ["x", "y"]
