"""Runners: every door of a Segmenter (run, run_batch, stream, the bench, eval, the CLI commands) goes
through the runner it picked; a TensorRT backend picks the device runner; settings changed between frames
take effect on the next frame on both runners, and the settings fixed at construction are refused.

The device runner is driven here by the device pipeline's CPU twin (m2f_edge.cpu_twin), which holds its
own copy of the settings like the C++ pipeline: a setting the runner fails to hand over shows up as a
difference from the host runner. The C++ pipeline itself runs only where TensorRT is found."""

import copy
import json
import os
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import m2f_edge  # noqa: E402
from m2f_edge import Segmenter, cli  # noqa: E402
from m2f_edge.bench.frames import synthetic_frames  # noqa: E402
from m2f_edge.bench.runner import BenchConfig, run_latency, run_throughput  # noqa: E402
from m2f_edge.cpu_twin import CpuTwinPipeline  # noqa: E402
from m2f_edge.runners import DeviceRunner, HostRunner, fixed_batch_padding  # noqa: E402
from tiny_models import (CLASS_NAMES_3, make_deployable_model, make_raw_model, make_test_frame,  # noqa: E402
                         mask_iou)
from video_helpers import make_video  # noqa: E402


class Recording:
    """Wraps a runner's steps and counts every step call, per step name."""

    def __init__(self, runner):
        self.inner = runner
        self.name = runner.name
        self.calls = {}

    def steps(self):
        wrapped = []
        for step in self.inner.steps():
            def work(job, step=step):
                self.calls[step.name] = self.calls.get(step.name, 0) + 1
                step.work(job)
            wrapped.append(step._replace(work=work))
        return wrapped

    def run(self, frames):
        job = m2f_edge.runners.Job(frames)
        for step in self.steps():
            step.work(job)
        return job.results

    def last_timings(self):
        return self.inner.last_timings()

    def close(self):
        self.inner.close()


def PretendTensorRT(backend):
    """The same ONNX Runtime backend, saying it can drive the GPU pipeline as the TensorRT backend does."""
    pretend = copy.copy(backend)
    pretend.__class__ = type("PretendTensorRT", (type(backend),), {"runs_gpu_pipeline": True})
    return pretend


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_deployable_model(tmp_path_factory.mktemp("runners") / "tiny.onnx", num_classes=3))


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    return str(make_raw_model(tmp_path_factory.mktemp("runners_raw") / "raw.onnx", num_classes=3))


def device_segmenter(path, **kwargs):
    host = Segmenter(path, **kwargs)
    return Segmenter(PretendTensorRT(host.backend), runner=lambda seg: DeviceRunner(
        seg, pipeline_factory=CpuTwinPipeline), **kwargs)


def same_instances(a, b):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_names == b.class_names


def test_a_tensorrt_backend_picks_the_device_runner_and_others_the_host_runner(model):
    host = Segmenter(model)
    assert host.runner.name == "host" and isinstance(host.runner, HostRunner)
    device = Segmenter(PretendTensorRT(host.backend))
    assert device.runner.name == "device" and isinstance(device.runner, DeviceRunner)
    assert Segmenter(PretendTensorRT(host.backend), runner="host").runner.name == "host"
    with pytest.raises(ValueError, match="runner: 'device' needs a TensorRT backend"):
        Segmenter(model, runner="device")
    with pytest.raises(ValueError, match="runner: expected one of"):
        Segmenter(model, runner="gpu")
    with pytest.raises(TypeError, match="runner: the factory must return a Runner"):
        Segmenter(model, runner=lambda seg: object())


