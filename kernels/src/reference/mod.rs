//! CPU references of the CUDA kernels: each function here is the specification
//! its kernel is tested against (see `tests/gpu_parity.rs`).
//!
//! * [`preprocess_frame`]: camera frame (RGB8 / GREY8 / YUYV / NV12) → RGB →
//!   LiteMedSAM pre-processing ([`crate::prepost`]) at any model size, f32 or f16.
//! * [`postprocess_overlay`]: low-res logits → mask ([`crate::prepost`]) plus the
//!   overlay (translucent fill + contour) onto the RGB frame.
//! * [`nn`]: LayerNorm, LayerNorm2d, GELU, softmax, attention, window
//!   partition, convolutions with folded BatchNorm, the 2×2 stride-2 transposed
//!   convolution (no kernel yet), GEMMs (f32, f16, int8).
//! * [`fewshot`]: masked average pooling and cosine similarity to prototypes.
//! * [`tol`]: the tolerance tiers of the parity tests.
//!
//! The `plan` functions turn a shape into the exact tables the GPU kernels read
//! (built by the same code as the CPU path), and the `emulate_*` functions run
//! a kernel's per-output-pixel algorithm on the CPU from those tables; unit tests
//! check that they agree bit for bit with the reference, so the kernels' index
//! and rounding logic is tested even where no GPU is present.

pub mod fewshot;
pub mod nn;
pub mod tol;

use crate::prepost::{
    check_len, linear_axis, longest_side_size, normalize_min_max, pad_hwc_to_chw, resize_area_u8,
    resize_plan, threshold_logits, upsample_logits, PrepError, Preprocessed, ResizePlan,
};

/// Pixel layout of a camera frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 3 bytes per pixel, R, G, B.
    Rgb8,
    /// 1 byte per pixel, replicated to R = G = B.
    Grey8,
    /// Packed 4:2:2, `Y0 U Y1 V` for each pair of pixels (V4L2 `YUYV`); even width.
    Yuyv,
    /// Planar 4:2:0: the Y plane, then interleaved `U V` at half resolution with
    /// the same row pitch; even width and height.
    Nv12,
}

impl PixelFormat {
    /// The code the GPU kernel uses (`FMT_*` in `cu/preprocess.cu`).
    pub fn code(self) -> i32 {
        match self {
            PixelFormat::Rgb8 => 0,
            PixelFormat::Grey8 => 1,
            PixelFormat::Yuyv => 2,
            PixelFormat::Nv12 => 3,
        }
    }

    /// Minimum row pitch in bytes for a frame `width` pixels wide.
    pub fn min_stride(self, width: usize) -> Option<usize> {
        match self {
            PixelFormat::Rgb8 => width.checked_mul(3),
            PixelFormat::Grey8 | PixelFormat::Nv12 => Some(width),
            PixelFormat::Yuyv => width.checked_mul(2),
        }
    }
}

/// A borrowed camera frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Pixel layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row pitch in bytes (of the luma plane for NV12).
    pub stride: usize,
    /// The bytes.
    pub data: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame needs (`stride × rows`, 1.5× rows for NV12), after checking
    /// sizes, pitch and the even sizes the chroma subsampling requires.
    pub fn required_len(&self) -> Result<usize, PrepError> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return Err(PrepError::BadSize(format!("frame {w}x{h}")));
        }
        let min = self
            .format
            .min_stride(w)
            .ok_or_else(|| PrepError::BadSize(format!("frame width {w} overflows")))?;
        if self.stride < min {
            return Err(PrepError::BadSize(format!(
                "stride {} < {min} for {:?} width {w}",
                self.stride, self.format
            )));
        }
        let odd_w = !w.is_multiple_of(2);
        let odd_h = !h.is_multiple_of(2);
        match self.format {
            PixelFormat::Yuyv if odd_w => {
                return Err(PrepError::BadSize(format!("YUYV width {w} is odd")))
            }
            PixelFormat::Nv12 if odd_w || odd_h => {
                return Err(PrepError::BadSize(format!("NV12 size {w}x{h} is odd")))
            }
            _ => {}
        }
        let rows = if self.format == PixelFormat::Nv12 {
            h + h / 2
        } else {
            h
        };
        rows.checked_mul(self.stride)
            .ok_or_else(|| PrepError::BadSize(format!("frame {w}x{h} overflows")))
    }
}

