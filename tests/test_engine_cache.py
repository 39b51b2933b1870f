"""The TensorRT engine cache, its sidecar and staleness rules, `m2f-edge build` errors without
TensorRT, and what a CUDA build says on a machine without a GPU. Runs everywhere (no TensorRT, no GPU)."""

import io
import json
import os
import sys
import types
from contextlib import redirect_stderr

import numpy as np
import pytest

from m2f_edge import _core
from m2f_edge.backends import engine_cache
from m2f_edge.models import tensorrt_build

HAVE_TENSORRT_PY = True
try:
    import tensorrt  # noqa: F401
except ImportError:
    HAVE_TENSORRT_PY = False


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _fake_builder(calls):
    """Stands in for TensorRT: writes an 'engine' that records which ONNX bytes it came from."""

    def build(onnx_path, engine_path, options):
        calls.append((onnx_path, engine_path, options.precision, options.batch))
        with open(onnx_path, "rb") as f:
            source = f.read()
        _write(engine_path, b"ENGINE:" + source + b":" + options.precision.encode())

    return build


@pytest.fixture
def machine(monkeypatch):
    """A pretend machine: TensorRT 10.3.0 on an Orin; tests change it to see what gets rebuilt."""
    state = {"trt": "10.3.0", "gpu": {"gpu_name": "Orin", "compute_capability": "8.7"}}
    monkeypatch.setattr(engine_cache, "tensorrt_version", lambda: state["trt"])
    monkeypatch.setattr(engine_cache, "target_device", lambda dla_core=None: dict(state["gpu"], dla_core=dla_core))
    return state


# ---- batch parsing and options --------------------------------------------------------------------


def test_parse_batch_forms():
    assert engine_cache.parse_batch("1:4:8") == (1, 4, 8)
    assert engine_cache.parse_batch("4") == (4, 4, 4)
    for bad in ("8:4:1", "0:1:2", "1:2", "a:b:c", "1:2:3:4"):
        with pytest.raises(ValueError, match="batch"):
            engine_cache.parse_batch(bad)


def test_build_options_validation():
    with pytest.raises(ValueError, match="gpu_fallback"):
        engine_cache.BuildOptions(gpu_fallback=True)
    with pytest.raises(ValueError, match="workspace"):
        engine_cache.BuildOptions(workspace_mib=0)
    with pytest.raises(ValueError, match="dla"):
        engine_cache.BuildOptions(dla_core=-1)
    opts = engine_cache.BuildOptions(fp16=False, batch=(1, 2, 4))
    assert opts.precision == "fp32" and opts.batch == (1, 2, 4)
    assert engine_cache.BuildOptions().fp32_layers == engine_cache.TAO_FP32_LAYERS


# ---- cache key --------------------------------------------------------------------------------------


def test_cache_key_depends_on_every_field_and_not_on_order():
    device = {"gpu_name": "Orin", "compute_capability": "8.7", "dla_core": None}
    base = engine_cache.engine_metadata("a" * 64, "10.3.0", device, engine_cache.BuildOptions(batch=(1, 1, 1)))
    key = engine_cache.cache_key(base)
    assert len(key) == 64 and int(key, 16) >= 0
    reordered = json.loads(json.dumps(base, sort_keys=False))
    reordered = dict(reversed(list(reordered.items())))
    assert engine_cache.cache_key(reordered) == key
    variants = [
        engine_cache.engine_metadata("b" * 64, "10.3.0", device, engine_cache.BuildOptions(batch=(1, 1, 1))),
        engine_cache.engine_metadata("a" * 64, "8.6.2", device, engine_cache.BuildOptions(batch=(1, 1, 1))),
        engine_cache.engine_metadata("a" * 64, "10.3.0", dict(device, gpu_name="H100"), engine_cache.BuildOptions(batch=(1, 1, 1))),
        engine_cache.engine_metadata("a" * 64, "10.3.0", dict(device, dla_core=0), engine_cache.BuildOptions(batch=(1, 1, 1))),
        engine_cache.engine_metadata("a" * 64, "10.3.0", device, engine_cache.BuildOptions(fp16=False, batch=(1, 1, 1))),
        engine_cache.engine_metadata("a" * 64, "10.3.0", device, engine_cache.BuildOptions(batch=(1, 2, 4))),
        engine_cache.engine_metadata("a" * 64, "10.3.0", device, engine_cache.BuildOptions(batch=(1, 1, 1), fp32_layers=())),
    ]
    keys = {engine_cache.cache_key(v) for v in variants}
    assert key not in keys and len(keys) == len(variants)


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 << 20) + b"tail"
    path = _write(tmp_path / "m.onnx", data)
    assert engine_cache.file_sha256(path) == hashlib.sha256(data).hexdigest()


# ---- sidecar and staleness --------------------------------------------------------------------------


def test_sidecar_roundtrip_and_staleness(tmp_path):
    device = {"gpu_name": "Orin", "compute_capability": "8.7", "dla_core": None}
    meta = engine_cache.engine_metadata("c" * 64, "10.3.0", device, engine_cache.BuildOptions())
    engine = _write(tmp_path / "m.engine", b"serialized engine bytes")
    assert engine_cache.engine_staleness(engine, meta).startswith("no readable sidecar")
    side = engine_cache.write_sidecar(engine, meta)
    assert side == engine + ".json"
    record = engine_cache.read_sidecar(engine)
    assert record["key"] == engine_cache.cache_key(meta) and record["metadata"] == meta
    assert record["engine_bytes"] == len(b"serialized engine bytes")
    assert engine_cache.engine_staleness(engine, meta) is None

    newer_trt = engine_cache.engine_metadata("c" * 64, "10.7.0", device, engine_cache.BuildOptions())
    assert "tensorrt_version" in engine_cache.engine_staleness(engine, newer_trt)
    other_gpu = engine_cache.engine_metadata("c" * 64, "10.3.0", dict(device, gpu_name="AGX Thor", compute_capability="11.0"),
                                   engine_cache.BuildOptions())
    assert "device" in engine_cache.engine_staleness(engine, other_gpu)

    _write(engine, b"serialized engine bytez")  # same size, different content
    assert "does not match" in engine_cache.engine_staleness(engine, meta)
    _write(side, b"{not json")
    assert engine_cache.engine_staleness(engine, meta).startswith("no readable sidecar")
    os.unlink(engine)
    assert engine_cache.engine_staleness(engine, meta) == "no engine file"


