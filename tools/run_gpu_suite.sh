#!/usr/bin/env bash
# One command on a GPU machine (the lent H100/H200 box included: no internet, 600 s per command):
# build the core in place with CUDA (and TensorRT where it is found), then run the TensorRT checks first,
# the GPU tests (every kernel against its CPU twin, zero-copy CuPy/PyTorch inputs), m2f-edge verify on the
# demo model (the device runner against the host reference), the GPU benchmark, and the CPU suite against
# that build. Nothing is downloaded.
#   tools/run_gpu_suite.sh
# Logs and results go to $OUT when set (the device tool brings that folder back), else to
# ${M2F_GPU_OUT:-build/gpu-suite}. Exit status: 0 only if the build, the GPU tests and the
# benchmark all succeeded, m2f-edge verify passed, and the CPU suite passed (or was cut short by the time budget, which
# the log says).
# Knobs: M2F_CUDA_ARCHITECTURES (default: this GPU's compute capability, else 90), JOBS (nproc),
# PYTHON (python3), M2F_SUITE_BUDGET (seconds for the whole script, default 570).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-${M2F_GPU_OUT:-build/gpu-suite}}"
mkdir -p "$out"
exec > >(tee -a "$out/gpu-suite.log") 2>&1
py="${PYTHON:-python3}"
budget="${M2F_SUITE_BUDGET:-570}"
status=0
stage() { echo; echo "== $* (t=${SECONDS}s)"; }
# the log is written by a tee in the background: give it a moment to drain before the command ends
finish() { sleep 1; exit "$1"; }
left() { echo $(( budget - SECONDS )); }
# seconds for a stage: at most $1, at least 1 (timeout reads 0 as "no limit" and refuses negatives)
stage_limit() { local l; l="$(left)"; [ "$l" -lt 1 ] && l=1; [ "$l" -gt "$1" ] && l="$1"; echo "$l"; }
# tools/ holds the pytest plugin that turns "optional package missing" into a skip
export PYTHONPATH="$PWD:$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"
pytest_args=(-p pytest_optional_skip -p no:cacheprovider -q -rs)

stage "device and tools"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>/dev/null || echo "(nvidia-smi not available)"
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')"
export M2F_CUDA_ARCHITECTURES="${M2F_CUDA_ARCHITECTURES:-${cc:-90}}"
echo "CUDA architectures: $M2F_CUDA_ARCHITECTURES"
nvcc --version 2>/dev/null | tail -n2 || echo "(nvcc not on PATH)"
"$py" - <<'PYEOF'
import importlib.util, sys
print("python", sys.version.split()[0], sys.executable)
try:
    from importlib.metadata import version
except ImportError:  # Python 3.7
    version = None
for module, dist in (("numpy", "numpy"), ("cupy", "cupy-cuda13x"), ("torch", "torch"),
                     ("cv2", "opencv-python-headless"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                     ("pybind11", "pybind11"), ("pytest", "pytest"), ("tensorrt", "tensorrt"),
                     ("pycocotools", "pycocotools"), ("jsonschema", "jsonschema"), ("vermin", "vermin")):
    if importlib.util.find_spec(module) is None:
        print("  {:<12s} missing (tests that need it skip)".format(module))
        continue
    try:
        print("  {:<12s} {}".format(module, version(dist) if version else "present"))
    except Exception:
        print("  {:<12s} present".format(module))
PYEOF

stage "build with CUDA (architectures $M2F_CUDA_ARCHITECTURES)"
if ! M2F_CUDA=ON JOBS="${JOBS:-$(nproc)}" tools/dev_build.sh > "$out/build.log" 2>&1; then
  tail -n 60 "$out/build.log"
  echo "== build failed (full log: $out/build.log)"
  finish 1
fi
tail -n 3 "$out/build.log"
"$py" -c "import json, m2f_edge; print(json.dumps(m2f_edge.build_info(), indent=1))" | tee "$out/build_info.json"
if ! "$py" -c "import sys, m2f_edge; sys.exit(0 if m2f_edge.build_info().get('gpu_present') else 1)"; then
  echo "== the build sees no GPU: the GPU tests would all skip"
  status=1
fi

stage "TensorRT first: two engines around a Python build in one process; the X->Y->X batch sequence"
# (issue 15 items 1 and 4: a crash or a stale CUDA graph shows here before anything else runs)
timeout --signal=INT --kill-after=20 "$(stage_limit 120)" \
  "$py" -m pytest tests/test_tensorrt_device.py -m gpu "${pytest_args[@]}" --junitxml="$out/tensorrt-first.xml" || status=1

stage "GPU tests (kernels vs CPU twins, zero-copy inputs, TensorRT runner where built)"
timeout --signal=INT --kill-after=20 "$(stage_limit 300)" \
  "$py" -m pytest tests -m gpu "${pytest_args[@]}" --junitxml="$out/gpu-tests.xml" || status=1

stage "m2f-edge verify: the device runner against the host reference, on the demo model"
# the report a user's first run on a new device gives; with TensorRT the device runner runs an FP16 engine of
# the demo model, without it the report says which part could not run here
verify_args=(demo --frames 8 --json "$out/verify.json")
if "$py" -c "import sys; from m2f_edge import _core; sys.exit(0 if getattr(_core.tensorrt, 'available', False) else 1)"; then
  timeout --signal=INT --kill-after=20 "$(stage_limit 120)" \
    "$py" -m m2f_edge build demo -o "$out/demo.engine" --fp16 > "$out/verify-build.log" 2>&1 \
    && verify_args+=(--engine "$out/demo.engine") || { tail -n 20 "$out/verify-build.log"; status=1; }
fi
timeout --signal=INT --kill-after=20 "$(stage_limit 90)" "$py" -m m2f_edge verify "${verify_args[@]}" || status=1

stage "GPU benchmark"
# with TensorRT: the tiny deployable engine, to compare mapped outputs with device buffers + a copy
engine_args=()
if "$py" - "$out/tiny.engine" <<'PYEOF'
import sys
sys.path.insert(0, "tests")
from m2f_edge import _core
if not getattr(_core.tensorrt, "available", False):
    sys.exit(1)
import tiny_models
from m2f_edge.backends.engine_cache import BuildOptions
from m2f_edge.models.tensorrt_build import build_with_sidecar
tiny_models.make_deployable_model(sys.argv[1] + ".onnx")
build_with_sidecar(sys.argv[1] + ".onnx", sys.argv[1], BuildOptions(fp16=False), progress=False)
PYEOF
then engine_args=(--engine "$out/tiny.engine"); fi
timeout --signal=INT --kill-after=20 "$(stage_limit 150)" \
  "$py" benchmarks/bench_gpu.py --repeat 20 "${engine_args[@]}" --json "$out/bench_gpu.json" | tee "$out/bench_gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

stage "the CPU suite against the CUDA build"
if [ "$(left)" -gt 30 ]; then
  timeout --signal=INT --kill-after=20 "$(( $(left) - 10 ))" \
    "$py" -m pytest tests -m "not gpu" "${pytest_args[@]}" --junitxml="$out/cpu-tests.xml"
  rc=$?
  if [ "$rc" -eq 124 ]; then
    echo "(the CPU suite was cut short by the time budget; run it again on its own: $py -m pytest tests -m 'not gpu')"
  elif [ "$rc" -ne 0 ]; then
    status=1
  fi
else
  echo "(no time left for the CPU suite; run it on its own: $py -m pytest tests -m 'not gpu')"
fi

stage "done: exit $status, results in $out"
finish "$status"
