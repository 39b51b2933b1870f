"""The pipelined stream with the real Segmenter and tiny ONNX models on videos written with OpenCV:
order, correctness against the painted shapes, outputs, batching, multi-source, failures and shutdown."""

import os
import threading

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import m2f_edge  # noqa: E402
from m2f_edge.runners import HostRunner  # noqa: E402
from m2f_edge.video import SourceError, StreamError, multi, open_source  # noqa: E402
from m2f_edge.video.sources import LiveSource  # noqa: E402
from m2f_edge.video.stream import stream  # noqa: E402
from tiny_models import CLASS_NAMES_3, make_deployable_model, make_test_frame, mask_iou  # noqa: E402
from video_helpers import make_video, wait_for_threads  # noqa: E402

SHIFT = 6  # pixels the painted shapes move right per frame, so each frame's result tells its index


def shifted_frame(i, height=240, width=320):
    frame, masks = make_test_frame(height, width)
    return np.roll(frame, SHIFT * i, axis=1), {k: np.roll(m, SHIFT * i, axis=1) for k, m in masks.items()}


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    assert wait_for_threads(before) == []


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_deployable_model(tmp_path_factory.mktemp("model") / "tiny.onnx", num_classes=3))


@pytest.fixture(scope="module")
def segmenter(model_path):
    return m2f_edge.Segmenter(model_path, class_names=CLASS_NAMES_3, threads=1)


@pytest.fixture
def video(tmp_path):
    return make_video(tmp_path / "shapes.avi", count=10, size=(320, 240), painter=lambda i: shifted_frame(i)[0])


def check_result(result, i):
    """Each painted shape is found where frame i has it (the red one tells the frame apart by its x)."""
    _, truth = shifted_frame(i)
    by_name = {result.instances.class_name(int(l)): k for k, l in enumerate(result.instances.labels)}
    assert set(by_name) == {"red", "green", "blue"}
    for name, mask in truth.items():
        assert mask_iou(result.instances.masks[by_name[name]], mask) > 0.9, (i, name)


@pytest.mark.parametrize("batch", [1, 3])
def test_stream_keeps_order_and_segments_every_frame(segmenter, video, batch):
    results = list(segmenter.stream(video, batch=batch))
    assert [r.index for r in results] == list(range(10))
    assert [r.sequence for r in results] == list(range(10))
    for i, result in enumerate(results):
        check_result(result, i)
        frame, instances = result  # unpacks as (frame, instances)
        assert frame.shape == (240, 320, 3) and instances is result.instances
        expected = segmenter.run(frame)  # the stream gives what one call per frame gives
        np.testing.assert_array_equal(instances.masks, expected.masks)
        np.testing.assert_array_equal(instances.scores, expected.scores)
        stamps = result.timestamps
        assert stamps["captured"] <= stamps["preprocessed"] <= stamps["inferred"] <= stamps["postprocessed"] \
            <= stamps["delivered"]


def test_stream_draws_and_writes_the_overlay_video(segmenter, video, tmp_path):
    out = str(tmp_path / "overlay.mp4")
    pipeline = stream(segmenter, video, batch=2, output=out, draw_options={"alpha": 0.5})
    results = list(pipeline)
    assert len(results) == 10 and pipeline.stats.frames == 10
    assert os.path.exists(out) and not [n for n in os.listdir(tmp_path) if "partial" in n]
    first = results[0]
    _, truth = shifted_frame(0)
    inside = truth["green"]
    # the overlay tints the green shape with the instance colour, leaves the background alone
    assert np.abs(first.overlay[inside].astype(int) - first.frame[inside].astype(int)).mean() > 10
    corner = (slice(200, 240), slice(0, 20))
    assert np.abs(first.overlay[corner].astype(int) - first.frame[corner].astype(int)).max() <= 0
    with open_source(out) as written:
        frames = list(written)
    assert len(frames) == 10 and frames[0].image.shape == (240, 320, 3)


