"""Triton model repositories: config.pbtxt text and the Python-backend model that serves a Segmenter."""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from .protocol import INFO_PARAMETER, INPUT_NAME, OUTPUTS

MODEL_PY = '''"""Triton Python-backend model: an m2f_edge Segmenter (written by m2f_edge; needs m2f_edge installed in
the Python environment EXECUTION_ENV_PATH names, or in the folder below)."""
import sys

try:
    import m2f_edge  # noqa: F401
except ImportError:  # m2f_edge run from a source tree: the stub does not see the server's PYTHONPATH
    sys.path.insert(0, {package_root!r})
from m2f_edge.serving.triton_model import TritonPythonModel  # noqa: E402,F401
'''


def pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII kept, every other byte octal-escaped."""
    parts = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\':
            parts.append(char)
        else:
            parts.append("\\{:03o}".format(byte))
    return '"' + "".join(parts) + '"'


def dims_text(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def tensor_block(name: str, data_type: str, dims: Sequence[int], extra: str = "") -> str:
    return "  {{ name: {} data_type: {} dims: {}{} }}".format(pbtxt_string(name), data_type, dims_text(dims), extra)


def parameters_text(parameters: Dict[str, str]) -> str:
    return "".join("parameters {{ key: {} value: {{ string_value: {} }} }}\n".format(pbtxt_string(k), pbtxt_string(v))
                   for k, v in parameters.items())


def batching_text(max_batch: int, max_queue_delay_us: int) -> str:
    preferred = sorted({b for b in (2, 4, 8, 16, 32, max_batch) if b <= max_batch and b > 1})
    text = "max_batch_size: {}\n".format(int(max_batch))
    if max_batch > 1:
        text += "dynamic_batching {{\n  {}max_queue_delay_microseconds: {}\n}}\n".format(
            "preferred_batch_size: {}\n  ".format(dims_text(preferred)) if preferred else "", int(max_queue_delay_us))
    return text


def instance_group_text(count: int, kind: str = "KIND_CPU") -> str:
    return "instance_group [ {{ count: {} kind: {} }} ]\n".format(int(count), kind)


def segmenter_outputs_text() -> str:
    return "output [\n" + ",\n".join(tensor_block(n, t, d) for n, t, d in OUTPUTS) + "\n]\n"


def frames_input_text() -> str:
    # ragged: frames of different sizes from different cameras may share one execution
    return "input [\n" + tensor_block(INPUT_NAME, "TYPE_UINT8", (-1, -1, 3), " allow_ragged_batch: true") + "\n]\n"


def segmenter_info(seg) -> dict:
    """What a client needs to know about the served Segmenter (the INFO_PARAMETER JSON)."""
    return {
        "class_names": list(seg.class_names),
        "category_ids": seg.category_ids,
        "input_size": list(seg.input_size),
        "contract": seg.contract,
        "score_threshold": float(seg.score_threshold),
        "max_instances": int(seg.max_instances),
        "resize": seg.resize,
        "mean": list(seg.mean),
        "std": list(seg.std),
        "no_object_index": int(seg.no_object_index) if seg.contract == "raw" else None,
        "topk": int(seg.topk) if seg.contract == "raw" else None,
        "backend": seg.backend.name,
    }


def write_segmenter_model(repository: str, name: str, model_path: str, info: dict, *, max_batch: int,
                          max_queue_delay_us: int, instances: int, options: Optional[dict] = None,
                          python_env: Optional[str] = None, kind: str = "KIND_CPU") -> str:
    """Write REPOSITORY/NAME/{config.pbtxt, 1/model.py}: a Python-backend model whose instances each run a
    Segmenter(model_path, **options). Returns the model's folder."""
    folder = os.path.join(repository, name)
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    parameters = {
        "EXECUTION_ENV_PATH": python_env or sys.prefix,
        "m2f_edge.model": os.path.abspath(model_path),
        "m2f_edge.options": json.dumps(options or {}),
        INFO_PARAMETER: json.dumps(info),
    }
    config = ("name: {}\nbackend: \"python\"\n".format(pbtxt_string(name)) + batching_text(max_batch, max_queue_delay_us)
              + frames_input_text() + segmenter_outputs_text() + instance_group_text(instances, kind)
              + parameters_text(parameters))
    with open(os.path.join(folder, "config.pbtxt"), "w", encoding="utf-8") as handle:
        handle.write(config)
    with open(os.path.join(folder, "1", "model.py"), "w", encoding="utf-8") as handle:
        handle.write(MODEL_PY.format(package_root=_package_root()))
    return folder


def _package_root() -> str:
    """The folder m2f_edge is imported from (site-packages, or a source tree)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def list_models(repository: str) -> List[str]:
    return sorted(d for d in os.listdir(repository) if os.path.isfile(os.path.join(repository, d, "config.pbtxt")))
