// CPU emulation of the CUDA C subset the edgeseg kernels use, for tests on machines without a
// GPU (kernels/tests/cpu_emulated.rs). Each CUDA thread of a block is a fiber; blocks run one
// after another, so `__shared__` maps to function-level `static` storage. __syncthreads and
// warp shuffles are barriers between the fibers. Float arithmetic is IEEE single precision without contraction
// (compiled with -ffp-contract=off), like the kernels' explicit _rn intrinsics; transcendental
// functions come from the C library, so they differ from CUDA's by a few ulps (within the f32
// tier). Not a CUDA implementation: just enough to run these kernels' source unchanged.
#pragma once
#include <cmath>
#include <cstring>
#include <cstdint>

#define EDGESEG_CPU_EMU 1
#define __global__
#define __device__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

struct emu_dim3 { unsigned int x, y, z; };
extern emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
extern unsigned char* emu_dyn_smem;

void __syncthreads();
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
#define __expf(x) expf(x)
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
static inline unsigned atomicMin(unsigned* p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
static inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
