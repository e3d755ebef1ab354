// int8 GEMM with per-output-channel dequantisation, dp4a (sm_61+):
//   acc[m, n] = sum_k A[m, k] * W[n, k]       exactly, in i32 (4 products per __dp4a)
//   C[m, n]   = __fadd_rn(__fmul_rn((float)acc, scale[n]), bias[n])
// with scale[n] = a_scale * w_scale[n] folded on the host. Bit-exact with
// `reference::nn::gemm_i8_dequant` (no FMA contraction: explicit _rn intrinsics).
// K must be a multiple of 4 and A, W 4-byte aligned: both are read as packed int32 groups.
// 64 x 64 output tile per block of 256 threads, 4 x 4 outputs per thread, K in steps of 64
// (16 packed words) through shared memory. IMMA (mma.sync s8) is future work.

#define GI_M 64
#define GI_N 64
#define GI_KW 16  // packed 4-byte words per K step

// Grid (ceil(n / 64), ceil(m / 64)), 256 threads. bias may be null.
extern "C" __global__ void __launch_bounds__(256)
gemm_i8_dequant_f32(const int* __restrict__ a, const int* __restrict__ w,
                    const float* __restrict__ scale, const float* __restrict__ bias,
                    float* __restrict__ c, int m, int n, int k) {
    __shared__ int as[GI_KW][GI_M + 1];
    __shared__ int ws[GI_KW][GI_N + 1];
    int kw = k >> 2;
    int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    int m0 = blockIdx.y * GI_M, n0 = blockIdx.x * GI_N;
    int acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (int k0 = 0; k0 < kw; k0 += GI_KW) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            int e = threadIdx.x + 256 * r;
            int row = e / GI_KW, kk = e % GI_KW;
            int gk = k0 + kk;
            as[kk][row] = (m0 + row < m && gk < kw) ? a[(long long)(m0 + row) * kw + gk] : 0;
            ws[kk][row] = (n0 + row < n && gk < kw) ? w[(long long)(n0 + row) * kw + gk] : 0;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GI_KW; ++kk) {
            int ar[4], br[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) ar[i] = as[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) br[j] = ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(ar[i], br[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int gm = m0 + ty + 16 * i;
        if (gm >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int gn = n0 + tx + 16 * j;
            if (gn >= n) continue;
            float v = __fmul_rn((float)acc[i][j], scale[gn]);
            c[(long long)gm * n + gn] = __fadd_rn(v, bias ? bias[gn] : 0.0f);
        }
    }
}
