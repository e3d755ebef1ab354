// Elementwise GELU (exact erf form). Grid-stride loops; f16 variant computes in f32.
// Specification: `reference::nn::gelu`.

extern "C" __global__ void gelu_f32(const float* __restrict__ x, float* __restrict__ y,
                                    long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = gelu_erf(x[i]);
}

extern "C" __global__ void gelu_f16(const f16_t* __restrict__ x, f16_t* __restrict__ y,
                                    long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f2h(gelu_erf(h2f(x[i])));
}
