"""ONNX Runtime backend: runs a Mask2Former ONNX on the CPU, or on CUDA / TensorRT execution providers
when the installed onnxruntime has them."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Union

import numpy as np

from .base import Backend, UnsupportedModelError, check_input_shape, detect_contract

logger = logging.getLogger(__name__)

PLUGIN_OP_TYPE = "MultiscaleDeformableAttnPlugin_TRT"

_PROVIDER_SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a hard dependency
        raise ImportError("the ONNX Runtime backend needs the 'onnxruntime' package (pip install onnxruntime, "
                          "or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def resolve_providers(providers=None, device: str = "auto") -> List:
    """The execution-provider list handed to onnxruntime.InferenceSession.

    providers: None (choose from `device`), or a list of provider names, short names ("cpu", "cuda",
    "tensorrt") or (name, options) tuples, passed on in order. device: "auto" (CUDA when this onnxruntime
    has it, else CPU), "cpu", "cuda" or "tensorrt" (each falls back to the CPU for nodes it cannot run).
    """
    ort = _import_ort()
    available = ort.get_available_providers()
    if providers is not None:
        if isinstance(providers, (str, tuple)):
            providers = [providers]
        resolved = []
        for entry in providers:
            name = entry[0] if isinstance(entry, tuple) else entry
            if not isinstance(name, str):
                raise TypeError("providers: expected provider names or (name, options) tuples, got {!r}".format(entry))
            full = _PROVIDER_SHORT_NAMES.get(name.lower(), name)
            if full not in available:
                raise ValueError("providers: '{}' is not available in this onnxruntime {} (available: {})".format(
                    name, ort.__version__, available))
            resolved.append((full, entry[1]) if isinstance(entry, tuple) else full)
        return resolved
    if device == "auto":
        chosen = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    elif device == "cpu":
        chosen = []
    elif device in ("cuda", "tensorrt"):
        full = _PROVIDER_SHORT_NAMES[device]
        if full not in available:
            raise ValueError("backend 'onnxruntime-{}' needs an onnxruntime with the {} (this onnxruntime {} has "
                             "{}); install onnxruntime-gpu, or use backend='onnxruntime' for the CPU".format(
                                 device, full, ort.__version__, available))
        chosen = [full] + (["CUDAExecutionProvider"] if device == "tensorrt" and
                           "CUDAExecutionProvider" in available else [])
    else:
        raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'tensorrt', got {!r}".format(device))
    return chosen + ["CPUExecutionProvider"]


def find_plugin_nodes(graph) -> int:
    """How many MultiscaleDeformableAttnPlugin_TRT nodes (any domain) a graph holds, subgraphs included."""
    count = 0
    for node in graph.node:
        if node.op_type == PLUGIN_OP_TYPE:
            count += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                count += find_plugin_nodes(attr.g)
            for sub in attr.graphs:
                count += find_plugin_nodes(sub)
    return count


def _load_model_bytes(path: str) -> Optional[bytes]:
    """The model as bytes to give ONNX Runtime: None when ORT can load the file as is, else the model with
    its deformable-attention plugin nodes rewritten into standard ops (in memory; the file is untouched)."""
    import onnx

    try:
        header = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: say what the file is not
        raise UnsupportedModelError("{}: not a readable ONNX model ({}: {})".format(
            path, type(exc).__name__, exc)) from exc
    plugins = find_plugin_nodes(header.graph)
    if plugins == 0:
        return None
    try:
        from ..models.portable import make_portable
    except ImportError as exc:
        raise ImportError(
            "{} holds {} {} node(s), which ONNX Runtime cannot run; rewriting them needs "
            "m2f_edge.models.portable, which is missing from this installation ({}). Convert the model elsewhere "
            "with `m2f-edge convert`, or run it with TensorRT".format(path, plugins, PLUGIN_OP_TYPE, exc)) from exc
    model = onnx.load(path)  # with external data this time: the rewrite needs the weights
    portable = make_portable(model)
    logger.info("%s: rewrote %d %s node(s) into standard ONNX ops in memory so ONNX Runtime can run it "
                "(`m2f-edge convert` writes the same rewrite to a file)", path, plugins, PLUGIN_OP_TYPE)
    return portable.SerializeToString()


class OnnxRuntimeBackend(Backend):
    """A Mask2Former ONNX model in an onnxruntime.InferenceSession.

    model: path to an .onnx file. device / providers: see resolve_providers. threads: intra-op threads for
    the CPU provider (0 = onnxruntime's default, one per core).
    """

    name = "onnxruntime"

    def __init__(self, model: Union[str, os.PathLike], *, device: str = "auto", providers=None, threads: int = 0):
        ort = _import_ort()
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError("model: no such file: '{}'".format(path))
        self.path = path
        model_bytes = _load_model_bytes(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        chosen = resolve_providers(providers, device)
        try:
            self._session = ort.InferenceSession(model_bytes if model_bytes is not None else path, options,
                                                 providers=chosen)
        except Exception as exc:
            raise UnsupportedModelError("{}: onnxruntime could not load the model: {}".format(path, exc)) from exc
        self.providers = list(self._session.get_providers())

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise UnsupportedModelError("{}: expected one image input, found {}: {}".format(
                path, len(inputs), [(i.name, i.shape, i.type) for i in inputs]))
        tensor = inputs[0]
        if tensor.type not in _ORT_DTYPES:
            raise UnsupportedModelError("{}: input '{}' has type {}; expected tensor(float) or tensor(float16)".format(
                path, tensor.name, tensor.type))
        self.input_name = tensor.name
        self.input_shape = check_input_shape(tensor.name, [d if isinstance(d, int) else None for d in tensor.shape],
                                             path)
        self.input_dtype = _ORT_DTYPES[tensor.type]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.output_shapes = {o.name: tuple(d if isinstance(d, int) else None for d in o.shape)
                              for o in self._session.get_outputs()}
        detect_contract(self.output_names)  # fail here, with the outputs listed, rather than after the first run
        batch = self.input_shape[0]
        self.batch_range = (batch, batch) if batch is not None else (1, None)
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("the onnxruntime backend is closed")
        if not isinstance(tensor, np.ndarray) or tensor.dtype != self.input_dtype or tensor.ndim != 4 or \
                tuple(tensor.shape[1:]) != tuple(self.input_shape[1:]):
            raise ValueError("tensor: expected a {} array of shape (B,{},{},{}), got {}".format(
                self.input_dtype.name, *self.input_shape[1:], _describe(tensor)))
        outputs = self._session.run(None, {self.input_name: tensor})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self._session = None

    def describe(self) -> str:
        return "onnxruntime {} ({})".format(_import_ort().__version__, ", ".join(self.providers))


def _describe(array) -> str:
    if isinstance(array, np.ndarray):
        return "{} array of shape {}".format(array.dtype.name, tuple(array.shape))
    return type(array).__name__

