"""How CMake links the TensorRT runner (issue 15 item 2): the folder libnvinfer was found in goes into
the module's RPATH, for the installed module too, so that a tarball install (TENSORRT_ROOT) imports.
Configures (does not build) against a stand-in TensorRT root: the emulation build's stand-in headers
and empty libraries. Needs cmake, ninja and nvcc (M2F_CUDA=ON); about 20 s."""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)

pytestmark = pytest.mark.skipif(not (NVCC and shutil.which("cmake") and shutil.which("ninja") and shutil.which("gcc")),
                                reason="needs cmake, ninja, gcc and nvcc")


def test_the_tensorrt_library_folder_is_in_the_installed_modules_rpath(tmp_path):
    pybind11 = pytest.importorskip("pybind11")
    root = tmp_path / "TensorRT-10.3"
    (root / "lib").mkdir(parents=True)
    os.symlink(os.path.join(REPO, "csrc", "emulation", "tensorrt", "include"), str(root / "include"))
    for name in ("nvinfer", "nvinfer_plugin"):
        subprocess.run(["gcc", "-shared", "-o", str(root / "lib" / "lib{}.so".format(name)), "-x", "c", os.devnull],
                       check=True)
    build = tmp_path / "build"
    env = dict(os.environ, TENSORRT_ROOT=str(root), M2F_CUDA_ARCHITECTURES="90",
               PATH=os.path.dirname(NVCC) + os.pathsep + os.environ.get("PATH", ""))
    configured = subprocess.run(
        ["cmake", "-S", REPO, "-B", str(build), "-G", "Ninja", "-DSKBUILD_PROJECT_VERSION=0.0.0", "-DM2F_CUDA=ON",
         "-DM2F_TENSORRT=ON", "-Dpybind11_DIR=" + pybind11.get_cmake_dir(), "-DPython_EXECUTABLE=" + sys.executable],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert configured.returncode == 0, configured.stdout[-3000:]
    assert "m2f_edge: TensorRT 10.3.0 at" in configured.stdout
    lib = str(root / "lib")
    with open(str(build / "build.ninja")) as f:
        assert re.search(r"-Wl,-rpath,{}[:\s]".format(re.escape(lib)), f.read())  # the built module
    with open(str(build / "cmake_install.cmake")) as f:
        assert 'NEW_RPATH "{}"'.format(lib) in f.read()  # the installed one