def test_cached_engine_builds_once_then_reuses(tmp_path, machine):
    onnx = _write(tmp_path / "model.onnx", b"onnx-bytes-v1")
    calls = []
    first = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(batch=(1, 2, 4)), cache_dir=str(tmp_path / "cache"),
                             builder=_fake_builder(calls))
    assert len(calls) == 1 and os.path.isfile(first) and os.path.isfile(first + ".json")
    assert os.path.basename(first).startswith("model-fp16-")
    again = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(batch=(1, 2, 4)), cache_dir=str(tmp_path / "cache"),
                             builder=_fake_builder(calls))
    assert again == first and len(calls) == 1
    with open(first, "rb") as f:
        assert f.read() == b"ENGINE:onnx-bytes-v1:fp16"


def test_cached_engine_rebuilds_stale_and_never_loads_foreign(tmp_path, machine):
    onnx = _write(tmp_path / "model.onnx", b"onnx-bytes-v1")
    cache = str(tmp_path / "cache")
    calls = []
    build = _fake_builder(calls)
    first = tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)

    # a changed model gets its own engine built from the new bytes
    _write(onnx, b"onnx-bytes-v2")
    second = tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)
    assert second != first and len(calls) == 2
    with open(second, "rb") as f:
        assert f.read() == b"ENGINE:onnx-bytes-v2:fp16"

    # a TensorRT upgrade or another GPU: different key, a new engine is built
    machine["trt"] = "10.7.0"
    third = tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)
    machine["gpu"] = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    fourth = tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)
    assert len({first, second, third, fourth}) == 4 and len(calls) == 4

    # an engine file tampered with (or copied from elsewhere over the cached one) is rebuilt
    _write(fourth, b"foreign engine from another machine")
    rebuilt = tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)
    assert rebuilt == fourth and len(calls) == 5
    with open(rebuilt, "rb") as f:
        assert f.read() == b"ENGINE:onnx-bytes-v2:fp16"

    # a sidecar that names another configuration for the same file name is not trusted
    record = engine_cache.read_sidecar(rebuilt)
    record["metadata"]["precision"] = "fp32"
    record["key"] = engine_cache.cache_key(record["metadata"])
    with open(rebuilt + ".json", "w") as f:
        json.dump(record, f)
    tensorrt_build.cached_engine(onnx, None, cache_dir=cache, builder=build)
    assert len(calls) == 6


def test_cached_engine_cache_dir_from_environment(tmp_path, machine, monkeypatch):
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "env-cache"))
    onnx = _write(tmp_path / "model.onnx", b"x")
    path = tensorrt_build.cached_engine(onnx, None, builder=_fake_builder([]))
    assert os.path.dirname(path) == str(tmp_path / "env-cache")


def test_cached_engine_missing_model(tmp_path, machine):
    with pytest.raises(FileNotFoundError, match="no such file"):
        tensorrt_build.cached_engine(str(tmp_path / "absent.onnx"), None, cache_dir=str(tmp_path), builder=_fake_builder([]))


@pytest.mark.skipif(HAVE_TENSORRT_PY, reason="TensorRT's Python package is installed here")
def test_without_tensorrt_building_says_what_is_missing(tmp_path, monkeypatch):
    onnx = _write(tmp_path / "model.onnx", b"x")
    monkeypatch.setattr(engine_cache, "tensorrt_version", lambda: None)
    with pytest.raises(tensorrt_build.TensorRTUnavailableError, match="TensorRT's Python package") as info:
        tensorrt_build.cached_engine(onnx, None, cache_dir=str(tmp_path))
    assert "onnxruntime" in str(info.value)
    with pytest.raises(ImportError, match="tensorrt"):
        tensorrt_build.build_engine(onnx, str(tmp_path / "m.engine"))


# ---- FP32 layer marking (the builder's name match, on a stand-in network) ------------------------------


def test_mark_fp32_layers_follows_taos_rules():
    """TAO deploy's setLayerPrecisions: by name prefix, skipping constant layers, layers fed by a shape
    tensor and integer layers, and setting the layer precision only (never output types)."""
    specs = [
        ("/sem_seg_head/predictor/transformer_cross_attention_layers.0/MatMul", ["float16"]),
        ("/sem_seg_head/predictor/transformer_cross_attention_layers.3/Softmax", ["float32", "float16"]),
        ("/post_processor/ReduceSum", ["float32"]),
        ("/post_processor/Div_1", ["float32"]),
        ("/post_processor/Div_2/Cast", ["int32"]),  # a TAO name, integer output: nothing to keep FP32
        ("/post_processor/Div_3", ["float32"], {"shape_input": True}),  # arithmetic on shapes
        ("/post_processor/Add_4", ["float32"], {"type": "CONSTANT"}),
        ("/post_processor/Add_5", ["float32", "int32"]),  # one integer output: an INT32 layer
        ("/backbone/layers.0/Add", ["float16"]),
        ("/sem_seg_head/predictor/transformer_self_attention_layers.0/Add", ["float16"]),
    ]
    trt = make_tensorrt("10.3.0.26", layers=specs)
    network = trt.Builder(trt.Logger()).create_network(0)
    marked = tensorrt_build.mark_fp32_layers(network, trt, engine_cache.TAO_FP32_LAYERS)
    assert marked == [spec[0] for spec in specs[:4]]
    for layer in network.layers[:4]:
        assert layer.precision == trt.float32
    assert set(trt.calls["precision"]) == set(marked)  # no other layer's precision was set
    assert all(not layer.output_types for layer in network.layers)  # output types are TensorRT's choice


# ---- the `m2f-edge build` command ---------------------------------------------------------------------


def _cli(argv):
    from m2f_edge import cli

    err = io.StringIO()
    with redirect_stderr(err):
        status = cli.main(argv)
    return status, err.getvalue()


def test_build_command_is_registered():
    status, err = _cli(["build", "--help"])
    assert status == 0


def test_build_command_errors(tmp_path):
    status, err = _cli(["build", str(tmp_path / "absent.onnx")])
    assert status == 1 and "no such ONNX model" in err
    onnx = _write(tmp_path / "m.onnx", b"x")
    status, err = _cli(["build", onnx, "--gpu-fallback"])
    assert status == 1 and "--dla" in err
    status, err = _cli(["build", onnx, "--batch", "8:4:1"])
    assert status == 1 and "MIN:OPT:MAX" in err
    notonnx = _write(tmp_path / "m.engine", b"x")
    status, err = _cli(["build", notonnx])
    assert status == 1 and ".onnx" in err


