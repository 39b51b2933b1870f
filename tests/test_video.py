"""Sources and sinks: real files written and read with OpenCV, GStreamer pipelines where OpenCV has
GStreamer, live capture threads (dropping, reconnecting, dying) and clean shutdown."""

import os
import threading
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from m2f_edge.video import SinkError, SourceError, gstreamer_available, open_sink, open_source  # noqa: E402
from m2f_edge.video.sources import ImageSource, LiveSource, VideoFileSource  # noqa: E402
from video_helpers import decoded_level, frame_level, make_video, wait_for_threads  # noqa: E402


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    assert wait_for_threads(before) == []


# ---- files -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_video_file_is_read_completely_and_in_order(tmp_path, name):
    path = make_video(tmp_path / name, count=12, size=(64, 48), fps=20.0)
    for uri in (path, "file://" + path):
        with open_source(uri) as source:
            assert isinstance(source, VideoFileSource) and not source.is_live
            assert source.size == (48, 64) and source.fps == pytest.approx(20.0)
            frames = list(source)
            assert source.eos and source.read() is None
        assert [f.index for f in frames] == list(range(12))
        assert [decoded_level(f.image) for f in frames] == pytest.approx([frame_level(i) for i in range(12)], abs=8)
        assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
        assert frames[-1].pts == pytest.approx(11 / 20.0, abs=0.06)
        assert source.dropped == 0 and source.frames_read == 12


def test_images_folder_glob_and_single_image(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(4)]
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / ("img_%02d.png" % (3 - i))), image)  # names sort in reverse write order
    (tmp_path / "notes.txt").write_text("not an image")
    expected = images[::-1]
    with open_source(str(tmp_path)) as folder:
        assert isinstance(folder, ImageSource) and folder.frame_count == 4
        got = [f.image for f in folder]
    assert len(got) == 4 and all(np.array_equal(a, b) for a, b in zip(got, expected))
    with open_source(str(tmp_path / "img_0[12].png")) as pattern:
        got = [f.image for f in pattern]
    assert len(got) == 2 and np.array_equal(got[0], expected[1]) and np.array_equal(got[1], expected[2])
    with open_source(str(tmp_path / "img_00.png"), fps=10) as single:
        frames = list(single)
    assert len(frames) == 1 and np.array_equal(frames[0].image, expected[0]) and frames[0].pts == 0.0


def test_sources_that_cannot_open_say_why(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="unknown scheme 'foo'"):
        open_source("foo://bar")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(empty))
    with pytest.raises(SourceError, match="no such device"):
        open_source("v4l2:///dev/video_missing_99")


def _mp4_with_frames_zeroed(path):
    """A real mp4 whose container is intact but whose coded frames are all zero bytes."""
    data = bytearray(open(make_video(path, count=3, size=(64, 48)), "rb").read())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)
    return bytes(data)


# Fixed bytes, not random ones: about one random 4 KiB file in 2000 starts like an image ("BM", "/"),
# which OpenCV 4.6's image-sequence backend claims and then decodes no frame from (CI once failed so).
BROKEN_VIDEOS = {
    "text": lambda path: b"this is not a video\n" * 200,
    "starts like a BMP": lambda path: b"BM" + bytes(range(256)) * 16,
    "mp4 with its frames zeroed": _mp4_with_frames_zeroed,
}


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("case", sorted(BROKEN_VIDEOS))
def test_video_file_that_cannot_be_decoded_fails_at_open(tmp_path, case, live):
    data = BROKEN_VIDEOS[case](tmp_path / "good.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data)
    reference = cv2.VideoCapture(str(broken))  # OpenCV itself says which way this file fails
    opens = reference.isOpened()
    assert not (opens and reference.read()[0]), "the test file decodes: it is not broken"
    reference.release()
    if case == "mp4 with its frames zeroed":
        assert opens, "FFmpeg should open the intact container"
    why = "decodes no frame" if opens else "no backend opens it"
    with pytest.raises(SourceError, match="cannot decode this video file.*" + why):
        open_source(str(broken), live=live)


def test_first_frame_decoded_at_open_is_delivered_first(tmp_path):
    path = make_video(tmp_path / "clip.avi", count=3, size=(32, 24), fps=10.0)
    with open_source(path) as source:
        assert source.frames_read == 0
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [decoded_level(f.image) for f in frames] == pytest.approx([frame_level(i) for i in range(3)], abs=8)
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.1, 0.2], abs=0.02)
    with open_source(path, live=True, queue_size=8) as live:
        levels = [decoded_level(f.image) for f in live]
    assert levels == pytest.approx([frame_level(i) for i in range(3)], abs=8)