def test_fixed_batch_model_pads_the_last_batch(tmp_path, video):
    fixed = m2f_edge.Segmenter(str(make_deployable_model(tmp_path / "b2.onnx", batch=2, num_classes=3)),
                               class_names=CLASS_NAMES_3, threads=1)
    assert tuple(fixed.batch_range) == (2, 2)
    results = list(stream(fixed, video, batch=2, max_frames=5))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    check_result(results[4], 4)
    with pytest.raises(ValueError, match="batch: the model takes at most 2"):
        stream(fixed, video, batch=3)


def test_breaking_out_early_stops_every_thread(segmenter, video):
    for options in ({}, {"live": True, "queue_size": 64}):
        seen = []
        for result in segmenter.stream(video, source_options=options):
            seen.append(result.index)
            if len(seen) == 3:
                break
        assert len(seen) == 3
    with stream(segmenter, video, max_frames=4) as pipeline:
        assert [r.index for r in pipeline] == [0, 1, 2, 3]


class DyingCapture:
    """A camera stand-in that delivers `count` copies of the frame and then dies."""

    def __init__(self, count, frame):
        self.count, self.frame, self.sent = count, frame, 0

    def isOpened(self):
        return True

    def read(self):
        if self.sent >= self.count:
            raise OSError("camera unplugged")
        self.sent += 1
        return True, self.frame.copy()

    def release(self):
        pass

    def get(self, prop):
        return 0.0


def test_source_dying_mid_stream_ends_with_its_error_and_no_half_written_file(segmenter, tmp_path):
    frame, _ = make_test_frame()
    source = LiveSource(lambda: DyingCapture(5, frame), "test://camera", reconnect=False, queue_size=16)
    out = tmp_path / "out.mp4"
    got = []
    with pytest.raises(StreamError, match="camera unplugged") as info:
        for result in stream(segmenter, source, output=str(out)):
            got.append(result.index)
    assert info.value.stage == "capture"
    assert got == [0, 1, 2, 3, 4]
    assert os.listdir(tmp_path) == []  # the video was aborted, not left half-written
    source.close()


class FlakyRunner(HostRunner):
    """The host runner, whose post-processing fails on the batch holding frame `bad`."""

    def __init__(self, segmenter, bad):
        super().__init__(segmenter)
        self._bad, self._calls = bad, 0
        self.batch_sizes = []

    def _infer(self, job):
        self.batch_sizes.append(job.count)
        super()._infer(job)

    def _postprocess(self, job):
        call, self._calls = self._calls, self._calls + 1
        if call == self._bad:
            raise ValueError("corrupt output")
        super()._postprocess(job)


def FlakySegmenter(segmenter, bad):
    return m2f_edge.Segmenter(segmenter.model_path, class_names=CLASS_NAMES_3, threads=1,
                              runner=lambda seg: FlakyRunner(seg, bad))


def test_a_failing_stage_raises_in_order_or_is_skipped(segmenter, video):
    got = []
    with pytest.raises(StreamError, match="postprocess stage failed on the batch starting at frame 3") as info:
        for result in stream(FlakySegmenter(segmenter, 3), video):
            got.append(result.index)
    assert got == [0, 1, 2] and info.value.stage == "postprocess"
    assert isinstance(info.value.__cause__, ValueError)

    pipeline = stream(FlakySegmenter(segmenter, 3), video, on_error="skip")
    results = list(pipeline)
    assert [r.index for r in results] == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # the next frames are not poisoned
    assert pipeline.stats.errors == 1
    for result in results:
        check_result(result, result.index)


def test_keyboard_interrupt_closes_the_output_cleanly(segmenter, video, tmp_path):
    out = tmp_path / "partial_run.avi"
    with pytest.raises(KeyboardInterrupt):
        for result in stream(segmenter, video, output=str(out)):
            if result.index == 4:
                raise KeyboardInterrupt
    with open_source(str(out)) as written:
        assert len(list(written)) >= 4  # a complete, readable file of what was processed


