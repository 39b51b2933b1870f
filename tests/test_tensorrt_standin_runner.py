"""The TensorRT runner and pipeline (csrc/tensorrt/) against the C++ TensorRT stand-in of the CUDA
emulation build (csrc/emulation/tensorrt/): what a first device run would otherwise find, each
checked on a machine without a GPU or TensorRT (tools/run_emulated_gpu_tests.sh).

References are independent of the code under test: numpy for what the stand-in engine computes,
and, for the pipeline, a second pipeline on a second engine that runs eagerly (no CUDA graph) with
the settings given at construction."""

import threading

import numpy as np
import pytest

from m2f_edge import _core
from tensorrt_standin import standin_engine, standin_outputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not getattr(_core.tensorrt, "standin", False),
                       reason="needs the CUDA emulation build's TensorRT stand-in (tools/run_emulated_gpu_tests.sh)"),
]

NET = (16, 16)
DEPLOYABLE_OUTPUTS = [
    ("pred_masks", "float32", (-1, 4) + NET, (1.0, 0.2, 0.05, 13)),
    ("pred_scores", "float32", (-1, 4), (0.1, 0.75, -0.15, 4)),
    ("pred_classes", "int32", (-1, 4), (0.0, 1.0, 1.0, 4)),
]
RAW_OUTPUTS = [
    ("pred_logits", "float32", (-1, 4, 3), (0.5, 0.0, 1.5, 5)),
    ("pred_masks", "float32", (-1, 4, 8, 8), (1.0, -0.5, 0.07, 11)),
]


def deployable_engine(batch=(1, 1, 2)):
    shapes = [(b, 3) + NET for b in batch]
    return standin_engine([("inputs", "float32", (-1, 3) + NET, shapes)], DEPLOYABLE_OUTPUTS)


def raw_engine():
    return standin_engine([("inputs", "float32", (1, 3) + NET, None)], RAW_OUTPUTS)


def frame(seed, height=36, width=44):
    rng = np.random.default_rng(seed)
    # distinct channel levels, so that the colour order and normalisation change what the engine sees
    base = np.array([40, 120, 220], dtype=np.float64) if seed % 2 else np.array([210, 90, 15], dtype=np.float64)
    noise = rng.integers(-10, 10, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def on_device(array):
    return _core.gpu.DeviceArray.from_numpy(np.ascontiguousarray(array))


def same_results(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            if key == "transform":
                continue
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


def pipeline(engine_bytes, contract="deployable", use_cuda_graph=True, **settings):
    engine = _core.tensorrt.Engine(engine_bytes)
    return engine, _core.tensorrt.Pipeline(engine, contract, input="inputs", use_cuda_graph=use_cuda_graph, **settings)


def eager_reference(engine_bytes, frames, contract="deployable", **settings):
    _, p = pipeline(engine_bytes, contract, use_cuda_graph=False, **settings)
    return p.run([on_device(f) for f in frames], stream=_core.gpu.Stream())


def test_engine_infer_computes_what_the_engine_says():
    engine = _core.tensorrt.Engine(deployable_engine())
    tensor = np.random.default_rng(0).standard_normal((2, 3) + NET).astype(np.float32)
    outputs = engine.infer({"inputs": tensor})
    expected = standin_outputs(tensor, DEPLOYABLE_OUTPUTS)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name].to_numpy(), value, rtol=1e-6, atol=1e-6, err_msg=name)


def test_a_foreign_engine_is_refused_with_tensorrts_own_words():
    with pytest.raises(_core.tensorrt.TensorRTError, match="Magic tag"):
        _core.tensorrt.Engine(b"not an engine")


# Issue 15 item 1: TensorRT keeps the loggers it is given (the plugin library for the life of the
# process); one logger, never destroyed, serves every runtime and the plugin library.
def test_one_logger_for_every_runtime_and_the_plugin_library():
    engines = [_core.tensorrt.Engine(deployable_engine()) for _ in range(3)]
    del engines[0]
    engines.append(_core.tensorrt.Engine(deployable_engine()))
    assert _core.tensorrt._standin_logger_count() == 1


