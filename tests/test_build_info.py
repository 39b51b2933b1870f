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
    assert info["cuda_emulation"] is False or (info["cuda"] and not info["tensorrt"])
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
