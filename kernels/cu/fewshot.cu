// Few-shot heads. Specification: `reference::fewshot`.

// proto[k] = sum_p feat[k, p] * mask[p] / (sum_p mask[p] + eps); one block per channel.
extern "C" __global__ void masked_avg_pool_f32(const float* __restrict__ feat,
                                               const float* __restrict__ mask,
                                               float* __restrict__ proto, int c, int hw,
                                               float eps) {
    __shared__ float scratch[32];
    int k = blockIdx.x;
    if (k >= c) return;
    const float* f = feat + (long long)k * hw;
    float num = 0.0f, den = 0.0f;
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        float m = mask[p];
        num += f[p] * m;
        den += m;
    }
    num = block_sum(num, scratch);
    den = block_sum(den, scratch);
    if (threadIdx.x == 0) proto[k] = num / (den + eps);
}

#define COS_MAX_PROTOS 8

// sim[j, p] = <feat[:, p], proto[j]> / max(|feat[:, p]| |proto[j]|, eps) for up to
// COS_MAX_PROTOS prototypes per launch (the host launches chunks; `out` points at the chunk's
// first row). One thread per pixel; the block stages the prototypes and their norms in shared
// memory (dynamic: np * c floats).
extern "C" __global__ void cosine_sim_f32(const float* __restrict__ feat,
                                          const float* __restrict__ protos,
                                          float* __restrict__ out, int c, int hw, int np,
                                          float eps) {
    extern __shared__ float s_protos[];
    __shared__ float s_norm[COS_MAX_PROTOS];
    for (int i = threadIdx.x; i < np * c; i += blockDim.x) s_protos[i] = protos[i];
    __syncthreads();
    if (threadIdx.x < np) {
        float s = 0.0f;
        for (int k = 0; k < c; ++k) {
            float v = s_protos[threadIdx.x * c + k];
            s += v * v;
        }
        s_norm[threadIdx.x] = sqrtf(s);
    }
    __syncthreads();
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= hw) return;
    float dot[COS_MAX_PROTOS];
#pragma unroll
    for (int j = 0; j < COS_MAX_PROTOS; ++j) dot[j] = 0.0f;
    float fn = 0.0f;
    for (int k = 0; k < c; ++k) {
        float f = feat[(long long)k * hw + p];
        fn += f * f;
#pragma unroll
        for (int j = 0; j < COS_MAX_PROTOS; ++j)
            if (j < np) dot[j] += f * s_protos[j * c + k];
    }
    fn = sqrtf(fn);
#pragma unroll
    for (int j = 0; j < COS_MAX_PROTOS; ++j)
        if (j < np) out[(long long)j * hw + p] = dot[j] / fmaxf(fn * s_norm[j], eps);
}
