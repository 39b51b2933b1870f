"""Building TensorRT engines from ONNX models (offline: TensorRT's Python package), into the engine
cache of m2f_edge.backends.engine_cache or wherever `m2f-edge build` is told.

`build_engine()` runs TensorRT's Python builder: FP16, a batch MIN:OPT:MAX optimisation profile,
a workspace limit, DLA with GPU fallback, a timing cache, and TAO's FP32 layers kept in FP32
(precision constraints by layer-name match, as TAO's own engine builder does). `cached_engine()` is
what ``Segmenter("model.onnx", backend="tensorrt")`` uses: the cache's engine for this ONNX file,
TensorRT, GPU, precision and batch range, built when the cache has none or a stale one.

TensorRT versions (Python API names checked against NVIDIA's bindings source at 8.5.2, 8.6.1, 10.3.0 and
11.1): 8.x needs the EXPLICIT_BATCH network flag (gone in 11; explicit batch is the only mode from 10);
IProgressMonitor exists from 10.0; TensorRT 11 builds every network strongly typed, so BuilderFlag.FP16,
OBEY_PRECISION_CONSTRAINTS, ILayer.precision / set_output_type and Builder.platform_has_fast_fp16 are gone
there and an engine's precision is the one the ONNX file carries. So there, an FP16 build of an ONNX without
float16 converts it first (m2f_edge.models.fp16, TAO's FP32 layers kept float32) into a temporary file and
parses that (BuildOptions.auto_fp16, `m2f-edge build --no-auto-fp16` to turn it off).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..backends import engine_cache as cache
from ..backends.engine_cache import BuildOptions

log = logging.getLogger("m2f_edge")


class TensorRTUnavailableError(ImportError):
    """TensorRT's Python package (needed to build engines) is not installed."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the model or build the engine."""


def import_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "building a TensorRT engine needs TensorRT's Python package ('import tensorrt' failed: {}). On Jetson it "
            "comes with JetPack (python3-libnvinfer); on x86 install TensorRT for your CUDA version. The ONNX model "
            "runs without it through ONNX Runtime: Segmenter('model.onnx', backend='onnxruntime')".format(exc)) from exc
    return tensorrt


def check_builder_matches_runtime(builder_version: str) -> None:
    """Refuse to build an engine that the core could not load: TensorRT only deserializes engines of
    its own version, and the Python package that builds them may be another TensorRT (a pip wheel
    beside a tarball or JetPack's libraries)."""
    builder_version = cache.major_minor_patch(builder_version)
    runtime = cache.runtime_tensorrt_version()
    if runtime is None or runtime == builder_version:
        return
    raise EngineBuildError(
        "TensorRT's Python package (the engine builder) is TensorRT {b}, but m2f_edge runs engines with TensorRT {r} "
        "(its libnvinfer): an engine built by {b} cannot be loaded by {r}, so none is built. Install the Python "
        "package of TensorRT {r} (pip install 'tensorrt=={r}.*', or JetPack's python3-libnvinfer), or rebuild "
        "m2f_edge against TensorRT {b} (TENSORRT_ROOT=... pip install --force-reinstall m2f-edge); "
        "m2f_edge.build_info()['tensorrt_library'] says which libnvinfer the core loaded.".format(
            b=builder_version, r=runtime))


def cached_engine(onnx_path: str, options: Optional[BuildOptions] = None, cache_dir: Optional[str] = None,
                  builder: Optional[Callable[[str, str, BuildOptions], Any]] = None, progress: bool = True) -> str:
    """Path of an engine built from onnx_path with options for this machine, building it if the cache
    has none or only a stale one. builder(onnx_path, engine_path, options) defaults to build_engine."""
    options = options or BuildOptions()
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError("model: no such file: '{}'".format(onnx_path))
    if cache.tensorrt_version() is None and builder is None:
        import_tensorrt()  # raises the explanatory TensorRTUnavailableError
    engine_path, metadata = cache.cache_entry(onnx_path, options, cache_dir)
    os.makedirs(os.path.dirname(engine_path), exist_ok=True)
    reason = cache.engine_staleness(engine_path, metadata)
    if reason is None:
        log.info("using cached TensorRT engine %s", engine_path)
        cache.carry_model_metadata(engine_path, metadata, onnx_path)
        return engine_path
    if os.path.exists(engine_path):
        log.info("rebuilding TensorRT engine %s: %s", engine_path, reason)
    else:
        log.info("building a TensorRT engine for %s (first use on this machine; cached in %s)", onnx_path,
                 os.path.dirname(engine_path))
    build = builder or (lambda src, dst, opts: build_engine(src, dst, opts, progress=progress))
    report = build(onnx_path, engine_path, options)
    extra = {"model_metadata": cache.onnx_model_metadata(onnx_path)}  # type: Dict[str, Any]
    if isinstance(report, dict):
        extra["build"] = report  # what was built: with TensorRT >= 11 the precision is the ONNX's
    cache.write_sidecar(engine_path, metadata, extra=extra)
    return engine_path