def test_run_run_batch_stream_bench_and_eval_go_through_the_runner(model, tmp_path):
    seg = Segmenter(model, class_names=CLASS_NAMES_3, runner=lambda s: Recording(HostRunner(s)))
    frame, shapes = make_test_frame()

    result = seg.run(frame)
    assert seg.runner.calls == {"preprocess": 1, "infer": 1, "postprocess": 1}
    assert sorted(seg.class_names[k] for k in result.labels) == ["blue", "green", "red"]
    assert mask_iou(result.masks[list(result.labels).index(0)], shapes["red"]) > 0.9

    seg.runner.calls.clear()
    assert len(seg.run_batch([frame] * 3, batch_size=2)) == 3
    assert seg.runner.calls == {"preprocess": 2, "infer": 2, "postprocess": 2}

    seg.runner.calls.clear()
    video = make_video(tmp_path / "v.avi", count=5, size=(320, 240), painter=lambda i: frame)
    assert len(list(seg.stream(video))) == 5
    assert seg.runner.calls == {"preprocess": 5, "infer": 5, "postprocess": 5}

    for timing in (run_latency, run_throughput):
        seg.runner.calls.clear()
        pool = synthetic_frames(240, 320, 1)
        result = timing(seg, pool, 1, BenchConfig(warmup_s=0, iterations=3))
        assert result["runner"] == "host"
        assert result["result_bytes_per_frame"] == seg.run(pool.batch(1)[0]).nbytes > 0
        assert seg.runner.calls["postprocess"] >= 3 and seg.runner.calls["infer"] == seg.runner.calls["postprocess"]

    from m2f_edge.models.evaluate import evaluate
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), frame)
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 240, "width": 320}], "annotations": [],
            "categories": [{"id": 1, "name": "object"}]}
    seg.runner.calls.clear()
    evaluate(seg, coco, str(images), progress=False)
    assert seg.runner.calls == {"preprocess": 1, "infer": 1, "postprocess": 1}


def test_the_cli_commands_go_through_the_host_runner(model, tmp_path, monkeypatch):
    calls = []
    original = HostRunner.steps

    def recording_steps(self):
        calls.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(HostRunner, "steps", recording_steps)
    frame, _ = make_test_frame()
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), frame)
    assert cli.main(["segment", str(image), "--model", model, "--out", str(tmp_path / "out"), "--json",
                     str(tmp_path / "r.json")]) == 0
    assert calls, "m2f-edge segment did not go through the runner"
    assert len(json.loads((tmp_path / "r.json").read_text())) == 3
    calls.clear()
    video = make_video(tmp_path / "v.avi", count=3, size=(320, 240), painter=lambda i: frame)
    assert cli.main(["run", "--model", model, "--source", video, "--output", str(tmp_path / "o.avi")]) == 0
    assert calls, "m2f-edge run did not go through the runner"


@pytest.mark.parametrize("contract", ["deployable", "raw"])
def test_the_device_runner_gives_the_host_runners_instances_through_every_door(model, raw_model, contract, tmp_path):
    path = model if contract == "deployable" else raw_model
    host = Segmenter(path, class_names=CLASS_NAMES_3)
    device = device_segmenter(path, class_names=CLASS_NAMES_3)
    frames = [make_test_frame(240, 320)[0], make_test_frame(120, 200)[0], make_test_frame(300, 180)[0]]
    for a, b in zip(host.run_batch(frames), device.run_batch(frames)):
        same_instances(a, b)
    same_instances(host.run(frames[0]), device.run(frames[0]))
    assert device.runner.last_timings()["runner"] == "device"

    video = make_video(tmp_path / "v.avi", count=8, size=(320, 240),
                       painter=lambda i: np.roll(frames[0], 7 * i, axis=1))
    stream = device.stream(video, queue_size=1)
    delivered = list(stream)
    assert [r.index for r in delivered] == list(range(8))  # in capture order across upload/device threads
    assert stream.stats.runner == "device" and stream.stats.stages == ("capture", "upload", "device")
    for result in delivered:
        same_instances(result.instances, host.run(result.frame))
    # every staging slot is back in the pool once the stream is done
    assert device.runner._free_slots.qsize() == 4

    result = run_throughput(device, synthetic_frames(240, 320, 2), 1, BenchConfig(warmup_s=0, iterations=4))
    assert result["runner"] == "device" and result["iterations"] == 4
    assert result["latency_ms"]["upload"]["count"] == 4


