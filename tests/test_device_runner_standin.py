"""The device runner (the whole path in csrc/tensorrt's Pipeline, the CUDA kernels run by the emulator)
on engines of the C++ TensorRT stand-in: every door gives the host runner's Instances on the same engine,
and every setting changed between frames takes effect on the next frame on both runners. Runs under
tools/run_emulated_gpu_tests.sh (and on a real GPU the same checks run through tests/test_runners.py's
CPU twin and tools/run_gpu_suite.sh's verify)."""

import numpy as np
import pytest

from m2f_edge import Segmenter, _core
from m2f_edge.runners import DeviceRunner
from test_runners import changed_settings
from test_tensorrt_standin_runner import deployable_engine, frame, raw_engine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not getattr(_core.tensorrt, "standin", False),
                       reason="needs the CUDA emulation build's TensorRT stand-in (tools/run_emulated_gpu_tests.sh)"),
]


@pytest.fixture(params=["deployable", "raw"])
def engine(request, tmp_path):
    path = tmp_path / "{}.engine".format(request.param)
    path.write_bytes(deployable_engine() if request.param == "deployable" else raw_engine())
    return str(path), request.param


def same_instances(a, b):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(a.labels, b.labels)


def fingerprint(instances):
    return (len(instances), tuple(np.round(instances.scores, 4)), tuple(instances.labels), int(instances.masks.sum()))


def test_a_tensorrt_engine_picks_the_device_runner_and_agrees_with_the_host_runner(engine):
    path, contract = engine
    device, host = Segmenter(path), Segmenter(path, runner="host")
    assert isinstance(device.runner, DeviceRunner) and host.runner.name == "host"
    frames = [frame(1), frame(2, 50, 40), frame(3)]
    for a, b in zip(device.run_batch(frames), host.run_batch(frames)):
        same_instances(a, b)
    for _ in range(3):  # eager, capture, replay
        same_instances(device.run(frames[0]), host.run(frames[0]))
    assert device.runner.last_timings()["runner"] == "device"


# the host-runner test's settings, with values that change what this stand-in engine's outputs keep
STANDIN_VALUES = {"score_threshold": 0.4, "mean": (0.2, 0.3, 0.1), "std": (0.5, 0.4, 0.3)}


def changes(contract):
    return [(name, STANDIN_VALUES.get(name, value)) for name, value in changed_settings(contract)]


def test_settings_changed_between_frames_take_effect_on_the_next_frame(engine):
    path, contract = engine
    image = frame(1, 40, 80)  # not square: letterbox pads, and the padding changes what the engine sees
    for name, value in changes(contract):
        base = dict(score_threshold=0.05)  # low enough that every setting changes which instances survive
        device, host = Segmenter(path, **base), Segmenter(path, runner="host", **base)
        for _ in range(3):  # up to a replayed CUDA graph, captured with the old settings
            before = device.run(image)
        same_instances(before, host.run(image))
        setattr(device, name, value)
        setattr(host, name, value)
        after = device.run(image)
        same_instances(after, host.run(image))
        assert fingerprint(after) != fingerprint(before), "{} changed nothing: the test shows nothing".format(name)
        same_instances(after, Segmenter(path, runner="host", **dict(base, **{name: value})).run(image))
        stored = device.runner.pipeline()._pipeline.settings[name]  # updated in place: no new pipeline
        expected = 2 if name == "no_object_index" else value  # -1 is kept as the column it names (3 classes)
        if isinstance(expected, str):
            assert stored == expected
        else:
            np.testing.assert_allclose(np.asarray(stored, np.float64), np.asarray(expected, np.float64), rtol=1e-6)


def test_the_stream_on_the_device_runner_keeps_capture_order(engine, tmp_path):
    cv2 = pytest.importorskip("cv2")
    path, _ = engine
    video = str(tmp_path / "v.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (44, 36))
    frames = [frame(seed) for seed in range(6)]
    for image in frames:
        writer.write(image)
    writer.release()
    device, host = Segmenter(path), Segmenter(path, runner="host")
    stream = device.stream(video, queue_size=1)
    results = list(stream)
    assert [r.index for r in results] == list(range(6))
    assert stream.stats.runner == "device" and stream.stats.stages == ("capture", "upload", "device")
    for result in results:
        same_instances(result.instances, host.run(result.frame))
