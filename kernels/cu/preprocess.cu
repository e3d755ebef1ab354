// Fused pre-processing: camera frame (RGB8 / GREY8 / YUYV / NV12) -> colour conversion ->
// OpenCV INTER_AREA resize of the longest side -> min-max normalisation -> zero padding ->
// NCHW f32 or f16, in two launches:
//
//   pre_resize:        reads every frame byte once, converts to RGB on the fly, writes the
//                      resized u8 image (new_h x new_w x 3, at most size^2 x 3 bytes) and folds
//                      its minimum and maximum into minmax[0..2] (atomics, one per block).
//   pre_normalize_*:   reads the small resized image, writes the padded size x size NCHW tensor.
//
// The min-max normalisation needs the global extremes of the resized image before any output
// value can be written, hence the split; the frame itself is read once.
// Specification: `edgeseg_kernels::reference::preprocess_frame` (bit-exact: every f32 operation
// is written with explicit _rn intrinsics so that no FMA contraction changes a rounding).

#define FMT_RGB8 0
#define FMT_GREY8 1
#define FMT_YUYV 2
#define FMT_NV12 3

#define MODE_FAST 0
#define MODE_GENERAL 1
#define MODE_ENLARGE 2

__device__ __forceinline__ int clamp_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// OpenCV's fixed-point ITU-R BT.601 (limited range) YUV -> RGB (cvtColor YUV2RGB_NV12/_YUYV).
__device__ __forceinline__ void yuv_to_rgb(int Y, int U, int V, int* rgb) {
    const int CY = 1220542, CUB = 2116026, CUG = -409993, CVG = -852492, CVR = 1673527;
    int y = max(0, Y - 16) * CY;
    int u = U - 128, v = V - 128;
    int ruv = (1 << 19) + CVR * v;
    int guv = (1 << 19) + CVG * v + CUG * u;
    int buv = (1 << 19) + CUB * u;
    rgb[0] = clamp_u8((y + ruv) >> 20);
    rgb[1] = clamp_u8((y + guv) >> 20);
    rgb[2] = clamp_u8((y + buv) >> 20);
}

// RGB of source pixel (x, y). `stride` is the row pitch in bytes of the packed image or of the
// NV12 luma plane; the NV12 chroma plane follows the luma plane (stride * h bytes) with the same
// pitch.
__device__ __forceinline__ void fetch_rgb(const u8_t* f, int fmt, int stride, int h, int x, int y,
                                          int* rgb) {
    if (fmt == FMT_RGB8) {
        const u8_t* p = f + (long long)y * stride + 3 * x;
        rgb[0] = p[0]; rgb[1] = p[1]; rgb[2] = p[2];
    } else if (fmt == FMT_GREY8) {
        int g = f[(long long)y * stride + x];
        rgb[0] = g; rgb[1] = g; rgb[2] = g;
    } else if (fmt == FMT_YUYV) {
        const u8_t* p = f + (long long)y * stride + 4 * (x >> 1);
        yuv_to_rgb(p[(x & 1) * 2], p[1], p[3], rgb);
    } else {
        int Y = f[(long long)y * stride + x];
        const u8_t* uv = f + (long long)stride * h + (long long)(y >> 1) * stride + (x & ~1);
        yuv_to_rgb(Y, uv[0], uv[1], rgb);
    }
}

