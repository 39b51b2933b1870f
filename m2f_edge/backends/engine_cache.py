"""The TensorRT engine cache and its sidecars: what the TensorRT backend checks before loading an
engine, and where `TensorRTBackend.from_onnx` finds one built for this machine.

An engine is tied to the TensorRT version and the GPU model it was built with. Each engine has a JSON
sidecar (``<engine>.json``) holding what it was built for (the ONNX file's sha256, TensorRT version, GPU
or DLA core, precision, batch range); the cache key is the hash of exactly that, and an engine whose
sidecar is missing or disagrees with this machine is rebuilt (m2f_edge.models.tensorrt_build), never
loaded. `BuildOptions` says what an engine is built with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from .. import _core
from .._outputs import create_hidden_beside
from ..tao import TAO_FP32_LAYERS

log = logging.getLogger("m2f_edge")

SIDECAR_FORMAT = 1

SIDECAR_SUFFIX = ".json"

CACHE_ENV = "M2F_ENGINE_CACHE"


class BuildOptions:
    """What an engine is built with. batch: (min, opt, max) for a dynamic batch dimension, or None
    to use the model's static batch. workspace_mib: builder workspace limit (None = TensorRT's
    default). dla_core: build for that DLA core (Jetson Xavier/Orin) with GPU fallback when asked.
    fp32_layers: name prefixes of layers kept in FP32 when fp16 is on. auto_fp16: with TensorRT >= 11
    (strongly typed only) and fp16, convert an ONNX holding no float16 to FP16 before parsing it."""

    def __init__(self, fp16: bool = True, batch: Optional[Tuple[int, int, int]] = None,
                 workspace_mib: Optional[int] = None, dla_core: Optional[int] = None, gpu_fallback: bool = False,
                 timing_cache: Optional[str] = None, fp32_layers: Sequence[str] = TAO_FP32_LAYERS,
                 auto_fp16: bool = True):
        if batch is not None:
            batch = check_batch(batch)
        if workspace_mib is not None and int(workspace_mib) <= 0:
            raise ValueError("workspace: expected a positive number of MiB, got {}".format(workspace_mib))
        if dla_core is not None and int(dla_core) < 0:
            raise ValueError("dla: expected a DLA core index >= 0, got {}".format(dla_core))
        if gpu_fallback and dla_core is None:
            raise ValueError("gpu_fallback only applies to DLA builds: give a DLA core (--dla N)")
        self.fp16 = bool(fp16)
        self.batch = batch
        self.workspace_mib = None if workspace_mib is None else int(workspace_mib)
        self.dla_core = None if dla_core is None else int(dla_core)
        self.gpu_fallback = bool(gpu_fallback)
        self.timing_cache = timing_cache
        self.fp32_layers = tuple(fp32_layers)
        self.auto_fp16 = bool(auto_fp16)

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def __repr__(self) -> str:
        return "BuildOptions(precision={}, batch={}, workspace_mib={}, dla_core={}, gpu_fallback={})".format(
            self.precision, self.batch, self.workspace_mib, self.dla_core, self.gpu_fallback)


def check_batch(batch: Sequence[int]) -> Tuple[int, int, int]:
    values = tuple(int(b) for b in batch)
    if len(values) != 3 or not (1 <= values[0] <= values[1] <= values[2]):
        raise ValueError("batch: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {}".format(
            ":".join(str(b) for b in batch)))
    return values  # type: ignore[return-value]


def parse_batch(text: str) -> Tuple[int, int, int]:
    """'1:4:8' -> (1, 4, 8); '4' -> (4, 4, 4)."""
    parts = str(text).split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ValueError("batch: expected MIN:OPT:MAX integers such as 1:4:8, got '{}'".format(text)) from None
    if len(numbers) == 1:
        numbers = numbers * 3
    return check_batch(numbers)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_tensorrt_version() -> Optional[str]:
    """The TensorRT the core runs engines with (its libnvinfer); None without TensorRT in the core."""
    if not getattr(_core.tensorrt, "available", False):
        return None
    return major_minor_patch(_core.tensorrt.version())


def builder_tensorrt_version() -> Optional[str]:
    """The TensorRT that builds engines here: the Python package's; None when it is not installed."""
    try:
        import tensorrt
    except ImportError:
        return None
    return major_minor_patch(tensorrt.__version__)


def tensorrt_version() -> Optional[str]:
    """The TensorRT version of the engines built here, which the cache key and sidecar hold: the
    builder's (the Python package), else the core's runtime (every engine built here was built by a
    builder of the runtime's version: build_engine refuses any other); None when neither is present."""
    return builder_tensorrt_version() or runtime_tensorrt_version()


def major_minor_patch(version: Any) -> str:
    # The Python package says e.g. 10.3.0.26, the C++ library 10.3.0: engines depend on the first three.
    return ".".join(str(version).split(".")[:3])


def target_device(dla_core: Optional[int] = None) -> Dict[str, Any]:
    """The device an engine is built for: GPU name and compute capability (from the core), DLA core."""
    info = _core.build_info()
    cc = info.get("gpu_compute_capability")
    capability = "{}.{}".format(cc[0], cc[1]) if cc else None
    name = info.get("gpu_name")
    return {"gpu_name": name, "compute_capability": capability, "dla_core": dla_core}