@pytest.mark.skipif(HAVE_TENSORRT_PY, reason="TensorRT's Python package is installed here")
def test_build_command_without_tensorrt(tmp_path):
    onnx = _write(tmp_path / "m.onnx", b"x")
    status, err = _cli(["build", onnx, "--fp16", "--batch", "1:2:4", "--workspace", "1024"])
    assert status == 1
    assert "TensorRT" in err and "onnxruntime" in err
    assert not os.path.exists(str(tmp_path / "m.fp16.engine"))


def test_default_engine_name():
    from m2f_edge.commands import build

    assert build.default_output("/x/model.onnx", True) == "/x/model.fp16.engine"
    assert build.default_output("model.onnx", False) == "model.fp32.engine"


# ---- what the core says about CUDA and TensorRT where they are absent ----------------------------------


def test_tensorrt_backend_without_tensorrt_build(tmp_path):
    if _core.tensorrt.available:
        pytest.skip("built with TensorRT")
    engine = _write(tmp_path / "m.engine", b"x")
    from m2f_edge.backends.tensorrt import TensorRTBackend

    with pytest.raises(ImportError, match="without TensorRT"):
        TensorRTBackend(engine)
    with pytest.raises(ImportError, match="without TensorRT"):
        _core.tensorrt.Engine(engine)


def test_gpu_functions_explain_missing_cuda_or_gpu():
    info = _core.build_info()
    gpu = _core.gpu
    device = gpu.device_info()
    assert device["present"] == info["gpu_present"]
    if not info["cuda"]:
        assert gpu.built_with_cuda is False and gpu.available() is False
        assert "without CUDA" in device["error"]
        for call in (lambda: gpu.DeviceArray((2, 2)), lambda: gpu.preprocess([], None),
                     lambda: gpu.postprocess_raw(None, None, None), lambda: gpu.Stream()):
            with pytest.raises(ImportError, match="without CUDA"):
                call()
    elif not info["gpu_present"]:
        # CUDA build, no GPU or driver (CI): imports, reports why, and fails cleanly when asked to work.
        assert gpu.built_with_cuda is True and gpu.available() is False
        assert info["gpu_error"] and device["error"] == info["gpu_error"]
        with pytest.raises(RuntimeError, match="cuda|CUDA"):
            gpu.DeviceArray((2, 2), "float32")
        with pytest.raises(RuntimeError, match="cuda|CUDA"):
            gpu.Stream()
        from m2f_edge import gpu as gpu_py

        with pytest.raises(RuntimeError, match="no usable CUDA device"):
            gpu_py.require_gpu()
    else:
        assert gpu.available() is True and device["name"]


def test_stream_handle_accepts_common_stream_objects():
    from m2f_edge.gpu import stream_handle

    class CupyLike:
        ptr = 1234

    class TorchLike:
        cuda_stream = 99

    class Ours:
        handle = 7

    class CudaPythonLike:
        def __int__(self):
            return 4242

    assert stream_handle(None) == 0
    assert stream_handle(5) == 5
    assert stream_handle(CupyLike()) == 1234
    assert stream_handle(TorchLike()) == 99
    assert stream_handle(Ours()) == 7
    assert stream_handle(CudaPythonLike()) == 4242
    for not_a_stream in (object(), "not a stream", "7", 7.0):
        with pytest.raises(TypeError, match="argument 'stream'"):
            stream_handle(not_a_stream)


def test_is_gpu_array():
    from m2f_edge.gpu import is_gpu_array

    class Cai:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False), "version": 3}

    class DlpackCuda:
        def __dlpack_device__(self):
            return (2, 0)

    class DlpackCpu:
        def __dlpack_device__(self):
            return (1, 0)

    assert is_gpu_array(Cai()) and is_gpu_array(DlpackCuda())
    assert not is_gpu_array(DlpackCpu()) and not is_gpu_array(np.zeros(3))


# ---- the builder's wiring, on a stand-in for TensorRT's Python API, one per major version ---------------
# tests/tensorrt_standin.py follows the names and argument names of NVIDIA's bindings at 8.5.2, 8.6.1,
# 10.3.0 and 11.1 and lacks what each version lacks; it checks our side of the calls (network flags,
# precision, profiles, DLA, timing cache, progress monitor, files written), not TensorRT itself.

from tensorrt_standin import VERSIONS, make_tensorrt  # noqa: E402


def _major(version):
    return int(version.split(".")[0])


def test_standin_lacks_what_each_version_lacks():
    t8, t10, t11 = make_tensorrt("8.5.2.2"), make_tensorrt("10.3.0.26"), make_tensorrt("11.1.0.3")
    assert t8.BuilderFlag.FP16 and t10.BuilderFlag.OBEY_PRECISION_CONSTRAINTS and t10.NetworkDefinitionCreationFlag.EXPLICIT_BATCH == 0
    for missing in (lambda: t11.BuilderFlag.FP16, lambda: t11.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                    lambda: t11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH, lambda: t8.IProgressMonitor,
                    lambda: t11.Builder(t11.Logger()).platform_has_fast_fp16):
        with pytest.raises(AttributeError):
            missing()
    layer = t11.Builder(t11.Logger()).create_network(0).get_layer(0)
    with pytest.raises(AttributeError):
        layer.precision = t11.float32
    with pytest.raises(AttributeError):
        layer.set_output_type(0, t11.float32)
    with pytest.raises(AttributeError):
        t8.Builder(t8.Logger()).create_builder_config().progress_monitor = object()


