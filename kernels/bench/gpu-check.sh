#!/usr/bin/env bash
# GPU check: builds the kernels with the `cuda` feature, runs every GPU parity test
# (kernels/tests/gpu_parity.rs: each kernel against its CPU reference, proptest over shapes and
# values) and times each kernel against its memory-bandwidth or FLOP floor
# (kernels/examples/gpu_bench.rs).
#
# NEEDS A MACHINE WITH AN NVIDIA GPU, its driver (libcuda), NVRTC and cargo. Without a GPU the
# parity tests skip (printing why) and the bench exits with an error. On a GPU machine without
# cargo, build here with kernels/bench/gpu-prebuild.sh and run kernels/bench/gpu-run.sh there
# (that is how the H100 figures in docs/perf/cuda.md were made).
#
# NVRTC: the system's (JetPack: /usr/local/cuda/lib64) if the dynamic linker finds it,
# otherwise the PyPI wheel that kernels/check/compile-check.sh installs into target/cuda-venv.
# Set EDGESEG_CUDA_FEATURE=cuda-13000 for CUDA 13 drivers (default: cuda = CUDA 12.6 API).
#
# Usage: kernels/bench/gpu-check.sh   (results: paste the table into docs/perf/ with the GPU named)
set -euo pipefail
cd "$(dirname "$0")/../.."
FEATURE=${EDGESEG_CUDA_FEATURE:-cuda}

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/aarch64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
VENV=${EDGESEG_CUDA_VENV:-target/cuda-venv}
if [ -d "$VENV/site/nvidia/cuda_nvrtc/lib" ]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$VENV/site/nvidia/cuda_nvrtc/lib"
fi
mkdir -p target

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== parity tests (GPU vs CPU reference)"
cargo test -p edgeseg-kernels --features "$FEATURE" --test gpu_parity -- --nocapture 2>&1 | tee target/gpu-parity.log
if grep -q "SKIPPING GPU tests" target/gpu-parity.log; then
  echo "gpu-check: the parity tests were SKIPPED (no usable GPU, see above)" >&2
  exit 1
fi

echo "== kernel timings"
cargo run --release -p edgeseg-kernels --features "$FEATURE" --example gpu_bench