def test_unreadable_image_fails_on_its_frame(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"not a png")
    with open_source(str(tmp_path)) as source:
        assert source.read().index == 0
        with pytest.raises(SourceError, match="b.png"):
            source.read()


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer; the message is for those without")
@pytest.mark.parametrize("uri", ["csi://0", "gst://videotestsrc ! appsink", "rtsp://127.0.0.1:9/x"])
def test_gstreamer_uris_name_the_opencv_needed(uri):
    options = {"backend": "gstreamer"} if uri.startswith("rtsp") else {}
    with pytest.raises(SourceError, match="GStreamer.*JetPack's system OpenCV"):
        open_source(uri, **options)


@pytest.mark.skipif(not gstreamer_available(), reason="OpenCV without GStreamer (PyPI wheels); run with JetPack's "
                                                       "or the distribution's python3-opencv")
def test_gstreamer_sink_pushes_frames_into_its_pipeline(tmp_path):
    from m2f_edge.video.sinks import GStreamerSink

    pattern = str(tmp_path / "%03d.png")
    sink = GStreamerSink("appsrc ! videoconvert ! pngenc ! multifilesink location=" + pattern, fps=10)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (0, 0, 255)
    for _ in range(3):
        sink.write(frame)
    with pytest.raises(ValueError, match="opened for 64x48 frames, got 32x48"):
        sink.write(frame[:, :32])
    sink.close()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["000.png", "001.png", "002.png"] and sink.frames_written == 3
    import cv2

    assert np.array_equal(cv2.imread(str(tmp_path / "001.png")), frame)
    with pytest.raises(SinkError, match="write after close"):
        sink.write(frame)


@pytest.mark.skipif(not gstreamer_available(), reason="OpenCV without GStreamer (PyPI wheels); run with JetPack's "
                                                       "or the distribution's python3-opencv")
def test_gstreamer_videotestsrc_pipeline():
    uri = ("gst://videotestsrc num-buffers=15 pattern=ball ! video/x-raw,width=64,height=48,framerate=30/1 ! "
           "videoconvert ! video/x-raw,format=BGR ! appsink")
    with open_source(uri, queue_size=64) as source:
        assert source.is_live
        frames = list(source)
    assert len(frames) == 15 and source.eos and source.dropped == 0
    assert [f.index for f in frames] == list(range(15))
    assert frames[0].image.shape == (48, 64, 3)


# ---- live capture thread -------------------------------------------------------------------------------------

class ScriptedCapture:
    """A cv2.VideoCapture stand-in: yields `count` frames, then fails (or raises `error`)."""

    def __init__(self, count, start=0, error=None, opened=True, gate=None):
        self.count, self.next, self.error, self.opened = count, start, error, opened
        self.start = start
        self.gate = gate  # a threading.Event each read waits for, as a driver blocks until a frame comes
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.gate is not None:
            self.gate.wait()
        if self.next - self.start >= self.count:
            if self.error is not None:
                raise self.error
            return False, None
        image = np.full((4, 6, 3), self.next % 256, np.uint8)
        self.next += 1
        return True, image

    def release(self):
        self.released = True

    def get(self, prop):
        return 0.0


def test_live_source_keeps_the_newest_frames_and_counts_drops(tmp_path):
    path = make_video(tmp_path / "live.avi", count=40)
    with open_source(path, live=True, queue_size=2) as source:
        assert isinstance(source, LiveSource) and source.is_live
        frames = []
        while True:
            frame = source.read(timeout=10)
            if frame is None:
                break
            frames.append(frame)
            time.sleep(0.03)  # a reader slower than decoding
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert source.dropped > 0
    assert len(frames) + source.dropped == source.captured == 40
    assert indices[-1] == 39  # the newest frame is never the one dropped
    assert [decoded_level(f.image) for f in frames] == pytest.approx([frame_level(i) for i in indices], abs=8)


def test_live_source_reconnects_then_gives_up():
    captures = [ScriptedCapture(5, start=0), ScriptedCapture(5, start=100), ScriptedCapture(0, opened=False),
                ScriptedCapture(0, opened=False), ScriptedCapture(0, opened=False)]
    opened = iter(captures)
    source = LiveSource(lambda: next(opened), "test://flaky", reconnect=True, max_reconnects=2,
                        backoff=(0.01, 0.02), queue_size=100)
    got = []
    with pytest.raises(SourceError, match="not recovered after 2 reconnect attempts"):
        while True:
            frame = source.read(timeout=10)
            got.append(int(frame.image[0, 0, 0]))
    source.close()
    assert got == list(range(5)) + list(range(100, 105))
    assert source.reconnects == 1
    assert captures[0].released and captures[1].released


def test_live_source_without_reconnect_ends_at_the_first_failed_read():
    source = LiveSource(lambda: ScriptedCapture(3), "test://short", reconnect=False, queue_size=10)
    assert [f.index for f in source] == [0, 1, 2]
    assert source.eos
    source.close()


def test_live_source_dying_with_an_exception_reports_it():
    source = LiveSource(lambda: ScriptedCapture(2, error=OSError("device unplugged")), "test://dies",
                        reconnect=False, queue_size=10)
    assert source.read(timeout=5) is not None and source.read(timeout=5) is not None
    with pytest.raises(SourceError, match="device unplugged"):
        source.read(timeout=5)
    source.close()


