"""m2f-edge export-triton: a Triton model repository for production GPU servers.

    REPO/<name>/              ensemble: frames in, the outputs of m2f_edge.serving.protocol out
    REPO/<name>_preprocess/   Python backend (m2f_edge.serving.triton_stages)
    REPO/<name>_network/      tensorrt_plan (model.plan), onnxruntime_onnx (model.onnx), or with the python
                              runtime a Python-backend model running model.onnx through ONNX Runtime
    REPO/<name>_postprocess/  Python backend

The Python-backend models need m2f_edge (and its dependencies) in the Python environment that runs them:
the server's own, or the one EXECUTION_ENV_PATH names (python_env).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import List, Optional

import numpy as np

from .protocol import INPUT_NAME, OUTPUTS
from .repository import (MODEL_PY, _package_root, batching_text, frames_input_text, instance_group_text,
                         parameters_text, pbtxt_string, segmenter_info, segmenter_outputs_text, tensor_block)

NETWORKS = ("onnxruntime", "tensorrt", "python")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
STAGES_MODEL_PY = MODEL_PY.replace("triton_model", "triton_stages")
_TRITON_TYPES = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16",
                 np.dtype(np.int64): "TYPE_INT64", np.dtype(np.int32): "TYPE_INT32",
                 np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.bool_): "TYPE_BOOL"}


def triton_type(dtype) -> str:
    try:
        return _TRITON_TYPES[np.dtype(dtype)]
    except KeyError:
        raise ValueError("the model has a tensor of dtype {}, which this exporter does not map".format(dtype)) from None


def onnx_output_dtypes(path: str) -> dict:
    import onnx
    from onnx import helper

    model = onnx.load(path, load_external_data=False)
    return {o.name: np.dtype(helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)) for o in model.graph.output}


def contract_description(seg, max_batch: int, output_dtypes: dict) -> dict:
    """What the pre/post-processing Segmenters need to know of the network, and their settings."""
    backend = seg.backend
    settings = dict(resize=seg.resize, mean=list(seg.mean), std=list(seg.std), class_names=list(seg.class_names),
                    score_threshold=float(seg.score_threshold), max_instances=int(seg.max_instances),
                    threads=int(seg.threads))
    if seg.contract == "raw":
        settings.update(no_object_index=int(seg.no_object_index), topk=int(seg.topk))
    return {
        "network": {
            "input_name": backend.input_name,
            "input_shape": [None, 3] + list(seg.input_size),
            "input_dtype": seg.input_dtype.name,
            "output_names": list(backend.output_names),
            "output_shapes": {k: [d if isinstance(d, int) else None for d in v]
                              for k, v in (getattr(backend, "output_shapes", {}) or {}).items()},
            "output_dtypes": {k: np.dtype(v).name for k, v in output_dtypes.items()},
            "batch_range": [1, max_batch],
            "metadata": dict(backend.metadata),
        },
        "settings": settings,
    }


def _network_dims(shape) -> List[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in list(shape)[1:]]


def export_triton(model_path: str, out_dir: str, *, name: str = "mask2former", network: str = "onnxruntime",
                  engine: Optional[str] = None, max_batch: Optional[int] = None, max_queue_delay_us: int = 2000,
                  instances: int = 1, kind: str = "KIND_GPU", options: Optional[dict] = None,
                  python_env: Optional[str] = None) -> List[str]:
    """Write the repository; returns the model folders written. See the module docstring."""
    from ..segmenter import Segmenter

    if network not in NETWORKS:
        raise ValueError("network: expected one of {}, got {!r}".format(list(NETWORKS), network))
    if not str(model_path).lower().endswith(".onnx"):
        raise ValueError("model: expected the .onnx model (its contract and settings are read from it; give a "
                         "TensorRT engine built from it with engine=), got {!r}".format(model_path))
    if network == "tensorrt" and not engine:
        raise ValueError("engine: the tensorrt_plan network needs the engine built from this ONNX (m2f-edge build)")
    if engine and not os.path.isfile(engine):
        raise FileNotFoundError("engine: no such file: {!r}".format(engine))
    for label, value in (("instances", instances), ("max_queue_delay_us", max_queue_delay_us + 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("{}: expected a positive integer, got {!r}".format(label, value))
    with Segmenter(model_path, backend="onnxruntime-cpu", **dict(options or {})) as seg:
        low, high = seg.batch_range
        if max_batch is None:
            max_batch = min(8, high) if high is not None else 8
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError("max_batch: expected a positive integer, got {!r}".format(max_batch))
        if high is not None and low == high and high > 1:
            raise ValueError("model: its batch is fixed at {}; Triton batches models with a dynamic batch (export "
                             "one with m2f-edge export --dynamic-batch)".format(high))
        if high is not None and max_batch > high:
            raise ValueError("max_batch: {} exceeds the model's largest batch {}".format(max_batch, high))
        dtypes = onnx_output_dtypes(model_path)
        contract = contract_description(seg, max_batch, dtypes)
        info = segmenter_info(seg)
        input_name, output_names, contract_names = seg.backend.input_name, list(seg.backend.output_names), \
            dict(seg._output_names)
        output_shapes = dict(getattr(seg.backend, "output_shapes", {}) or {})
        input_type = triton_type(seg.input_dtype)
        net_h, net_w = seg.input_size
    os.makedirs(out_dir, exist_ok=True)
    env = {"EXECUTION_ENV_PATH": python_env} if python_env else {}
    fallback = python_env is not None  # a repository for this machine: m2f_edge may come from a source tree
    body = STAGES_MODEL_PY.format(package_root=_package_root()) if fallback else \
        STAGES_MODEL_PY.split("try:\n")[0] + "from m2f_edge.serving.triton_stages import TritonPythonModel  # noqa: F401\n"
    contract_json = json.dumps(contract)
    batching = batching_text(max_batch, max_queue_delay_us)
    net_input = "input [\n" + tensor_block(input_name, input_type, (3, net_h, net_w)) + "\n]\n"
    net_outputs = "output [\n" + ",\n".join(tensor_block(n, triton_type(dtypes[n]), _network_dims(output_shapes.get(
        n, (None, -1)))) for n in output_names) + "\n]\n"
    frame_size = tensor_block("frame_size", "TYPE_INT32", (2,))
    written = []

    def model(folder_name: str, config: str, files=()) -> None:
        folder = os.path.join(out_dir, folder_name)
        os.makedirs(os.path.join(folder, "1"), exist_ok=True)
        with open(os.path.join(folder, "config.pbtxt"), "w", encoding="utf-8") as handle:
            handle.write(config)
        for target, content in files:
            if isinstance(content, str) and os.path.isfile(content):
                shutil.copyfile(content, os.path.join(folder, "1", target))
            else:
                with open(os.path.join(folder, "1", target), "w", encoding="utf-8") as handle:
                    handle.write(content)
        written.append(folder)

    python_kind = "KIND_CPU"
    model(name + "_preprocess",
          "name: {}\nbackend: \"python\"\n".format(pbtxt_string(name + "_preprocess")) + batching
          + frames_input_text() + "output [\n" + tensor_block(input_name, input_type, (3, net_h, net_w)) + ",\n"
          + frame_size + "\n]\n" + instance_group_text(instances, python_kind)
          + parameters_text(dict(env, **{"m2f_edge.stage": "preprocess", "m2f_edge.contract": contract_json})),
          [("model.py", body)])
    if network == "python":
        network_config = ("name: {}\nbackend: \"python\"\n".format(pbtxt_string(name + "_network")) + batching
                          + net_input + net_outputs + instance_group_text(instances, python_kind)
                          + parameters_text(dict(env, **{"m2f_edge.stage": "network",
                                                         "m2f_edge.contract": contract_json})))
        files = [("model.py", body), ("model.onnx", model_path)]
    else:
        network_config = ("name: {}\nplatform: {}\n".format(pbtxt_string(name + "_network"),
                                                            pbtxt_string(PLATFORMS[network])) + batching
                          + net_input + net_outputs + instance_group_text(instances, kind))
        files = [("model.plan", engine)] if network == "tensorrt" else [("model.onnx", model_path)]
    model(name + "_network", network_config, files)
    post_inputs = [tensor_block(contract_name, triton_type(dtypes[model_name]), _network_dims(output_shapes.get(
        model_name, (None, -1)))) for contract_name, model_name in contract_names.items()] + [frame_size]
    model(name + "_postprocess",
          "name: {}\nbackend: \"python\"\n".format(pbtxt_string(name + "_postprocess")) + batching
          + "input [\n" + ",\n".join(post_inputs) + "\n]\n" + segmenter_outputs_text()
          + instance_group_text(instances, python_kind)
          + parameters_text(dict(env, **{"m2f_edge.stage": "postprocess", "m2f_edge.contract": contract_json})),
          [("model.py", body)])
    model(name, _ensemble_config(name, max_batch, input_name, contract_names, info))
    return written


def _ensemble_config(name: str, max_batch: int, input_name: str, contract_names: dict, info: dict) -> str:
    def step(model: str, inputs: dict, outputs: dict) -> str:
        maps = "".join(" input_map {{ key: {} value: {} }}".format(pbtxt_string(k), pbtxt_string(v))
                       for k, v in inputs.items())
        maps += "".join(" output_map {{ key: {} value: {} }}".format(pbtxt_string(k), pbtxt_string(v))
                        for k, v in outputs.items())
        return "    {{ model_name: {} model_version: -1{} }}".format(pbtxt_string(model), maps)

    network_out = {model_name: "net_" + contract_name for contract_name, model_name in contract_names.items()}
    steps = [
        step(name + "_preprocess", {INPUT_NAME: INPUT_NAME}, {input_name: "net_input", "frame_size": "frame_size"}),
        step(name + "_network", {input_name: "net_input"}, network_out),
        step(name + "_postprocess", dict({c: "net_" + c for c in contract_names}, frame_size="frame_size"),
             {n: n for n, _, _ in OUTPUTS}),
    ]
    from .protocol import INFO_PARAMETER

    return ("name: {}\nplatform: \"ensemble\"\nmax_batch_size: {}\n".format(pbtxt_string(name), max_batch)
            + frames_input_text() + segmenter_outputs_text()
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
            + parameters_text({INFO_PARAMETER: json.dumps(info)}))


__all__ = ["export_triton", "NETWORKS"]
