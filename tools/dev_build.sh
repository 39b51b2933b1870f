#!/usr/bin/env bash
# Development build: compiles m2f_edge._core with CMake into build/dev-<cuda> and puts the module
# next to m2f_edge/__init__.py, so `PYTHONPATH=$PWD python -m pytest` uses it without pip.
#   tools/dev_build.sh          # CPU-only core (fast)
#   M2F_CUDA=AUTO tools/dev_build.sh   # with the CUDA kernels when nvcc is found
set -euo pipefail
cd "$(dirname "$0")/.."
cuda="${M2F_CUDA:-OFF}"
build="build/dev-cuda-${cuda}"
mkdir -p build
pybind11_dir="$(python3 -m pybind11 --cmakedir)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
cmake -S . -B "$build" -DSKBUILD_PROJECT_VERSION="$version" -G Ninja -DCMAKE_BUILD_TYPE=Release -DM2F_DEV_INPLACE=ON \
  -DM2F_CUDA="$cuda" -DM2F_TENSORRT="${M2F_TENSORRT:-AUTO}" -Dpybind11_DIR="$pybind11_dir" \
  -DPython_EXECUTABLE="$(command -v python3)" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "${JOBS:-2}"
