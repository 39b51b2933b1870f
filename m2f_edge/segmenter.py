"""Segmenter: a Mask2Former model plus the pre- and post-processing that turn frames into Instances."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .gpu import is_gpu_array
from ._keywords import suggest_keywords
from .backends import Backend, open_backend
from .backends.base import canonical_output_names, detect_contract
from .demo import resolve_model
from ._checks import (Prepared, _as_frame_list, _check_choice, _check_frame, _choice_arg, _describe, _int_arg,
                      _names_arg, _positive_int_arg, _threads_arg, _triple_arg, _unit_arg)
from .instances import Instances
from .runners import RUNNER_CHOICES, fixed_batch_padding, pick_runner
from .spec import Spec, coerce_spec, from_metadata, load_sidecar

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLORS = ("bgr", "rgb", "bgra", "rgba", "gray")
RESIZE_MODES = ("stretch", "letterbox")
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_TOPK = 100
DYNAMIC_BATCH_CHUNK = 8  # frames per inference call when the model's batch is dynamic and unbounded

Frames = Union[np.ndarray, Sequence[np.ndarray]]


SERVER_SIDE_SETTINGS = ("resize", "mean", "std", "no_object_index", "topk", "class_names", "category_ids")
FIXED_AFTER_CONSTRUCTION = ("backend", "model_path", "contract", "input_size", "input_dtype", "batch_range",
                            "num_classes", "runner", "settings")


class _Setting:
    """A Segmenter setting: checked when set (a bad value raises naming it), read by the runner on
    every batch."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name = name
        self.slot = "_setting_" + name

    def __get__(self, segmenter, owner=None):
        if segmenter is None:
            return self
        return segmenter.__dict__[self.slot]

    def __set__(self, segmenter, value):
        segmenter.__dict__[self.slot] = self.check(segmenter, value)


