import re
from pathlib import Path

import m2f_edge

REPO = Path(__file__).resolve().parents[1]


def _project_version():
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def test_build_info_reports_version_and_switches():
    info = m2f_edge.build_info()
    assert info["version"] == _project_version() == m2f_edge.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["tensorrt"], bool)
    # a TensorRT runner needs the CUDA build, a real one
    assert not info["tensorrt"] or info["cuda"]
    # the emulation build runs the TensorRT layer against its stand-in only, and nothing else does
    assert info["tensorrt_standin"] is (info["cuda_emulation"] and info["tensorrt"])
    if info["tensorrt"]:  # which libnvinfer the process loaded, and its version
        assert info["tensorrt_library"] and re.match(r"^\d+\.\d+\.\d+$", info["tensorrt_runtime_version"])
    else:
        assert info["tensorrt_library"] is None and info["tensorrt_runtime_version"] is None
    if info["cuda_emulation"]:
        assert "emulator" in info["gpu_name"]  # never mistaken for a GPU
    if info["cuda"]:
        assert re.match(r"^\d+\.\d+", info["cuda_version"])
    else:
        assert info["cuda_version"] is None


def test_build_info_explains_a_missing_gpu():
    info = m2f_edge.build_info()
    if info["gpu_present"]:
        assert info["gpu_count"] >= 1 and info["gpu_name"]
    else:
        assert info["gpu_count"] == 0 or info["gpu_error"]
        assert isinstance(info["gpu_error"], str) and info["gpu_error"]
