#!/usr/bin/env bash
# Compiles the TensorRT layer (csrc/tensorrt, csrc/bindings/bind_tensorrt.cpp) against TensorRT
# headers alone, for machines where TensorRT's libraries cannot be installed. Each argument is a
# folder holding NvInfer.h, NvInferPlugin.h and NvInferVersion.h (for example the include/ folder
# of a TensorRT tarball, or of a checkout of github.com/NVIDIA/TensorRT at a release tag).
# The libraries are stood in for by empty shared objects, so the module links but cannot be
# imported: this checks the API we call, not its behaviour. Any warning from our files fails it, and
# so does a module whose RPATH lacks the stand-in root's lib/ (a tarball install must import).
#   tools/check_tensorrt_api.sh /opt/trt-8.5/include /opt/trt-10.3/include
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 TENSORRT_INCLUDE_DIR [...]" >&2; exit 2; }
work="$(mktemp -d /tmp/m2f-trt-api.XXXXXX)"
trap 'rm -rf "$work"' EXIT
pybind11_dir="$(python3 -m pybind11 --cmakedir)"
status=0
for include_dir in "$@"; do
  include_dir="$(cd "$include_dir" && pwd)"
  [ -f "$include_dir/NvInfer.h" ] || { echo "$include_dir: no NvInfer.h" >&2; exit 2; }
  root="$work/root-$(echo "$include_dir" | md5sum | cut -c1-8)"
  mkdir -p "$root/lib"
  ln -s "$include_dir" "$root/include"
  for lib in nvinfer nvinfer_plugin; do gcc -shared -o "$root/lib/lib$lib.so" -x c /dev/null; done
  build="$root/build"
  if ! TENSORRT_ROOT="$root" M2F_CUDA_ARCHITECTURES="${M2F_CUDA_ARCHITECTURES:-90}" cmake -S . -B "$build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release -DSKBUILD_PROJECT_VERSION=0.0.0 -DM2F_CUDA=ON -DM2F_TENSORRT=ON \
      -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(command -v python3)" >"$build.configure.log" 2>&1; then
    cat "$build.configure.log"; status=1; continue
  fi
  version="$(sed -n 's/.*m2f_edge: TensorRT \([0-9.]*\) at.*/\1/p' "$build.configure.log")"
  if cmake --build "$build" -j "${JOBS:-2}" >"$build.log" 2>&1; then
    if grep -E "warning|error" "$build.log" | grep -E "csrc/|m2f_edge" >/dev/null; then
      echo "TensorRT $version ($include_dir): compiled WITH WARNINGS in our files:"
      grep -E -A3 "(warning|error)" "$build.log" | grep -v "^--$" | head -40
      status=1
    elif ! readelf -d "$build"/_core*.so | grep -E "R(UN)?PATH" | grep -q "$root/lib"; then
      echo "TensorRT $version ($include_dir): the module's RPATH lacks $root/lib"
      status=1
    else
      echo "TensorRT $version ($include_dir): compiled and linked, no warnings, RPATH to TensorRT's lib/"
    fi
  else
    echo "TensorRT $version ($include_dir): FAILED"
    grep -E -B2 -A6 "error" "$build.log" | head -60
    status=1
  fi
done
exit $status
