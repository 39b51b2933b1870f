"""The m2f-edge CLI end to end, through `python -m m2f_edge` in a subprocess, and through main()."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from m2f_edge import cli
from tiny_models import make_test_frame, mask_iou

cv2 = pytest.importorskip("cv2")
mask_api = pytest.importorskip("pycocotools.mask")

from subprocess_env import SUBPROCESS_CWD, subprocess_env  # noqa: E402



def cli_run(*args, cwd=None):
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "m2f_edge"] + [str(a) for a in args], cwd=cwd or SUBPROCESS_CWD,
                          env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    shapes = {}
    for name, (h, w) in {"000000000139.png": (240, 320), "000000000285.jpg": (180, 260)}.items():
        frame, masks = make_test_frame(h, w)
        cv2.imwrite(str(folder / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
        shapes[name] = masks
    return folder, shapes


def test_segment_end_to_end(tmp_path, images, deployable_model_3):
    folder, shapes = images
    out_json, out_dir = tmp_path / "results" / "coco.json", tmp_path / "overlays"
    run = cli_run("segment", folder / "000000000139.png", folder / "000000000285.jpg", "--model",
                   deployable_model_3, "--json", out_json, "--out", out_dir)
    assert run.returncode == 0, run.stderr
    assert "000000000139.png: 3 instances" in run.stdout and "wrote 6 instances of 2 images" in run.stdout
    results = json.loads(out_json.read_text())
    assert sorted({r["image_id"] for r in results}) == [139, 285]  # COCO file names give the ids
    for image_id, name in [(139, "000000000139.png"), (285, "000000000285.jpg")]:
        mine = [r for r in results if r["image_id"] == image_id]
        assert [r["category_id"] for r in mine] == [1, 2, 3]  # red, green, blue by score
        for r, colour in zip(mine, ["red", "green", "blue"]):
            rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
            assert mask_iou(mask_api.decode(rle), shapes[name][colour]) > 0.9
    try:
        import m2f_edge.drawing  # noqa: F401
        has_drawing = True
    except ImportError:
        has_drawing = False
    if has_drawing:
        overlay = cv2.imread(str(out_dir / "000000000139.png"))
        assert overlay is not None and overlay.shape == (240, 320, 3)
        assert (out_dir / "000000000285.jpg").exists()
    else:
        assert "overlays skipped" in run.stderr


def test_segment_folder_threshold_and_index_ids(tmp_path, images, raw_model_3):
    folder, _ = images
    (folder / "notes.txt").write_text("not an image")
    out_json = tmp_path / "r.json"
    run = cli_run("segment", folder, "-m", raw_model_3, "--json", out_json, "--threshold", "0.7",
                   "--image-id", "index", "--resize", "letterbox")
    assert run.returncode == 0, run.stderr
    results = json.loads(out_json.read_text())
    assert sorted({r["image_id"] for r in results}) == [1, 2]
    assert all(r["score"] >= 0.7 for r in results) and len(results) == 4  # red and green in each image


def test_segment_errors(tmp_path, images, deployable_model_3):
    folder, _ = images
    run = cli_run("segment", folder / "000000000139.png", "--model", tmp_path / "missing.onnx")
    assert run.returncode == 1 and "missing.onnx" in run.stderr and "Traceback" not in run.stderr
    run = cli_run("segment", tmp_path / "nope.png", "--model", deployable_model_3)
    assert run.returncode == 1 and "nope.png" in run.stderr
    broken = tmp_path / "broken.png"
    broken.write_text("this is not a PNG")
    out_json = tmp_path / "partial.json"
    run = cli_run("segment", broken, folder / "000000000139.png", "--model", deployable_model_3, "--json", out_json)
    assert run.returncode == 1 and "cannot read" in run.stderr and "broken.png" in run.stderr
    assert len(json.loads(out_json.read_text())) == 3  # the good image is still segmented
    run = cli_run("segment", folder / "000000000139.png", broken, "--model", deployable_model_3, "--image-id",
                  "stem")
    assert run.returncode == 1 and "numeric file names" in run.stderr
    run = cli_run("segment", "--model", deployable_model_3)
    assert run.returncode == 2 and "IMAGE" in run.stderr


def test_segment_unsupported_model(tmp_path, images):
    folder, _ = images
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Identity", ["inputs"], ["features"])], "g",
                              [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(tmp_path / "classifier.onnx"))
    run = cli_run("segment", folder / "000000000139.png", "--model", tmp_path / "classifier.onnx")
    assert run.returncode == 1 and "['features']" in run.stderr and "pred_masks" in run.stderr


def test_info(raw_model_3, deployable_model, tmp_path):
    run = cli_run("info", raw_model_3)
    assert run.returncode == 0, run.stderr
    for text in ["contract         raw", "inputs float32 64x96", "1..unbounded", "pred_logits [?, 5, 4]",
                 "classes          3: class_0, class_1, class_2", "onnxruntime", "no-object index  0",
                 "top-k            100", "model metadata"]:
        assert text in run.stdout, run.stdout
    run = cli_run("info", deployable_model, "--json")
    info = json.loads(run.stdout)
    assert info["contract"] == "deployable" and info["input_size"] == [64, 96] and info["batch_range"] == [1, None]
    assert info["class_names"] == ["object"] and info["outputs"]["pred_scores"] == [None, 5]
    run = cli_run("info", "--json")
    assert run.returncode == 0 and "gpu_present" in json.loads(run.stdout)
    run = cli_run("info", tmp_path / "none.onnx")
    assert run.returncode == 1 and "none.onnx" in run.stderr


def test_cli_dispatch_and_missing_commands(capsys, monkeypatch):
    assert cli.main([]) == 2
    assert cli.main(["--version"]) == 0
    assert "m2f-edge" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2

    real_import = cli.importlib.import_module

    def without(name):  # pretend one command module was left out of this build
        if name == "m2f_edge.commands.eval":
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
        if name == "m2f_edge.commands.export":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name)

    monkeypatch.setattr(cli.importlib, "import_module", without)
    capsys.readouterr()
    assert cli.main(["eval", "--anything", "x"]) == 2
    assert "not available in this build" in capsys.readouterr().err
    assert cli.main(["export"]) == 2
    assert "needs 'torch'" in capsys.readouterr().err
    assert cli.main(["info"]) == 0


def test_python_m_help():
    run = cli_run("--help")
    assert run.returncode == 0
    for name in cli.COMMANDS:
        assert name in run.stdout
