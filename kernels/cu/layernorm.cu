// LayerNorm over the last dimension (rows x C, one block per row) and SAM's LayerNorm2d over
// the channel dimension of an NCHW tensor (one thread per pixel, coalesced along the pixels).
// Two passes over the data (mean, then the centred variance), f32 accumulation; biased
// variance as in PyTorch. Specification: `reference::nn::layer_norm` / `layer_norm2d`.

// blockDim.x threads (a multiple of 32) per row.
extern "C" __global__ void layernorm_f32(const float* __restrict__ x,
                                         const float* __restrict__ gamma,
                                         const float* __restrict__ beta, float* __restrict__ y,
                                         int rows, int c, float eps) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    if (row >= rows) return;
    const float* xr = x + (long long)row * c;
    float* yr = y + (long long)row * c;
    float s = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, scratch) / (float)c;
    float v = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float var = block_sum(v, scratch) / (float)c;
    float inv = rsqrtf(var + eps);
    for (int i = threadIdx.x; i < c; i += blockDim.x)
        yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
}

// x, y: n x c x hw. One thread per (image, pixel).
extern "C" __global__ void layernorm2d_f32(const float* __restrict__ x,
                                           const float* __restrict__ gamma,
                                           const float* __restrict__ beta,
                                           float* __restrict__ y, int n, int c, int hw,
                                           float eps) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * hw) return;
    int b = (int)(idx / hw), p = (int)(idx - (long long)b * hw);
    const float* xb = x + (long long)b * c * hw + p;
    float* yb = y + (long long)b * c * hw + p;
    float s = 0.0f;
    for (int k = 0; k < c; ++k) s += xb[(long long)k * hw];
    float mean = s / (float)c;
    float v = 0.0f;
    for (int k = 0; k < c; ++k) {
        float d = xb[(long long)k * hw] - mean;
        v += d * d;
    }
    float inv = rsqrtf(v / (float)c + eps);
    for (int k = 0; k < c; ++k)
        yb[(long long)k * hw] = (xb[(long long)k * hw] - mean) * inv * gamma[k] + beta[k];
}