# Issue 15 item 4: the pipeline captures at batch 1, Engine.infer (a second user of the same engine)
# runs batch 2 then batch 1; the pipeline must not replay its graph from two re-plans ago.
def test_shape_x_y_x_by_another_user_never_replays_a_stale_graph():
    engine_bytes = deployable_engine()
    engine, p = pipeline(engine_bytes)
    stream = _core.gpu.Stream()
    first, second = on_device(frame(1)), frame(2)  # a graph is kept for the same frame buffers
    for _ in range(3):  # eager, capture, replay
        p.run([first], stream=stream)
    assert p.cuda_graph_active and p.last_timings()["cuda_graph"]
    rng = np.random.default_rng(3)
    for batch in (2, 1):
        engine.infer({"inputs": rng.standard_normal((batch, 3) + NET).astype(np.float32)})
    first.copy_from(second)  # new pixels in the same buffer: a replay of the old graph would be stale
    results = p.run([first], stream=stream)
    assert "stand-in" not in engine.take_log()
    same_results(results, eager_reference(engine_bytes, [second]))
    # and the pipeline settles into a graph again
    for _ in range(2):
        results = p.run([first], stream=stream)
    assert p.last_timings()["cuda_graph"]
    same_results(results, eager_reference(engine_bytes, [second]))


# Issue 15 item 6: as trtexec, the stream is synchronised between the warm-up and the capture.
def test_runner_captures_its_graph_after_the_warm_up_finished():
    engine = _core.tensorrt.Engine(deployable_engine(), use_cuda_graph=True)
    stream = _core.gpu.Stream()
    tensor = on_device(np.full((1, 3) + NET, 0.25, dtype=np.float32))
    for _ in range(3):  # eager, capture, replay; nobody waits in between
        outputs = engine.infer({"inputs": tensor}, stream=stream, synchronize=False)
        del outputs
    log = engine.take_log()
    assert engine.cuda_graph_active, log
    outputs = engine.infer({"inputs": tensor}, stream=stream)
    expected = standin_outputs(np.full((1, 3) + NET, 0.25), DEPLOYABLE_OUTPUTS)
    np.testing.assert_allclose(outputs["pred_scores"].to_numpy(), expected["pred_scores"], rtol=1e-6)


