#!/usr/bin/env bash
# Compiles the CUDA core against older CUDA toolkits' headers, close to the ones JetPack 5 (CUDA 11.4) and
# JetPack 6 (CUDA 12.2, 12.6) ship, without installing those toolkits: NVIDIA's PyPI wheels carry the
# headers and libdevice but no nvcc, so the .cu files go through clang's CUDA front end (host and
# device passes, sm_72 Xavier / sm_87 Orin) and the host .cpp files that include CUDA headers
# through g++ 11 (JetPack's compilers are gcc 9 and 11), as do the sources of the CUDA emulation build
# (M2F_CUDA=EMULATE, tools/run_emulated_gpu_tests.sh). It is a syntax and API check: no code is
# generated, nothing runs. Any warning or error in our files fails it.
#   tools/check_cuda_headers.sh                 # CUDA 11.8 (the oldest on PyPI) and 12.6
#   tools/check_cuda_headers.sh 11.8.89         # one version (a nvidia-cuda-runtime-cuXX release)
#   TENSORRT_INCLUDE=/path/include tools/check_cuda_headers.sh   # also the TensorRT layer
# Needs: clang++-16 and g++-11 (Debian: apt-get install clang-16 g++-11), pip download access.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(11.8.89 12.6.77)
cache="${M2F_CUDA_HEADERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/m2f_edge/cuda-headers}"
gcc_dir="$(dirname "$(g++-11 -print-libgcc-file-name)")"
python_include="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
pybind11_include="$(python3 -c 'import pybind11; print(pybind11.get_include())')"
status=0

cuda_root() {  # $1 = version: unpacks the runtime and nvcc wheels into a CUDA-like tree, once
  local version="$1" major="${1%%.*}" root="$cache/$1"
  if [ ! -f "$root/version.txt" ]; then
    rm -rf "$root" && mkdir -p "$root/wheels" "$root/unpacked"
    local wheels=("nvidia-cuda-runtime-cu$major==$version" "nvidia-cuda-nvcc-cu$major==$version")
    [ "$major" -ge 12 ] && wheels+=("nvidia-cuda-cccl-cu$major==$version")  # <nv/target>, used by cuda_fp16.hpp from 12
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 -d "$root/wheels" "${wheels[@]}" \
      >"$root/pip.log" 2>&1 || { cat "$root/pip.log" >&2; exit 1; }
    for wheel in "$root"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$root/unpacked"; done
    mkdir -p "$root/include" "$root/nvvm" "$root/stub" "$root/bin" "$root/lib64"
    cp "$root"/unpacked/nvidia/cuda_nvcc/bin/ptxas "$root/bin/"  # clang recognises a CUDA tree by bin/ and nvvm/
    cp -r "$root"/unpacked/nvidia/cuda_runtime/include/. "$root/include/"
    cp -r "$root"/unpacked/nvidia/cuda_nvcc/include/. "$root/include/"
    [ -d "$root/unpacked/nvidia/cuda_cccl/include" ] && cp -r "$root"/unpacked/nvidia/cuda_cccl/include/. "$root/include/"
    cp -r "$root"/unpacked/nvidia/cuda_nvcc/nvvm/. "$root/nvvm/"
    # clang's CUDA wrapper includes this cuRAND header unconditionally; we use no cuRAND.
    : >"$root/stub/curand_mtgp32_kernel.h"
    # clang's device pass needs a declaration for <<<>>> in host functions that these headers lack.
    printf '#ifdef __CUDA_ARCH__\nextern "C" __host__ __device__ unsigned cudaConfigureCall(dim3, dim3, size_t = 0, cudaStream_t = 0);\n#endif\n' \
      >"$root/stub/m2f_launch_declaration.h"
    echo "CUDA Version $version" >"$root/version.txt"
  fi
  echo "$root"
}

report() {  # $1 = label, $2 = compiler output
  if echo "$2" | grep -E "(warning|error):" >/dev/null; then
    echo "$1: FAILED"; echo "$2" | grep -E -A3 "(warning|error):" | head -40; status=1
  else
    echo "$1: clean"
  fi
}

for version in "${versions[@]}"; do
  root="$(cuda_root "$version")"
  major="${version%%.*}"
  archs=(--cuda-gpu-arch=sm_87)
  [ "$major" -lt 13 ] && archs+=(--cuda-gpu-arch=sm_72)
  for source in csrc/cuda/*.cu; do
    out="$(clang++-16 -std=c++17 -x cuda --cuda-path="$root" "${archs[@]}" -nocudalib --gcc-install-dir="$gcc_dir" \
      -Wno-unknown-cuda-version -isystem "$root/stub" -include cuda_runtime.h -include m2f_launch_declaration.h \
      -Icsrc/include -Icsrc -DM2F_WITH_CUDA=1 -Wall -Wextra -fsyntax-only "$source" 2>&1 || true)"
    report "CUDA $version clang ${archs[*]#--cuda-gpu-arch=} $source" "$out"
  done
  trt_flags=()
  host_sources=(csrc/cuda/*.cpp csrc/bindings/*.cpp)
  if [ -n "${TENSORRT_INCLUDE:-}" ]; then
    trt_flags=(-isystem "$TENSORRT_INCLUDE" -DM2F_WITH_TENSORRT=1 -DM2F_TENSORRT_VERSION='"check"')
    host_sources+=(csrc/tensorrt/*.cpp)
  fi
  for source in "${host_sources[@]}"; do
    out="$(g++-11 -std=c++17 -fsyntax-only -Wall -Wextra -isystem "$root/include" -isystem "$pybind11_include" \
      -isystem "$python_include" "${trt_flags[@]}" -Icsrc/include -Icsrc -DM2F_WITH_CUDA=1 -DM2F_VERSION='"check"' \
      -DM2F_CUDA_VERSION="\"$version\"" "$source" 2>&1 || true)"
    report "CUDA $version g++-11 $source" "$out"
  done
  # the CUDA emulation build (M2F_CUDA=EMULATE): kernels as C++, csrc/emulation/ as the runtime
  for source in csrc/cuda/*.cu csrc/emulation/*.cpp; do
    kernel_flags=()
    [[ "$source" == *.cu ]] && kernel_flags=(-x c++ -include emulation/emulation.hpp)
    out="$(g++-11 -std=c++17 -fsyntax-only -Wall -Wextra -isystem "$root/include" -Icsrc/include -Icsrc \
      -DM2F_WITH_CUDA=1 -DM2F_CUDA_EMULATION=1 "${kernel_flags[@]}" "$source" 2>&1 || true)"
    report "CUDA $version g++-11 emulation $source" "$out"
  done
done
exit $status
