#!/usr/bin/env bash
# Compile check of every CUDA kernel, without a GPU (run by .ci/run; runs anywhere with
# python3 + pip and a Rust toolchain).
#
# 1. Installs NVRTC, the CUDA headers and ptxas from PyPI (pinned versions, so the resource
#    table is reproducible) into $EDGESEG_CUDA_VENV (default target/cuda-venv), reused when
#    the pinned versions match.
# 2. Builds and runs kernels/examples/compile_check.rs with the `cuda` feature: every
#    kernels/cu/*.cu goes through the product's own NVRTC code path (cudarc, dynamically
#    loading the wheel's libnvrtc through LD_LIBRARY_PATH) for sm_87 and sm_90, then
#    `ptxas -v` assembles the PTX; registers / shared memory / stack / spills per kernel.
# 3. Fails on a compile error, any spill, or when kernels/RESOURCES.md is stale.
# 4. Lints the crate with the feature on, runs its unit tests with the feature (the GPU module's
#    own), builds the GPU parity tests and runs their no-GPU paths.
#
# Usage: kernels/check/compile-check.sh [--write]   (--write regenerates RESOURCES.md)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${EDGESEG_CUDA_VENV:-target/cuda-venv}
# Pinned: the committed table depends on the exact compiler versions.
PKGS="nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86"
STAMP="$VENV/.edgeseg-cuda-pkgs"

# A virtual environment when python3 can make one; otherwise (Debian without python3-venv)
# `pip install --target`, which needs neither venv nor a writable system site (PEP 668 does not
# apply to --target). Either way the packages' nvidia/ folder ends up in $VENV/site.
if [ "$(cat "$STAMP" 2>/dev/null)" != "$PKGS" ]; then
  echo "installing $PKGS into $VENV"
  rm -rf "$VENV"
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    PY="$VENV/bin/python"
  else
    echo "(python3 -m venv unavailable: using pip install --target)"
    PY=python3
  fi
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$VENV/site" $PKGS
  echo "$PKGS" > "$STAMP"
fi

NV="$VENV/site/nvidia"
PTXAS="$NV/cuda_nvcc/bin/ptxas"
for f in "$NV/cuda_nvrtc/lib/libnvrtc.so.12" "$PTXAS" "$NV/cuda_runtime/include/cuda_fp16.h"; do
  [ -e "$f" ] || { echo "missing $f (broken install? delete $VENV and rerun)" >&2; exit 1; }
done

export LD_LIBRARY_PATH="$NV/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The GPU module is behind the `cuda` feature, which the workspace clippy step does not enable.
cargo clippy --quiet -p edgeseg-kernels --all-targets --features cuda -- -D warnings
# ... and so is the runtime's CUDA backend (backend::gpu, its tests and gpu_model_bench).
cargo clippy --quiet -p edgeseg-runtime --all-targets --features cuda -- -D warnings
cargo run --quiet -p edgeseg-kernels --features cuda --example compile_check -- \
  --ptxas "$PTXAS" --arch sm_87,sm_90 "$@"

# The GPU harness must keep building, and its no-GPU paths must hold: the parity tests skip
# (printing why) and opening a GPU without a driver is an error, not a panic. NVRTC is left off
# the library path here (its compile test would repeat the check above).
env -u LD_LIBRARY_PATH cargo test --quiet -p edgeseg-kernels --features cuda --lib --test gpu_parity