def build_with_sidecar(onnx_path: str, engine_path: str, options: Optional[BuildOptions] = None,
                       progress: bool = True) -> Dict[str, Any]:
    """build_engine, then the sidecar that lets the cache and the TensorRT backend check the engine."""
    options = options or BuildOptions()
    report = build_engine(onnx_path, engine_path, options, progress=progress)
    metadata = cache.engine_metadata(cache.file_sha256(onnx_path),
                                     cache.tensorrt_version() or cache.major_minor_patch(report["tensorrt_version"]),
                                     cache.target_device(options.dla_core), options)
    cache.write_sidecar(engine_path, metadata,
                        extra={"build": report, "model_metadata": cache.onnx_model_metadata(onnx_path)})
    return report


def build_engine(onnx_path: str, engine_path: str, options: Optional[BuildOptions] = None,
                 progress: bool = True) -> Dict[str, Any]:
    """Build a TensorRT engine from onnx_path into engine_path (written atomically). Returns a dict
    of what was done (fp32 layers marked, profile, precision, seconds, notes). Raises
    TensorRTUnavailableError without TensorRT and EngineBuildError when TensorRT fails, with its messages.

    With TensorRT >= 11 (strongly typed networks only) the engine's precision is the ONNX file's: fp16
    cannot be switched on by a flag, and an FP32 ONNX gives an FP32 engine (a warning says so; convert the
    ONNX to FP16 first, keeping TAO's FP32 layers, for an FP16 engine). Unless options.auto_fp16 is off, that
    conversion is done here, into a temporary file that is parsed and removed: the report's
    "fp16_conversion" says what was converted and kept."""
    options = options or BuildOptions()
    trt = import_tensorrt()
    workdir = None  # type: Optional[str]
    try:
        if strongly_typed_only(trt) and options.fp16 and options.auto_fp16:
            workdir = tempfile.mkdtemp(prefix="m2f-fp16-")
        return _build_engine(trt, onnx_path, engine_path, options, progress, workdir)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _build_engine(trt, onnx_path: str, engine_path: str, options: BuildOptions, progress: bool,
                  workdir: Optional[str]) -> Dict[str, Any]:
    check_builder_matches_runtime(trt.__version__)
    strongly_typed = strongly_typed_only(trt)
    notes = []  # type: List[str]
    builder = trt.Builder(process_logger(trt))
    network, conversion = _parse_network(trt, builder, onnx_path, options, workdir, notes)
    config = builder.create_builder_config()
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    has_float16 = network_has_float16(network, trt) if strongly_typed else None
    precision, marked = _configure_precision(trt, builder, network, config, options, has_float16, notes,
                                             os.path.basename(onnx_path))
    profile_shapes = _add_batch_profile(builder, network, config, options)
    if options.dla_core is not None:
        _configure_dla(trt, builder, config, options, strongly_typed and not has_float16)
    if options.timing_cache:
        _load_timing_cache(config, options.timing_cache)

    start = time.monotonic()
    serialized = _serialize(trt, builder, network, config, progress)
    if serialized is None and marked:
        # TAO's FP32 layers obeyed strictly can leave a layer without any implementation ("could not find
        # any implementation"); preferred, TensorRT keeps them FP32 where it can and builds.
        config.clear_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        notes.append("the build failed with TAO's FP32 layers as hard constraints; it was retried with them "
                     "preferred (TensorRT may run some of them in FP16)")
        log.warning("%s", notes[-1])
        serialized = _serialize(trt, builder, network, config, progress)
    seconds = time.monotonic() - start
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build an engine from '{}' (see its messages above); usual causes: "
                               "too small a --workspace, an unsupported layer, or DLA without --gpu-fallback".format(
                                   onnx_path))
    cache.atomic_write(os.fspath(engine_path), bytes(serialized))
    if options.timing_cache:
        timing = config.get_timing_cache()
        if timing is not None:
            cache.atomic_write(options.timing_cache, bytes(timing.serialize()))
    log.info("built %s in %.0f s", engine_path, seconds)
    report = {"fp32_layers_marked": marked, "profile": {k: [list(s) for s in v] for k, v in profile_shapes.items()},
              "precision": precision, "strongly_typed": strongly_typed, "notes": notes,
              "seconds": round(seconds, 1), "tensorrt_version": str(trt.__version__)}
    if conversion is not None:
        report["fp16_conversion"] = conversion
    return report


