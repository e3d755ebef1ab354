// Data movement and small elementwise ops of the runtime's kernel plan, so that a frame stays on
// the GPU between the compute kernels (before these existed, each of these ops downloaded its
// operands, ran on the host and uploaded the result). All f32 unless named otherwise;
// grid-stride loops unless named otherwise.
// Specifications: `reference::nn::{add_act, add_broadcast, transpose, gather_heads_f16,
// conv_transpose2x2, box_prior_add}` and `from_f16_bits`.

// y = act(a + b).
extern "C" __global__ void add_act_f32(const float* __restrict__ a, const float* __restrict__ b,
                                       float* __restrict__ y, long long n, int act) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = apply_act(a[i] + b[i], act);
}

// y[i] = x[i] + c[i % cn] (a constant repeated over x, e.g. a bias over rows).
extern "C" __global__ void add_broadcast_f32(const float* __restrict__ x,
                                             const float* __restrict__ c, float* __restrict__ y,
                                             long long n, int cn) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = x[i] + c[i % cn];
}

// y (cols x rows) = x (rows x cols) transposed. Block 32 x 8, grid (ceil(cols / 32),
// ceil(rows / 32)): a 32 x 32 tile through shared memory (one column of padding against bank
// conflicts), so that both the reads and the writes are coalesced.
extern "C" __global__ void transpose_f32(const float* __restrict__ x, float* __restrict__ y,
                                         int rows, int cols) {
    __shared__ float tile[32][33];
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += 8) {
        int r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = x[(long long)r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
        int c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) y[(long long)c * rows + r] = tile[threadIdx.x][i];
    }
}

// Gathers an attention operand into a dense f16 batch x heads x n x dim tensor from f32 x at
// x[offset + b*sb + h*sh + t*st + d] (a linear layer's output, heads side by side).
extern "C" __global__ void gather_heads_f16(const float* __restrict__ x, f16_t* __restrict__ y,
                                            long long offset, long long sb, long long sh,
                                            long long st, int batch, int heads, int n, int dim) {
    long long total = (long long)batch * heads * n * dim;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int d = (int)(e % dim);
        long long r = e / dim;
        int t = (int)(r % n);
        r /= n;
        int h = (int)(r % heads);
        int b = (int)(r / heads);
        y[e] = f2h(x[offset + b * sb + h * sh + t * st + d]);
    }
}

// y = f32(x) for f16 x.
extern "C" __global__ void f16_to_f32(const f16_t* __restrict__ x, float* __restrict__ y,
                                      long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = h2f(x[i]);
}

// 2x2 stride-2 transposed convolution (PyTorch ConvTranspose2d layout, weight cin x cout x 2 x 2)
// of one cin x h x w image: y[co, oy, ox] = bias[co] + sum_ci x[ci, oy/2, ox/2] w[ci, co, oy%2,
// ox%2]. One thread per output element, f32 accumulation.
extern "C" __global__ void conv_transpose2x2_f32(const float* __restrict__ x,
                                                 const float* __restrict__ w,
                                                 const float* __restrict__ bias,
                                                 float* __restrict__ y, int cin, int cout, int h,
                                                 int wd) {
    int ho = 2 * h, wo = 2 * wd;
    long long total = (long long)cout * ho * wo;
    long long plane = (long long)h * wd;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(e % wo);
        long long r = e / wo;
        int oy = (int)(r % ho);
        int co = (int)(r / ho);
        const float* xp = x + (long long)(oy >> 1) * wd + (ox >> 1);
        const float* wp = w + ((long long)co * 2 + (oy & 1)) * 2 + (ox & 1);
        float acc = bias[co];
        for (int ci = 0; ci < cin; ++ci) acc += xp[ci * plane] * wp[(long long)ci * cout * 4];
        y[e] = acc;
    }
}

// The distilled students' box prior added to each of `masks` side x side logit maps:
// y = x + height * clip(1 - (u^2 + v^2), -1, 1) * has_box, u = (xs[j] - cx) / rx,
// v = (ys[i] - cy) / ry. The box (cx, cy, rx, ry, has_box) comes from the host, which reads the
// prompt points (a few values).
extern "C" __global__ void box_prior_add_f32(const float* __restrict__ x,
                                             const float* __restrict__ xs,
                                             const float* __restrict__ ys, float* __restrict__ y,
                                             float cx, float cy, float rx, float ry, float height,
                                             float has_box, int masks, int side) {
    long long plane = (long long)side * side;
    long long total = plane * masks;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long p = e % plane;
        int i = (int)(p / side), j = (int)(p % side);
        float u = (xs[j] - cx) / rx;
        float v = (ys[i] - cy) / ry;
        float q = 1.0f - (u * u + v * v);
        q = fminf(fmaxf(q, -1.0f), 1.0f);
        y[e] = x[e] + q * height * has_box;
    }
}
