"""Files the SDK writes get the mode the user's umask gives, like any other file the user creates
(a video is written to a temporary file and renamed: the temporary file's mode must not survive)."""

import os
import stat

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from m2f_edge import cli  # noqa: E402
from m2f_edge.video import open_sink  # noqa: E402
from tiny_models import make_test_frame  # noqa: E402
from video_helpers import make_video  # noqa: E402


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_video_file_sink_gives_the_umask_mode(tmp_path, umask):
    reference = tmp_path / "made_by_open.txt"
    reference.write_text("a file the user makes")  # what open() gives under this umask
    path = tmp_path / "out.mp4"
    with open_sink(str(path)) as sink:
        for level in (0, 128):
            sink.write(np.full((48, 64, 3), level, np.uint8))
    assert mode(path) == 0o666 & ~umask == mode(reference)
    assert sorted(os.listdir(str(tmp_path))) == ["made_by_open.txt", "out.mp4"]


def test_every_output_of_run_and_segment_gives_the_umask_mode(tmp_path, umask, deployable_model):
    video = make_video(tmp_path / "in.avi", count=3, size=(96, 64))
    os.chmod(video, 0o600)  # the input's own mode must not leak into the outputs either
    assert cli.main(["run", "--model", deployable_model, "--source", video,
                     "--output", str(tmp_path / "out.avi")]) == 0
    assert cli.main(["run", "--model", deployable_model, "--source", video,
                     "--output", str(tmp_path / "frames") + "/"]) == 0
    frame, _ = make_test_frame(64, 96)
    cv2.imwrite(str(tmp_path / "image.png"), frame)
    assert cli.main(["segment", str(tmp_path / "image.png"), "--model", deployable_model,
                     "--out", str(tmp_path / "overlays"), "--json", str(tmp_path / "results.json")]) == 0
    written = [tmp_path / "out.avi", tmp_path / "results.json", tmp_path / "overlays" / "image.png"]
    written += sorted((tmp_path / "frames").iterdir())
    for path in written:
        assert mode(path) == 0o666 & ~umask, path
    for folder in (tmp_path / "frames", tmp_path / "overlays"):
        assert mode(folder) == 0o777 & ~umask, folder


def test_engines_sidecars_and_timing_caches_give_the_umask_mode(tmp_path, umask):
    from m2f_edge.backends.engine_cache import atomic_write

    path = tmp_path / "model.engine"
    atomic_write(str(path), b"engine bytes")
    atomic_write(str(path), b"engine bytes, rebuilt")  # replacing keeps the umask's mode too
    assert path.read_bytes() == b"engine bytes, rebuilt"
    assert mode(path) == 0o666 & ~umask
    assert os.listdir(str(tmp_path)) == ["model.engine"]  # no temporary file left
