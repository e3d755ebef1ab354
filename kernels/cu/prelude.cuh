// edgeseg kernels: common prelude, prepended to every kernels/cu/*.cu source by the Rust side
// (src/sources.rs) before NVRTC compiles it. It needs no header at all, so the same source
// compiles with any NVRTC (JetPack's, a desktop CUDA, the PyPI wheel) without an include path.
//
// f16 values travel as their IEEE-754 binary16 bit patterns (unsigned short); conversion uses
// the PTX cvt instructions (round to nearest even), which is what `half::f16::from_f32` does on
// the CPU side.

typedef unsigned short f16_t;
typedef signed char i8_t;
typedef unsigned char u8_t;

#define EDGESEG_INF __int_as_float(0x7f800000)

#ifdef EDGESEG_CPU_EMU
// CPU emulation (kernels/tests/cpu_emu): the compiler's _Float16, also round to nearest even.
__device__ __forceinline__ float h2f(f16_t h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

__device__ __forceinline__ f16_t f2h(float f) {
    _Float16 x = (_Float16)f;
    f16_t h;
    memcpy(&h, &x, 2);
    return h;
}
#else
__device__ __forceinline__ float h2f(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16_t f2h(float f) {
    f16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

// Activation codes shared with the Rust side (`reference::Act`).
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_GELU 2

// GELU with the exact erf form (PyTorch's default `approximate="none"`), written as
// 0.5 x erfc(-x / sqrt 2) = 0.5 x (1 + erf(x / sqrt 2)): for negative x, 1 + erff() cancels
// catastrophically (relative error up to 10% near x = -5) while erfcf keeps full precision.
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * erfcf(-x * 0.70710678118654752f);
}

__device__ __forceinline__ float apply_act(float x, int act) {
    if (act == ACT_RELU) return fmaxf(x, 0.0f);
    if (act == ACT_GELU) return gelu_erf(x);
    return x;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds at least 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -EDGESEG_INF;
    return warp_max(v);
}