@pytest.mark.parametrize("version", VERSIONS)
def test_build_engine_wiring_dynamic_batch_fp16_timing_cache(tmp_path, monkeypatch, machine, version):
    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = _write(tmp_path / "m.onnx", b"onnx")
    engine = str(tmp_path / "m.engine")
    cache = str(tmp_path / "timing.cache")
    _write(cache, b"old")
    opts = engine_cache.BuildOptions(fp16=True, batch=(1, 2, 4), workspace_mib=512, timing_cache=cache)
    err = io.StringIO()
    with redirect_stderr(err):
        report = tensorrt_build.build_with_sidecar(onnx, engine, opts)
    calls = trt.calls
    assert calls["plugins"] == 1 and calls["parsed"] == onnx
    # TensorRT 8's ONNX parser needs an explicit-batch network; 10 ignores the flag and 11 has none
    assert calls["network_flags"] == (1 if _major(version) < 10 else 0)
    assert calls["workspace"] == (trt.MemoryPoolType.WORKSPACE, 512 << 20)
    assert calls["profiles"] == [("inputs", (1, 3, 64, 96), (2, 3, 64, 96), (4, 3, 64, 96))]
    assert calls["device"] == ("GPU", -1) and "GPU_FALLBACK" not in calls["flags"]
    if _major(version) < 11:
        assert calls["flags"] == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
        assert report["fp32_layers_marked"] == ["/post_processor/Div"] and report["precision"] == "fp16"
        assert calls["precision"] == {"/post_processor/Div": trt.float32}
        assert calls["network"].get_layer(0).output_types == {}
        assert not report["strongly_typed"] and report["notes"] == []
    else:  # strongly typed: no precision flags or constraints; an FP32 ONNX gives an FP32 engine, said so
        assert calls["flags"] == set() and "precision" not in calls
        assert report["fp32_layers_marked"] == [] and report["precision"] == "fp32" and report["strongly_typed"]
        assert len(report["notes"]) == 1 and "strongly typed" in report["notes"][0]
        assert "no float16 tensors" in report["notes"][0]
    if _major(version) >= 10:  # IProgressMonitor: our subclass ran to the end and printed the phases
        assert calls["monitor"] is not None and calls["monitor_events"] == [("finished", None)]
        assert "Building engine" in err.getvalue() and "Tactic selection" in err.getvalue()
    else:
        assert "building TensorRT engine" in err.getvalue()  # the spinner
    with open(engine, "rb") as f:
        assert f.read() == b"serialized-engine"
    assert calls["set_timing_cache"] == [(b"old", False, True)]
    with open(cache, "rb") as f:
        assert f.read() == b"timing:old"
    record = engine_cache.read_sidecar(engine)
    assert record["metadata"]["batch"] == [1, 2, 4] and record["metadata"]["precision"] == "fp16"
    assert record["build"]["precision"] == report["precision"]
    assert engine_cache.engine_staleness(engine, record["metadata"]) is None


def test_build_engine_strongly_typed_fp16_model(tmp_path, monkeypatch, machine):
    """TensorRT 11 with an ONNX that carries float16: an FP16 engine, no flag set, no warning."""
    trt = make_tensorrt("11.1.0.3", input_dtype="float16", layers=[("/backbone/Conv", ["float16"])])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = _write(tmp_path / "m.onnx", b"onnx")
    report = tensorrt_build.build_engine(onnx, str(tmp_path / "m.engine"), engine_cache.BuildOptions(batch=(1, 1, 2)), progress=False)
    assert report["precision"] == "fp16" and trt.calls["flags"] == set()
    assert all("no float16" not in note for note in report["notes"])


@pytest.mark.parametrize("version", VERSIONS)
def test_build_engine_fp32(tmp_path, monkeypatch, version):
    trt = make_tensorrt(version, input_shape=(1, 3, 64, 96))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(_write(tmp_path / "m.onnx", b"onnx"), str(tmp_path / "m.engine"),
                             engine_cache.BuildOptions(fp16=False), progress=False)
    assert report["precision"] == "fp32" and report["notes"] == [] and trt.calls["flags"] == set()
    assert "precision" not in trt.calls and trt.calls["profiles"] == []


@pytest.mark.parametrize("version", ["8.6.1.6", "10.3.0.26", "11.1.0.3"])
def test_build_engine_timing_cache_from_another_machine_starts_fresh(tmp_path, monkeypatch, version):
    trt = make_tensorrt(version, timing_cache_matches=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = _write(tmp_path / "timing.cache", b"foreign")
    tensorrt_build.build_engine(_write(tmp_path / "m.onnx", b"onnx"), str(tmp_path / "m.engine"),
                    engine_cache.BuildOptions(timing_cache=cache), progress=False)
    assert [c[:2] for c in trt.calls["set_timing_cache"]] == [(b"foreign", False), (b"", False)]
    with open(cache, "rb") as f:
        assert f.read() == b"timing:"  # rewritten from the fresh cache


def test_progress_monitor_never_cancels_on_a_display_error(monkeypatch):
    trt = make_tensorrt("10.3.0.26")

    class BrokenStream:
        def write(self, text):
            raise OSError("closed")

        def flush(self):
            pass

    monitor = tensorrt_build._progress_monitor_class(trt)(stream=BrokenStream())
    monitor.phase_start("Building engine", None, 2)
    assert monitor.step_complete("Building engine", 0) is True
    assert monitor.step_complete("unknown phase", 0) is True
    monitor.phase_finish("Building engine")


@pytest.mark.parametrize("version", VERSIONS)
def test_build_engine_wiring_dla_and_errors(tmp_path, monkeypatch, machine, version):
    onnx = _write(tmp_path / "m.onnx", b"onnx")
    engine = str(tmp_path / "m.engine")
    fp16_layers = [("/backbone/Conv", ["float16"])]
    strongly_typed = _major(version) >= 11

    trt = make_tensorrt(version, input_shape=(1, 3, 64, 96), layers=fp16_layers if strongly_typed else None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(dla_core=1, gpu_fallback=True), progress=False)
    assert trt.calls["device"] == ("DLA", 1) and "GPU_FALLBACK" in trt.calls["flags"]
    assert trt.calls["profiles"] == []  # static batch: no profile

    with pytest.raises(tensorrt_build.EngineBuildError, match="static batch of 1"):
        tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(batch=(1, 2, 4)), progress=False)
    with pytest.raises(tensorrt_build.EngineBuildError, match="has 2 DLA cores"):
        tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(dla_core=5), progress=False)
    with pytest.raises(tensorrt_build.EngineBuildError, match="FP16"):
        tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(fp16=False, dla_core=0), progress=False)
    if strongly_typed:
        monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version))  # an FP32 ONNX
        with pytest.raises(tensorrt_build.EngineBuildError, match="holds no float16"):
            tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(dla_core=0), progress=False)

    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, dla_cores=0))
    with pytest.raises(tensorrt_build.EngineBuildError, match="no DLA cores"):
        tensorrt_build.build_engine(onnx, engine, engine_cache.BuildOptions(dla_core=0), progress=False)

    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, parse_ok=False))
    with pytest.raises(tensorrt_build.EngineBuildError, match="MultiscaleDeformableAttnPlugin_TRT") as info:
        tensorrt_build.build_engine(onnx, engine, progress=False)
    assert "libnvinfer_plugin" in str(info.value)

    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, input_shape=(-1, 3, -1, -1)))
    with pytest.raises(tensorrt_build.EngineBuildError, match="fixed height and width"):
        tensorrt_build.build_engine(onnx, engine, progress=False)