/// OpenCV's fixed-point ITU-R BT.601 limited-range YUV → RGB, as `cv2.cvtColor`
/// with `COLOR_YUV2RGB_NV12` / `COLOR_YUV2RGB_YUYV` computes it (20-bit
/// coefficients, round half up, saturate): [`crate::pixfmt::ycbcr_to_rgb`], the
/// CPU stream path's conversion, so both paths agree bit for bit.
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    crate::pixfmt::ycbcr_to_rgb(y, u, v)
}

/// Converts a frame to packed RGB (`height × width × 3`); for tightly packed
/// frames this is [`crate::pixfmt::to_rgb`], plus a row pitch.
pub fn frame_to_rgb(frame: &Frame<'_>) -> Result<Vec<u8>, PrepError> {
    let need = frame.required_len()?;
    if frame.data.len() < need {
        return Err(PrepError::BadLength {
            what: "frame",
            got: frame.data.len(),
            expected: need,
        });
    }
    let (w, h, s, d) = (frame.width, frame.height, frame.stride, frame.data);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = &d[y * s..];
        for x in 0..w {
            let px = match frame.format {
                PixelFormat::Rgb8 => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
                PixelFormat::Grey8 => [row[x]; 3],
                PixelFormat::Yuyv => {
                    let p = &row[4 * (x / 2)..];
                    yuv_to_rgb(p[(x % 2) * 2], p[1], p[3])
                }
                PixelFormat::Nv12 => {
                    let uv = &d[s * h + (y / 2) * s + (x & !1)..];
                    yuv_to_rgb(row[x], uv[0], uv[1])
                }
            };
            out.extend_from_slice(&px);
        }
    }
    Ok(out)
}

/// Fused pre-processing specification: [`frame_to_rgb`], then LiteMedSAM's
/// steps 3–6 ([`crate::prepost`]) for a `size`×`size` model input: longest side
/// to `size` (OpenCV `INTER_AREA`), min–max normalization, zero padding, CHW f32.
/// For f16 inputs the result is rounded with [`to_f16_bits`].
pub fn preprocess_frame(frame: &Frame<'_>, size: usize) -> Result<Preprocessed, PrepError> {
    let rgb = frame_to_rgb(frame)?;
    let (h, w) = (frame.height, frame.width);
    let (new_h, new_w) = longest_side_size(h, w, size);
    if new_h == 0 || new_w == 0 {
        return Err(PrepError::BadSize(format!(
            "frame {h}x{w} resizes to {new_h}x{new_w}"
        )));
    }
    let resized = resize_area_u8(&rgb, h, w, 3, new_h, new_w)?;
    let norm = normalize_min_max(&resized);
    let input = pad_hwc_to_chw(&norm, new_h, new_w, 3, size)?;
    Ok(Preprocessed {
        input,
        resized,
        orig_h: h,
        orig_w: w,
        new_h,
        new_w,
    })
}

/// f32 → IEEE binary16 bit patterns, round to nearest even (the GPU's `cvt.rn.f16.f32`).
pub fn to_f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|&x| half::f16::from_f32(x).to_bits())
        .collect()
}

/// IEEE binary16 bit patterns → f32 (exact).
pub fn from_f16_bits(v: &[u16]) -> Vec<f32> {
    v.iter()
        .map(|&x| half::f16::from_bits(x).to_f32())
        .collect()
}

/// The tables of the GPU resize kernel (`pre_resize` in `cu/preprocess.cu`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeTables {
    /// `MODE_*` of the kernel: 0 fast (integer scales), 1 general, 2 enlarge.
    pub mode: i32,
    /// x table, integer part (layout per mode, see the kernel).
    pub xi: Vec<i32>,
    /// x table, f32 weights (general mode; one dummy entry otherwise).
    pub xf: Vec<f32>,
    /// y table, integer part.
    pub yi: Vec<i32>,
    /// y table, f32 weights.
    pub yf: Vec<f32>,
    /// Fast mode: integer scale along x.
    pub fsx: i32,
    /// Fast mode: integer scale along y.
    pub fsy: i32,
    /// Fast mode: `1 / (fsx·fsy)` in f32.
    pub inv_area: f32,
}

fn general_axis(tab: &[crate::prepost::AreaTab], dsize: usize) -> (Vec<i32>, Vec<f32>) {
    let mut off = vec![0i32; dsize + 1];
    for t in tab {
        off[t.di + 1] += 1;
    }
    for d in 0..dsize {
        off[d + 1] += off[d];
    }
    let mut xi = off;
    xi.extend(tab.iter().map(|t| t.si as i32));
    (xi, tab.iter().map(|t| t.alpha).collect())
}

