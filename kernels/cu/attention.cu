// Flash-style multi-head attention, f16 in / f16 out, f32 accumulation, online softmax (the
// nq x nk score matrix is never written to memory). Global attention (SAM's decoder, ViT
// blocks) and windowed attention (TinyViT: window_partition_f16 -> attention with
// batch = batch * windows -> window_reverse_f16) use the same kernel.
//
// Every operand is addressed through [batch, head, token] strides (elements; the head dimension
// is contiguous), so a linear layer's [b, n, h*d] output is consumed in place, with no
// transpose. Optional additive bias: heads x nq x nk f32, shared by the whole batch (TinyViT's
// per-head attention biases, identical for every window).
//
// Grid (ceil(nq / 64), heads, batch), 64 threads: one thread per query row, keys and values
// staged in shared memory 64 at a time (2 * 64 * D f16 = 16 KiB for D = 64).
// Specification: `reference::nn::attention_f16`.

#define ATT_BQ 64
#define ATT_BK 64

// CH: keys scored per online-softmax step (registers s[CH]); 8 for D = 64 keeps NVRTC's
// compile time of the fully unrolled loops at a few seconds (16 takes ~20 s on one core).
template <int D, int CH>
__device__ __forceinline__ void attention_impl(
    const f16_t* __restrict__ q, const f16_t* __restrict__ k, const f16_t* __restrict__ v,
    f16_t* __restrict__ o, const float* __restrict__ bias, int nq, int nk, float scale,
    long long qsb, long long qsh, long long qsn, long long ksb, long long ksh, long long ksn,
    long long vsb, long long vsh, long long vsn, long long osb, long long osh, long long osn) {
    __shared__ f16_t ks[ATT_BK * D];
    __shared__ f16_t vs[ATT_BK * D];
    int b = blockIdx.z, h = blockIdx.y;
    int i = blockIdx.x * ATT_BQ + threadIdx.x;
    bool active = i < nq;
    float qr[D], acc[D];
    const f16_t* qp = q + b * qsb + h * qsh + (long long)(active ? i : 0) * qsn;
#pragma unroll
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? h2f(qp[d]) * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -EDGESEG_INF, l = 0.0f;
    const float* brow = bias ? bias + ((long long)h * nq + (active ? i : 0)) * nk : 0;
    const f16_t* kb = k + b * ksb + h * ksh;
    const f16_t* vb = v + b * vsb + h * vsh;
    for (int t0 = 0; t0 < nk; t0 += ATT_BK) {
        int nvalid = min(ATT_BK, nk - t0);
        __syncthreads();
        for (int e = threadIdx.x; e < ATT_BK * D; e += blockDim.x) {
            int j = e / D, d = e - j * D;
            bool ok = j < nvalid;
            ks[e] = ok ? kb[(long long)(t0 + j) * ksn + d] : (f16_t)0;
            vs[e] = ok ? vb[(long long)(t0 + j) * vsn + d] : (f16_t)0;
        }
        __syncthreads();
        if (!active) continue;
        for (int c0 = 0; c0 < nvalid; c0 += CH) {
            float s[CH];
            float cmax = -EDGESEG_INF;
#pragma unroll
            for (int jj = 0; jj < CH; ++jj) {
                int j = c0 + jj;
                float dot = 0.0f;
#pragma unroll
                for (int d = 0; d < D; ++d) dot += qr[d] * h2f(ks[j * D + d]);
                if (brow && j < nvalid) dot += brow[t0 + j];
                s[jj] = j < nvalid ? dot : -EDGESEG_INF;
                cmax = fmaxf(cmax, s[jj]);
            }
            float mnew = fmaxf(m, cmax);
            float corr = __expf(m - mnew);
            l *= corr;
#pragma unroll
            for (int d = 0; d < D; ++d) acc[d] *= corr;
#pragma unroll
            for (int jj = 0; jj < CH; ++jj) {
                float p = __expf(s[jj] - mnew);
                l += p;
                int j = c0 + jj;
#pragma unroll
                for (int d = 0; d < D; ++d) acc[d] += p * h2f(vs[j * D + d]);
            }
            m = mnew;
        }
    }
    if (!active) return;
    float inv = 1.0f / l;
    f16_t* op = o + b * osb + h * osh + (long long)i * osn;
#pragma unroll
    for (int d = 0; d < D; ++d) op[d] = f2h(acc[d] * inv);
}

