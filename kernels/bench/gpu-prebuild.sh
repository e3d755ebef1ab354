#!/usr/bin/env bash
# Builds the GPU checks here (no GPU or CUDA needed: cudarc loads CUDA at run time) and copies
# the stripped binaries into .gpu-bin/, for a GPU machine that has a driver and NVRTC but no Rust
# toolchain (the device machines lent to this project). Run them there with
# kernels/bench/gpu-run.sh; carry .gpu-bin (git-ignored through .git/info/exclude).
#
# EDGESEG_CUDA_FEATURE selects the CUDA API level: cuda-13000 (default here: CUDA 13 desktop
# drivers, 580 series) or cuda-12060 (JetPack 6).
set -euo pipefail
cd "$(dirname "$0")/../.."
FEATURE=${EDGESEG_CUDA_FEATURE:-cuda-13000}
KT=${EDGESEG_KERNELS_TARGET:-target-kernels}
RT=${EDGESEG_RUNTIME_TARGET:-target-models}
grep -qx '/.gpu-bin/' .git/info/exclude 2>/dev/null || echo '/.gpu-bin/' >> .git/info/exclude
rm -rf .gpu-bin && mkdir -p .gpu-bin
# cargo prints each test executable's path on stderr ("Executable tests/x.rs (path)")
exe() { sed -n "s|.*Executable $1 (\(.*\))|\1|p" "$2" | tail -n 1; }
CARGO_TARGET_DIR=$KT cargo test -p edgeseg-kernels --features "$FEATURE" --test gpu_parity --no-run 2> target/gpu-prebuild-k.log
cp "$(exe tests/gpu_parity.rs target/gpu-prebuild-k.log)" .gpu-bin/gpu_parity
CARGO_TARGET_DIR=$KT cargo build --release -p edgeseg-kernels --features "$FEATURE" --example gpu_bench
cp "$KT/release/examples/gpu_bench" .gpu-bin/
CARGO_TARGET_DIR=$RT cargo test -p edgeseg-runtime --features "$FEATURE" --test kernel_plan --no-run 2> target/gpu-prebuild-r.log
cp "$(exe tests/kernel_plan.rs target/gpu-prebuild-r.log)" .gpu-bin/kernel_plan
CARGO_TARGET_DIR=$RT cargo build -p edgeseg-runtime --features "$FEATURE" --example gpu_model_bench --bin edgeseg
cp "$RT/debug/examples/gpu_model_bench" "$RT/debug/edgeseg" .gpu-bin/
strip .gpu-bin/*
# xz: about 5x smaller, so the binaries fit the device tool's 64 MiB with the working tree
xz -T0 -6 .gpu-bin/*
ls -la .gpu-bin
du -sh .gpu-bin
