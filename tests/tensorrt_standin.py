"""A stand-in for TensorRT's Python package (`import tensorrt`), one per major version, for machines
without TensorRT.

It offers exactly the names m2f_edge's engine builder may touch, as NVIDIA's pybind11 bindings define
them (python/src/infer/pyCore.cpp, pyGraph.cpp, pyFoundationalTypes.cpp, pyPlugin.cpp and
python/src/parsers/pyOnnx.cpp of github.com/NVIDIA/TensorRT at the tags 8.5.2, v8.6.1, v10.3.0 and v11.1),
with the same argument names, and leaves out what a version lacks, so that code using a removed or
misspelt name fails here as it would there:

- NetworkDefinitionCreationFlag.EXPLICIT_BATCH: 8.x and 10.x (ignored in 10); gone in 11. TensorRT 8's
  ONNX parser refuses a network created without it.
- BuilderFlag.FP16 and OBEY_PRECISION_CONSTRAINTS, Builder.platform_has_fast_fp16, ILayer.precision and
  ILayer.set_output_type: up to 10.x; gone in 11 (every network strongly typed; ITensor.dtype read-only).
- IProgressMonitor and IBuilderConfig.progress_monitor: from 10.0. A Python subclass must call the
  base __init__ (pybind11 raises TypeError otherwise); an exception in step_complete, or a False
  return, cancels the build (build_serialized_network returns None).
- IBuilderConfig.create_timing_cache(serialized_timing_cache), set_timing_cache(cache, ignore_mismatch)
  -> bool, get_timing_cache(); ITimingCache.serialize(); IHostMemory supports the buffer protocol.
- OnnxParser(network, logger).parse_from_file(model), parse(model, path=None), num_errors,
  get_error(index) -> ParserError with __str__.
- ILayer.type (LayerType), num_inputs, get_input(index); ITensor.is_shape_tensor;
  IBuilderConfig.clear_flag(flag); BuilderFlag.PREFER_PRECISION_CONSTRAINTS (up to 10.x).

With from_onnx=True the parsed network's inputs and layers come from the ONNX file parsed (graph inputs,
and one layer per node named as the node, with the output types ONNX shape inference gives), so a test
sees the precisions of the file build_engine really handed to the parser.

Objects use __slots__, so setting an attribute the real binding does not have raises AttributeError.
It checks our side of the calls, not TensorRT: only a TensorRT machine can do that.
"""

import enum
import types
import weakref

VERSIONS = ("8.5.2.2", "8.6.1.6", "10.3.0.26", "11.1.0.3")


class _Dims(tuple):
    """trt.Dims: a sequence (len, indexing, iteration)."""


