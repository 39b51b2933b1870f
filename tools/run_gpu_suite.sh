#!/usr/bin/env bash
# One command on a GPU machine: build the core with CUDA (and TensorRT where it is found), then run
# the GPU tests, the whole CPU suite against that build, and the GPU benchmark.
#   tools/run_gpu_suite.sh                 # results also in ${M2F_GPU_OUT:-build/gpu-suite}/
#   M2F_CUDA_ARCHITECTURES=90 tools/run_gpu_suite.sh   # build for this GPU only (faster)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${M2F_GPU_OUT:-build/gpu-suite}"
mkdir -p "$out"
status=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "(nvidia-smi not available)"

echo "== build with CUDA"
M2F_CUDA=ON JOBS="${JOBS:-$(nproc)}" tools/dev_build.sh || exit 1
PYTHONPATH=$PWD python3 -c "import json, m2f_edge; print(json.dumps(m2f_edge.build_info(), indent=1))" | tee "$out/build_info.json"

echo "== GPU tests (kernels vs CPU twins, zero-copy inputs, TensorRT runner where built)"
PYTHONPATH=$PWD python3 -m pytest tests -m gpu -q -rs --junitxml="$out/gpu-tests.xml" || status=1

echo "== the CPU suite against the CUDA build"
PYTHONPATH=$PWD python3 -m pytest tests -m "not gpu" -q --junitxml="$out/cpu-tests.xml" || status=1

echo "== GPU benchmark"
PYTHONPATH=$PWD python3 benchmarks/bench_gpu.py --json "$out/bench_gpu.json" | tee "$out/bench_gpu.txt" || status=1

echo "== results in $out (exit $status)"
exit $status
