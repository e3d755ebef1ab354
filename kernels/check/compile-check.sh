#!/usr/bin/env bash
# Compile check of every CUDA kernel, without a GPU (run by .ci/run; runs anywhere with
# python3 + pip and a Rust toolchain).
#
# 1. Installs NVRTC, the CUDA headers and ptxas from PyPI (pinned versions, so the resource
#    table is reproducible) into a virtual environment, reused when already present:
#    $EDGESEG_CUDA_VENV, default target/cuda-venv.
# 2. Builds and runs kernels/examples/compile_check.rs with the `cuda` feature: every
#    kernels/cu/*.cu goes through the product's own NVRTC code path (cudarc, dynamically
#    loading the wheel's libnvrtc through LD_LIBRARY_PATH) for sm_87 and sm_90, then
#    `ptxas -v` assembles the PTX; registers / shared memory / stack / spills per kernel.
# 3. Fails on a compile error, any spill, or when kernels/RESOURCES.md is stale.
#
# Usage: kernels/check/compile-check.sh [--write]   (--write regenerates RESOURCES.md)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${EDGESEG_CUDA_VENV:-target/cuda-venv}
# Pinned: the committed table depends on the exact compiler versions.
PKGS="nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86"
STAMP="$VENV/.edgeseg-cuda-pkgs"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PKGS" ]; then
  echo "installing $PKGS into $VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PKGS
  echo "$PKGS" > "$STAMP"
fi

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
NV="$SITE/nvidia"
PTXAS="$NV/cuda_nvcc/bin/ptxas"
for f in "$NV/cuda_nvrtc/lib/libnvrtc.so.12" "$PTXAS" "$NV/cuda_runtime/include/cuda_fp16.h"; do
  [ -e "$f" ] || { echo "missing $f (broken venv? delete $VENV and rerun)" >&2; exit 1; }
done

export LD_LIBRARY_PATH="$NV/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo run --quiet -p edgeseg-kernels --features cuda --example compile_check -- \
  --ptxas "$PTXAS" --arch sm_87,sm_90 "$@"