def make_tensorrt(version="10.3.0.26", input_shape=(-1, 3, 64, 96), input_dtype="float32", parse_ok=True,
                  dla_cores=2, layers=None, timing_cache_matches=True, from_onnx=False, obey_fails=False):
    """A module standing in for `tensorrt` at `version`. layers: [(name, [output dtype, ...])] or
    [(name, [output dtype, ...], {"type": LayerType name, "shape_input": bool})] of the parsed network
    (default: one TAO FP32 layer and one backbone layer). obey_fails: a build with
    OBEY_PRECISION_CONSTRAINTS finds no implementation (returns None, as TensorRT does). calls records
    what was asked; calls["plugin_loggers"] holds weak references to the loggers the plugin library got
    (TensorRT's keeps the pointer for good, so the logger must outlive the process's use of TensorRT)."""
    major = int(version.split(".")[0])
    weakly_typed = major < 11
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls = {"flags": set(), "profiles": [], "plugins": 0, "monitor_events": [], "set_timing_cache": [],
             "plugin_loggers": [], "builds": []}
    trt.calls = calls

    # DataType values are exported at module level as trt.float32, trt.float16, ...
    class DataType(enum.Enum):
        FLOAT = "float32"
        HALF = "float16"
        INT32 = "int32"
        BOOL = "bool"

    trt.DataType = DataType
    trt.float32, trt.float16, trt.int32, trt.bool = DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.BOOL
    dtypes = {"float32": DataType.FLOAT, "float16": DataType.HALF, "int32": DataType.INT32, "bool": DataType.BOOL}

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class Logger(object):
        __slots__ = ("min_severity", "__weakref__")

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity

    Logger.Severity = Severity  # nested, with its values exported onto Logger (trt.Logger.WARNING)
    for member in Severity:
        setattr(Logger, member.name, member)
    trt.Logger = Logger

    def init_libnvinfer_plugins(logger, namespace):
        assert isinstance(logger, Logger) and isinstance(namespace, str)
        calls["plugins"] += 1
        calls["plugin_loggers"].append(weakref.ref(logger))
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    if major < 10:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                         [("EXPLICIT_BATCH", 0), ("EXPLICIT_PRECISION", 1)])
    elif major == 10:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                         [("EXPLICIT_BATCH", 0), ("STRONGLY_TYPED", 1)])
    else:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                         [("STRONGLY_TYPED", 0), ("PREFER_AOT_PYTHON_PLUGINS", 1),
                                                          ("PREFER_JIT_PYTHON_PLUGINS", 2)])
    flag_names = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS"]
    if weakly_typed:
        flag_names += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = enum.Enum("BuilderFlag", flag_names)
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                      "DLA_GLOBAL_DRAM"])
    trt.DeviceType = enum.Enum("DeviceType", ["GPU", "DLA"])

    trt.LayerType = enum.Enum("LayerType", ["CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "REDUCE", "SHUFFLE",
                                            "CONSTANT", "SHAPE", "MATRIX_MULTIPLY", "SOFTMAX", "CAST", "PLUGIN_V2"])

    class Tensor(object):
        __slots__ = ("name", "shape", "_dtype", "is_shape_tensor")

        def __init__(self, name, shape, dtype, is_shape_tensor=False):
            self.name, self.shape, self._dtype = name, _Dims(shape), dtypes[dtype]
            self.is_shape_tensor = is_shape_tensor

        if weakly_typed:
            dtype = property(lambda self: self._dtype, lambda self, value: setattr(self, "_dtype", value))
        else:
            dtype = property(lambda self: self._dtype)  # read-only in a strongly typed network

    class Layer(object):
        __slots__ = ("name", "type", "_inputs", "_outputs", "_precision", "output_types")

        def __init__(self, name, output_dtypes, kind=None):
            kind = kind or {}
            self.name = name
            self.type = trt.LayerType[kind.get("type", "ELEMENTWISE")]
            self._inputs = [] if self.type == trt.LayerType.CONSTANT else [
                Tensor(name + ":in0", (1,), "int32" if kind.get("shape_input") else "float32",
                       is_shape_tensor=bool(kind.get("shape_input")))]
            self._outputs = [Tensor(name + ":out{}".format(i), (1,), d) for i, d in enumerate(output_dtypes)]
            self._precision = DataType.FLOAT
            self.output_types = {}

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_input(self, index):
            return self._inputs[index]

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, index):
            return self._outputs[index]

        if weakly_typed:
            def _set_precision(self, value):
                calls.setdefault("precision", {})[self.name] = value
                self._precision = value

            precision = property(lambda self: self._precision, _set_precision)

            def set_output_type(self, index, dtype):
                self.output_types[index] = dtype

    layer_specs = layers if layers is not None else [("/post_processor/Div", ["float32"]),
                                                    ("/backbone/Conv", ["float32"])]

    class Network(object):
        __slots__ = ("flags", "inputs", "layers")

        def __init__(self, flags):
            self.flags = flags
            self.inputs = [Tensor("inputs", input_shape, input_dtype)]
            self.layers = [Layer(*spec) for spec in layer_specs]

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, index):
            return self.layers[index]

    class ParserError(object):
        __slots__ = ("text",)

        def __init__(self, text):
            self.text = text

        def __str__(self):
            return self.text

    class OnnxParser(object):
        __slots__ = ("network", "errors")

        def __init__(self, network, logger):
            assert isinstance(network, Network) and isinstance(logger, Logger)
            self.network, self.errors = network, []

        def _parse(self):
            if major < 10 and not self.network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                self.errors.append(ParserError("Assertion failed: network must have an explicit batch dimension"))
                return False
            if not parse_ok:
                self.errors.append(ParserError("No importer registered for op: MultiscaleDeformableAttnPlugin_TRT"))
            return parse_ok

        def _read_onnx(self, path):
            import onnx

            model = onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=False)
            names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                     onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int32", onnx.TensorProto.BOOL: "bool"}
            types = {i.name: i.type.tensor_type.elem_type
                     for i in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}
            self.network.inputs = [
                Tensor(i.name, tuple(d.dim_value if d.HasField("dim_value") else -1
                                     for d in i.type.tensor_type.shape.dim), names[i.type.tensor_type.elem_type])
                for i in model.graph.input]
            self.network.layers = [Layer(node.name or node.op_type,
                                         [names[types[o]] for o in node.output if types.get(o) in names])
                                   for node in model.graph.node]

        def parse_from_file(self, model):
            calls["parsed"] = model
            if from_onnx:
                self._read_onnx(model)
            return self._parse()

        def parse(self, model, path=None):
            calls["parsed_bytes"] = len(model)
            return self._parse()

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    class Profile(object):
        __slots__ = ()

        def set_shape(self, input, min, opt, max):  # noqa: A002 (TensorRT's argument names)
            calls["profiles"].append((input, tuple(min), tuple(opt), tuple(max)))

    class TimingCache(object):
        __slots__ = ("data",)

        def __init__(self, data):
            self.data = data

        def serialize(self):
            return memoryview(b"timing:" + self.data)

    config_slots = ["default_device_type", "DLA_core", "cache", "_monitor", "flags"]

    class Config(object):
        __slots__ = tuple(config_slots)

        def __init__(self):
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.cache = None
            self._monitor = None
            self.flags = set()

        def set_memory_pool_limit(self, pool, pool_size):
            calls["workspace"] = (pool, pool_size)

        def set_flag(self, flag):
            assert isinstance(flag, trt.BuilderFlag)
            calls["flags"].add(flag.name)
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            assert isinstance(flag, trt.BuilderFlag)
            calls["flags"].discard(flag.name)
            self.flags.discard(flag.name)

        def add_optimization_profile(self, profile):
            calls["profile_added"] = True
            return 0

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache(bytes(memoryview(serialized_timing_cache)))

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = timing_cache_matches or cache.data == b""
            calls["set_timing_cache"].append((cache.data, ignore_mismatch, ok))
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self):
            return self.cache

        if major >= 10:
            def _set_monitor(self, monitor):
                assert isinstance(monitor, trt.IProgressMonitor)
                self._monitor = monitor

            progress_monitor = property(lambda self: self._monitor, _set_monitor)

    class Builder(object):
        __slots__ = ("logger",)

        def __init__(self, logger):
            assert isinstance(logger, Logger)
            self.logger = logger

        def create_network(self, flags=0):
            calls["network_flags"] = int(flags)
            calls["network"] = Network(int(flags))
            return calls["network"]

        if weakly_typed:
            platform_has_fast_fp16 = property(lambda self: True)

        num_DLA_cores = property(lambda self: dla_cores)

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["device"] = (config.default_device_type.name, config.DLA_core)
            calls["builds"].append(sorted(config.flags))
            if obey_fails and "OBEY_PRECISION_CONSTRAINTS" in config.flags:
                return None  # TensorRT: "could not find any implementation for node /post_processor/Div"
            monitor = config._monitor
            calls["monitor"] = monitor
            if monitor is not None:
                if not getattr(monitor, "_base_initialised", False):
                    raise TypeError("IProgressMonitor.__init__() must be called when overriding __init__")
                events = calls["monitor_events"]
                try:
                    monitor.phase_start("Building engine", None, 2)
                    monitor.phase_start("Tactic selection", "Building engine", 3)
                    for step in range(3):
                        if not monitor.step_complete("Tactic selection", step):
                            return None  # cancelled
                    monitor.phase_finish("Tactic selection")
                    for step in range(2):
                        if not monitor.step_complete("Building engine", step):
                            return None
                    monitor.phase_finish("Building engine")
                except Exception as exc:  # the binding catches it; in step_complete it cancels the build
                    events.append(("exception", repr(exc)))
                    return None
                events.append(("finished", None))
            return memoryview(b"serialized-engine")

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    if major >= 10:
        class IProgressMonitor(object):
            def __init__(self):
                self._base_initialised = True

            def phase_start(self, phase_name, parent_phase, num_steps):
                raise RuntimeError("pure virtual")

            def step_complete(self, phase_name, step):
                raise RuntimeError("pure virtual")

            def phase_finish(self, phase_name):
                raise RuntimeError("pure virtual")

        trt.IProgressMonitor = IProgressMonitor
    return trt