def test_bad_sources_and_arguments_fail_before_starting(segmenter, video, tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        segmenter.stream(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="batch"):
        segmenter.stream(video, batch=0)
    with pytest.raises(ValueError, match="on_error"):
        segmenter.stream(video, on_error="ignore")
    with pytest.raises(TypeError, match="segmenter"):
        stream(object(), video)
    pipeline = stream(segmenter, video, max_frames=1)
    list(pipeline)
    with pytest.raises(RuntimeError, match="once"):
        list(pipeline)


def test_multi_batches_one_frame_per_source(segmenter, tmp_path):
    long_video = make_video(tmp_path / "a.avi", count=6, size=(320, 240), painter=lambda i: shifted_frame(i)[0])
    short_video = make_video(tmp_path / "b.avi", count=4, size=(320, 240),
                             painter=lambda i: shifted_frame(i + 10)[0])
    counting = FlakySegmenter(segmenter, bad=-1)
    rounds = list(multi(counting, [long_video, short_video]))
    assert counting.runner.batch_sizes == [2, 2, 2, 2, 1, 1]
    assert [[(r.source_index, r.index) for r in batch] for batch in rounds] == \
        [[(0, i), (1, i)] for i in range(4)] + [[(0, 4)], [(0, 5)]]
    for batch in rounds:
        for result in batch:
            check_result(result, result.index + (10 if result.source_index == 1 else 0))


def test_a_stream_dropped_without_iterating_closes_its_live_source(segmenter, video):
    pipeline = stream(segmenter, video, source_options={"live": True})
    source = pipeline.sources[0]
    assert source.is_live and not source.closed
    del pipeline  # never iterated: the capture thread must still stop (checked by the fixture)
    assert source.closed


@pytest.mark.skipif(not __import__("m2f_edge.video", fromlist=["x"]).gstreamer_available(),
                    reason="OpenCV without GStreamer (PyPI wheels); run with JetPack's or the distribution's "
                           "python3-opencv (a venv made with --system-site-packages)")
def test_stream_over_a_gstreamer_pipeline(segmenter):
    uri = ("gst://videotestsrc num-buffers=12 pattern=blue ! video/x-raw,width=160,height=120,framerate=30/1 ! "
           "videoconvert ! video/x-raw,format=BGR ! appsink")
    results = list(segmenter.stream(uri, batch=2, source_options={"queue_size": 64}))
    assert [r.index for r in results] == list(range(12))
    for result in results:
        names = [result.instances.class_name(int(l)) for l in result.instances.labels]
        assert names == ["blue"]  # a solid blue frame: one instance covering all of it
        assert result.instances.masks[0].all()


def test_multi_over_live_sources_delivers_their_queued_frames(segmenter, tmp_path):
    first = make_video(tmp_path / "a.avi", count=5, size=(320, 240), painter=lambda i: shifted_frame(i)[0])
    second = make_video(tmp_path / "b.avi", count=3, size=(320, 240), painter=lambda i: shifted_frame(i)[0])
    rounds = list(multi(segmenter, [first, second], source_options={"live": True, "queue_size": 64}))
    got = sorted((r.source_index, r.index) for batch in rounds for r in batch)
    assert got == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]
    for batch in rounds:
        for result in batch:
            check_result(result, result.index)


class LosingCapture(DyingCapture):
    """Delivers `count` frames, then reports a lost frame (read() -> False) like a dropped RTSP link."""

    def read(self):
        if self.sent >= self.count:
            return False, None
        self.sent += 1
        return True, self.frame.copy()


def test_stream_over_a_source_that_reconnects_counts_it(segmenter):
    frame, _ = make_test_frame()
    captures = iter([LosingCapture(3, frame), LosingCapture(2, frame)])

    def open_capture():
        try:
            return next(captures)
        except StopIteration:
            return LosingCapture(0, frame)  # opens, but never delivers again

    source = LiveSource(open_capture, "test://link", reconnect=True, max_reconnects=2, backoff=(0.01, 0.02),
                        queue_size=16)
    got = []
    with pytest.raises(StreamError, match="not recovered after 2 reconnect attempts"):
        pipeline = stream(segmenter, source)
        for result in pipeline:
            got.append(result.index)
    assert got == [0, 1, 2, 3, 4]
    assert pipeline.stats.reconnects >= 1 and source.reconnects >= 1
    source.close()
