"""Every example script runs (as a user would, in a subprocess) on a generated video with a tiny model and
writes an output that is checked; each answers --help."""

import os
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from tiny_models import make_deployable_model, make_test_frame  # noqa: E402
from video_helpers import make_video  # noqa: E402
from subprocess_env import SUBPROCESS_CWD, subprocess_env  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ["camera_csi.py", "camera_usb.py", "rtsp.py", "video_file.py", "multi_camera.py"]
FRAMES = 8


def run_example(name, *args):
    env = subprocess_env()
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name)] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    model = str(make_deployable_model(folder / "tiny.onnx"))
    frame, masks = make_test_frame(240, 320)
    video = make_video(folder / "input.avi", count=FRAMES, size=(320, 240), painter=lambda i: frame)
    return model, video, frame, masks


def read_all(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_help(name):
    result = run_example(name, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--source", "--output", "--threshold"):
        assert option in result.stdout


@pytest.mark.parametrize("name", ["camera_csi.py", "camera_usb.py", "rtsp.py", "video_file.py"])
def test_example_writes_an_overlay_video(name, assets, tmp_path):
    model, video, frame, masks = assets
    out = str(tmp_path / "out.avi")
    result = run_example(name, "--model", model, "--source", video, "--output", out, "--threshold", "0.5")
    assert result.returncode == 0, result.stderr
    assert ("%d frames" % FRAMES) in result.stdout
    written = read_all(out)
    assert len(written) == FRAMES and written[0].shape == frame.shape
    # the red and green shapes (score 0.9, 0.8) are tinted in the overlay; the background is not
    for name_, mask in masks.items():
        change = np.abs(written[-1][mask].astype(int) - frame[mask].astype(int)).mean()
        assert change > 20, (name_, change)
    background = ~(masks["red"] | masks["green"] | masks["blue"])
    background[:40, :] = False  # the FPS line and labels
    assert np.abs(written[-1][background].astype(int) - frame[background].astype(int)).mean() < 8  # codec noise only


def test_multi_camera_writes_the_sources_side_by_side(assets, tmp_path):
    model, video, frame, masks = assets
    out = str(tmp_path / "both.avi")
    result = run_example("multi_camera.py", "--model", model, "--source", video, video, "--output", out,
                         "--height", "120")
    assert result.returncode == 0, result.stderr
    assert "%d frames from 2 sources" % (2 * FRAMES) in result.stdout
    written = read_all(out)
    assert len(written) == FRAMES and written[0].shape == (120, 320, 3)


def test_example_reports_a_missing_source(assets, tmp_path):
    model = assets[0]
    result = run_example("video_file.py", "--model", model, "--source", str(tmp_path / "none.mp4"))
    assert result.returncode != 0
    assert "no such file" in result.stderr


def test_cli_run_writes_an_overlay_video(assets, tmp_path):
    model, video, frame, masks = assets
    out = str(tmp_path / "cli.avi")
    env = subprocess_env()
    result = subprocess.run([sys.executable, "-m", "m2f_edge", "run", "--model", model, "--source", video,
                             "--output", out, "--threshold", "0.5", "--batch", "3"], env=env, cwd=SUBPROCESS_CWD,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("%d frames in" % FRAMES) and "written to " + out in result.stdout
    written = read_all(out)
    assert len(written) == FRAMES
    change = np.abs(written[0][masks["red"]].astype(int) - frame[masks["red"]].astype(int)).mean()
    assert change > 20


def test_cli_run_reports_a_bad_source(assets, tmp_path):
    env = subprocess_env()
    result = subprocess.run([sys.executable, "-m", "m2f_edge", "run", "--model", assets[0], "--source",
                             "csi://0" if "GStreamer:                   NO" in cv2.getBuildInformation()
                             else str(tmp_path / "none.mp4")], env=env, cwd=SUBPROCESS_CWD,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 1
    assert "m2f-edge run: error:" in result.stderr


def test_example_errors_read_as_the_cli_s_without_a_traceback(assets, tmp_path):
    """An expected error (a CSI camera without GStreamer, a missing file) is one line, the same message and
    exit status as `m2f-edge run`, not a Python traceback."""
    source = "csi://0" if "GStreamer:                   NO" in cv2.getBuildInformation() else str(tmp_path / "no.mp4")
    example = run_example("camera_csi.py", "--model", assets[0], "--source", source)
    cli = subprocess.run([sys.executable, "-m", "m2f_edge", "run", "--model", assets[0], "--source", source],
                         env=subprocess_env(), cwd=SUBPROCESS_CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=300)
    assert example.returncode == cli.returncode == 1
    assert "Traceback" not in example.stderr
    assert example.stderr.strip().startswith("camera_csi.py: error: ")
    assert example.stderr.strip().split(": error: ", 1)[1] == cli.stderr.strip().split(": error: ", 1)[1]