def _parse_network(trt, builder, onnx_path: str, options: BuildOptions, workdir: Optional[str],
                   notes: List[str]) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """The network parsed from the ONNX (its FP16 conversion when `workdir` is given) and what the
    conversion did (None without one)."""
    flags = 0
    if cache.major_version(trt.__version__) < 10:  # the ONNX parser needs an explicit-batch network; from 10 it is the only kind
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    conversion = None  # type: Optional[Dict[str, Any]]
    parse_path = os.fspath(onnx_path)
    if workdir is not None:
        parse_path, conversion = fp16_onnx_for_tensorrt(onnx_path, options.fp32_layers, workdir)
        if conversion["converted"]:
            notes.append("TensorRT {} is strongly typed: '{}' was converted to FP16 for this build ({}; {})".format(
                trt.__version__, os.path.basename(onnx_path), conversion["summary"],
                "TAO's FP32 layers kept float32" if options.fp32_layers else "no layers kept by name"))
    parser = trt.OnnxParser(network, process_logger(trt))
    if hasattr(parser, "parse_from_file"):
        parsed = parser.parse_from_file(parse_path)  # resolves external weight files too
    else:
        with open(parse_path, "rb") as f:
            parsed = parser.parse(f.read())
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        hint = ""
        if any("MultiscaleDeformableAttn" in e for e in errors):
            hint = ("\nThe model needs TensorRT's MultiscaleDeformableAttnPlugin_TRT (libnvinfer_plugin, TensorRT >= 8.5). "
                    "Check that libnvinfer_plugin is installed and matches this TensorRT.")
        if conversion and conversion.get("converted"):
            hint += ("\nIt parsed the FP16 conversion of the ONNX; if the original parses with --no-auto-fp16, the "
                     "conversion is at fault: please report it.")
        raise EngineBuildError("TensorRT could not parse '{}':\n  {}{}".format(onnx_path, "\n  ".join(errors), hint))
    return network, conversion


def _configure_precision(trt, builder, network, config, options: BuildOptions, has_float16: Optional[bool],
                         notes: List[str], model_name: str) -> Tuple[str, List[str]]:
    """The engine's precision and the layers kept FP32 by constraint. has_float16: None for a weakly
    typed TensorRT (< 11), else whether the strongly typed network holds float16."""
    if has_float16 is not None:
        precision = "fp16" if has_float16 else "fp32"
        if options.fp16 and not has_float16:
            notes.append("TensorRT {} builds strongly typed networks only, and '{}' holds no float16 tensors: the "
                         "engine is FP32. For an FP16 engine convert the ONNX to FP16 first (m2f-edge convert --fp16, "
                         "or leave the automatic conversion on: no --no-auto-fp16), or pass --fp32 to say so.".format(
                             trt.__version__, model_name))
        elif options.fp16:
            notes.append("TensorRT {} is strongly typed: layer precisions are the ONNX file's (TAO's FP32 layers are "
                         "FP32 where the ONNX keeps them so)".format(trt.__version__))
        for note in notes:
            log.warning("%s", note)
        return precision, []
    if not options.fp16:
        return "fp32", []
    if not getattr(builder, "platform_has_fast_fp16", True):
        log.warning("this GPU has no fast FP16; building FP16 anyway as asked")
    config.set_flag(trt.BuilderFlag.FP16)
    marked = mark_fp32_layers(network, trt, options.fp32_layers)
    if marked:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    log.info("kept %d layers in FP32 (TAO's precision constraints)", len(marked))
    return "fp16", marked


def _add_batch_profile(builder, network, config, options: BuildOptions) -> Dict[str, Tuple[Tuple[int, ...], ...]]:
    """The optimisation profile of a dynamic batch ({input name: (min, opt, max) shapes}, added to config)."""
    profile_shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise EngineBuildError("input '{}' has shape {} with dynamic dimensions besides the batch; export the "
                                   "model with a fixed height and width".format(tensor.name, shape))
        if shape and shape[0] < 0:
            lo, opt, hi = options.batch or (1, 1, 1)
            rest = shape[1:]
            profile_shapes[tensor.name] = ((lo,) + rest, (opt,) + rest, (hi,) + rest)
        elif options.batch is not None and options.batch != (shape[0],) * 3:
            raise EngineBuildError("input '{}' has a static batch of {}; --batch {} needs a model exported with a "
                                   "dynamic batch dimension".format(tensor.name, shape[0],
                                                                    ":".join(map(str, options.batch))))
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    return profile_shapes


