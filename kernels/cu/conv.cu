// Direct 3 x 3 convolutions (zero padding 1, stride 1 or 2) with folded BatchNorm and a fused
// activation, NCHW f32: y = act(conv(x) * scale[co] + shift[co]). 1 x 1 convolutions are GEMMs
// (gemm.cu: conv1x1_bn_act_f32). Specification: `reference::nn::conv2d_bn_act`.

#define CONV_CO 4

// Grid (ceil(wo / 16), ceil(ho / 16), n * ceil(cout / 4)), block 16 x 16. Each thread computes
// CONV_CO output channels of one output pixel, so each input value is loaded once per 4
// channels; the weights are block-uniform (broadcast through the cache).
extern "C" __global__ void __launch_bounds__(256)
conv3x3_bn_act_f32(const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ scale, const float* __restrict__ shift,
                   float* __restrict__ y, int cin, int h, int wd, int cout, int stride, int ho,
                   int wo, int act) {
    int ox = blockIdx.x * 16 + threadIdx.x, oy = blockIdx.y * 16 + threadIdx.y;
    int groups = (cout + CONV_CO - 1) / CONV_CO;
    int b = blockIdx.z / groups, co0 = (blockIdx.z % groups) * CONV_CO;
    if (ox >= wo || oy >= ho) return;
    float acc[CONV_CO];
#pragma unroll
    for (int j = 0; j < CONV_CO; ++j) acc[j] = 0.0f;
    const float* xb = x + (long long)b * cin * h * wd;
    for (int ci = 0; ci < cin; ++ci) {
        const float* xc = xb + (long long)ci * h * wd;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            int iy = oy * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                int ix = ox * stride + kx - 1;
                if (ix < 0 || ix >= wd) continue;
                float xv = xc[(long long)iy * wd + ix];
#pragma unroll
                for (int j = 0; j < CONV_CO; ++j)
                    if (co0 + j < cout)
                        acc[j] += xv * w[(((long long)(co0 + j) * cin + ci) * 3 + ky) * 3 + kx];
            }
        }
    }
#pragma unroll
    for (int j = 0; j < CONV_CO; ++j) {
        int co = co0 + j;
        if (co < cout)
            y[(((long long)b * cout + co) * ho + oy) * wo + ox] =
                apply_act(acc[j] * scale[co] + shift[co], act);
    }
}

// Depthwise 3 x 3 (weights c x 1 x 3 x 3). Grid (ceil(wo / 16), ceil(ho / 16), n * c).
extern "C" __global__ void __launch_bounds__(256)
dwconv3x3_bn_act_f32(const float* __restrict__ x, const float* __restrict__ w,
                     const float* __restrict__ scale, const float* __restrict__ shift,
                     float* __restrict__ y, int c, int h, int wd, int stride, int ho, int wo,
                     int act) {
    int ox = blockIdx.x * 16 + threadIdx.x, oy = blockIdx.y * 16 + threadIdx.y;
    int ch = blockIdx.z % c;
    if (ox >= wo || oy >= ho) return;
    const float* xc = x + (long long)blockIdx.z * h * wd;
    const float* wc = w + ch * 9;
    float acc = 0.0f;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
        int iy = oy * stride + ky - 1;
        if (iy < 0 || iy >= h) continue;
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
            int ix = ox * stride + kx - 1;
            if (ix < 0 || ix >= wd) continue;
            acc += xc[(long long)iy * wd + ix] * wc[ky * 3 + kx];
        }
    }
    y[((long long)blockIdx.z * ho + oy) * wo + ox] = apply_act(acc * scale[ch] + shift[ch], act);
}