#define ATT_ENTRY(D, CH)                                                                       \
    extern "C" __global__ void __launch_bounds__(ATT_BQ) attention_f16_d##D(                  \
        const f16_t* q, const f16_t* k, const f16_t* v, f16_t* o, const float* bias, int nq,  \
        int nk, float scale, long long qsb, long long qsh, long long qsn, long long ksb,      \
        long long ksh, long long ksn, long long vsb, long long vsh, long long vsn,            \
        long long osb, long long osh, long long osn) {                                        \
        attention_impl<D, CH>(q, k, v, o, bias, nq, nk, scale, qsb, qsh, qsn, ksb, ksh, ksn, vsb, \
                          vsh, vsn, osb, osh, osn);                                           \
    }

ATT_ENTRY(16, 16)
ATT_ENTRY(32, 16)
ATT_ENTRY(64, 8)
// the distilled students' decoder (96 wide, 4 heads: 24; downsampled cross-attention: 12) and
// other small widths
ATT_ENTRY(8, 16)
ATT_ENTRY(12, 16)
ATT_ENTRY(24, 16)
ATT_ENTRY(48, 8)

// x: b x h x w x c  ->  out: (b * nh * nw) x ws*ws x c, zero padding bottom/right.
// One thread per output element; f16 (attention operands) and f32 (the runtime's plan).
template <typename T>
__device__ __forceinline__ void window_partition_impl(const T* __restrict__ x,
                                                      T* __restrict__ out, int b, int h, int w,
                                                      int c, int ws) {
    int nh = (h + ws - 1) / ws, nw = (w + ws - 1) / ws;
    long long total = (long long)b * nh * nw * ws * ws * c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int ch = (int)(e % c);
        long long t = e / c;
        int tok = (int)(t % (ws * ws));
        long long win = t / (ws * ws);
        int wx = (int)(win % nw), wy = (int)((win / nw) % nh), bi = (int)(win / ((long long)nw * nh));
        int y = wy * ws + tok / ws, xx = wx * ws + tok % ws;
        out[e] = (y < h && xx < w) ? x[(((long long)bi * h + y) * w + xx) * c + ch] : (T)0;
    }
}

// Inverse of window_partition (drops the padding). One thread per output element.
template <typename T>
__device__ __forceinline__ void window_reverse_impl(const T* __restrict__ win,
                                                    T* __restrict__ x, int b, int h, int w, int c,
                                                    int ws) {
    int nh = (h + ws - 1) / ws, nw = (w + ws - 1) / ws;
    long long total = (long long)b * h * w * c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int ch = (int)(e % c);
        long long t = e / c;
        int xx = (int)(t % w);
        long long r = t / w;
        int y = (int)(r % h), bi = (int)(r / h);
        long long wi = ((long long)bi * nh + y / ws) * nw + xx / ws;
        x[e] = win[(wi * ws * ws + (y % ws) * ws + xx % ws) * c + ch];
    }
}

extern "C" __global__ void window_partition_f16(const f16_t* __restrict__ x,
                                                f16_t* __restrict__ out, int b, int h, int w,
                                                int c, int ws) {
    window_partition_impl(x, out, b, h, w, c, ws);
}

extern "C" __global__ void window_reverse_f16(const f16_t* __restrict__ win,
                                              f16_t* __restrict__ x, int b, int h, int w, int c,
                                              int ws) {
    window_reverse_impl(win, x, b, h, w, c, ws);
}

extern "C" __global__ void window_partition_f32(const float* __restrict__ x,
                                                float* __restrict__ out, int b, int h, int w,
                                                int c, int ws) {
    window_partition_impl(x, out, b, h, w, c, ws);
}

extern "C" __global__ void window_reverse_f32(const float* __restrict__ win,
                                              float* __restrict__ x, int b, int h, int w, int c,
                                              int ws) {
    window_reverse_impl(win, x, b, h, w, c, ws);
}