# Issue 15 item 7: a thread's current device is its own (a new thread starts on device 0): the
# runner and the pipeline set the engine's device on entry.
def test_engine_and_pipeline_on_device_1_run_from_any_thread(monkeypatch):
    monkeypatch.setenv("M2F_EMULATED_GPU_COUNT", "2")
    engine_bytes = deployable_engine()
    engine = _core.tensorrt.Engine(engine_bytes, device=1)
    p = _core.tensorrt.Pipeline(engine, "deployable", input="inputs")
    tensor = np.random.default_rng(4).standard_normal((1, 3) + NET).astype(np.float32)
    image = frame(5)
    # mapped memory: any device reads it (device memory would have to come from device 1)
    mapped = _core.gpu.DeviceArray(image.shape, "uint8", "mapped")
    mapped.numpy()[...] = image
    found = {}

    def work():
        try:
            found["infer"] = engine.infer({"inputs": tensor})["pred_masks"].to_numpy()
            found["run"] = p.run([mapped], stream=_core.gpu.Stream())
        except Exception as exc:  # reported below, on the test's thread
            found["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert "error" not in found, found.get("error")
    np.testing.assert_allclose(found["infer"], standin_outputs(tensor, DEPLOYABLE_OUTPUTS)["pred_masks"], rtol=1e-6,
                               atol=1e-6)
    same_results(found["run"], eager_reference(engine_bytes, [image]))


# Issue 15 item 8: an input whose profile pins it (1:1:1) still needs setInputShape; TensorRT
# reports its shape as unspecified until then.
def test_an_input_pinned_by_a_one_one_one_profile_gets_its_shape():
    pinned = (1, 3) + NET
    engine = _core.tensorrt.Engine(standin_engine([("inputs", "float32", pinned, (pinned, pinned, pinned))],
                                                  DEPLOYABLE_OUTPUTS))
    tensor = np.random.default_rng(6).standard_normal(pinned).astype(np.float32)
    outputs = engine.infer({"inputs": tensor})
    np.testing.assert_allclose(outputs["pred_scores"].to_numpy(), standin_outputs(tensor, DEPLOYABLE_OUTPUTS)[
        "pred_scores"], rtol=1e-6)
    with pytest.raises(ValueError, match="takes shape"):
        engine.infer({"inputs": np.zeros((2, 3) + NET, np.float32)})


# Issue 11 item 4 (device half): every setting the Segmenter lets a user change is updatable on a
# built pipeline and takes effect on the next run; a graph captured before is not replayed.
CHANGES = [
    {"score_threshold": 0.2},
    {"max_instances": 1},
    {"mean": (0.3, 0.5, 0.1)},
    {"std": (0.5, 0.1, 0.3)},
    {"color": "rgb"},
    {"resize": "letterbox"},
    {"score_threshold": 0.95, "max_instances": 4},
]


def test_deployable_settings_take_effect_on_the_next_run():
    engine_bytes = deployable_engine()
    _, p = pipeline(engine_bytes)
    stream = _core.gpu.Stream()
    image = on_device(frame(7))
    settings = {}
    before = None
    differed = 0
    for change in CHANGES:
        for _ in range(3):  # eager, capture, replay
            before = p.run([image], stream=stream)
        assert p.last_timings()["cuda_graph"]
        p.update(**change)
        settings.update(change)
        for key, value in change.items():
            got = p.settings[key]
            assert (tuple(np.float32(v) for v in value) == tuple(np.float32(g) for g in got)
                    if isinstance(value, tuple) else got == pytest.approx(value)), key
        after = p.run([image], stream=stream)
        assert not p.last_timings()["cuda_graph"]  # the old graph holds the old settings
        same_results(after, eager_reference(engine_bytes, [frame(7)], **settings))
        replayed = [p.run([image], stream=stream) for _ in range(2)][-1]
        assert p.last_timings()["cuda_graph"]
        same_results(replayed, eager_reference(engine_bytes, [frame(7)], **settings))
        try:
            same_results(before, after)
        except AssertionError:
            differed += 1
    assert differed >= len(CHANGES) - 1  # the frame and engine make (almost) every change visible


def test_raw_head_settings_take_effect_on_the_next_run():
    engine_bytes = raw_engine()
    _, p = pipeline(engine_bytes, "raw", score_threshold=0.0)
    stream = _core.gpu.Stream()
    image = on_device(frame(8))
    for change in ({"topk": 2}, {"no_object_index": -1}, {"no_object_index": 1, "topk": 5}):
        for _ in range(3):
            p.run([image], stream=stream)
        p.update(**change)
        expected_settings = dict(p.settings)
        results = p.run([image], stream=stream)
        reference = eager_reference(engine_bytes, [frame(8)], "raw", score_threshold=0.0,
                                    topk=expected_settings["topk"],
                                    no_object_index=expected_settings["no_object_index"])
        same_results(results, reference)
    assert p.settings["no_object_index"] == 1  # -1 was taken as the last of the 3 columns, then 1


def test_bad_settings_are_refused_by_name_and_change_nothing():
    _, p = pipeline(deployable_engine())
    before = dict(p.settings)
    with pytest.raises(TypeError, match="score_threshold"):
        p.update(score_threshold="high")
    with pytest.raises(ValueError, match="max_instances"):
        p.update(max_instances=-1)
    with pytest.raises(ValueError, match="std"):
        p.update(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="color"):
        p.update(color="purple")
    with pytest.raises(TypeError, match="no setting 'threshold'"):
        p.update(threshold=0.3)
    with pytest.raises(ValueError, match="score_threshold"):
        p.update(score_threshold=float("nan"))
    assert p.settings == before


def test_outputs_held_by_the_caller_are_never_overwritten():
    engine = _core.tensorrt.Engine(deployable_engine())
    rng = np.random.default_rng(9)
    tensors = [rng.standard_normal((1, 3) + NET).astype(np.float32) for _ in range(5)]
    held = [engine.infer({"inputs": t}) for t in tensors]  # more than the pool keeps per output
    for tensor, outputs in zip(tensors, held):
        np.testing.assert_allclose(outputs["pred_scores"].to_numpy(),
                                   standin_outputs(tensor, DEPLOYABLE_OUTPUTS)["pred_scores"], rtol=1e-6)
    pointers = {outputs["pred_scores"].ptr for outputs in held}
    assert len(pointers) == len(held)
    del held
    again = [engine.infer({"inputs": t})["pred_scores"] for t in tensors[:2]]
    assert {a.ptr for a in again} <= pointers and len({a.ptr for a in again}) == 2  # from the pool, one per holder


def test_pipeline_takes_a_frame_list_or_one_batch_array():
    engine_bytes = deployable_engine()
    _, p = pipeline(engine_bytes, use_cuda_graph=False)
    images = [frame(10), frame(11)]
    stream = _core.gpu.Stream()
    as_list = p.run([on_device(image) for image in images], stream=stream)
    as_batch = p.run(on_device(np.stack(images)), stream=stream)
    same_results(as_list, as_batch)
    same_results(as_list, [eager_reference(engine_bytes, [image])[0] for image in images])
