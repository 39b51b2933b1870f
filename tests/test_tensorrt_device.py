"""On a GPU with TensorRT (tools/run_gpu_suite.sh runs this file first): the two sequences issue 15
found by reading NVIDIA's sources, on real TensorRT. Elsewhere tests/test_tensorrt_standin_runner.py
runs the same logic against the emulation build's TensorRT stand-in.

- item 1: TensorRT keeps its loggers (the plugin library for good): engines loaded before and after a
  Python engine build in one process all load and run;
- item 4: a pipeline captures at batch 1, Engine.infer on the same engine runs batch 2 then batch 1,
  and the pipeline's next run must not replay its graph from two re-plans ago."""

import numpy as np
import pytest

from m2f_edge import _core

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not getattr(_core.tensorrt, "available", False) or
                                 getattr(_core.tensorrt, "standin", False),
                                 reason="needs m2f_edge built with a real TensorRT")]


@pytest.fixture(scope="module")
def dynamic_engine(tmp_path_factory):
    from test_gpu_kernels import _build_tiny_engine

    return _build_tiny_engine(tmp_path_factory, "trt_first_run", batch=(1, 1, 2))


def _same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if key != "transform":
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_engines_before_and_after_a_python_build_load_and_run(dynamic_engine, tmp_path):
    from m2f_edge.backends.engine_cache import BuildOptions
    from m2f_edge.models.tensorrt_build import build_with_sidecar

    onnx_path, engine_path = dynamic_engine
    first = _core.tensorrt.Engine(engine_path)
    tensor = np.zeros((1, 3, 64, 96), np.float32)
    want = {k: v.to_numpy() for k, v in first.infer({first.tensors[0]["name"]: tensor}).items()}
    del first  # its runtime is gone; the plugin library still logs through the logger it was given
    other = str(tmp_path / "again.engine")
    build_with_sidecar(onnx_path, other, BuildOptions(fp16=False), progress=False)  # a Python build between
    for path in (engine_path, other, engine_path):
        engine = _core.tensorrt.Engine(path)
        got = engine.infer({engine.tensors[0]["name"]: tensor})
        for name, value in want.items():
            np.testing.assert_allclose(got[name].to_numpy().astype(np.float64), value.astype(np.float64), atol=1e-4)


def test_shape_x_y_x_by_two_users_never_replays_a_stale_graph(dynamic_engine):
    import tiny_models

    _, engine_path = dynamic_engine
    engine = _core.tensorrt.Engine(engine_path)
    name = engine.tensors[0]["name"]
    pipeline = _core.tensorrt.Pipeline(engine, "deployable", input=name, resize="letterbox")
    stream = _core.gpu.Stream()
    first = _core.gpu.DeviceArray.from_numpy(tiny_models.make_test_frame(240, 320))
    for _ in range(3):  # eager, capture, replay
        pipeline.run([first], stream=stream)
    assert pipeline.last_timings()["cuda_graph"]
    for batch in (2, 1):  # the engine's other user re-plans twice, back to batch 1
        engine.infer({name: np.zeros((batch, 3, 64, 96), np.float32)})
    second = tiny_models.make_test_frame(240, 320)[::-1].copy()
    first.copy_from(second)
    got = pipeline.run([first], stream=stream)
    fresh = _core.tensorrt.Pipeline(_core.tensorrt.Engine(engine_path), "deployable", input=name, resize="letterbox",
                                    use_cuda_graph=False)
    _same(got[0], fresh.run([_core.gpu.DeviceArray.from_numpy(second)], stream=_core.gpu.Stream())[0])
    for _ in range(2):
        got = pipeline.run([first], stream=stream)
    assert pipeline.last_timings()["cuda_graph"]
    _same(got[0], fresh.run([_core.gpu.DeviceArray.from_numpy(second)], stream=_core.gpu.Stream())[0])