def test_tensorrt_backend_refuses_foreign_engine_before_loading(tmp_path, machine, monkeypatch):
    from m2f_edge.backends.tensorrt import check_engine_sidecar

    monkeypatch.setattr(engine_cache, "runtime_tensorrt_version", lambda: machine["trt"])  # what the core loads

    engine = _write(tmp_path / "m.engine", b"engine")
    check_engine_sidecar(engine)  # no sidecar (e.g. trtexec): left to TensorRT's own check
    built_here = engine_cache.engine_metadata("d" * 64, "10.3.0", engine_cache.target_device(), engine_cache.BuildOptions())
    engine_cache.write_sidecar(engine, built_here)
    check_engine_sidecar(engine)
    engine_cache.write_sidecar(engine, engine_cache.engine_metadata("d" * 64, "8.6.2", engine_cache.target_device(), engine_cache.BuildOptions()))
    with pytest.raises(RuntimeError, match="TensorRT 8.6.2.*TensorRT 10.3.0"):
        check_engine_sidecar(engine)
    other = dict(engine_cache.target_device(), gpu_name="NVIDIA H100", compute_capability="9.0")
    engine_cache.write_sidecar(engine, engine_cache.engine_metadata("d" * 64, "10.3.0", other, engine_cache.BuildOptions()))
    with pytest.raises(RuntimeError, match="built for NVIDIA H100.*this GPU is Orin"):
        check_engine_sidecar(engine)


@pytest.mark.parametrize("version", VERSIONS)
def test_build_command_writes_engine_and_sidecar(tmp_path, monkeypatch, machine, capsys, version):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version))
    onnx = _write(tmp_path / "model.onnx", b"onnx")
    status, err = _cli(["build", onnx, "--batch", "1:1:2", "--timing-cache", str(tmp_path / "t.cache"),
                        "--no-progress"])
    assert status == 0, err
    engine = str(tmp_path / "model.fp16.engine")
    assert "wrote " + engine in capsys.readouterr().out
    assert os.path.isfile(engine) and engine_cache.read_sidecar(engine)["metadata"]["batch"] == [1, 1, 2]
    assert os.path.isfile(str(tmp_path / "t.cache"))


# ---- the ONNX metadata travels with the engine (sidecar) -------------------------------------------------
# A TensorRT engine does not keep the ONNX's metadata_props; a Hugging Face raw-head export stores its
# no-object index there. The sidecar carries them, so the engine gets the settings ONNX Runtime gets.


def _raw_onnx(tmp_path, num_classes=3, no_object_index=-1):
    from tiny_models import make_raw_model

    return str(make_raw_model(tmp_path / "hf_raw.onnx", num_classes=num_classes, no_object_index=no_object_index,
                              metadata={"m2f_edge.head": "raw", "producer_note": "not an m2f_edge key"}))


def _ort_metadata(onnx_path):
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def test_cached_engine_sidecar_carries_onnx_metadata(tmp_path, machine):
    onnx = _raw_onnx(tmp_path)
    expected = _ort_metadata(onnx)
    assert expected["m2f_edge.no_object_index"] == "-1"
    calls = []
    engine = tensorrt_build.cached_engine(onnx, None, cache_dir=str(tmp_path / "cache"), builder=_fake_builder(calls))
    assert engine_cache.read_sidecar(engine)["model_metadata"] == expected
    assert engine_cache.engine_model_metadata(engine) == expected

    # an engine cached before the sidecar carried metadata gets it added, without a rebuild
    record = engine_cache.read_sidecar(engine)
    del record["model_metadata"]
    with open(engine + ".json", "w") as f:
        json.dump(record, f)
    assert engine_cache.engine_model_metadata(engine) == {}
    again = tensorrt_build.cached_engine(onnx, None, cache_dir=str(tmp_path / "cache"), builder=_fake_builder(calls))
    assert again == engine and len(calls) == 1
    assert engine_cache.engine_model_metadata(engine) == expected and engine_cache.engine_staleness(engine, record["metadata"]) is None


def test_onnx_metadata_of_a_file_that_is_not_onnx(tmp_path):
    assert engine_cache.onnx_model_metadata(_write(tmp_path / "m.onnx", b"\xff\xfe not protobuf")) == {}
    assert engine_cache.engine_model_metadata(str(tmp_path / "absent.engine")) == {}


@pytest.mark.parametrize("version", ["8.5.2.2", "11.1.0.3"])
def test_build_command_sidecar_carries_onnx_metadata(tmp_path, monkeypatch, machine, capsys, version):
    machine["trt"] = version
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, from_onnx=True))
    onnx = _raw_onnx(tmp_path)
    status, err = _cli(["build", onnx, "--batch", "1:1:2", "--no-progress"])
    assert status == 0, err
    engine = str(tmp_path / "hf_raw.fp16.engine")
    assert engine_cache.engine_model_metadata(engine) == _ort_metadata(onnx)
    out = capsys.readouterr().out
    assert "(fp16," in out
    if version.startswith("11."):  # strongly typed: the FP32 ONNX was converted to FP16 first, and the user is told
        assert "strongly typed" in err and "converted to FP16" in err
        assert engine_cache.read_sidecar(engine)["build"]["fp16_conversion"]["converted"] is True
    # --no-auto-fp16: TensorRT 11 then builds the FP32 ONNX as it is (an FP32 engine, said so)
    status, err = _cli(["build", onnx, "--batch", "1:1:2", "--no-progress", "--no-auto-fp16", "-o",
                        str(tmp_path / "plain.engine")])
    assert status == 0, err
    out = capsys.readouterr().out
    if version.startswith("11."):
        assert "(fp32," in out and "no float16 tensors" in err
        assert "fp16_conversion" not in engine_cache.read_sidecar(str(tmp_path / "plain.engine"))["build"]
    else:
        assert "(fp16," in out


class _FakeDeviceArray:
    def __init__(self, array):
        self.array = array

    def to_numpy(self):
        return self.array.copy()