def changed_settings(contract):
    """(setting, new value) pairs, each of which changes the tiny model's result on the test frame."""
    pairs = [("score_threshold", 0.85), ("max_instances", 1), ("resize", "letterbox"), ("color", "rgb"),
             ("mean", (0.0, 0.456, 0.406)), ("std", (0.9, 0.05, 0.9))]
    if contract == "raw":
        pairs += [("topk", 1), ("no_object_index", -1)]
    return pairs


def fingerprint(instances):
    return (len(instances), tuple(np.round(instances.scores, 5)), tuple(instances.labels),
            tuple(np.round(np.asarray(instances.boxes), 3).ravel()), int(instances.masks.sum()))


@pytest.mark.parametrize("runner", ["host", "device"])
@pytest.mark.parametrize("contract", ["deployable", "raw"])
def test_settings_changed_between_frames_take_effect_on_the_next_frame(model, raw_model, contract, runner):
    path = model if contract == "deployable" else raw_model
    make = (lambda **kw: Segmenter(path, class_names=CLASS_NAMES_3, **kw)) if runner == "host" else \
        (lambda **kw: device_segmenter(path, class_names=CLASS_NAMES_3, **kw))
    frame = make_test_frame(240, 400)[0]
    for name, value in changed_settings(contract):
        seg = make()
        before = seg.run(frame)
        setattr(seg, name, value)
        after = seg.run(frame)
        fresh = make(**{name: value}).run(frame)
        assert fingerprint(after) == fingerprint(fresh), name
        assert fingerprint(after) != fingerprint(before), "{} changed nothing: the test shows nothing".format(name)
        np.testing.assert_array_equal(after.masks, fresh.masks)
        if runner == "device":
            assert seg.runner.pipeline().settings[name] == getattr(seg, name)
            assert seg.runner.pipeline().runs == 2  # one pipeline: updated in place, not made again


@pytest.mark.parametrize("runner", ["host", "device"])
def test_names_and_threads_change_and_bad_values_are_refused_naming_the_setting(model, runner):
    seg = Segmenter(model, class_names=CLASS_NAMES_3) if runner == "host" else \
        device_segmenter(model, class_names=CLASS_NAMES_3)
    frame = make_test_frame()[0]
    seg.class_names = ["rouge", "vert", "bleu"]
    assert sorted(seg.run(frame).class_names) == ["bleu", "rouge", "vert"]
    seg.threads = 1
    assert len(seg.run(frame)) == 3
    for name, value, error in [("score_threshold", 1.5, ValueError), ("max_instances", 0, ValueError),
                               ("resize", "crop", ValueError), ("color", "yuv", ValueError),
                               ("mean", (1, 2), ValueError), ("std", (0.2, 0.0, 0.2), ValueError),
                               ("topk", -3, ValueError), ("threads", -1, ValueError),
                               ("class_names", "red", TypeError), ("no_object_index", 0.5, TypeError)]:
        with pytest.raises(error, match=name):
            setattr(seg, name, value)
    for name in ("input_size", "contract", "batch_range", "backend", "runner", "input_dtype"):
        with pytest.raises(AttributeError, match="{}: fixed when the Segmenter is built".format(name)):
            setattr(seg, name, getattr(seg, name))
    assert len(seg.run(frame)) == 3  # refusals leave the segmenter as it was


def test_fixed_batch_padding_is_one_policy_for_both_runners(tmp_path):
    assert fixed_batch_padding(1, (4, 4)) == 3 and fixed_batch_padding(4, (4, 4)) == 0
    assert fixed_batch_padding(2, (None, None)) == 0 and fixed_batch_padding(2, (1, 8)) == 0
    path = str(make_deployable_model(tmp_path / "fixed.onnx", num_classes=3, batch=2))
    frame = make_test_frame()[0]
    host = Segmenter(path, class_names=CLASS_NAMES_3)
    device = device_segmenter(path, class_names=CLASS_NAMES_3)
    assert device.batch_range == (2, 2)
    a, b = host.run(frame), device.run(frame)
    same_instances(a, b)
    assert len(host.run_batch([frame] * 3)) == 3 and len(device.run_batch([frame] * 3)) == 3
