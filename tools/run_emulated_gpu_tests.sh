#!/usr/bin/env bash
# The GPU tests on a machine without a GPU: builds the core with M2F_CUDA=EMULATE (the .cu kernels
# compiled as C++, run thread by thread on the CPU; see csrc/emulation/emulation.hpp for what
# that checks and what it cannot; the TensorRT layer runs against the stand-in of
# csrc/emulation/tensorrt/) into build/emulated/, a copy of the package that leaves the
# checkout's m2f_edge/ alone, then runs the tests marked `gpu` against it.
#   tools/run_emulated_gpu_tests.sh [pytest arguments...]
#   M2F_EMULATED_GPU=integrated tools/run_emulated_gpu_tests.sh   # a Jetson-like device model
#   M2F_EMULATION_SANITIZE=1 tools/run_emulated_gpu_tests.sh      # under AddressSanitizer and UBSan:
#     a kernel that reads or writes outside its buffers, or a misaligned or overflowing access, fails
#   M2F_EMULATION_REVERSE_THREADS=1 ...   # each block's threads from last to first
#   M2F_EMULATION_ALL_CASES=1 ...         # also the cases that take minutes each on a CPU
#   M2F_EMULATION_IMMEDIATE=1 ...         # work runs at the call instead of when something waits for it
# Needs cmake, ninja, pybind11 and the CUDA headers (a CUDA toolkit; nvcc itself is not used).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
py="${PYTHON:-python3}"
sanitize="${M2F_EMULATION_SANITIZE:-0}"
suffix=""
[ "$sanitize" = 1 ] && suffix="-sanitized"
package_copy="$root/build/emulated$suffix"
build="$root/build/cmake-emulated$suffix"
sanitizer_flags=()
if [ "$sanitize" = 1 ]; then
  sanitizer_flags=(-DCMAKE_CXX_FLAGS="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
                   -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined")
fi

rm -rf "$package_copy"
mkdir -p "$package_copy"
cp -r m2f_edge "$package_copy/"
find "$package_copy/m2f_edge" \( -name '_core*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +

version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKBUILD_PROJECT_VERSION="$version" \
  -DM2F_CUDA=EMULATE -DM2F_TENSORRT=AUTO -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$package_copy/m2f_edge" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" "${sanitizer_flags[@]}" \
  >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "${JOBS:-$(nproc)}"

# from /tmp, so that `python -m` does not put the checkout's m2f_edge first on sys.path
cd /tmp
if [ "$sanitize" = 1 ]; then
  # Python is not instrumented: the ASan runtime must be loaded first; numpy and friends leak by design
  # (and libstdc++ with it, else its interceptor of C++ throws finds no libstdc++ to forward to)
  export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libstdc++.so)${LD_PRELOAD:+:$LD_PRELOAD}"
  # reports go to files: pytest captures the process's stderr, and a report ends the process
  logs="$root/build/sanitizer-logs"
  rm -rf "$logs" && mkdir -p "$logs"
  export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$logs/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
fi
show_sanitizer_reports() {
  if [ -n "${logs:-}" ] && compgen -G "$logs/*" >/dev/null; then
    echo "== sanitizer reports ($logs)"; head -n 60 "$logs"/*
  fi
}
trap show_sanitizer_reports EXIT
export PYTHONPATH="$package_copy${PYTHONPATH:+:$PYTHONPATH}"
"$py" - <<'PYEOF'
import m2f_edge
info = m2f_edge.build_info()
assert info["cuda_emulation"] and info["gpu_present"], info
print("testing against", m2f_edge.__file__, "on", info["gpu_name"])
PYEOF
"$py" -m pytest -p no:cacheprovider -q --rootdir "$root" "$root/tests/test_build_info.py"  # says what it is
"$py" -m pytest -m gpu -p no:cacheprovider -q -rs --rootdir "$root" "$root/tests" "$@"