# ---- engines for the C++ TensorRT stand-in -------------------------------------------------------
# The CUDA emulation build (tools/run_emulated_gpu_tests.sh) compiles csrc/tensorrt/ against
# csrc/emulation/tensorrt/, whose "engines" are this text (standin.cpp there documents it).


def _dims(shape):
    return ",".join(str(int(d)) for d in shape)


def standin_engine(inputs, outputs):
    """Engine bytes for the C++ stand-in. inputs: [(name, dtype, shape, profile or None)], profile a
    (min, opt, max) of shapes. outputs: [(name, dtype, shape, (scale, offset, step, cycle))]: element i
    of batch item b is scale * mean(input item b) + offset + step * (i % cycle) in the output's dtype
    (integers rounded down), -1 in an output shape taking the input's batch."""
    lines = ["m2f-tensorrt-standin 1"]
    for name, dtype, shape, profile in inputs:
        line = "input {} {} {}".format(name, dtype, _dims(shape))
        if profile is not None:
            line += " profile " + " ".join(_dims(s) for s in profile)
        lines.append(line)
    for name, dtype, shape, (scale, offset, step, cycle) in outputs:
        lines.append("output {} {} {} {!r} {!r} {!r} {}".format(name, dtype, _dims(shape), float(scale),
                                                               float(offset), float(step), int(cycle)))
    return ("\n".join(lines) + "\n").encode("ascii")


def standin_outputs(tensor, outputs):
    """What the stand-in computes for `tensor` (B, ...): {name: numpy array}, the tests' reference."""
    import numpy as np

    tensor = np.asarray(tensor, dtype=np.float64)
    batch = tensor.shape[0]
    means = tensor.reshape(batch, -1).mean(axis=1)
    result = {}
    for name, dtype, shape, (scale, offset, step, cycle) in outputs:
        item_shape = tuple(batch if d < 0 else d for d in shape)[1:]
        index = np.arange(int(np.prod(item_shape))) % cycle
        values = scale * means[:, None] + offset + step * index[None, :]
        if dtype in ("int32", "int64"):
            values = np.floor(values)
        elif dtype in ("bool", "uint8"):
            values = values > 0
        result[name] = values.reshape((batch,) + item_shape).astype(dtype)
    return result
