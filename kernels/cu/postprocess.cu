// Fused post-processing: low-resolution mask logits -> crop the padding -> bilinear upsample to
// the frame size (PyTorch F.interpolate, align_corners=False) -> threshold (logit > 0) -> 0/1
// mask, and in the same pass the overlay onto a copy of the RGB frame: contour pixels (mask
// pixels on the frame border or with a 4-neighbour outside the mask) take the contour colour,
// other mask pixels a translucent fill `round(c * (1 - alpha) + fill * alpha)`, and every other
// pixel is copied unchanged.
// Specification: `edgeseg_kernels::reference::postprocess_overlay` (bit-exact).
//
// Axis tables (host-built, from the CPU reference's own code): yi = [i0, i1] per output row,
// yw = [w0, w1] per output row; likewise xi / xw per output column. The crop is implicit: the
// tables only index the top-left new_h x new_w of the lh x lw logit map (row pitch lw).

__device__ __forceinline__ float bilerp(const float* __restrict__ lg, int lw,
                                        const int* __restrict__ yi, const float* __restrict__ yw,
                                        const int* __restrict__ xi, const float* __restrict__ xw,
                                        int y, int x) {
    int y0 = yi[2 * y], y1 = yi[2 * y + 1], x0 = xi[2 * x], x1 = xi[2 * x + 1];
    float wy0 = yw[2 * y], wy1 = yw[2 * y + 1], wx0 = xw[2 * x], wx1 = xw[2 * x + 1];
    const float* r0 = lg + (long long)y0 * lw;
    const float* r1 = lg + (long long)y1 * lw;
    float t0 = __fadd_rn(__fmul_rn(r0[x0], wx0), __fmul_rn(r0[x1], wx1));
    float t1 = __fadd_rn(__fmul_rn(r1[x0], wx0), __fmul_rn(r1[x1], wx1));
    return __fadd_rn(__fmul_rn(t0, wy0), __fmul_rn(t1, wy1));
}

__device__ __forceinline__ bool fg(const float* lg, int lw, const int* yi, const float* yw,
                                   const int* xi, const float* xw, int y, int x) {
    return bilerp(lg, lw, yi, yw, xi, xw, y, x) > 0.0f;
}

// One thread per output pixel. `rgb_in` / `rgb_out` (out_h x out_w x 3) may be null, in which
// case only the mask is written. `fill`, `contour`: RGB packed as 0x00BBGGRR.
extern "C" __global__ void post_mask_overlay(const float* __restrict__ logits, int lw, int out_h,
                                             int out_w, const int* __restrict__ yi,
                                             const float* __restrict__ yw,
                                             const int* __restrict__ xi,
                                             const float* __restrict__ xw,
                                             u8_t* __restrict__ mask,
                                             const u8_t* __restrict__ rgb_in,
                                             u8_t* __restrict__ rgb_out, unsigned int fill,
                                             float alpha, float one_minus_alpha,
                                             unsigned int contour) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    long long p = (long long)y * out_w + x;
    bool m = fg(logits, lw, yi, yw, xi, xw, y, x);
    mask[p] = m ? 1 : 0;
    if (rgb_in == 0 || rgb_out == 0) return;
    const u8_t* src = rgb_in + 3 * p;
    u8_t* dst = rgb_out + 3 * p;
    if (!m) {
        dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2];
        return;
    }
    bool edge = y == 0 || x == 0 || y == out_h - 1 || x == out_w - 1 ||
                !fg(logits, lw, yi, yw, xi, xw, y - 1, x) ||
                !fg(logits, lw, yi, yw, xi, xw, y + 1, x) ||
                !fg(logits, lw, yi, yw, xi, xw, y, x - 1) ||
                !fg(logits, lw, yi, yw, xi, xw, y, x + 1);
    for (int k = 0; k < 3; ++k) {
        if (edge) {
            dst[k] = (u8_t)((contour >> (8 * k)) & 0xffu);
        } else {
            float f = (float)((fill >> (8 * k)) & 0xffu);
            float v = __fadd_rn(__fmul_rn((float)src[k], one_minus_alpha), __fmul_rn(f, alpha));
            dst[k] = (u8_t)fminf(fmaxf(roundf(v), 0.0f), 255.0f);
        }
    }
}