def _configure_dla(trt, builder, config, options: BuildOptions, fp32_only_network: bool) -> None:
    if builder.num_DLA_cores == 0:
        raise EngineBuildError("--dla {} asked, but this device has no DLA cores (Jetson Xavier and Orin have "
                               "them; Thor and discrete GPUs do not)".format(options.dla_core))
    if options.dla_core >= builder.num_DLA_cores:
        raise EngineBuildError("--dla {}: this device has {} DLA cores".format(options.dla_core, builder.num_DLA_cores))
    if not options.fp16:
        raise EngineBuildError("DLA runs FP16 or INT8 only: add --fp16")
    if fp32_only_network:
        raise EngineBuildError("DLA runs FP16 or INT8 only, and TensorRT {} takes precisions from the ONNX, which "
                               "holds no float16 tensors: convert the ONNX to FP16 first".format(trt.__version__))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = options.dla_core
    if options.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _load_timing_cache(config, path: str) -> None:
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    timing_cache = config.create_timing_cache(data)
    if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        # unreadable, or from another TensorRT version or GPU: start a fresh one (it is rewritten after the build)
        log.warning("timing cache %s does not match this TensorRT or GPU; starting a new one", path)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)


def _serialize(trt, builder, network, config, progress: bool):
    """builder.build_serialized_network with a progress display; None when TensorRT fails."""
    if progress and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor_class(trt)()
        serialized = builder.build_serialized_network(network, config)
        sys.stderr.write("\n")
        return serialized
    if progress:
        with _Spinner():
            return builder.build_serialized_network(network, config)
    return builder.build_serialized_network(network, config)


def strongly_typed_only(trt) -> bool:
    """True for TensorRT >= 11, where every network is strongly typed: the builder has no FP16 flag and
    layers no precision to constrain; tensor types come from the ONNX file."""
    return not hasattr(trt.BuilderFlag, "FP16")


def network_has_float16(network, trt) -> bool:
    """Whether any network input or layer output is float16 (as parsed from the ONNX)."""
    for i in range(network.num_inputs):
        if network.get_input(i).dtype == trt.float16:
            return True
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.get_output(j).dtype == trt.float16 for j in range(layer.num_outputs)):
            return True
    return False


def mark_fp32_layers(network, trt, prefixes: Iterable[str]) -> List[str]:
    """Set the precision of layers whose names start with one of `prefixes` to FP32; returns their names.
    As TAO deploy's Mask2Former builder: constant layers, layers fed by a shape tensor and layers with an
    INT32 (or any non-float) output are left alone, and only the layer's precision is set, never its
    output types (a /post_processor/Div on shapes forced to FP32 leaves TensorRT no implementation).
    Weakly typed networks only (TensorRT < 11; ILayer.precision is deprecated from 10.12, gone in 11)."""
    prefixes = tuple(prefixes)
    floating = (trt.float32, trt.float16)
    marked = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not any(layer.name.startswith(p) for p in prefixes) or layer.type == trt.LayerType.CONSTANT:
            continue
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        if any(t is not None and t.is_shape_tensor for t in inputs):
            continue
        outputs = [layer.get_output(j).dtype for j in range(layer.num_outputs)]
        if not outputs or any(dtype not in floating for dtype in outputs):
            continue
        layer.precision = trt.float32
        marked.append(layer.name)
    return marked


# TensorRT keeps the logger it is given: the plugin library stores the one of every
# init_libnvinfer_plugins call in a global and logs through it for the rest of the process (a C++
# Runner deserializing a plugin engine after a Python build would log through a freed logger). So
# there is one logger per TensorRT module, kept for the life of the process, and the plugins are
# initialised once.
_LOGGERS = {}  # type: Dict[int, Tuple[Any, Any]]
_LOGGERS_LOCK = threading.Lock()