class _FakeCoreEngine:
    """Stands in for _core.tensorrt.Engine (which needs TensorRT and a GPU): runs the engine's ONNX
    with ONNX Runtime and reports made-up timings, so the Python backend around it can be tested."""

    def __init__(self, onnx_path, batch_range):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.timings = None
        lo, hi = batch_range
        self.tensors = []
        for i in self.session.get_inputs():
            shape = tuple(-1 if not isinstance(d, int) else d for d in i.shape)
            self.tensors.append({"name": i.name, "mode": "input", "dtype": "float32", "shape": shape,
                                 "min_shape": (lo,) + shape[1:], "opt_shape": (lo,) + shape[1:],
                                 "max_shape": (hi,) + shape[1:]})
        for o in self.session.get_outputs():
            shape = tuple(-1 if not isinstance(d, int) else d for d in o.shape)
            self.tensors.append({"name": o.name, "mode": "output", "dtype": "float32", "shape": shape})

    def set_mapped_outputs(self, mapped):
        pass

    def infer(self, inputs, stream=None, synchronize=True):
        outputs = self.session.run(None, inputs)
        self.timings = {"enqueue_ms": 0.25, "gpu_ms": 1.5 if synchronize else None}
        return {o.name: _FakeDeviceArray(a) for o, a in zip(self.session.get_outputs(), outputs)}

    def last_timings(self):
        return self.timings


def _fake_tensorrt_backend(monkeypatch, engine_path, onnx_path, batch_range=(1, 2)):
    import types

    from m2f_edge.backends import tensorrt as trt_backend

    fake_core = types.SimpleNamespace(
        tensorrt=types.SimpleNamespace(
            available=True,
            Engine=lambda path, dla_core=-1, device=0, use_cuda_graph=False: _FakeCoreEngine(onnx_path, batch_range)),
        gpu=types.SimpleNamespace(device_info=lambda: {"zero_copy": False, "name": "stand-in GPU"}))
    monkeypatch.setattr(trt_backend, "_core_tensorrt", lambda: fake_core)
    return trt_backend.TensorRTBackend(engine_path)


def test_tensorrt_backend_metadata_gives_the_onnxruntime_settings(tmp_path, machine, monkeypatch):
    """Segmenter's order (argument > spec > sidecar > model metadata) with the metadata a TensorRT engine
    gets from its sidecar, against the same ONNX run by ONNX Runtime."""
    from m2f_edge import Segmenter
    from tiny_models import make_test_frame, mask_iou

    onnx = _raw_onnx(tmp_path, num_classes=3, no_object_index=-1)
    engine = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(batch=(1, 1, 2)), cache_dir=str(tmp_path / "cache"),
                              builder=_fake_builder([]))
    backend = _fake_tensorrt_backend(monkeypatch, engine, onnx)
    assert backend.metadata == _ort_metadata(onnx)

    reference = Segmenter(onnx, backend="onnxruntime")
    seg = Segmenter(backend)
    assert reference.no_object_index == seg.no_object_index == -1
    frame, _ = make_test_frame()
    expected = reference.run(frame)

    def run_stages(segmenter):  # Segmenter.run would take the GPU pipeline with a TensorRT backend
        prepared = segmenter.preprocess([frame])
        return segmenter.postprocess(segmenter.infer(prepared.tensor), prepared.transforms)[0]

    got = run_stages(seg)
    assert len(expected) == len(got) == 3
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    for a, b in zip(got.masks, expected.masks):
        assert mask_iou(a, b) > 0.999
    # the setting matters: TAO's index 0 on this model reads other classes
    wrong = run_stages(Segmenter(backend, no_object_index=0))
    def labelled_boxes(instances):
        return sorted((int(label), tuple(box.tolist())) for label, box in zip(instances.labels, instances.boxes))

    assert labelled_boxes(got) == labelled_boxes(expected) != labelled_boxes(wrong)

    # the rest of the order: a sidecar next to the engine, a spec, an argument
    assert Segmenter(backend, spec={"no_object_index": 0}).no_object_index == 0
    assert Segmenter(backend, spec={"no_object_index": 0}, no_object_index=-1).no_object_index == -1
    with open(os.path.splitext(engine)[0] + ".json", "w") as f:
        json.dump({"no_object_index": 0}, f)
    assert Segmenter(backend).no_object_index == 0


def test_tensorrt_backend_last_timings(tmp_path, machine, monkeypatch):
    from m2f_edge.runners import HostRunner, Job

    onnx = _raw_onnx(tmp_path)
    engine = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(batch=(1, 1, 2)), cache_dir=str(tmp_path / "cache"),
                              builder=_fake_builder([]))
    backend = _fake_tensorrt_backend(monkeypatch, engine, onnx)
    assert backend.last_timings() is None  # nothing ran yet
    tensor = np.zeros((1,) + tuple(backend.input_shape[1:]), np.float32)
    backend.run(tensor)
    assert backend.last_timings() == {"enqueue_ms": 0.25, "gpu_ms": 1.5}
    backend.run_device(tensor, synchronize=False)
    assert backend.last_timings() == {"enqueue_ms": 0.25, "gpu_ms": None}  # not waited for

    class Seg:  # what the host runner's infer step needs of a Segmenter
        def infer(self, tensor):
            return backend.run(tensor)

    seg = Seg()
    seg.backend = backend
    job = Job([tensor[0]])
    job.prepared = types.SimpleNamespace(tensor=tensor)
    HostRunner(seg)._infer(job)  # the host runner hands the backend's own timings to the bench
    assert job.timings["enqueue_ms"] == 0.25 and job.timings["gpu_ms"] == 1.5


@pytest.mark.parametrize("version", ["10.3.0.26", "11.1.0.3"])
def test_cached_engine_records_what_was_built(tmp_path, monkeypatch, machine, version):
    machine["trt"] = version  # the machine's TensorRT is the stand-in's
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version, from_onnx=True))
    onnx = _raw_onnx(tmp_path)
    err = io.StringIO()
    with redirect_stderr(err):
        engine = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(batch=(1, 1, 2)), cache_dir=str(tmp_path / "cache"))
    record = engine_cache.read_sidecar(engine)
    assert record["metadata"]["precision"] == "fp16"  # what was asked (the cache key)
    # what was built: FP16 both times; TensorRT 11 from the FP16 conversion of the ONNX, recorded
    assert record["build"]["precision"] == "fp16"
    if version.startswith("11."):
        conversion = record["build"]["fp16_conversion"]
        assert conversion["converted"] is True and conversion["recipe"] == record["metadata"][
            "onnx_fp16_conversion"]["recipe"]
    else:
        assert "fp16_conversion" not in record["build"] and "onnx_fp16_conversion" not in record["metadata"]
    assert record["model_metadata"] == _ort_metadata(onnx)