class Segmenter:
    """Runs a Mask2Former instance-segmentation model on frames.

        seg = Segmenter("mask2former_swint.onnx")      # or a TensorRT .engine
        instances = seg.run(frame)                      # frame: HxWx3 uint8 BGR, as OpenCV gives it

    model: path to an .onnx model or a TensorRT engine (.engine/.plan), "demo" (the small demo model that
        ships with the package, see m2f_edge.demo), an opened Backend, or the URL of a model served by
        `m2f-edge serve` (grpc://host:8001/mask2former, http://host:8000/mask2former; see
        m2f_edge.serving.client): the frames then run on that server, with its model and settings.
    backend: "auto" (from the file), "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda",
        "onnxruntime-tensorrt" or "tensorrt" (see m2f_edge.backends).
    score_threshold: drop instances scoring below it (None: spec / sidecar value, else 0.5).
    max_instances: keep at most this many per frame (highest scores).
    resize: "stretch" (the whole frame to the network size, as DeepStream and the deployable model expect)
        or "letterbox" (keep the aspect ratio, pad bottom/right, as TAO's PyTorch inference).
    color: channel order of the frames: "bgr" (OpenCV), "rgb", "bgra", "rgba" or "gray". Frames with 1 or 4
        channels are read as gray or with alpha in the same order without being told.
    class_names: names of the model's classes, indexed by label (None: spec, sidecar, model metadata, else
        "object" for a one-class model and "class_<k>" otherwise).
    spec: a TAO experiment spec or sidecar (path, dict or m2f_edge.spec.Spec). A `<model>.json` sidecar next
        to the model is read automatically. Precedence: explicit arguments > spec > sidecar > model metadata.
    mean, std: RGB normalisation in 0-1 units (None: spec / sidecar, else ImageNet's).
    no_object_index: raw-head models only: 0 (TAO) or -1 (detectron2 / Hugging Face: last).
        None: argument > spec > sidecar > model metadata "m2f_edge.no_object_index" > 0.
    topk: raw-head models only: how many (query, class) pairs to consider (TAO's test_topk_per_image).
    threads: CPU threads for pre/post-processing and ONNX Runtime (0 = all cores / its default).
    providers: ONNX Runtime execution providers, overriding the backend's choice.

    Attributes: input_size (H, W), input_dtype, batch_range (min, max; max None = unbounded), contract
    ("deployable" | "raw"), class_names, category_ids, backend (with .name), and the settings above
    (score_threshold, max_instances, resize, color, mean, std, no_object_index, topk; they may be changed
    between calls).

    The stages preprocess / infer / postprocess may run at the same time in different threads (a
    pipeline): each call works on its own buffers.
    """

    @suggest_keywords()
    def __init__(self, model, *, backend: str = "auto", score_threshold: Optional[float] = None,
                 max_instances: int = 100, resize: str = "stretch", color: str = "bgr",
                 class_names: Optional[Sequence[str]] = None, spec=None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 no_object_index: Optional[int] = None, topk: Optional[int] = None, threads: int = 0,
                 providers=None, runner: str = "auto"):
        _check_choice("resize", resize, RESIZE_MODES)
        _check_choice("color", color, COLORS)
        if not callable(runner):
            _check_choice("runner", runner, RUNNER_CHOICES)
        _threads_arg(threads)
        explicit = Spec(
            class_names=_names_arg(class_names),
            mean=_triple_arg("mean", mean, allow_zero=True),
            std=_triple_arg("std", std, allow_zero=False),
            score_threshold=None if score_threshold is None else _unit_arg("score_threshold", score_threshold),
            no_object_index=None if no_object_index is None else _int_arg("no_object_index", no_object_index),
            topk=None if topk is None else _positive_int_arg("topk", topk),
            sources=["arguments"],
        )
        given_spec = coerce_spec(spec)  # read before loading the model: a bad spec path fails fast
        self._remote = None  # the m2f_edge.serving.client module when the model runs on a Triton server
        if isinstance(model, str) and model.split("://", 1)[0].lower() in ("grpc", "http") and "://" in model:
            from .serving import client as remote

            self._remote = remote
            remote.attach(self, model, color=color, score_threshold=score_threshold, max_instances=max_instances,
                          server_side=dict(backend=backend, resize=resize, class_names=class_names, spec=spec,
                                           mean=mean, std=std, no_object_index=no_object_index, topk=topk,
                                           providers=providers))
            self.runner = remote.RemoteSegmenterRunner(self)
            self._constructed = True
            return

        if isinstance(model, Backend):
            self.backend = model
            model_path = getattr(model, "path", None)
        else:
            model_path = os.fspath(resolve_model(model))
            self.backend = open_backend(model_path, backend, providers=providers, threads=threads)
        self.model_path = model_path

        self.contract = detect_contract(self.backend.output_names)
        self._output_names = canonical_output_names(self.backend.output_names)
        sidecar = load_sidecar(model_path) if model_path else Spec()
        settings = explicit.over(given_spec).over(sidecar).over(from_metadata(self.backend.metadata))
        self.settings = settings

        _, _, height, width = self.backend.input_shape
        self.input_size = (int(height), int(width))
        self.input_dtype = np.dtype(self.backend.input_dtype)
        self.batch_range = tuple(self.backend.batch_range)
        self.num_classes = self._num_classes(settings)

        self.score_threshold = settings.score_threshold if settings.score_threshold is not None \
            else DEFAULT_SCORE_THRESHOLD
        self.max_instances = _positive_int_arg("max_instances", max_instances)
        self.resize = resize
        self.color = color
        self.mean = tuple(settings.mean) if settings.mean is not None else IMAGENET_MEAN
        self.std = tuple(settings.std) if settings.std is not None else IMAGENET_STD
        self.no_object_index = settings.no_object_index if settings.no_object_index is not None else 0
        self.topk = settings.topk if settings.topk is not None else DEFAULT_TOPK
        self.threads = int(threads)
        self.runner = pick_runner(self, runner)

        if settings.class_names is not None:
            self.class_names = list(settings.class_names)
        elif self.num_classes in (None, 1):
            self.class_names = ["object"]
        else:
            self.class_names = ["class_{}".format(k) for k in range(self.num_classes)]
        self.category_ids = list(settings.category_ids) if settings.category_ids is not None else None
        if self.num_classes is not None and settings.class_names is not None and \
                len(self.class_names) < self.num_classes:
            logger.warning("%d class names for a model with %d classes; the others are named class_<k>",
                           len(self.class_names), self.num_classes)
        self._constructed = True

    # --- settings: each may change between frames and takes effect on the next, on every runner --------------

    score_threshold = _Setting(lambda seg, v: _unit_arg("score_threshold", v))
    max_instances = _Setting(lambda seg, v: _positive_int_arg("max_instances", v))
    resize = _Setting(lambda seg, v: _choice_arg("resize", v, RESIZE_MODES))
    color = _Setting(lambda seg, v: _choice_arg("color", v, COLORS))
    mean = _Setting(lambda seg, v: _triple_arg("mean", v, allow_zero=True, required=True))
    std = _Setting(lambda seg, v: _triple_arg("std", v, allow_zero=False, required=True))
    no_object_index = _Setting(lambda seg, v: seg._no_object_arg(v))
    topk = _Setting(lambda seg, v: _positive_int_arg("topk", v))
    threads = _Setting(lambda seg, v: _threads_arg(v))
    class_names = _Setting(lambda seg, v: _names_arg(v, required=True))
    category_ids = _Setting(lambda seg, v: None if v is None else [_int_arg("category_ids", c) for c in v])

    def __setattr__(self, name, value):
        if self.__dict__.get("_constructed"):
            if name in FIXED_AFTER_CONSTRUCTION:
                raise AttributeError("{}: fixed when the Segmenter is built (it comes from the model or picks its "
                                     "buffers); make a new Segmenter to change it".format(name))
            if self.__dict__.get("_remote") is not None and name in SERVER_SIDE_SETTINGS:
                raise AttributeError("{}: a Segmenter on a server URL takes this setting from the server (give it to "
                                     "m2f-edge serve)".format(name))
        object.__setattr__(self, name, value)

    def _no_object_arg(self, value) -> int:
        value = _int_arg("no_object_index", value)
        if self.contract == "raw" and self.num_classes is not None and value not in (0, -1, self.num_classes):
            raise ValueError("no_object_index: expected 0 (TAO), -1 or {} (last) for a model with {} classes, got "
                             "{}".format(self.num_classes, self.num_classes, value))
        return value

    def _num_classes(self, settings: Spec) -> Optional[int]:
        if self.contract == "raw":
            shape = (getattr(self.backend, "output_shapes", None) or {}).get(self._output_names["pred_logits"])
            if shape and isinstance(shape[-1], int):
                return int(shape[-1]) - 1
        return settings.num_classes

    # --- stages -------------------------------------------------------------------------------------------------

    def preprocess(self, frames: Frames, out: Optional[np.ndarray] = None) -> Prepared:
        """Resize and normalise frames into the model's input tensor.

        frames: a list of uint8 frames (H,W), (H,W,C) of any sizes, or one (B,H,W,C) array, or one frame.
        Any strides work (crops, negative strides, Fortran order): the core reads them in place, no copy.
        out: optional C-contiguous (B,3,H,W) array of the model's input dtype to write into; by default a
        new one is allocated (so earlier Prepared tensors stay valid).
        """
        if self._remote is not None:
            return self._remote.remote_preprocess(self, frames)
        batch = _as_frame_list(frames)
        count = len(batch) if isinstance(batch, list) else batch.shape[0]
        if count == 0:
            raise ValueError("frames: expected at least one frame, got none")
        height, width = self.input_size
        if out is None:
            out = np.empty((count, 3, height, width), self.input_dtype)
        elif not isinstance(out, np.ndarray) or out.shape != (count, 3, height, width) or \
                out.dtype != self.input_dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out: expected a writable C-contiguous {} array of shape {}, got {}".format(
                self.input_dtype.name, (count, 3, height, width), _describe(out)))
        options = dict(resize=self.resize, mean=self.mean, std=self.std, threads=self.threads)
        if isinstance(batch, np.ndarray):  # one (B,H,W,C) array: one core call
            _check_frame(batch[0], "frames")
            transforms = _core.preprocess(batch, out, color=self._frame_color(batch.shape[3], "frames"), **options)
        else:
            colors = []
            for i, frame in enumerate(batch):
                name = "frames[{}]".format(i)
                _check_frame(frame, name)
                colors.append(self._frame_color(frame.shape[2] if frame.ndim == 3 else 1, name))
            if all(c == colors[0] for c in colors):  # one core call for the batch, sizes may differ
                transforms = _core.preprocess(batch, out, color=colors[0], **options)
            else:  # gray, colour and alpha frames mixed: one call each
                transforms = []
                for i, frame in enumerate(batch):
                    transforms.extend(_core.preprocess(frame, out[i:i + 1], color=colors[i], **options))
        return Prepared(out, list(transforms))

    def infer(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the model on a (B,3,H,W) tensor; returns the outputs keyed by contract name (pred_masks,
        pred_scores, pred_classes / pred_logits, pred_masks), each with leading dimension B.

        A B below the model's fixed batch is zero-padded (a copy of the tensor) and the outputs cut back;
        a B above its maximum runs in chunks whose outputs are concatenated (a copy).
        """
        if isinstance(tensor, Prepared):
            tensor = tensor.tensor
        if self._remote is not None:
            return self._remote.remote_infer(self, tensor)
        count = tensor.shape[0] if isinstance(tensor, np.ndarray) and tensor.ndim == 4 else None
        if count is None or count == 0:
            raise ValueError("tensor: expected a (B,3,H,W) array with B >= 1, got {}".format(_describe(tensor)))
        low, high = self.batch_range
        if high is not None and count > high:
            parts = [self.infer(tensor[i:i + high]) for i in range(0, count, high)]
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        pad = fixed_batch_padding(count, self.batch_range)
        if pad:
            padded = np.zeros((count + pad,) + tuple(tensor.shape[1:]), tensor.dtype)
            padded[:count] = tensor
            tensor = padded
        raw = self.backend.run(tensor)
        outputs = {}
        for contract_name, model_name in self._output_names.items():
            array = raw[model_name]
            if array.ndim == 0 or array.shape[0] < count:
                raise RuntimeError("the model's output '{}' has shape {}; expected a leading batch of {}".format(
                    model_name, array.shape, count))
            outputs[contract_name] = array[:count] if array.shape[0] != count else array
        return outputs

    def postprocess(self, outputs: Dict[str, np.ndarray], transforms: Sequence) -> List[Instances]:
        """Turn model outputs (from infer) into one Instances per transform, at each frame's own size."""
        if self._remote is not None:
            return self._remote.remote_postprocess(self, outputs, transforms)
        return [self._instances_from_record(r) for r in self.postprocess_records(outputs, transforms)]

    def postprocess_records(self, outputs: Dict[str, np.ndarray], transforms: Sequence) -> List[Dict]:
        """postprocess() before the Instances are made: one dict per transform with the keys of
        _core.postprocess_* plus "transform" (what the device pipeline returns too)."""
        results = []
        for i, transform in enumerate(transforms):
            if self.contract == "deployable":
                scores = outputs["pred_scores"][i]
                if scores.dtype != np.float32:
                    scores = scores.astype(np.float32)  # K values from an FP16 engine
                result = _core.postprocess_deployable(
                    outputs["pred_masks"][i], scores, outputs["pred_classes"][i], transform,
                    score_threshold=float(self.score_threshold), max_instances=int(self.max_instances),
                    threads=self.threads)
            else:
                result = _core.postprocess_raw(
                    outputs["pred_logits"][i], outputs["pred_masks"][i], transform,
                    no_object_index=int(self.no_object_index), topk=int(self.topk),
                    score_threshold=float(self.score_threshold), max_instances=int(self.max_instances),
                    threads=self.threads)
            result["transform"] = transform
            results.append(result)
        return results

    # --- whole pipeline -----------------------------------------------------------------------------------------

    def run(self, frame) -> Instances:
        """Segment one frame (H,W,C or H,W uint8); returns its Instances, through the Segmenter's runner.

        With a TensorRT backend that is the device runner: the whole frame -> Instances path on the GPU
        (GpuPipeline); a numpy frame is written once into mapped memory (Jetson) or pinned staging
        (discrete GPU), and a frame already on the GPU (CuPy, PyTorch, anything with
        __cuda_array_interface__ or DLPack) is read in place. Masks come back to the host as new arrays.
        """
        if not self._is_gpu_frame(frame, "frame"):
            if not isinstance(frame, np.ndarray):
                raise TypeError("frame: expected a numpy uint8 array (H,W,3), got {}{}".format(
                    type(frame).__name__, "; use run_batch for several frames" if isinstance(frame, (list, tuple))
                    else ""))
            if frame.ndim == 4:
                raise ValueError("frame: got a batch of shape {}; use run_batch".format(frame.shape))
        return self.runner.run([frame])[0]

    def run_batch(self, frames: Frames, batch_size: Optional[int] = None) -> List[Instances]:
        """Segment several frames (a list of any sizes, or one (B,H,W,C) array); one Instances per frame.

        Frames go to the runner in chunks of batch_size (default: the model's maximum batch, or 8 when it
        is dynamic and unbounded).
        """
        if isinstance(frames, (list, tuple)) and frames and self._is_gpu_frame(frames[0], "frames[0]"):
            batch = list(frames)
        else:
            batch = _as_frame_list(frames)
        count = len(batch) if isinstance(batch, list) else batch.shape[0]
        if count == 0:
            return []
        low, high = self.batch_range
        chunk = int(batch_size) if batch_size else (high if high is not None else max(low or 1, DYNAMIC_BATCH_CHUNK))
        if chunk < 1:
            raise ValueError("batch_size: expected a positive integer, got {}".format(batch_size))
        if high is not None and chunk > high:
            raise ValueError("batch_size: the model takes at most {} frames per call, got {}".format(high, chunk))
        results = []
        for start in range(0, count, chunk):
            part = batch[start:start + chunk]
            results.extend(self.runner.run(list(part) if isinstance(part, list) else part))
        return results

    def _is_gpu_frame(self, frame, name: str) -> bool:
        """True for a frame on the GPU, which only the device runner reads; the host runner refuses one
        rather than copying it to the host silently."""
        on_gpu = is_gpu_array(frame)
        if on_gpu and self.runner.name != "device":
            raise TypeError("{}: a frame on the GPU needs the device runner (a TensorRT backend; this Segmenter "
                            "uses {} with the {} runner); copy it to the host first (e.g. cupy.asnumpy, "
                            "tensor.cpu().numpy())".format(name, self.backend.name, self.runner.name))
        return on_gpu

    def _instances_from_record(self, record) -> Instances:
        """An Instances from one frame's result of the core's post-processing (CPU or GPU)."""
        transform = record["transform"]
        return Instances.from_core(record, (transform.frame_height, transform.frame_width),
                                   class_table=self.class_names, category_ids=self.category_ids)

    __call__ = run

    def stream(self, source, **kwargs):
        """Segment a video, camera or image-folder source frame by frame; see m2f_edge.video.stream.stream."""
        try:
            from .video.stream import stream
        except ImportError as exc:
            raise ImportError("Segmenter.stream needs m2f_edge.video, which is missing from this installation "
                              "({})".format(exc)) from exc
        return stream(self, source, **kwargs)

    # --- helpers ------------------------------------------------------------------------------------------------

    def _frame_color(self, channels: int, name: str) -> str:
        base = self.color
        if channels == 1:
            return "gray"
        if base == "gray":
            raise ValueError("{}: color is 'gray' but the frame has {} channels".format(name, channels))
        order = base[:3]  # "bgr" or "rgb"
        if channels == 3:
            return order
        if channels == 4:
            return order + "a"
        raise ValueError("{}: expected 1, 3 or 4 channels, got {}".format(name, channels))

    def close(self) -> None:
        self.runner.close()
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        low, high = self.batch_range
        return ("Segmenter({}, contract={}, input={}x{} {}, batch={}..{}, backend={}, classes={}, "
                "score_threshold={}, resize={})").format(
            os.path.basename(self.model_path) if self.model_path else type(self.backend).__name__, self.contract,
            self.input_size[0], self.input_size[1], self.input_dtype.name, low, "" if high is None else high,
            self.backend.name, len(self.class_names), self.score_threshold, self.resize)