// One thread per destination pixel (all three channels).
// Tables (built on the host from the same code as the CPU reference):
//   MODE_GENERAL: xi = [offsets (dst_w + 1) | source index per entry], xf = weight per entry
//                 (OpenCV's f32 area tables), likewise yi / yf.
//   MODE_ENLARGE: xi = [i0 (dst_w) | i1 (dst_w) | a0 (dst_w) | a1 (dst_w)] 11-bit weights.
//   MODE_FAST:    integer scales fsx, fsy and inv_area = 1 / (fsx * fsy) in f32.
extern "C" __global__ void pre_resize(const u8_t* __restrict__ frame, int fmt, int src_h,
                                      int src_w, int stride, int mode, int dst_h, int dst_w,
                                      const int* __restrict__ xi, const float* __restrict__ xf,
                                      const int* __restrict__ yi, const float* __restrict__ yf,
                                      int fsx, int fsy, float inv_area,
                                      u8_t* __restrict__ resized, unsigned int* minmax) {
    __shared__ unsigned int s_min, s_max;
    if (threadIdx.x == 0) { s_min = 255u; s_max = 0u; }
    __syncthreads();
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < dst_h * dst_w) {
        int dy = idx / dst_w, dx = idx - dy * dst_w;
        int out[3];
        int rgb[3];
        if (mode == MODE_FAST) {
            unsigned int s[3] = {0u, 0u, 0u};
            for (int yy = 0; yy < fsy; ++yy)
                for (int xx = 0; xx < fsx; ++xx) {
                    fetch_rgb(frame, fmt, stride, src_h, dx * fsx + xx, dy * fsy + yy, rgb);
                    s[0] += rgb[0]; s[1] += rgb[1]; s[2] += rgb[2];
                }
            for (int k = 0; k < 3; ++k)
                out[k] = (fsx == 2 && fsy == 2)
                             ? (int)((s[k] + 2u) >> 2)
                             : clamp_u8((int)rintf(__fmul_rn((float)s[k], inv_area)));
        } else if (mode == MODE_GENERAL) {
            float sum[3] = {0.0f, 0.0f, 0.0f};
            int xb = xi[dx], xe = xi[dx + 1], yb = yi[dy], ye = yi[dy + 1];
            const int* xsi = xi + dst_w + 1;
            const int* ysi = yi + dst_h + 1;
            for (int t = yb; t < ye; ++t) {
                float buf[3] = {0.0f, 0.0f, 0.0f};
                for (int u = xb; u < xe; ++u) {
                    fetch_rgb(frame, fmt, stride, src_h, xsi[u], ysi[t], rgb);
                    float a = xf[u];
                    for (int k = 0; k < 3; ++k) buf[k] = __fadd_rn(buf[k], __fmul_rn((float)rgb[k], a));
                }
                float beta = yf[t];
                for (int k = 0; k < 3; ++k) sum[k] = __fadd_rn(sum[k], __fmul_rn(beta, buf[k]));
            }
            for (int k = 0; k < 3; ++k) out[k] = clamp_u8((int)rintf(sum[k]));
        } else {
            int x0 = xi[dx], x1 = xi[dst_w + dx], a0 = xi[2 * dst_w + dx], a1 = xi[3 * dst_w + dx];
            int y0 = yi[dy], y1 = yi[dst_h + dy], b0 = yi[2 * dst_h + dy], b1 = yi[3 * dst_h + dy];
            int p00[3], p01[3], p10[3], p11[3];
            fetch_rgb(frame, fmt, stride, src_h, x0, y0, p00);
            fetch_rgb(frame, fmt, stride, src_h, x1, y0, p01);
            fetch_rgb(frame, fmt, stride, src_h, x0, y1, p10);
            fetch_rgb(frame, fmt, stride, src_h, x1, y1, p11);
            for (int k = 0; k < 3; ++k) {
                long long r0 = (long long)p00[k] * a0 + (long long)p01[k] * a1;
                long long r1 = (long long)p10[k] * a0 + (long long)p11[k] * a1;
                long long v = (b0 * r0 + b1 * r1 + (1ll << 21)) >> 22;
                out[k] = (int)(v < 0 ? 0 : (v > 255 ? 255 : v));
            }
        }
        u8_t* o = resized + 3 * idx;
        o[0] = (u8_t)out[0]; o[1] = (u8_t)out[1]; o[2] = (u8_t)out[2];
        int lo = min(out[0], min(out[1], out[2])), hi = max(out[0], max(out[1], out[2]));
        atomicMin(&s_min, (unsigned int)lo);
        atomicMax(&s_max, (unsigned int)hi);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        atomicMin(&minmax[0], s_min);
        atomicMax(&minmax[1], s_max);
    }
}

// lut[v] = (float)((double)(v - min) / max(max - min, 1e-8)), as NumPy computes it in f64.
__device__ __forceinline__ void build_lut(const unsigned int* minmax, float* lut) {
    unsigned int mn = minmax[0], mx = minmax[1];
    double den = mx > mn ? (double)(mx - mn) : 1e-8;
    for (int v = threadIdx.x; v < 256; v += blockDim.x)
        lut[v] = (unsigned)v >= mn ? (float)((double)(v - (int)mn) / den) : 0.0f;
    __syncthreads();
}

// One thread per output element of the size x size x 3 tensor (CHW); zero outside the image.
extern "C" __global__ void pre_normalize_f32(const u8_t* __restrict__ resized,
                                             const unsigned int* __restrict__ minmax, int new_h,
                                             int new_w, int size, float* __restrict__ out) {
    __shared__ float lut[256];
    build_lut(minmax, lut);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int plane = size * size;
    if (idx >= 3 * plane) return;
    int c = idx / plane, r = idx - c * plane, y = r / size, x = r - y * size;
    out[idx] = (y < new_h && x < new_w) ? lut[resized[(y * new_w + x) * 3 + c]] : 0.0f;
}

extern "C" __global__ void pre_normalize_f16(const u8_t* __restrict__ resized,
                                             const unsigned int* __restrict__ minmax, int new_h,
                                             int new_w, int size, f16_t* __restrict__ out) {
    __shared__ float lut[256];
    build_lut(minmax, lut);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int plane = size * size;
    if (idx >= 3 * plane) return;
    int c = idx / plane, r = idx - c * plane, y = r / size, x = r - y * size;
    out[idx] = f2h((y < new_h && x < new_w) ? lut[resized[(y * new_w + x) * 3 + c]] : 0.0f);
}
