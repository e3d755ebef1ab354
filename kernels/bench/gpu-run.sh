#!/usr/bin/env bash
# Runs the GPU checks that kernels/bench/gpu-prebuild.sh built, on a GPU machine with a driver
# and NVRTC but no Rust toolchain. Each step has its own time limit and the script goes on after
# a failure; the summary at the end names each step's exit status. Logs go to $OUT (or
# target/gpu-out).
#
#   1. the parity tests (every kernel against its CPU reference, proptest; gpu_parity)
#   2. kernel timings against their floors (gpu_bench)
#   3. edge-s through the CUDA backend against tract (kernel_plan tests)
#   4. edge-s and edge-s-int8, CUDA vs tract: agreement and latency (gpu_model_bench)
#   5. the streaming benchmark with the AI on the GPU (edgeseg bench-stream --device gpu)
#   6. memcheck (compute-sanitizer) over 2 cases of each parity test, where it works
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${EDGESEG_GPU_BIN:-.gpu-bin}
OUT=${OUT:-target/gpu-out}
STREAM_FRAMES=${EDGESEG_STREAM_FRAMES:-1500}
mkdir -p "$OUT"
# unpack the binaries (xz-compressed by gpu-prebuild.sh) with Python's lzma
if ls "$BIN"/*.xz >/dev/null 2>&1; then
  mkdir -p /tmp/edgeseg-gpu-bin
  python3 - "$BIN" /tmp/edgeseg-gpu-bin <<'PY'
import lzma, os, sys
src, dst = sys.argv[1], sys.argv[2]
for f in os.listdir(src):
    if f.endswith(".xz"):
        out = os.path.join(dst, f[:-3])
        with lzma.open(os.path.join(src, f)) as i, open(out, "wb") as o:
            o.write(i.read())
        os.chmod(out, 0o755)
PY
  BIN=/tmp/edgeseg-gpu-bin
fi
export EDGESEG_REPO_ROOT=$PWD EDGESEG_KERNEL_CACHE=/tmp/edgeseg-kernel-cache RUST_BACKTRACE=1
# NVRTC: the dynamic linker's, else the CUDA toolkit's, else a pip wheel's
if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
  d=$(find /usr/local/cuda*/ /usr/local/cuda/targets /opt -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | head -n 1)
  [ -n "$d" ] && export LD_LIBRARY_PATH="$(dirname "$d")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
SUMMARY=()
step() { # name seconds command...
  local name=$1 secs=$2; shift 2
  echo "=== $name"
  local t0=$SECONDS
  timeout "$secs" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("$name: exit $rc in $((SECONDS - t0)) s")
}
step parity 120 "$BIN/gpu_parity" --test-threads 1 --nocapture
step kernel_bench 120 "$BIN/gpu_bench"
step model_tests 120 "$BIN/kernel_plan" --test-threads 1 --nocapture edge_s
step model_bench 150 "$BIN/gpu_model_bench" --runs 10 models/zoo/edge-s.bundle models/zoo/edge-s-int8.bundle
step stream 80 "$BIN/edgeseg" bench-stream --bundle models/zoo/edge-s.bundle --device gpu \
  --frames "$STREAM_FRAMES" --size 1920x1080 --format yuyv --fps 30
if command -v compute-sanitizer >/dev/null; then
  PROPTEST_CASES=2 step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$BIN/gpu_parity" --test-threads 1
fi
echo "=== summary"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