def engine_metadata(onnx_sha256: str, trt_version: Optional[str], device: Dict[str, Any],
                    options: BuildOptions) -> Dict[str, Any]:
    """What makes two engines interchangeable; the cache key is the hash of exactly this."""
    metadata = {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": trt_version,
        "device": {"gpu_name": device.get("gpu_name"), "compute_capability": device.get("compute_capability"),
                   "dla_core": device.get("dla_core")},
        "precision": options.precision,
        "batch": list(options.batch) if options.batch else None,
        "fp32_layers": list(options.fp32_layers) if options.fp16 else [],
        "gpu_fallback": options.gpu_fallback if options.dla_core is not None else False,
    }
    if options.fp16 and major_version(trt_version) >= 11:
        # Strongly typed TensorRT: the engine is what the (converted) ONNX says, so the conversion choice and
        # the converter's recipe decide the engine. Left out below 11, where they change nothing (and keys stay).
        metadata["onnx_fp16_conversion"] = {"auto": options.auto_fp16,
                                            "recipe": _fp16_recipe() if options.auto_fp16 else None}
    return metadata


def _fp16_recipe() -> Optional[int]:
    try:
        from ..models.fp16 import RECIPE_VERSION
    except ImportError:  # no onnx package: the build says so; the key still differs from a converted build
        return None
    return RECIPE_VERSION


def cache_key(metadata: Dict[str, Any]) -> str:
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sidecar_path(engine_path: str) -> str:
    return os.fspath(engine_path) + SIDECAR_SUFFIX


def write_sidecar(engine_path: str, metadata: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> str:
    record = {"format": SIDECAR_FORMAT, "key": cache_key(metadata), "metadata": metadata,
              "engine_sha256": file_sha256(engine_path), "engine_bytes": os.path.getsize(engine_path)}
    record["m2f_edge_version"] = _core.build_info()["version"]
    record["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if extra:
        record.update(extra)
    path = sidecar_path(engine_path)
    atomic_write(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_sidecar(engine_path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(sidecar_path(engine_path), "r", encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def onnx_model_metadata(onnx_path: str) -> Dict[str, str]:
    """The ONNX file's metadata_props ({key: value}), read without its weights. A TensorRT engine does
    not keep them, so the sidecar carries them (under "model_metadata"): a raw-head model exported from
    Hugging Face says there which class index is "no object". {} when the onnx package is missing or
    the file cannot be read as ONNX (the engine is still built; TensorRT reports real parse errors)."""
    try:
        import onnx
    except ImportError:
        log.info("the onnx package is not installed: %s's metadata is not carried into the engine sidecar", onnx_path)
        return {}
    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        log.warning("could not read the metadata of %s (%s); the engine sidecar will not carry it", onnx_path, exc)
        return {}
    return {str(entry.key): str(entry.value) for entry in model.metadata_props}


def engine_model_metadata(engine_path: str) -> Dict[str, str]:
    """The ONNX metadata an engine's sidecar carries ({} without a sidecar or without that record)."""
    record = read_sidecar(engine_path)
    carried = record.get("model_metadata") if record else None
    if not isinstance(carried, dict):
        return {}
    return {str(k): str(v) for k, v in carried.items()}


def engine_staleness(engine_path: str, metadata: Dict[str, Any]) -> Optional[str]:
    """None when the engine at engine_path was built for `metadata`; otherwise why it must be rebuilt."""
    if not os.path.isfile(engine_path):
        return "no engine file"
    record = read_sidecar(engine_path)
    if record is None:
        return "no readable sidecar {}".format(sidecar_path(engine_path))
    if record.get("format") != SIDECAR_FORMAT:
        return "sidecar format {} (expected {})".format(record.get("format"), SIDECAR_FORMAT)
    if record.get("key") != cache_key(metadata):
        old = record.get("metadata") or {}
        changed = sorted(k for k in set(old) | set(metadata) if old.get(k) != metadata.get(k))
        return "built for a different {}".format(", ".join(changed) or "configuration")
    if record.get("engine_bytes") != os.path.getsize(engine_path) or record.get("engine_sha256") != file_sha256(
            engine_path):
        return "engine file does not match its sidecar (modified or truncated)"
    return None


def default_cache_dir() -> str:
    root = os.environ.get(CACHE_ENV)
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "m2f_edge", "engines")


def atomic_write(path: str, data: bytes) -> None:
    """Write through a hidden file beside ``path``, renamed at the end; the file gets the user's umask."""
    tmp = create_hidden_beside(path, ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def major_version(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def cache_entry(onnx_path: str, options: BuildOptions, cache_dir: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """Where the cache keeps the engine for onnx_path built with options on this machine, and the
    metadata its sidecar must hold (engine_staleness says whether the one there may be used)."""
    metadata = engine_metadata(file_sha256(onnx_path), tensorrt_version(), target_device(options.dla_core), options)
    directory = cache_dir or default_cache_dir()
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    return os.path.join(directory, "{}-{}-{}.engine".format(stem, options.precision, cache_key(metadata)[:16])), metadata


def carry_model_metadata(engine_path: str, metadata: Dict[str, Any], onnx_path: str) -> None:
    """Adds the ONNX file's metadata_props to the sidecar of an engine cached by a version of m2f_edge
    that did not carry them (nothing to do otherwise; a read-only cache keeps serving its engine)."""
    record = read_sidecar(engine_path) or {}
    if isinstance(record.get("model_metadata"), dict):
        return
    extra = {k: v for k, v in record.items() if k not in ("format", "key", "metadata", "engine_sha256", "engine_bytes")}
    extra["model_metadata"] = onnx_model_metadata(onnx_path)
    try:
        write_sidecar(engine_path, metadata, extra=extra)
    except OSError as exc:
        log.warning("could not add the model metadata to %s: %s", sidecar_path(engine_path), exc)
