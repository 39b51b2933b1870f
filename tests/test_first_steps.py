"""A newcomer's first steps: the demo model by name, the example data, a misspelt keyword, an import from a
checkout whose core is not built, and `m2f-edge info` on a machine without a GPU."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

import m2f_edge
from m2f_edge import cli, demo
from tiny_models import make_test_frame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_IMAGES = sorted(glob.glob(os.path.join(ROOT, "examples", "data", "*.png")))
EXAMPLE_VIDEO = os.path.join(ROOT, "examples", "data", "scenes.mp4")


@pytest.fixture()
def tiny_as_demo(monkeypatch, deployable_model):
    """The tiny colour model stands in for the shipped demo model."""
    monkeypatch.setattr(demo, "MODEL_FILE", deployable_model)
    return deployable_model


@pytest.fixture()
def no_demo(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "MODEL_FILE", str(tmp_path / "data" / "demo_mask2former.onnx"))


def test_segmenter_opens_the_demo_model_by_name(tiny_as_demo):
    seg = m2f_edge.Segmenter("demo")
    assert seg.model_path == tiny_as_demo and seg.contract == "deployable"
    frame, masks = make_test_frame(240, 320)
    assert len(seg.run(frame)) == 3  # the tiny model's red, green and blue shapes


def test_a_missing_demo_model_is_a_clear_file_not_found(no_demo, capsys):
    with pytest.raises(FileNotFoundError, match="the demo model is not in this installation"):
        m2f_edge.Segmenter("demo")
    assert cli.main(["info", "demo"]) == 1
    assert "demo model is not in this installation" in capsys.readouterr().err


def test_a_file_named_demo_wins_over_the_shipped_model(tmp_path, monkeypatch, deployable_model, no_demo):
    shutil.copy(deployable_model, str(tmp_path / "demo"))
    monkeypatch.chdir(tmp_path)
    assert demo.resolve_model("demo") == "demo"
    (tmp_path / "demo").unlink()
    (tmp_path / "demo").mkdir()  # a folder of that name is not a model: the shipped one is meant
    with pytest.raises(FileNotFoundError, match="demo model"):
        demo.resolve_model("demo")


def test_every_command_takes_model_demo(tiny_as_demo, tmp_path, monkeypatch, capsys):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.chdir(tmp_path)
    frame, _ = make_test_frame(120, 160)
    cv2.imwrite("in.png", frame)
    assert cli.main(["segment", "in.png", "--model", "demo", "--json", "r.json"]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == 3
    assert cli.main(["run", "--model", "demo", "--source", "in.png"]) == 0
    assert cli.main(["info", "demo"]) == 0
    assert tiny_as_demo in capsys.readouterr().out
    assert cli.main(["convert", "demo", "-o", "portable.onnx", "--portable"]) == 0
    assert os.path.isfile("portable.onnx")


def test_the_readme_first_commands_run_verbatim_on_the_example_data(tiny_as_demo, tmp_path, monkeypatch, capsys):
    pytest.importorskip("cv2")
    assert len(EXAMPLE_IMAGES) >= 3, "examples/data/ holds the generated scenes (tools/make_example_data.py)"
    monkeypatch.chdir(tmp_path)
    status = cli.main(["segment"] + EXAMPLE_IMAGES + ["--model", "demo", "--out", "overlays/", "--json",
                                                      "results.json"])
    assert status == 0, capsys.readouterr().err
    assert sorted(os.listdir("overlays")) == sorted(os.path.basename(p) for p in EXAMPLE_IMAGES)
    assert isinstance(json.loads((tmp_path / "results.json").read_text()), list)
    assert cli.main(["run", "--model", "demo", "--source", EXAMPLE_VIDEO, "--output", "scenes_masks.mp4"]) == 0
    assert "30 frames in" in capsys.readouterr().out and os.path.getsize("scenes_masks.mp4") > 0


def test_the_example_video_is_short_and_small():
    cv2 = pytest.importorskip("cv2")
    assert os.path.getsize(EXAMPLE_VIDEO) < 1 << 20
    capture = cv2.VideoCapture(EXAMPLE_VIDEO)
    count = 0
    while capture.read()[0]:
        count += 1
    assert 10 <= count <= 100 and capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 320
    capture.release()


@pytest.mark.skipif(not os.path.isfile(demo.MODEL_FILE), reason="the trained demo model is not in this checkout")
def test_the_shipped_demo_model_finds_objects_in_the_example_scenes():
    cv2 = pytest.importorskip("cv2")
    seg = m2f_edge.Segmenter("demo")
    found = [len(seg.run(cv2.imread(path))) for path in EXAMPLE_IMAGES]
    assert sum(1 for n in found if n > 0) >= len(found) - 1, found


@pytest.mark.parametrize("wrong, meant", [("threshold", "score_threshold"), ("conf", "score_threshold"),
                                          ("thresh", "score_threshold"), ("max_det", "max_instances"),
                                          ("colour", "color")])
def test_an_unknown_keyword_names_the_one_meant(wrong, meant, deployable_model):
    with pytest.raises(TypeError, match=r"unexpected keyword argument '{}'; did you mean {}=\?".format(wrong, meant)):
        m2f_edge.Segmenter(deployable_model, **{wrong: 0.3})


def test_an_unknown_keyword_without_a_likely_meaning_lists_the_accepted_ones(deployable_model):
    with pytest.raises(TypeError, match=r"'banana' \(it accepts: model, backend, score_threshold"):
        m2f_edge.Segmenter(deployable_model, banana=1)
    assert m2f_edge.Segmenter(deployable_model, score_threshold=0.3).score_threshold == 0.3


def _import_from_copy(tmp_path, checkout, core=None):
    """Import m2f_edge from a copy of the package without its built core (or with ``core``, bytes, in its
    place), as Python started in that folder would (the folder first on sys.path)."""
    import sysconfig

    package = os.path.dirname(os.path.abspath(m2f_edge.__file__))
    shutil.copytree(package, str(tmp_path / "m2f_edge"),
                    ignore=shutil.ignore_patterns("_core*", "__pycache__", "data"))
    if core is not None:
        (tmp_path / "m2f_edge" / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))).write_bytes(core)
    if checkout:
        (tmp_path / "tools").mkdir()
        (tmp_path / "tools" / "dev_build.sh").write_text("#!/bin/sh\n")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", "import m2f_edge"], cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def test_importing_from_a_checkout_without_its_core_says_why_and_what_to_do(tmp_path):
    result = _import_from_copy(tmp_path, checkout=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: m2f_edge was imported from the source checkout " + str(tmp_path))
    assert "is not built" in last and "run Python from another folder" in last and "tools/dev_build.sh" in last
    assert "ModuleNotFoundError" not in result.stderr


def test_importing_an_installation_without_its_core_says_reinstall(tmp_path):
    result = _import_from_copy(tmp_path, checkout=False)
    assert result.returncode == 1
    assert "is not built; reinstall it" in result.stderr.strip().splitlines()[-1]


def test_info_says_which_path_runs_here_in_labelled_lines(capsys):
    assert cli.main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("  ", 1)[0] for line in lines]
    assert labels == ["runs here", "m2f-edge", "CUDA", "TensorRT", "GPU", "ONNX Runtime", "demo model"]
    build = m2f_edge.build_info()
    if not build["gpu_present"]:
        assert lines[0].split(None, 2)[2].startswith("CPU: ONNX Runtime")
        assert lines[0].endswith("no usable GPU: " + build["gpu_error"])
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs_here"] == lines[0].split(None, 2)[2]


def test_runs_here_names_the_path_and_the_reason():
    from m2f_edge.commands.info import runs_here

    driver = "CUDA driver version is insufficient for CUDA runtime version"
    assert runs_here({"gpu_present": False, "cuda": True, "gpu_error": driver}, ["CPUExecutionProvider"]) == \
        "CPU: ONNX Runtime (every model runs here, more slowly than on a GPU); no usable GPU: " + driver
    jetson = runs_here({"gpu_present": True, "gpu_name": "Orin", "tensorrt": True}, ["CPUExecutionProvider"])
    assert jetson.startswith("GPU (Orin): TensorRT engines") and jetson.endswith("ONNX Runtime on the CPU")
    assert runs_here({"gpu_present": True, "gpu_name": "T4", "tensorrt": False}, ["CUDAExecutionProvider"]) == \
        "GPU (T4): ONNX Runtime's CUDA provider (m2f_edge was built without TensorRT)"
    assert "is not used" in runs_here({"gpu_present": True, "gpu_name": "T4"}, ["CPUExecutionProvider"])


def test_info_explains_a_class_count_the_model_does_not_state(deployable_model, capsys):
    assert cli.main(["info", deployable_model]) == 0
    classes = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("classes"))
    assert "?" not in classes and "number not stated by the model" in classes and classes.endswith("names: object")


def test_segment_and_run_read_the_same_image_files(tmp_path):
    """One list of image extensions: a folder gives `m2f-edge segment` and `m2f-edge run` (open_source) the
    same files, whatever the extension's case."""
    from m2f_edge.commands.segment import collect_images
    from m2f_edge.video import open_source

    for extension in (".jpg", ".JPEG", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".txt",
                      ".mp4"):
        (tmp_path / ("image" + extension)).write_bytes(b"")
    with open_source(str(tmp_path)) as source:
        assert collect_images([str(tmp_path)]) == source.paths
    assert len(source.paths) == 10


def test_importing_a_core_that_does_not_load_says_so(tmp_path):
    import sysconfig

    package = tmp_path / "m2f_edge"
    result = _import_from_copy(tmp_path, checkout=True, core=b"not a shared library")
    assert result.returncode == 1 and package.is_dir()
    last = result.stderr.strip().splitlines()[-1]
    assert "is there but does not load" in last and "tools/dev_build.sh" in last
    assert (package / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))).is_file()