# ---- TensorRT >= 11: the FP32 ONNX converted to FP16 before parsing --------------------------------------------


def _tao_like_onnx(tmp_path):
    from test_fp16 import make_tao_like_model

    return str(make_tao_like_model(tmp_path / "tao_like.onnx") and tmp_path / "tao_like.onnx")


def test_cache_key_holds_the_fp16_conversion_choice_where_it_matters():
    device = {"gpu_name": "Thor", "compute_capability": "11.0", "dla_core": None}
    from m2f_edge.models.fp16 import RECIPE_VERSION

    def key(trt, **kw):
        return engine_cache.cache_key(engine_cache.engine_metadata("a" * 64, trt, device, engine_cache.BuildOptions(**kw)))

    meta = engine_cache.engine_metadata("a" * 64, "11.4.1", device, engine_cache.BuildOptions())
    assert meta["onnx_fp16_conversion"] == {"auto": True, "recipe": RECIPE_VERSION}
    assert key("11.4.1") != key("11.4.1", auto_fp16=False)
    # FP32 builds and TensorRT < 11 do not convert: the choice stays out of their keys (cached engines keep theirs)
    assert "onnx_fp16_conversion" not in engine_cache.engine_metadata("a" * 64, "11.4.1", device, engine_cache.BuildOptions(fp16=False))
    assert key("11.4.1", fp16=False) == key("11.4.1", fp16=False, auto_fp16=False)
    for trt in ("8.5.2", "10.3.0", "10.16.0", None):
        assert key(trt) == key(trt, auto_fp16=False)
        assert "onnx_fp16_conversion" not in engine_cache.engine_metadata("a" * 64, trt, device, engine_cache.BuildOptions())


def test_cached_engine_rebuilds_when_the_conversion_choice_changes(tmp_path, machine):
    machine["trt"] = "11.4.1"
    onnx = _write(tmp_path / "model.onnx", b"onnx-bytes")
    calls = []
    cache = str(tmp_path / "cache")
    first = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(), cache_dir=cache, builder=_fake_builder(calls))
    second = tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(auto_fp16=False), cache_dir=cache, builder=_fake_builder(calls))
    assert first != second and len(calls) == 2
    assert tensorrt_build.cached_engine(onnx, engine_cache.BuildOptions(), cache_dir=cache, builder=_fake_builder(calls)) == first
    assert len(calls) == 2


