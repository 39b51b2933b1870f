"""Never destroy an input: an output that would replace a file the command reads is refused before
anything is written, with a message naming both (segment, eval, run, the stream API and the examples)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

cv2 = pytest.importorskip("cv2")

from m2f_edge import cli  # noqa: E402
from m2f_edge._outputs import OutputWouldReplaceInput, refuse_replacing, same_file  # noqa: E402
from m2f_edge.video import SinkError, open_sink, open_source  # noqa: E402
from subprocess_env import subprocess_env  # noqa: E402
from tiny_models import make_test_frame  # noqa: E402
from video_helpers import make_video  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def snapshot(folder):
    """name -> sha256 of every file under folder: what must not change."""
    found = {}
    for parent, _, names in os.walk(str(folder)):
        for name in names:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, str(folder))] = digest(path)
    return found


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    frame, _ = make_test_frame(120, 160)
    for name in ("chelsea.jpg", "street.png"):
        assert cv2.imwrite(str(folder / name), frame)
    return folder


def test_same_file_sees_through_links_and_dot_dot(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"x")
    os.symlink(str(target), str(tmp_path / "link.png"))
    os.link(str(target), str(tmp_path / "hard.png"))
    assert same_file(str(tmp_path / "link.png"), str(target))
    assert same_file(str(tmp_path / "hard.png"), str(target))
    assert same_file(str(tmp_path / "sub" / ".." / "a.png"), str(target))
    assert same_file(str(tmp_path / "new.png"), str(tmp_path / "." / "new.png"))  # neither exists yet
    assert not same_file(str(tmp_path / "b.png"), str(target))


def test_refuse_replacing_names_both_paths():
    with pytest.raises(OutputWouldReplaceInput, match=r"--json: writing /d/x.png would replace the input /d/x.png"):
        refuse_replacing([("--json", "/d/x.png")], [("the input", "/d/x.png")])
    with pytest.raises(OutputWouldReplaceInput, match="written by the same run"):
        refuse_replacing([("--out", "/d/o.png"), ("--json", "/d/o.png")], [])
    refuse_replacing([("--out", "/d/o.png"), ("--json", None)], [("the spec", None)])  # nothing to refuse


def test_segment_refuses_an_out_folder_that_holds_the_inputs(photos, deployable_model, capsys):
    before = snapshot(photos)
    status = cli.main(["segment", str(photos / "chelsea.jpg"), "--model", deployable_model, "--out", str(photos)])
    err = capsys.readouterr().err
    assert status == 1
    assert "would replace the input image" in err and err.count(str(photos / "chelsea.jpg")) == 2, err
    assert snapshot(photos) == before  # nothing written, nothing replaced

    # a folder given as input, --out the same folder spelt another way
    status = cli.main(["segment", str(photos), "--model", deployable_model,
                       "--out", str(photos / ".." / "photos") + os.sep])
    assert status == 1 and "would replace" in capsys.readouterr().err
    assert snapshot(photos) == before


def test_segment_refuses_a_json_over_an_input_or_an_overlay(photos, deployable_model, tmp_path, capsys):
    before = snapshot(photos)
    status = cli.main(["segment", str(photos / "street.png"), "--model", deployable_model,
                       "--json", str(photos / "street.png")])
    assert status == 1 and "--json" in capsys.readouterr().err
    out = tmp_path / "overlays"
    status = cli.main(["segment", str(photos / "street.png"), "--model", deployable_model, "--out", str(out),
                       "--json", str(out / "street.png")])
    assert status == 1 and "written by the same run" in capsys.readouterr().err
    assert not out.exists()  # refused before the folder was made
    status = cli.main(["segment", str(photos / "street.png"), "--model", deployable_model,
                       "--json", deployable_model])
    assert status == 1 and "the model" in capsys.readouterr().err
    assert snapshot(photos) == before


def test_segment_still_writes_beside_the_inputs_when_no_name_clashes(photos, deployable_model, tmp_path):
    # inputs from two folders with one name: the overlays get distinct names, neither input is touched
    other = tmp_path / "other"
    other.mkdir()
    frame, _ = make_test_frame(120, 160)
    cv2.imwrite(str(other / "street.png"), frame)
    out = tmp_path / "out"
    assert cli.main(["segment", str(photos / "street.png"), str(other / "street.png"), "--model", deployable_model,
                     "--out", str(out), "--json", str(out / "results.json")]) == 0
    assert sorted(os.listdir(str(out))) == ["results.json", "street.png", "street_1.png"]


def test_run_refuses_an_output_that_is_its_source(tmp_path, deployable_model, capsys):
    video = make_video(tmp_path / "in.avi", count=4, size=(96, 64))
    before = digest(video)
    status = cli.main(["run", "--model", deployable_model, "--source", video, "--output", video])
    err = capsys.readouterr().err
    assert status == 1 and "would replace the input" in err and err.count(video) >= 2, err
    assert digest(video) == before
    assert sorted(os.listdir(str(tmp_path))) == ["in.avi"]  # no temporary file left behind


def test_run_refuses_an_image_folder_output_that_would_overwrite_its_frames(tmp_path, deployable_model, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    frame, _ = make_test_frame(64, 96)
    for i in range(2):
        cv2.imwrite(str(frames / ("frame_%06d.jpg" % i)), frame)
    before = snapshot(frames)
    status = cli.main(["run", "--model", deployable_model, "--source", str(frames), "--output", str(frames) + "/"])
    assert status == 1 and "frame_000000.jpg" in capsys.readouterr().err
    assert snapshot(frames) == before
    # another pattern in the same folder replaces nothing: allowed
    status = cli.main(["run", "--model", deployable_model, "--source", str(frames),
                       "--output", str(frames / "overlay_%03d.png")])
    assert status == 0
    assert sorted(os.listdir(str(frames))) == ["frame_000000.jpg", "frame_000001.jpg", "overlay_000.png",
                                               "overlay_001.png"]
    assert snapshot(frames)["frame_000000.jpg"] == before["frame_000000.jpg"]


def test_open_sink_refuses_its_inputs(tmp_path):
    video = make_video(tmp_path / "in.mp4", count=2, size=(64, 48))
    with open_source(video) as source:
        with pytest.raises(SinkError, match="would replace the input"):
            open_sink(video, inputs=[source])
    with pytest.raises(SinkError, match="would replace the input"):
        open_sink(str(tmp_path / "." / "in.mp4"), inputs=video)
    assert sorted(os.listdir(str(tmp_path))) == ["in.mp4"]
    with open_sink(str(tmp_path / "out.mp4"), inputs=video):
        pass


def test_eval_refuses_an_output_dir_that_would_replace_the_annotations(tmp_path, deployable_model, capsys):
    pytest.importorskip("pycocotools")
    annotations = tmp_path / "results.json"  # an unlucky but legal name for the ground truth
    annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    before = digest(str(annotations))
    status = cli.main(["eval", "--model", deployable_model, "--coco", str(annotations), "--images", str(tmp_path),
                       "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and "would replace the annotations" in err and str(annotations) in err, err
    assert digest(str(annotations)) == before


def run_example(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name)] + [str(a) for a in args],
                          env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


@pytest.mark.parametrize("name", ["video_file.py", "multi_camera.py"])
def test_examples_refuse_to_overwrite_their_source(name, tmp_path, deployable_model):
    video = make_video(tmp_path / "in.avi", count=3, size=(96, 64))
    before = digest(video)
    result = run_example(name, "--model", deployable_model, "--source", video, "--output", video)
    assert result.returncode == 1, result.stderr
    assert "error:" in result.stderr and "would replace the input" in result.stderr
    assert "Traceback" not in result.stderr
    assert digest(video) == before


def test_build_convert_and_export_refuse_to_replace_their_model(tmp_path, deployable_model, capsys):
    model = str(tmp_path / "model.onnx")
    with open(deployable_model, "rb") as source, open(model, "wb") as copy:
        copy.write(source.read())
    before = digest(model)
    os.symlink(model, str(tmp_path / "same.onnx"))
    assert cli.main(["convert", model, "-o", str(tmp_path / "same.onnx"), "--portable", "--force"]) == 1
    assert "would replace the input model" in capsys.readouterr().err
    # before TensorRT is looked for: the refusal reads the same with or without it
    assert cli.main(["build", model, "-o", model]) == 1
    assert "would replace the ONNX model" in capsys.readouterr().err
    cache = str(tmp_path / "timing.cache")
    assert cli.main(["build", model, "-o", cache, "--timing-cache", cache]) == 1
    assert "would replace the timing cache" in capsys.readouterr().err
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    assert cli.main(["export", str(checkpoint), "-o", str(checkpoint / "config.json")]) == 1
    assert "would replace the checkpoint's" in capsys.readouterr().err
    assert digest(model) == before and (checkpoint / "config.json").read_text() == "{}"
