"""Shared fixtures: tiny Mask2Former-shaped ONNX models (tests/tiny_models.py) built once per session,
and the auto-skip of tests marked `gpu` on machines without a usable NVIDIA GPU."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_models  # noqa: E402


def _gpu_status():
    """(present, reason) from m2f_edge.build_info()."""
    try:
        import m2f_edge
    except Exception as exc:  # the extension is not built: every test fails anyway; say why GPU tests skip
        return False, "m2f_edge cannot be imported ({})".format(exc)
    info = m2f_edge.build_info()
    if info.get("gpu_present"):
        return True, ""
    return False, "needs an NVIDIA GPU: {}".format(info.get("gpu_error") or "no usable CUDA device found")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    present, reason = _gpu_status()
    if present:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: tiny_model("deployable" | "raw", **builder kwargs) -> path of a cached tiny ONNX model.

    Keyword arguments go to tiny_models.make_deployable_model / make_raw_model (height, width, batch,
    num_classes, classes_dtype, no_object_index, opset, metadata).
    """
    folder = tmp_path_factory.mktemp("tiny_models")
    built = {}

    def make(contract="deployable", **kwargs):
        key = (contract, json.dumps(kwargs, sort_keys=True, default=str))
        if key not in built:
            name = "{}_{}.onnx".format(contract, len(built))
            path = str(folder / name)
            if contract == "deployable":
                tiny_models.make_deployable_model(path, **kwargs)
            elif contract == "raw":
                tiny_models.make_raw_model(path, **kwargs)
            else:
                raise ValueError("contract must be 'deployable' or 'raw', got {!r}".format(contract))
            built[key] = path
        return built[key]

    return make


@pytest.fixture(scope="session")
def deployable_model(tiny_model):
    """TAO deployable contract, one class ("object"), 64x96 input, dynamic batch."""
    return tiny_model("deployable")


@pytest.fixture(scope="session")
def deployable_model_3(tiny_model):
    """Deployable contract with three classes: red=0, green=1, blue=2."""
    return tiny_model("deployable", num_classes=3)


@pytest.fixture(scope="session")
def raw_model(tiny_model):
    """Raw-head contract (pred_logits / pred_masks logits), one class, no-object first (TAO)."""
    return tiny_model("raw")


@pytest.fixture(scope="session")
def raw_model_3(tiny_model):
    """Raw-head contract with three classes, no-object first (TAO)."""
    return tiny_model("raw", num_classes=3)


@pytest.fixture(scope="session")
def test_frame():
    """(frame BGR 240x320, {"red"|"green"|"blue": bool mask}) from tiny_models.make_test_frame."""
    return tiny_models.make_test_frame()
