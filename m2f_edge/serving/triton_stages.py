"""The Python-backend models of an exported repository (m2f-edge export-triton): the Segmenter's stages as
Triton models, tied by an ensemble.

    <name>_preprocess   frames (uint8 [-1,-1,3], any size) -> the network input [3,H,W] and frame_size [2]
    <name>_network      the model itself: tensorrt_plan, onnxruntime_onnx, or (--python-runtime) this module
                        running the ONNX through the Segmenter's own ONNX Runtime backend
    <name>_postprocess  the network outputs and frame_size -> the outputs of m2f_edge.serving.protocol

The pre- and post-processing models hold a Segmenter over a stand-in backend that describes the network
(ContractBackend) and call its preprocess / postprocess; the network model of the python runtime calls
Segmenter.infer. Model-config parameters: "m2f_edge.stage" (preprocess | network | postprocess),
"m2f_edge.contract" (JSON, see export.contract_description).
"""

from __future__ import annotations

import json
from typing import Dict, List

import numpy as np

import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

from ..backends.base import Backend
from .protocol import INPUT_NAME, RequestOptions, encode_results

FRAME_SIZE = "frame_size"


class ContractBackend(Backend):
    """A backend that only describes a network run elsewhere (the ensemble's network model)."""

    def __init__(self, description: dict):
        self.name = "triton-ensemble"
        self.input_name = description["input_name"]
        self.input_shape = tuple(description["input_shape"])
        self.input_dtype = np.dtype(description["input_dtype"])
        self.output_names = list(description["output_names"])
        self.output_shapes = {k: tuple(v) for k, v in description["output_shapes"].items()}
        self.batch_range = tuple(description["batch_range"])
        self.metadata = dict(description["metadata"])

    def run(self, tensor):
        raise RuntimeError("this Segmenter only pre- and post-processes; the network runs in the ensemble's "
                           "network model")


def _parameter(config: dict, key: str, default: str = "") -> str:
    entry = config.get("parameters", {}).get(key)
    return entry["string_value"] if entry else default


def _error(exc: BaseException):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("{}: {}".format(
        type(exc).__name__, exc)))


def _input(request, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        from ..segmenter import Segmenter

        config = json.loads(args["model_config"])
        self.stage = _parameter(config, "m2f_edge.stage")
        contract = json.loads(_parameter(config, "m2f_edge.contract", "{}"))
        self.settings = contract.get("settings", {})
        if self.stage == "network":
            import os

            model_file = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
            self.segmenter = Segmenter(model_file, backend="onnxruntime", threads=int(self.settings.get("threads", 0)))
        elif self.stage in ("preprocess", "postprocess"):
            options = {k: v for k, v in self.settings.items() if k != "threads"}
            self.segmenter = Segmenter(ContractBackend(contract["network"]), **options)
        else:
            raise ValueError("m2f_edge.stage: expected preprocess, network or postprocess, got {!r}".format(self.stage))
        from .. import _core

        self._rle_encode = _core.rle_encode

    def execute(self, requests):
        return getattr(self, "_" + self.stage)(requests)

    def _preprocess(self, requests) -> List:
        seg = self.segmenter
        responses = []
        for request in requests:  # one preprocess call per request: a bad frame fails only its own request
            try:
                frames = _input(request, INPUT_NAME)
                options = RequestOptions(json.loads(request.parameters() or "{}"), seg.score_threshold,
                                         seg.max_instances)
                views = [f[:, :, ::-1] if options.color == "rgb" else f for f in frames]
                prepared = seg.preprocess(views)
            except (ValueError, TypeError) as exc:
                responses.append(_error(exc))
                continue
            sizes = np.array([[t.frame_height, t.frame_width] for t in prepared.transforms], np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(seg.backend.input_name, prepared.tensor), pb_utils.Tensor(FRAME_SIZE, sizes)]))
        return responses

    def _network(self, requests) -> List:
        seg = self.segmenter
        model_names = seg._output_names  # contract name -> the model's own output name
        tensors = [_input(r, seg.backend.input_name) for r in requests]
        outputs = seg.infer(np.concatenate(tensors) if len(tensors) > 1 else tensors[0])
        responses, start = [], 0
        for tensor in tensors:
            stop = start + tensor.shape[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(model_names[name], np.ascontiguousarray(array[start:stop]))
                for name, array in outputs.items()]))
            start = stop
        return responses

    def _postprocess(self, requests) -> List:
        from .. import _core

        seg = self.segmenter
        height, width = seg.input_size
        responses = []
        for request in requests:
            try:
                options = RequestOptions(json.loads(request.parameters() or "{}"), float(
                    self.settings.get("score_threshold", seg.score_threshold)),
                    int(self.settings.get("max_instances", seg.max_instances)))
                outputs = {name: _input(request, name) for name in seg._output_names}  # contract names
                transforms = [_core.ResizeTransform(seg.resize, int(h), int(w), height, width)
                              for h, w in _input(request, FRAME_SIZE)]
                seg.score_threshold, seg.max_instances = options.run_settings()
                results = seg.postprocess(outputs, transforms)
            except (ValueError, TypeError) as exc:
                responses.append(_error(exc))
                continue
            arrays = encode_results(results, options.masks, self._rle_encode)  # type: Dict[str, np.ndarray]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, array) for name, array in arrays.items()]))
        return responses

    def finalize(self):
        self.segmenter.close()
