"""m2f-edge verify on the CPU: the device runner (on its CPU twin) against the host reference, and the
core's stages against numpy/OpenCV; a deliberately perturbed reference makes it fail with exit 1."""

import json
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("cv2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from m2f_edge import cli  # noqa: E402
from m2f_edge.verify import match_instances, verify  # noqa: E402
from tiny_models import make_deployable_model, make_raw_model, make_test_frame  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    return {"deployable": str(make_deployable_model(folder / "dep.onnx", num_classes=3)),
            "raw": str(make_raw_model(folder / "raw.onnx", num_classes=3))}


def perturbed_scores(path, out, delta):
    """The tiny deployable model with every query's score raised by `delta` (a reference that disagrees)."""
    model = onnx.load(path)
    for node in model.graph.node:
        if node.output and node.output[0] == "scores_const":
            value = numpy_helper.to_array(node.attribute[0].t)
            node.attribute[0].t.CopyFrom(numpy_helper.from_array((value + delta).astype(np.float32),
                                                                  node.attribute[0].t.name))
            break
    else:
        raise AssertionError("the tiny model has no scores_const node")
    onnx.save(model, out)
    return out


@pytest.mark.parametrize("contract", ["deployable", "raw"])
def test_verify_passes_on_the_cpu_and_says_no_device_was_there(models, contract, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert cli.main(["verify", models[contract], "--frames", "3", "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "NO DEVICE" in printed and "verdict: PASS" in printed
    report = json.loads(report_path.read_text())
    assert report["passed"] and not report["device_present"] and report["frames"] == 3
    names = [check["name"] for check in report["checks"]]
    assert names[0] == "device runner vs host reference"
    assert names[1:] == ["core preprocessing vs numpy/OpenCV", "core post-processing vs numpy/OpenCV"]
    assert report["checks"][2]["compared"].endswith("instances matched") and report["checks"][2]["unmatched"] == 0
    for check in report["checks"]:
        assert check["passed"], check


def test_a_perturbed_reference_model_fails_with_exit_1(models, tmp_path, capsys):
    bad = perturbed_scores(models["deployable"], str(tmp_path / "bad.onnx"), 0.05)
    image = tmp_path / "frame.png"
    import cv2
    cv2.imwrite(str(image), make_test_frame()[0])
    assert cli.main(["verify", models["deployable"], str(image), "--reference", bad]) == 1
    printed = capsys.readouterr().out
    row = [line for line in printed.splitlines() if line.startswith("device runner vs host reference")][0]
    assert "FAIL" in row and "score diff 5.00e-02" in row
    assert "verdict: FAIL" in printed


def test_a_reference_that_sees_other_pixels_loses_instances(models):
    frame = make_test_frame()[0]
    path = models["deployable"]

    def swap_colours(reference):
        reference.color = "rgb"  # red and blue trade places: labels no longer match

    report = verify(str(path), [frame], reference_hook=swap_colours)
    assert not report["passed"]
    assert report["checks"][0]["unmatched"] == 4  # red and blue lost on each side


def test_matching_is_by_label_and_iou_and_ignores_instances_near_the_threshold():
    class Plain:
        def __init__(self, masks, scores, labels):
            self.masks, self.scores, self.labels = np.array(masks, bool), np.array(scores), np.array(labels)

        def __len__(self):
            return len(self.scores)

    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[2:] = True
    tolerance = {"iou": 0.9, "score": 0.01}
    same = match_instances(Plain([a, b], [0.9, 0.8], [0, 1]), Plain([b, a], [0.8, 0.9], [1, 0]), 0.5, tolerance)
    assert same["matched"] == 2 and same["min_iou"] == 1.0 and same["max_score_diff"] == 0.0
    other_label = match_instances(Plain([a], [0.9], [0]), Plain([a], [0.9], [1]), 0.5, tolerance)
    assert other_label["matched"] == 0 and other_label["unmatched_reference"] == [0.9]
    near = match_instances(Plain([], [], []), Plain([a], [0.505], [0]), 0.5, tolerance)
    assert near["unmatched_reference"] == []  # within the score tolerance of the threshold: may fall either side