fn enlarge_table(ax: &[(usize, bool, i32, i32)]) -> Vec<i32> {
    let i0 = ax.iter().map(|a| a.0 as i32);
    let i1 = ax.iter().map(|a| (if a.1 { a.0 } else { a.0 + 1 }) as i32);
    let a0 = ax.iter().map(|a| a.2);
    let a1 = ax.iter().map(|a| if a.1 { 0 } else { a.3 });
    i0.chain(i1).chain(a0).chain(a1).collect()
}

/// Builds the GPU resize tables for `src_h`×`src_w` → `dst_h`×`dst_w` from the
/// same plan as [`resize_area_u8`]. Sizes must be non-zero and fit in `i32`.
pub fn plan_resize(
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Result<ResizeTables, PrepError> {
    let max = i32::MAX as usize / 4;
    if [src_h, src_w, dst_h, dst_w]
        .iter()
        .any(|&v| v == 0 || v > max)
    {
        return Err(PrepError::BadSize(format!(
            "resize {src_h}x{src_w} -> {dst_h}x{dst_w}"
        )));
    }
    let mut t = ResizeTables {
        mode: 0,
        xi: vec![0],
        xf: vec![0.0],
        yi: vec![0],
        yf: vec![0.0],
        fsx: 1,
        fsy: 1,
        inv_area: 1.0,
    };
    match resize_plan(src_h, src_w, dst_h, dst_w) {
        ResizePlan::Fast { sy, sx } => {
            t.fsx = sx as i32;
            t.fsy = sy as i32;
            t.inv_area = 1.0f32 / (sx * sy) as f32;
        }
        ResizePlan::General { ytab, xtab } => {
            t.mode = 1;
            (t.xi, t.xf) = general_axis(&xtab, dst_w);
            (t.yi, t.yf) = general_axis(&ytab, dst_h);
        }
        ResizePlan::Enlarge { ys, xs } => {
            t.mode = 2;
            t.xi = enlarge_table(&xs);
            t.yi = enlarge_table(&ys);
        }
    }
    Ok(t)
}

/// CPU emulation of the `pre_resize` kernel on an RGB image: every destination
/// pixel computed independently from [`ResizeTables`], with the kernel's
/// operation order. Must equal [`resize_area_u8`] bit for bit.
pub fn emulate_pre_resize(
    rgb: &[u8],
    src_w: usize,
    t: &ResizeTables,
    dst_h: usize,
    dst_w: usize,
) -> Vec<u8> {
    let px = |x: i32, y: i32, k: usize| rgb[(y as usize * src_w + x as usize) * 3 + k];
    let mut out = vec![0u8; dst_h * dst_w * 3];
    for dy in 0..dst_h {
        for dx in 0..dst_w {
            for k in 0..3 {
                let v = match t.mode {
                    0 => {
                        let mut s = 0u32;
                        for yy in 0..t.fsy {
                            for xx in 0..t.fsx {
                                s += u32::from(px(
                                    dx as i32 * t.fsx + xx,
                                    dy as i32 * t.fsy + yy,
                                    k,
                                ));
                            }
                        }
                        if t.fsx == 2 && t.fsy == 2 {
                            ((s + 2) >> 2) as u8
                        } else {
                            (s as f32 * t.inv_area).round_ties_even().clamp(0.0, 255.0) as u8
                        }
                    }
                    1 => {
                        let (xb, xe) = (t.xi[dx] as usize, t.xi[dx + 1] as usize);
                        let (yb, ye) = (t.yi[dy] as usize, t.yi[dy + 1] as usize);
                        let mut sum = 0f32;
                        for yk in yb..ye {
                            let sy = t.yi[dst_h + 1 + yk];
                            let mut buf = 0f32;
                            for xk in xb..xe {
                                let sx = t.xi[dst_w + 1 + xk];
                                buf += f32::from(px(sx, sy, k)) * t.xf[xk];
                            }
                            sum += t.yf[yk] * buf;
                        }
                        sum.round_ties_even().clamp(0.0, 255.0) as u8
                    }
                    _ => {
                        let xs = |j: usize| t.xi[j * dst_w + dx];
                        let ys = |j: usize| t.yi[j * dst_h + dy];
                        let r = |y: i32| {
                            i64::from(px(xs(0), y, k)) * i64::from(xs(2))
                                + i64::from(px(xs(1), y, k)) * i64::from(xs(3))
                        };
                        let v =
                            (i64::from(ys(2)) * r(ys(0)) + i64::from(ys(3)) * r(ys(1)) + (1 << 21))
                                >> 22;
                        v.clamp(0, 255) as u8
                    }
                };
                out[(dy * dst_w + dx) * 3 + k] = v;
            }
        }
    }
    out
}

/// Overlay colours and opacity (the same rule as `edgeseg-tools`' overlay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    /// Fill colour (RGB).
    pub fill: [u8; 3],
    /// Fill opacity in `[0, 1]`.
    pub alpha: f32,
    /// Contour colour (RGB).
    pub contour: [u8; 3],
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            fill: [0, 200, 255],
            alpha: 0.35,
            contour: [255, 255, 0],
        }
    }
}