def test_build_engine_tensorrt11_parses_the_fp16_conversion(tmp_path, monkeypatch, machine):
    machine["trt"] = "11.1.0"
    trt = make_tensorrt("11.1.0.3", input_shape=(-1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = _tao_like_onnx(tmp_path)
    with open(onnx_path, "rb") as f:
        before = f.read()
    engine = str(tmp_path / "m.engine")
    report = tensorrt_build.build_with_sidecar(onnx_path, engine, engine_cache.BuildOptions(batch=(1, 1, 2)), progress=False)
    parsed = trt.calls["parsed"]
    assert parsed != onnx_path and parsed.endswith("tao_like.fp16.onnx")
    assert not os.path.exists(parsed) and not os.path.exists(os.path.dirname(parsed))  # the temporary copy is gone
    with open(onnx_path, "rb") as f:
        assert f.read() == before  # the user's file is untouched
    network = trt.calls["network"]
    assert network.get_input(0).dtype == trt.float32  # the SDK's I/O contract
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    for name in ("/post_processor/ReduceSum", "/post_processor/ReduceSum_1", "/post_processor/Add",
                 "/post_processor/Div", "/backbone/Min"):
        assert layers[name].get_output(0).dtype == trt.float32, name
    for name in ("/backbone/Conv", "/pixel_decoder/Resize", "/post_processor/Sigmoid"):
        assert layers[name].get_output(0).dtype == trt.float16, name
    assert report["precision"] == "fp16" and trt.calls["flags"] == set()
    conversion = report["fp16_conversion"]
    assert conversion["converted"] is True and conversion["keep_prefixes"] == list(engine_cache.TAO_FP32_LAYERS)
    assert "/post_processor/Div" in conversion["kept_fp32"]["name"]
    assert any("converted to FP16" in n for n in report["notes"])
    assert not any("no float16" in n for n in report["notes"])
    record = engine_cache.read_sidecar(engine)
    assert record["build"]["fp16_conversion"] == json.loads(json.dumps(conversion))
    assert record["metadata"]["onnx_fp16_conversion"]["auto"] is True

    # --no-fp32-layers reaches the converter: only the op-type rules keep nodes FP32 then
    trt = make_tensorrt("11.1.0.3", input_shape=(-1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(onnx_path, engine, engine_cache.BuildOptions(batch=(1, 1, 2), fp32_layers=()), progress=False)
    assert "name" not in report["fp16_conversion"]["kept_fp32"]
    layers = {trt.calls["network"].get_layer(i).name: trt.calls["network"].get_layer(i)
              for i in range(trt.calls["network"].num_layers)}
    assert layers["/post_processor/Div"].get_output(0).dtype == trt.float16


def test_build_engine_tensorrt11_conversion_off_or_not_needed(tmp_path, monkeypatch, machine):
    onnx_path = _tao_like_onnx(tmp_path)
    engine = str(tmp_path / "m.engine")
    trt = make_tensorrt("11.1.0.3", input_shape=(-1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(onnx_path, engine, engine_cache.BuildOptions(auto_fp16=False), progress=False)
    assert trt.calls["parsed"] == onnx_path and report["precision"] == "fp32"
    assert "fp16_conversion" not in report and "no float16 tensors" in report["notes"][0]

    # an ONNX already in FP16 is parsed as it is
    import onnx
    from m2f_edge.models.fp16 import convert_float16

    half = str(tmp_path / "half.onnx")
    onnx.save(convert_float16(onnx.load(onnx_path))[0], half)
    trt = make_tensorrt("11.1.0.3", input_shape=(-1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(half, engine, engine_cache.BuildOptions(), progress=False)
    assert trt.calls["parsed"] == half and report["precision"] == "fp16"
    assert report["fp16_conversion"] == {"converted": False, "reason": "the ONNX already holds float16 tensors"}

    # TensorRT 10 keeps its builder flag and precision constraints: no conversion
    trt = make_tensorrt("10.3.0.26", input_shape=(-1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(onnx_path, engine, engine_cache.BuildOptions(), progress=False)
    assert trt.calls["parsed"] == onnx_path and "fp16_conversion" not in report
    assert "/post_processor/Div" in report["fp32_layers_marked"] and trt.calls["flags"] == {
        "FP16", "OBEY_PRECISION_CONSTRAINTS"}

    # a file the onnx package cannot read goes to TensorRT's parser as it is, which reports on it
    junk = _write(tmp_path / "junk.onnx", b"\xff\xfe not protobuf")
    trt = make_tensorrt("11.1.0.3")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = tensorrt_build.build_engine(junk, engine, engine_cache.BuildOptions(), progress=False)
    assert trt.calls["parsed"] == junk and "not readable as ONNX" in report["fp16_conversion"]["reason"]


def test_build_engine_tensorrt11_dla_with_the_conversion(tmp_path, monkeypatch, machine):
    onnx_path = _tao_like_onnx(tmp_path)
    trt = make_tensorrt("11.1.0.3", input_shape=(1, 3, 272, 272), from_onnx=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    # the stand-in's network comes from the parsed file: the converted one holds float16, so DLA may build
    tensorrt_build.build_engine(onnx_path, str(tmp_path / "m.engine"), engine_cache.BuildOptions(dla_core=0, gpu_fallback=True),
                    progress=False)
    assert trt.calls["device"] == ("DLA", 0)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("11.1.0.3", from_onnx=True))
    with pytest.raises(tensorrt_build.EngineBuildError, match="holds no float16"):
        tensorrt_build.build_engine(onnx_path, str(tmp_path / "m.engine"), engine_cache.BuildOptions(dla_core=0, auto_fp16=False),
                        progress=False)


def test_build_engine_tensorrt11_without_the_onnx_package(tmp_path, monkeypatch):
    onnx_path = _tao_like_onnx(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("11.1.0.3", from_onnx=True))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(ImportError, match="needs the onnx package") as info:
        tensorrt_build.build_engine(onnx_path, str(tmp_path / "m.engine"), engine_cache.BuildOptions(), progress=False)
    assert "--no-auto-fp16" in str(info.value)


@pytest.mark.parametrize("version", [v for v in VERSIONS if _major(v) < 11])
def test_build_engine_retries_with_preferred_precision_constraints(tmp_path, monkeypatch, machine, version):
    trt = make_tensorrt(version, obey_fails=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = _write(tmp_path / "m.onnx", b"onnx")
    with redirect_stderr(io.StringIO()):
        report = tensorrt_build.build_engine(onnx, str(tmp_path / "m.engine"), engine_cache.BuildOptions(fp16=True), progress=False)
    assert trt.calls["builds"] == [["FP16", "OBEY_PRECISION_CONSTRAINTS"], ["FP16", "PREFER_PRECISION_CONSTRAINTS"]]
    assert report["fp32_layers_marked"] == ["/post_processor/Div"]
    assert any("preferred" in note for note in report["notes"])


def test_build_engine_without_fp32_layers_is_not_retried(tmp_path, monkeypatch, machine):
    trt = make_tensorrt("10.3.0.26", parse_ok=True, layers=[("/backbone/Conv", ["float32"])])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.Builder.build_serialized_network = lambda self, network, config: trt.calls["builds"].append(1)
    with pytest.raises(tensorrt_build.EngineBuildError, match="failed to build"):
        tensorrt_build.build_engine(_write(tmp_path / "m.onnx", b"onnx"), str(tmp_path / "m.engine"), progress=False)
    assert trt.calls["builds"] == [1]


# ---- TensorRT's loggers and versions (issue 15 items 1 and 3) -----------------------------------------


def test_the_builders_logger_outlives_the_build_and_plugins_are_initialised_once(tmp_path, monkeypatch, machine):
    """The plugin library keeps the logger of its init call for the life of the process."""
    import gc

    trt = make_tensorrt("10.3.0.26")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = _write(tmp_path / "m.onnx", b"onnx")
    for name in ("a.engine", "b.engine"):
        with redirect_stderr(io.StringIO()):
            tensorrt_build.build_engine(onnx, str(tmp_path / name), progress=False)
    gc.collect()
    assert trt.calls["plugins"] == 1
    (logger,) = [ref() for ref in trt.calls["plugin_loggers"]]
    assert logger is not None  # still alive after both builds returned


def _core_runs_tensorrt(monkeypatch, version):
    monkeypatch.setattr(_core.tensorrt, "available", True, raising=False)
    monkeypatch.setattr(_core.tensorrt, "version", lambda: version, raising=False)


def test_build_refuses_a_builder_of_another_tensorrt_than_the_runner(tmp_path, monkeypatch):
    trt = make_tensorrt("10.3.0.26")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    _core_runs_tensorrt(monkeypatch, "10.4.0")
    with pytest.raises(tensorrt_build.EngineBuildError) as error:
        tensorrt_build.build_engine(_write(tmp_path / "m.onnx", b"onnx"), str(tmp_path / "m.engine"), progress=False)
    message = str(error.value)
    assert "10.3.0" in message and "10.4.0" in message and "pip install 'tensorrt==10.4.0.*'" in message
    assert not os.path.exists(str(tmp_path / "m.engine")) and trt.calls.get("network") is None
    _core_runs_tensorrt(monkeypatch, "10.3.0")  # the same TensorRT: builds
    with redirect_stderr(io.StringIO()):
        tensorrt_build.build_engine(_write(tmp_path / "m.onnx", b"onnx"), str(tmp_path / "m.engine"), progress=False)
    assert os.path.exists(str(tmp_path / "m.engine"))


def test_the_cache_is_keyed_on_the_builders_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("10.3.0.26"))
    _core_runs_tensorrt(monkeypatch, "10.4.0")
    assert engine_cache.tensorrt_version() == "10.3.0"
    assert engine_cache.runtime_tensorrt_version() == "10.4.0"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no Python package: engines were built by the runtime's
    assert engine_cache.tensorrt_version() == "10.4.0"