def process_logger(trt):
    """The trt.Logger every builder and the plugin library get, made (and the plugins initialised)
    on the first call for this `tensorrt` module and kept for good."""
    with _LOGGERS_LOCK:
        held = _LOGGERS.get(id(trt))
        if held is None or held[0] is not trt:
            logger = trt.Logger(trt.Logger.WARNING)
            # The deployable ONNX holds MultiscaleDeformableAttnPlugin_TRT from the stock plugin library.
            trt.init_libnvinfer_plugins(logger, "")
            held = _LOGGERS[id(trt)] = (trt, logger)
        return held[1]


def fp16_onnx_for_tensorrt(onnx_path: str, fp32_layers: Sequence[str], directory: str
                           ) -> Tuple[str, Dict[str, Any]]:
    """For a strongly typed TensorRT: the ONNX to parse for an FP16 engine and a record of what was done.
    An ONNX already holding float16 is parsed as is; otherwise its FP16 conversion (TAO's FP32 layers kept
    float32, see m2f_edge.models.fp16) is written into `directory`. A file the onnx package cannot read is
    passed on as is (TensorRT's parser reports what is wrong with it)."""
    try:
        import onnx

        from .fp16 import convert_float16, model_has_float16, save_model, summary
    except ImportError as exc:
        raise ImportError(
            "TensorRT >= 11 takes an engine's precision from the ONNX file, and converting '{}' to FP16 needs the "
            "onnx package ({}): pip install onnx, or build with --fp32 / --no-auto-fp16 for an FP32 engine".format(
                onnx_path, exc)) from exc
    try:
        model = onnx.load(os.fspath(onnx_path))
    except Exception as exc:  # protobuf's DecodeError and friends
        return os.fspath(onnx_path), {"converted": False, "reason": "not readable as ONNX ({})".format(exc)}
    if model_has_float16(model):
        return os.fspath(onnx_path), {"converted": False, "reason": "the ONNX already holds float16 tensors"}
    converted, report = convert_float16(model, keep_prefixes=fp32_layers)
    del model
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    path = os.path.join(directory, stem + ".fp16.onnx")
    save_model(converted, path)
    record = {"converted": True, "summary": summary(report)}  # type: Dict[str, Any]
    record.update({k: v for k, v in report.items()})
    return path, record


class _Spinner:
    """Elapsed-time display for TensorRT versions without IProgressMonitor."""

    def __init__(self, stream=None, label: str = "building TensorRT engine"):
        self.stream = stream or sys.stderr
        self.label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self):
        frames = "|/-\\"
        i = 0
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        while not self._stop.wait(0.25 if interactive else 30.0):
            elapsed = time.monotonic() - self._start
            if interactive:
                self.stream.write("\r{} {} {:.0f} s".format(frames[i % 4], self.label, elapsed))
            else:
                self.stream.write("{}: {:.0f} s\n".format(self.label, elapsed))
            self.stream.flush()
            i += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.stream.write("\r{}: done in {:.0f} s\n".format(self.label, time.monotonic() - self._start))
        self.stream.flush()


def _progress_monitor_class(trt):
    """A TensorRT IProgressMonitor that prints phase progress (the interface exists from TensorRT 10.0).

    TensorRT's Python binding is a pybind11 trampoline: a subclass must call the base __init__, and an
    exception escaping a callback is caught by the binding and, in step_complete, cancels the build; so
    the callbacks never raise."""

    class ProgressMonitor(trt.IProgressMonitor):
        def __init__(self, stream=None):
            trt.IProgressMonitor.__init__(self)
            self.stream = stream or sys.stderr
            self.lock = threading.Lock()
            self.phases = {}  # name -> [step, total, depth]
            self.start = time.monotonic()
            self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self.lock:
                    depth = self.phases[parent_phase][2] + 1 if parent_phase in self.phases else 0
                    self.phases[phase_name] = [0, num_steps, depth]
                    if depth == 0 or not self.interactive:
                        self._show(phase_name)
            except Exception:  # a display problem must not cancel the build
                pass

        def step_complete(self, phase_name, step):
            try:
                with self.lock:
                    if phase_name in self.phases:
                        self.phases[phase_name][0] = step + 1
                        if self.interactive:
                            self._show(phase_name)
            except Exception:
                pass
            return True  # never cancel

        def phase_finish(self, phase_name):
            with self.lock:
                self.phases.pop(phase_name, None)

        def _show(self, phase_name):
            step, total, depth = self.phases[phase_name]
            text = "[{:5.0f} s] {}{} {}/{}".format(time.monotonic() - self.start, "  " * depth, phase_name, step, total)
            self.stream.write(("\r" + text[:100].ljust(100)) if self.interactive else text + "\n")
            self.stream.flush()

    return ProgressMonitor