/// The output of [`postprocess_overlay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutput {
    /// 0/1 mask, `out_h × out_w`.
    pub mask: Vec<u8>,
    /// The overlaid copy of the RGB frame, when one was given.
    pub overlay: Option<Vec<u8>>,
}

/// Fused post-processing specification: [`upsample_logits`] (crop the padding of
/// the `lh × lw` logits to `new_h × new_w`, bilinear to `out_h × out_w`), then
/// [`threshold_logits`]; with an RGB frame (`out_h × out_w × 3`), also the
/// overlay: mask pixels on the frame border or with a 4-neighbour outside the
/// mask take the contour colour, other mask pixels become
/// `round(c·(1−α) + fill·α)` (f32, `1−α` computed in f32), and all other pixels
/// are copied unchanged.
#[allow(clippy::too_many_arguments)]
pub fn postprocess_overlay(
    logits: &[f32],
    lh: usize,
    lw: usize,
    new_h: usize,
    new_w: usize,
    out_h: usize,
    out_w: usize,
    rgb: Option<&[u8]>,
    style: &OverlayStyle,
) -> Result<PostOutput, PrepError> {
    let up = upsample_logits(logits, lh, lw, new_h, new_w, out_h, out_w)?;
    let mask = threshold_logits(&up);
    let overlay = match rgb {
        None => None,
        Some(rgb) => {
            check_len("overlay frame", rgb.len(), &[out_h, out_w, 3])?;
            let mut out = rgb.to_vec();
            let m = |y: usize, x: usize| mask[y * out_w + x] != 0;
            let oma = 1.0f32 - style.alpha;
            for y in 0..out_h {
                for x in 0..out_w {
                    if !m(y, x) {
                        continue;
                    }
                    let edge = y == 0
                        || x == 0
                        || y + 1 == out_h
                        || x + 1 == out_w
                        || !m(y - 1, x)
                        || !m(y + 1, x)
                        || !m(y, x - 1)
                        || !m(y, x + 1);
                    let px = &mut out[(y * out_w + x) * 3..(y * out_w + x) * 3 + 3];
                    if edge {
                        px.copy_from_slice(&style.contour);
                    } else {
                        for (c, f) in px.iter_mut().zip(style.fill) {
                            *c = (f32::from(*c) * oma + f32::from(f) * style.alpha)
                                .round()
                                .clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            }
            Some(out)
        }
    };
    Ok(PostOutput { mask, overlay })
}

/// The bilinear tables of the GPU post-processing kernel: `(indices, weights)`
/// per axis, `[i0, i1]` and `[w0, w1]` for each output row (or column), from the
/// same code as [`upsample_logits`].
pub fn plan_upsample(input: usize, output: usize) -> (Vec<i32>, Vec<f32>) {
    let ax = linear_axis(input, output);
    let idx = ax.iter().flat_map(|a| [a.0 as i32, a.1 as i32]).collect();
    let w = ax.iter().flat_map(|a| [a.2, a.3]).collect();
    (idx, w)
}

/// CPU emulation of `bilerp` in `cu/postprocess.cu` at output pixel `(y, x)`.
pub fn emulate_bilerp(
    logits: &[f32],
    lw: usize,
    ys: &(Vec<i32>, Vec<f32>),
    xs: &(Vec<i32>, Vec<f32>),
    y: usize,
    x: usize,
) -> f32 {
    let (y0, y1) = (ys.0[2 * y] as usize, ys.0[2 * y + 1] as usize);
    let (x0, x1) = (xs.0[2 * x] as usize, xs.0[2 * x + 1] as usize);
    let (wy0, wy1, wx0, wx1) = (ys.1[2 * y], ys.1[2 * y + 1], xs.1[2 * x], xs.1[2 * x + 1]);
    let t0 = logits[y0 * lw + x0] * wx0 + logits[y0 * lw + x1] * wx1;
    let t1 = logits[y1 * lw + x0] * wx0 + logits[y1 * lw + x1] * wx1;
    t0 * wy0 + t1 * wy1
}

#[cfg(test)]
mod tests;