def test_live_source_that_cannot_open_starts_no_thread():
    with pytest.raises(SourceError, match="cannot open"):
        LiveSource(lambda: ScriptedCapture(1, opened=False), "test://closed")


def test_live_source_stall_timeout_and_prompt_close():
    # The capture is held in read() until the gate opens, so no frame can come before the stall timeout
    # however the threads are scheduled; close() then waits only for that one blocked read.
    gate = threading.Event()
    source = LiveSource(lambda: ScriptedCapture(1000, gate=gate), "test://slow", reconnect=False,
                        stall_timeout=0.05)
    with pytest.raises(SourceError, match="no frame for"):
        source.read()
    release = threading.Timer(0.3, gate.set)
    release.start()
    started = time.monotonic()
    source.close()
    assert 0.2 < time.monotonic() - started < 2.0
    release.join()
    with pytest.raises(SourceError, match="after close"):
        source.read()


# ---- sinks ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_video_sink_writes_under_a_temporary_name_and_renames_on_close(tmp_path, name):
    target = tmp_path / name
    sink = open_sink(str(target), fps=15)
    for i in range(10):
        sink.write(np.full((48, 64, 3), frame_level(i), np.uint8))
        assert not target.exists()
    sink.close()
    assert sorted(os.listdir(tmp_path)) == [name]
    with open_source(str(target)) as source:
        frames = list(source)
        assert source.fps == pytest.approx(15.0)
    assert len(frames) == 10 and frames[0].image.shape == (48, 64, 3)
    assert [decoded_level(f.image) for f in frames] == pytest.approx([frame_level(i) for i in range(10)], abs=8)


def test_video_sink_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with open_sink(str(tmp_path / "out.mp4")) as sink:
            sink.write(np.zeros((48, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    sink = open_sink(str(tmp_path / "out.avi"))
    sink.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="opened for 64x48 frames, got 65x48"):
        sink.write(np.zeros((48, 65, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        sink.write(np.zeros((48, 64, 3), np.float32))
    sink.abort()
    assert os.listdir(tmp_path) == []
    empty = open_sink(str(tmp_path / "none.mp4"))
    empty.close()
    assert os.listdir(tmp_path) == []


def test_image_folder_sinks(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    with open_sink(str(tmp_path / "pngs" / "%03d.png")) as sink:
        for image in images:
            sink.write(image)
    assert sorted(os.listdir(tmp_path / "pngs")) == ["000.png", "001.png", "002.png"]
    for i, image in enumerate(images):
        assert np.array_equal(cv2.imread(str(tmp_path / "pngs" / ("%03d.png" % i))), image)
    with open_sink(str(tmp_path / "jpgs") + "/") as sink:
        sink.write(images[0])
    assert os.listdir(tmp_path / "jpgs") == ["frame_000000.jpg"]


def test_sinks_that_cannot_open_say_why(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        open_sink(str(tmp_path / "missing" / "out.mp4"))
    with pytest.raises(SinkError, match="unknown scheme"):
        open_sink("ftp://host/out.mp4")
    with pytest.raises(SinkError, match="extension"):
        open_sink(str(tmp_path / "out.xyz"))
    if not gstreamer_available():
        with pytest.raises(SinkError, match="GStreamer"):
            open_sink("udp://127.0.0.1:5000")


def test_display_sink_on_a_headless_opencv():
    try:
        sink = open_sink("display://")
    except SinkError as exc:
        assert "GUI" in str(exc) or "DISPLAY" in str(exc)
    else:  # an OpenCV with a GUI and a display: it opens; nothing to check headlessly
        sink.close()


def test_unreachable_rtsp_and_missing_camera_raise_at_open():
    started = time.monotonic()
    with pytest.raises(SourceError, match="rtsp://127.0.0.1:9/stream': cannot open"):
        open_source("rtsp://127.0.0.1:9/stream", latency=100)
    assert time.monotonic() - started < 30
    if gstreamer_available():  # GStreamer here, but no Argus camera (nvarguscamerasrc) on this machine
        with pytest.raises(SourceError, match="nvarguscamerasrc"):
            open_source("csi://0")


def test_pipelines_naming_missing_elements_are_refused_before_opening():
    from m2f_edge.video.sources import missing_gstreamer_elements

    if not __import__("shutil").which("gst-inspect-1.0"):
        pytest.skip("gst-inspect-1.0 is not installed (apt gstreamer1.0-tools)")
    pipeline = "videotestsrc num-buffers=1 ! video/x-raw,width=8,height=8 ! no_such_element_x ! appsink"
    assert missing_gstreamer_elements(pipeline) == ["no_such_element_x"]
    if gstreamer_available():
        with pytest.raises(SourceError, match="GStreamer has no element no_such_element_x"):
            open_source("gst://" + pipeline)
