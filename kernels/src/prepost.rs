//! CPU reference of LiteMedSAM's pre- and post-processing, bit-exact with the
//! original CVPR24 inference script (`CVPR24_LiteMedSAM_infer.py`: OpenCV
//! `INTER_AREA`, NumPy normalization, PyTorch `F.interpolate`).
//!
//! The step numbers below refer to `shared/golden/litemedsam/README.md`:
//!
//! 3. [`longest_side_size`] + [`resize_area_u8`]: longest side to 256 with
//!    OpenCV's area interpolation.
//! 4. [`normalize_min_max`]: per-image min–max normalization in f64, cast to f32.
//! 5. + 6. [`pad_hwc_to_chw`]: zero padding bottom/right to 256×256 and HWC→CHW.
//! 8. [`box_to_256`], [`point_to_256`]: prompt coordinates in the 256 space.
//! 11. [`upsample_logits`]: crop the padding away, bilinear resize like
//!     `F.interpolate(mode="bilinear", align_corners=False)`.
//! 12. [`threshold_logits`]: logit > 0.
//!
//! [`preprocess_rgb`] and [`postprocess_mask`] chain the steps.

/// Side length of the square LiteMedSAM encoder input.
pub const INPUT_SIZE: usize = 256;

/// Errors from pre- and post-processing (all caused by bad sizes or buffers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrepError {
    /// A buffer does not have the length its dimensions require.
    #[error("buffer has {got} elements, expected {expected} ({what})")]
    BadLength {
        /// What buffer.
        what: &'static str,
        /// Elements present.
        got: usize,
        /// Elements required.
        expected: usize,
    },
    /// A zero or otherwise unusable size.
    #[error("invalid size: {0}")]
    BadSize(String),
}

/// Checks that a buffer holds exactly `Π dims` elements (overflow-safe).
pub(crate) fn check_len(what: &'static str, got: usize, dims: &[usize]) -> Result<(), PrepError> {
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| PrepError::BadSize(format!("{what}: {dims:?} overflows")))?;
    if got == expected {
        Ok(())
    } else {
        Err(PrepError::BadLength {
            what,
            got,
            expected,
        })
    }
}

/// Step 3, sizes: the `(newh, neww)` of an `h`×`w` image whose longest side is
/// resized to `target`.
///
/// `scale = target / max(h, w)` in f64, `new = int(old * scale + 0.5)`
/// (truncation of a positive number, i.e. round half up), exactly as
/// `resize_longest_side` of the reference does it.
pub fn longest_side_size(h: usize, w: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 * 1.0 / h.max(w).max(1) as f64;
    let newh = (h as f64 * scale + 0.5) as usize;
    let neww = (w as f64 * scale + 0.5) as usize;
    (newh, neww)
}

/// One entry of OpenCV's area-resize table: destination index, source index,
/// weight (f32, as OpenCV stores it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AreaTab {
    pub(crate) di: usize,
    pub(crate) si: usize,
    pub(crate) alpha: f32,
}

/// OpenCV `computeResizeAreaTab` for one axis: for each destination index the
/// source samples it covers with their f32 weights. Partial cells at either end
/// get a fractional weight; slivers of at most 1e-3 are dropped.
pub(crate) fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<AreaTab> {
    let mut tab = Vec::with_capacity(ssize * 2);
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize as f64 - fsx1);
        let mut sx1 = fsx1.ceil() as i64;
        let mut sx2 = fsx2.floor() as i64;
        sx2 = sx2.min(ssize as i64 - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push(AreaTab {
                di: dx,
                si: (sx1 - 1) as usize,
                alpha: ((sx1 as f64 - fsx1) / cell) as f32,
            });
        }
        for sx in sx1..sx2 {
            tab.push(AreaTab {
                di: dx,
                si: sx as usize,
                alpha: (1.0 / cell) as f32,
            });
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            tab.push(AreaTab {
                di: dx,
                si: sx2 as usize,
                alpha: ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
            });
        }
    }
    tab
}

/// `saturate_cast<uchar>(float)`: round half to even, clamp to 0..=255.
fn saturate_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// The rows of an RGB8 image (`height × width × 3`), produced on demand: a
/// frame in another pixel format converted one row at a time
/// ([`crate::pixfmt::RawRows`]), so that [`preprocess_rows`] never writes the
/// whole RGB image.
pub trait RgbRows {
    /// Rows.
    fn height(&self) -> usize;
    /// Columns.
    fn width(&self) -> usize;
    /// Writes row `y` (`width × 3` bytes) to `out`.
    fn row(&mut self, y: usize, out: &mut [u8]) -> Result<(), PrepError>;
}

/// Source rows of a resize: a slice, or an [`RgbRows`] with the last row
/// converted cached (the area tables visit a source row at most twice in a
/// row).
enum Rows<'a> {
    Slice(&'a [u8], usize),
    Source {
        src: &'a mut dyn RgbRows,
        buf: Vec<u8>,
        cached: Option<usize>,
    },
}

impl Rows<'_> {
    fn get(&mut self, y: usize) -> Result<&[u8], PrepError> {
        match self {
            Rows::Slice(data, len) => {
                data.get(y * *len..(y + 1) * *len)
                    .ok_or(PrepError::BadLength {
                        what: "resize source row",
                        got: data.len(),
                        expected: (y + 1) * *len,
                    })
            }
            Rows::Source { src, buf, cached } => {
                if *cached != Some(y) {
                    *cached = None;
                    src.row(y, buf)?;
                    *cached = Some(y);
                }
                Ok(buf)
            }
        }
    }
}

/// Every row of `rows`, as one `height × width × 3` image.
pub fn materialize(rows: &mut dyn RgbRows) -> Result<Vec<u8>, PrepError> {
    let (h, w) = (rows.height(), rows.width());
    let row_len = w
        .checked_mul(3)
        .ok_or_else(|| PrepError::BadSize(format!("image {h}x{w}")))?;
    let len = row_len
        .checked_mul(h)
        .ok_or_else(|| PrepError::BadSize(format!("image {h}x{w}")))?;
    let mut img = vec![0u8; len];
    for (y, out) in img.chunks_exact_mut(row_len.max(1)).enumerate() {
        rows.row(y, out)?;
    }
    Ok(img)
}

/// Step 3: OpenCV `cv2.resize(src, (dst_w, dst_h), interpolation=INTER_AREA)` for
/// a shrink (or identity) of a `u8` image `src_h`×`src_w`×`c` (HWC, row-major),
/// bit-exact with OpenCV 4.x:
///
/// * same size: a copy;
/// * both scales exact integers (e.g. 512→256): OpenCV's fast path — for 2×2
///   blocks `(a + b + c + d + 2) >> 2`, otherwise the integer block sum times
///   `1/area` in f32, rounded half to even;
/// * otherwise the general path: per-axis weight tables (f32, see `area_tab`),
///   for each source row `buf[dx] += src[sx] * wx` in f32 in table order, then
///   `sum[dx] += wy * buf[dx]` in f32, written with round-half-even when the
///   destination row changes.
///
/// When either axis is enlarged (images smaller than 256), OpenCV emulates
/// area interpolation with a bilinear variant; see `resize_area_enlarge` (not
/// verified against cv2: no golden data exist for that case).
pub fn resize_area_u8(
    src: &[u8],
    src_h: usize,
    src_w: usize,
    c: usize,
    dst_h: usize,
    dst_w: usize,
) -> Result<Vec<u8>, PrepError> {
    if src_h == 0 || src_w == 0 || c == 0 || dst_h == 0 || dst_w == 0 {
        return Err(PrepError::BadSize(format!(
            "resize {src_h}x{src_w}x{c} -> {dst_h}x{dst_w}"
        )));
    }
    check_len("resize source", src.len(), &[src_h, src_w, c])?;
    if dst_h == src_h && dst_w == src_w {
        return Ok(src.to_vec());
    }
    if dst_h > src_h || dst_w > src_w {
        return Ok(resize_area_enlarge(src, src_h, src_w, c, dst_h, dst_w));
    }
    // OpenCV: inv_scale = (double)dsize / ssize; scale = 1. / inv_scale.
    let scale_x = 1.0 / (dst_w as f64 / src_w as f64);
    let scale_y = 1.0 / (dst_h as f64 / src_h as f64);
    let is_x = scale_x.round();
    let is_y = scale_y.round();
    if (scale_x - is_x).abs() < f64::EPSILON && (scale_y - is_y).abs() < f64::EPSILON {
        return resize_area_fast(
            &mut Rows::Slice(src, src_w * c),
            src_w,
            c,
            dst_h,
            dst_w,
            is_y as usize,
            is_x as usize,
        );
    }
    let xtab = area_tab(src_w, dst_w, scale_x);
    let ytab = area_tab(src_h, dst_h, scale_y);
    let Some(spans) = area_spans(&xtab, dst_w) else {
        return Ok(resize_area_general_per_entry(
            src, src_w, c, dst_h, dst_w, &xtab, &ytab,
        ));
    };
    resize_area_general(
        &mut Rows::Slice(src, src_w * c),
        c,
        dst_w,
        dst_h,
        &xtab,
        &spans,
        &ytab,
    )
}

/// One destination column of the general area path: its source samples
/// `first..first + weights.len()` (consecutive, in table order) and their weights.
struct AreaSpan {
    first: usize,
    weights: std::ops::Range<usize>,
}

/// Groups an `area_tab` by destination index. `None` when some destination's
/// samples are not consecutive source indices in table order (OpenCV's tables
/// always are; the per-entry loop then handles it).
fn area_spans(tab: &[AreaTab], dsize: usize) -> Option<Vec<AreaSpan>> {
    let mut spans: Vec<AreaSpan> = Vec::with_capacity(dsize);
    for (i, t) in tab.iter().enumerate() {
        let n = spans.len();
        if n == t.di + 1 {
            let s = &mut spans[n - 1];
            if t.si != s.first + s.weights.len() {
                return None;
            }
            s.weights.end = i + 1;
        } else if n == t.di {
            spans.push(AreaSpan {
                first: t.si,
                weights: i..i + 1,
            });
        } else {
            return None;
        }
    }
    (spans.len() == dsize).then_some(spans)
}

/// The general (fractional shrink) path of [`resize_area_u8`].
///
/// Each destination sample is accumulated in a register in table order,
/// starting from 0.0, which is the same sequence of f32 operations as
/// OpenCV's `buf[dx] += src[sx] * wx` over the whole table: the result is
/// bit-identical to [`resize_area_general_per_entry`] (tested), only without
/// a bounds-checked read-modify-write per table entry.
fn resize_area_general(
    rows: &mut Rows<'_>,
    c: usize,
    dst_w: usize,
    dst_h: usize,
    xtab: &[AreaTab],
    spans: &[AreaSpan],
    ytab: &[AreaTab],
) -> Result<Vec<u8>, PrepError> {
    let alphas: Vec<f32> = xtab.iter().map(|t| t.alpha).collect();
    let row_len = dst_w * c;
    let mut out = vec![0u8; dst_h * row_len];
    let mut buf = vec![0f32; row_len];
    let mut sum = vec![0f32; row_len];
    let mut prev_dy = ytab.first().map_or(0, |t| t.di);
    for yt in ytab {
        let beta = yt.alpha;
        let srow = rows.get(yt.si)?;
        if c == 3 {
            for (b, span) in buf.chunks_exact_mut(3).zip(spans) {
                let n = span.weights.len();
                let px = &srow[span.first * 3..(span.first + n) * 3];
                let mut acc = [0f32; 3];
                for (p, &a) in px.chunks_exact(3).zip(&alphas[span.weights.clone()]) {
                    acc[0] += f32::from(p[0]) * a;
                    acc[1] += f32::from(p[1]) * a;
                    acc[2] += f32::from(p[2]) * a;
                }
                b.copy_from_slice(&acc);
            }
        } else {
            for (b, span) in buf.chunks_exact_mut(c).zip(spans) {
                let n = span.weights.len();
                let px = &srow[span.first * c..(span.first + n) * c];
                b.fill(0.0);
                for (p, &a) in px.chunks_exact(c).zip(&alphas[span.weights.clone()]) {
                    for (bk, &pk) in b.iter_mut().zip(p) {
                        *bk += f32::from(pk) * a;
                    }
                }
            }
        }
        if yt.di != prev_dy {
            let orow = &mut out[prev_dy * row_len..(prev_dy + 1) * row_len];
            for ((o, s), b) in orow.iter_mut().zip(sum.iter_mut()).zip(&buf) {
                *o = saturate_u8(*s);
                *s = beta * b;
            }
            prev_dy = yt.di;
        } else {
            for (s, b) in sum.iter_mut().zip(&buf) {
                *s += beta * b;
            }
        }
    }
    let orow = &mut out[prev_dy * row_len..(prev_dy + 1) * row_len];
    for (o, s) in orow.iter_mut().zip(&sum) {
        *o = saturate_u8(*s);
    }
    Ok(out)
}

/// The general path one table entry at a time, as OpenCV writes it: the
/// fallback of [`resize_area_general`] and its reference in tests.
fn resize_area_general_per_entry(
    src: &[u8],
    src_w: usize,
    c: usize,
    dst_h: usize,
    dst_w: usize,
    xtab: &[AreaTab],
    ytab: &[AreaTab],
) -> Vec<u8> {
    let row_len = dst_w * c;
    let mut out = vec![0u8; dst_h * row_len];
    let mut buf = vec![0f32; row_len];
    let mut sum = vec![0f32; row_len];
    let mut prev_dy = ytab.first().map_or(0, |t| t.di);
    for yt in ytab {
        let beta = yt.alpha;
        let srow = &src[yt.si * src_w * c..(yt.si + 1) * src_w * c];
        buf.iter_mut().for_each(|b| *b = 0.0);
        for xt in xtab {
            for k in 0..c {
                let d = xt.di * c + k;
                buf[d] += f32::from(srow[xt.si * c + k]) * xt.alpha;
            }
        }
        if yt.di != prev_dy {
            let orow = &mut out[prev_dy * row_len..(prev_dy + 1) * row_len];
            for ((o, s), b) in orow.iter_mut().zip(sum.iter_mut()).zip(&buf) {
                *o = saturate_u8(*s);
                *s = beta * b;
            }
            prev_dy = yt.di;
        } else {
            for (s, b) in sum.iter_mut().zip(&buf) {
                *s += beta * b;
            }
        }
    }
    let orow = &mut out[prev_dy * row_len..(prev_dy + 1) * row_len];
    for (o, s) in orow.iter_mut().zip(&sum) {
        *o = saturate_u8(*s);
    }
    out
}

/// Which of OpenCV's `INTER_AREA` code paths [`resize_area_u8`] takes for a
/// `src_h`×`src_w` → `dst_h`×`dst_w` resize, with the per-axis tables it uses.
/// The GPU resize kernel runs from this plan, so that both sides share one
/// decision and one set of tables.
#[derive(Debug, Clone)]
pub(crate) enum ResizePlan {
    /// Integer scales on both axes (including 1×1, the copy): block sums.
    Fast { sy: usize, sx: usize },
    /// Shrink with fractional scales: f32 area tables per axis.
    General {
        ytab: Vec<AreaTab>,
        xtab: Vec<AreaTab>,
    },
    /// An axis is enlarged: 11-bit fixed-point bilinear tables per axis.
    Enlarge {
        ys: Vec<(usize, bool, i32, i32)>,
        xs: Vec<(usize, bool, i32, i32)>,
    },
}

/// The [`ResizePlan`] of a resize; sizes must be non-zero.
pub(crate) fn resize_plan(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> ResizePlan {
    if dst_h == src_h && dst_w == src_w {
        return ResizePlan::Fast { sy: 1, sx: 1 };
    }
    if dst_h > src_h || dst_w > src_w {
        return ResizePlan::Enlarge {
            ys: enlarge_axis(src_h, dst_h),
            xs: enlarge_axis(src_w, dst_w),
        };
    }
    let scale_x = 1.0 / (dst_w as f64 / src_w as f64);
    let scale_y = 1.0 / (dst_h as f64 / src_h as f64);
    let is_x = scale_x.round();
    let is_y = scale_y.round();
    if (scale_x - is_x).abs() < f64::EPSILON && (scale_y - is_y).abs() < f64::EPSILON {
        return ResizePlan::Fast {
            sy: is_y as usize,
            sx: is_x as usize,
        };
    }
    ResizePlan::General {
        ytab: area_tab(src_h, dst_h, scale_y),
        xtab: area_tab(src_w, dst_w, scale_x),
    }
}

/// OpenCV `resizeAreaFast` (integer scales `sy`×`sx`; the source is exactly
/// `dst * scale` on both axes).
fn resize_area_fast(
    rows: &mut Rows<'_>,
    src_w: usize,
    c: usize,
    dst_h: usize,
    dst_w: usize,
    sy: usize,
    sx: usize,
) -> Result<Vec<u8>, PrepError> {
    let row_len = dst_w * c;
    let mut out = vec![0u8; dst_h * row_len];
    let area = sy * sx;
    let inv_area = 1.0f32 / area as f32;
    // block sums of one destination row, accumulated source row by source row
    // (integer sums: the order does not change them)
    let mut sums = vec![0u32; row_len];
    for (dy, orow) in out.chunks_exact_mut(row_len).enumerate() {
        sums.fill(0);
        for yy in 0..sy {
            let row = rows.get(dy * sy + yy)?;
            let srow = row.get(..dst_w * sx * c).ok_or(PrepError::BadLength {
                what: "resize source row",
                got: row.len(),
                expected: src_w * c,
            })?;
            for (s, block) in sums.chunks_exact_mut(c).zip(srow.chunks_exact(sx * c)) {
                for px in block.chunks_exact(c) {
                    for (sk, &p) in s.iter_mut().zip(px) {
                        *sk += u32::from(p);
                    }
                }
            }
        }
        for (o, &s) in orow.iter_mut().zip(&sums) {
            *o = if sx == 2 && sy == 2 {
                ((s + 2) >> 2) as u8
            } else {
                saturate_u8(s as f32 * inv_area)
            };
        }
    }
    Ok(out)
}

/// [`resize_area_fast`] one output sample at a time, as OpenCV's formula reads:
/// the reference of the row-wise form in tests.
#[cfg(test)]
fn resize_area_fast_per_sample(
    src: &[u8],
    src_w: usize,
    c: usize,
    dst_h: usize,
    dst_w: usize,
    sy: usize,
    sx: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; dst_h * dst_w * c];
    let inv_area = 1.0f32 / (sy * sx) as f32;
    for dy in 0..dst_h {
        for dx in 0..dst_w {
            for k in 0..c {
                let mut s: u32 = 0;
                for yy in 0..sy {
                    let row = (dy * sy + yy) * src_w * c;
                    for xx in 0..sx {
                        s += u32::from(src[row + (dx * sx + xx) * c + k]);
                    }
                }
                out[(dy * dst_w + dx) * c + k] = if sx == 2 && sy == 2 {
                    ((s + 2) >> 2) as u8
                } else {
                    saturate_u8(s as f32 * inv_area)
                };
            }
        }
    }
    out
}

/// Per-axis source index, right-border flag and fixed-point weights of
/// OpenCV's `INTER_AREA` enlarge mode: `sx = floor(dx·scale)`,
/// `fx = (dx+1) − (sx+1)/scale` (f32), `fx ≤ 0 → 0`, else its fractional part;
/// at the border `sx = size−1, fx = 0`; weights `round((1−fx)·2048)`,
/// `round(fx·2048)`.
pub(crate) fn enlarge_axis(ssize: usize, dsize: usize) -> Vec<(usize, bool, i32, i32)> {
    let inv_scale = dsize as f64 / ssize as f64;
    let scale = 1.0 / inv_scale;
    (0..dsize)
        .map(|dx| {
            let mut sx = (dx as f64 * scale).floor() as i64;
            let mut fx = ((dx + 1) as f64 - (sx + 1) as f64 * inv_scale) as f32;
            fx = if fx <= 0.0 { 0.0 } else { fx - fx.floor() };
            let border = sx + 1 >= ssize as i64;
            if sx >= ssize as i64 - 1 {
                fx = 0.0;
                sx = ssize as i64 - 1;
            }
            let a0 = ((1.0 - fx) * 2048.0).round_ties_even() as i32;
            let a1 = (fx * 2048.0).round_ties_even() as i32;
            (sx.max(0) as usize, border, a0, a1)
        })
        .collect()
}

/// OpenCV's `INTER_AREA` when an axis is enlarged: bilinear interpolation with
/// area-style coefficients in 11-bit fixed point (`resizeGeneric_` with
/// `HResizeLinear` / `VResizeLinear`): horizontal `S[sx]·a0 + S[sx+1]·a1`
/// (`S[sx]·2048` at the right border), vertical `(b0·r0 + b1·r1 + 2²¹) >> 22`.
/// OpenCV's SIMD vertical pass rounds in two steps and may differ from this by
/// one grey level on some pixels.
fn resize_area_enlarge(
    src: &[u8],
    src_h: usize,
    src_w: usize,
    c: usize,
    dst_h: usize,
    dst_w: usize,
) -> Vec<u8> {
    let xs = enlarge_axis(src_w, dst_w);
    let ys = enlarge_axis(src_h, dst_h);
    let hrow = |sy: usize| -> Vec<i32> {
        let row = &src[sy * src_w * c..(sy + 1) * src_w * c];
        let mut out = Vec::with_capacity(dst_w * c);
        for &(sx, border, a0, a1) in &xs {
            for k in 0..c {
                let v0 = i32::from(row[sx * c + k]);
                out.push(if border {
                    v0 * 2048
                } else {
                    v0 * a0 + i32::from(row[(sx + 1) * c + k]) * a1
                });
            }
        }
        out
    };
    let mut out = Vec::with_capacity(dst_h * dst_w * c);
    for &(sy, _, b0, b1) in &ys {
        let r0 = hrow(sy);
        let r1 = hrow((sy + 1).min(src_h - 1));
        for (&v0, &v1) in r0.iter().zip(&r1) {
            let v =
                (i64::from(b0) * i64::from(v0) + i64::from(b1) * i64::from(v1) + (1 << 21)) >> 22;
            out.push(v.clamp(0, 255) as u8);
        }
    }
    out
}

/// Step 4: per-image min–max normalization of a `u8` image (all channels):
/// `(v - min) / max(max - min, 1e-8)` computed in f64, then cast to f32 (as the
/// reference computes it in NumPy float64 before `torch.tensor(...).float()`).
/// A constant image maps to all zeros.
pub fn normalize_min_max(img: &[u8]) -> Vec<f32> {
    let mn = img.iter().copied().min().unwrap_or(0);
    let mx = img.iter().copied().max().unwrap_or(0);
    let den = f64::from(mx - mn).max(1e-8);
    img.iter()
        .map(|&v| (f64::from(v - mn) / den) as f32)
        .collect()
}

/// Steps 5 and 6: place an `h`×`w`×`c` (HWC) image at the top-left of a zero
/// `size`×`size` canvas (padding bottom and right) and return it as CHW
/// (`c`×`size`×`size`, the batch dimension being implicit).
pub fn pad_hwc_to_chw(
    img: &[f32],
    h: usize,
    w: usize,
    c: usize,
    size: usize,
) -> Result<Vec<f32>, PrepError> {
    check_len("pad source", img.len(), &[h, w, c])?;
    if h > size || w > size {
        return Err(PrepError::BadSize(format!(
            "{h}x{w} does not fit in {size}x{size}"
        )));
    }
    let mut out = vec![0f32; c * size * size];
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                out[k * size * size + y * size + x] = img[(y * w + x) * c + k];
            }
        }
    }
    Ok(out)
}

/// The output of [`preprocess_rgb`].
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Encoder input, 3×256×256 CHW f32 (batch dimension implicit).
    pub input: Vec<f32>,
    /// The resized `u8` image (`newh`×`neww`×3), before normalization.
    pub resized: Vec<u8>,
    /// Original height.
    pub orig_h: usize,
    /// Original width.
    pub orig_w: usize,
    /// Height after the longest-side resize.
    pub new_h: usize,
    /// Width after the longest-side resize.
    pub new_w: usize,
}

/// Steps 3–6 on an RGB `u8` image `h`×`w`×3 (HWC; a grey image must already be
/// replicated to 3 channels, step 1): resize the longest side to 256 with
/// OpenCV area interpolation, min–max normalize, zero-pad to 256×256, CHW.
pub fn preprocess_rgb(rgb: &[u8], h: usize, w: usize) -> Result<Preprocessed, PrepError> {
    if h == 0 || w == 0 {
        return Err(PrepError::BadSize(format!("image {h}x{w}")));
    }
    check_len("RGB image", rgb.len(), &[h, w, 3])?;
    let (new_h, new_w) = longest_side_size(h, w, INPUT_SIZE);
    if new_h == 0 || new_w == 0 {
        return Err(PrepError::BadSize(format!(
            "image {h}x{w} resizes to {new_h}x{new_w}"
        )));
    }
    let resized = resize_area_u8(rgb, h, w, 3, new_h, new_w)?;
    let norm = normalize_min_max(&resized);
    let input = pad_hwc_to_chw(&norm, new_h, new_w, 3, INPUT_SIZE)?;
    Ok(Preprocessed {
        input,
        resized,
        orig_h: h,
        orig_w: w,
        new_h,
        new_w,
    })
}

/// [`preprocess_rgb`] of the image whose rows `rows` produces, without
/// materializing it: the area resize converts each source row when it first
/// needs it (a 1080p YUYV frame is read once, 4 MB, instead of being written
/// and re-read as 6 MB of RGB). The output is identical to
/// `preprocess_rgb` of the whole image (tested). Images that are enlarged or
/// kept at their size (sides up to 256) are materialized first.
pub fn preprocess_rows(rows: &mut dyn RgbRows) -> Result<Preprocessed, PrepError> {
    let (h, w) = (rows.height(), rows.width());
    if h == 0 || w == 0 {
        return Err(PrepError::BadSize(format!("image {h}x{w}")));
    }
    let (new_h, new_w) = longest_side_size(h, w, INPUT_SIZE);
    if new_h == 0 || new_w == 0 {
        return Err(PrepError::BadSize(format!(
            "image {h}x{w} resizes to {new_h}x{new_w}"
        )));
    }
    let plan = resize_plan(h, w, new_h, new_w);
    let spans = match &plan {
        ResizePlan::General { xtab, .. } => area_spans(xtab, new_w),
        _ => None,
    };
    let streamable = match &plan {
        ResizePlan::Fast { sy, sx } => (*sy, *sx) != (1, 1),
        ResizePlan::General { .. } => spans.is_some(),
        ResizePlan::Enlarge { .. } => false,
    };
    if !streamable {
        return preprocess_rgb(&materialize(rows)?, h, w);
    }
    let row_len = w
        .checked_mul(3)
        .ok_or_else(|| PrepError::BadSize(format!("image {h}x{w}")))?;
    let mut source = Rows::Source {
        src: rows,
        buf: vec![0u8; row_len],
        cached: None,
    };
    let resized = match (&plan, &spans) {
        (ResizePlan::Fast { sy, sx }, _) => {
            resize_area_fast(&mut source, w, 3, new_h, new_w, *sy, *sx)?
        }
        (ResizePlan::General { ytab, xtab }, Some(spans)) => {
            resize_area_general(&mut source, 3, new_w, new_h, xtab, spans, ytab)?
        }
        _ => {
            return Err(PrepError::BadSize(format!(
                "no row-streamed resize for {h}x{w} -> {new_h}x{new_w}"
            )))
        }
    };
    let norm = normalize_min_max(&resized);
    let input = pad_hwc_to_chw(&norm, new_h, new_w, 3, INPUT_SIZE)?;
    Ok(Preprocessed {
        input,
        resized,
        orig_h: h,
        orig_w: w,
        new_h,
        new_w,
    })
}

/// Step 8, boxes: `box_256[i] = int(box[i] * 256 / max(h, w))` in f64 with
/// truncation toward zero; no clamping and no +1 for the inclusive maximum.
/// `bbox` is `[x0, y0, x1, y1]` in original pixel coordinates (x1, y1 inclusive).
pub fn box_to_256(bbox: [f64; 4], h: usize, w: usize) -> [f32; 4] {
    let ratio = INPUT_SIZE as f64 / h.max(w).max(1) as f64;
    bbox.map(|v| (v * ratio).trunc() as f32)
}

/// Step 8, points: `point * 256 / max(h, w)` in f64, **not** truncated, then f32.
/// `point` is `[x, y]` in original pixel coordinates.
pub fn point_to_256(point: [f64; 2], h: usize, w: usize) -> [f32; 2] {
    let ratio = INPUT_SIZE as f64 / h.max(w).max(1) as f64;
    point.map(|v| (v * ratio) as f32)
}

/// PyTorch's per-axis linear indices and weights for `align_corners=False`
/// (`compute_source_index_and_lambda`): `ratio = in / out` in f32,
/// `src = ratio * (d + 0.5) - 0.5` clamped at 0, `i0 = min(floor(src), in-1)`,
/// `i1 = i0 + (i0 < in-1)`, `l1 = clamp(src - i0, 0, 1)`, `l0 = 1 - l1`; equal
/// sizes copy.
pub(crate) fn linear_axis(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    if input == output {
        return (0..output).map(|d| (d, d, 1.0, 0.0)).collect();
    }
    let ratio = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (ratio * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Step 11: crop a `lh`×`lw` logit map (row-major) to its top-left
/// `new_h`×`new_w` (removing the padding), then resize it to `out_h`×`out_w`
/// like `F.interpolate(mode="bilinear", align_corners=False)` (no antialias), f32:
/// `(v00*wx0 + v01*wx1)*wy0 + (v10*wx0 + v11*wx1)*wy1`.
#[allow(clippy::too_many_arguments)]
pub fn upsample_logits(
    logits: &[f32],
    lh: usize,
    lw: usize,
    new_h: usize,
    new_w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<f32>, PrepError> {
    check_len("logits", logits.len(), &[lh, lw])?;
    if new_h == 0 || new_w == 0 || new_h > lh || new_w > lw || out_h == 0 || out_w == 0 {
        return Err(PrepError::BadSize(format!(
            "crop {new_h}x{new_w} of {lh}x{lw} to {out_h}x{out_w}"
        )));
    }
    let len = out_h
        .checked_mul(out_w)
        .ok_or_else(|| PrepError::BadSize(format!("{out_h}x{out_w} overflows")))?;
    let mut out = vec![0f32; len];
    for_each_upsampled_row(logits, lw, new_h, new_w, out_h, out_w, |y, row| {
        out[y * out_w..(y + 1) * out_w].copy_from_slice(row);
    });
    Ok(out)
}

/// The rows of [`upsample_logits`] one at a time (`emit(y, row)`), for
/// validated sizes.
///
/// The horizontal interpolation `r[x0]*wx0 + r[x1]*wx1` depends only on the
/// source row, so it is computed once per source row (at most two are kept)
/// instead of twice per output pixel; the vertical step is then a straight
/// `t0*wy0 + t1*wy1` over the row. These are the same f32 operations on the
/// same operands as the per-pixel formula, so the output is bit-identical to
/// it (tested against `upsample_logits_per_pixel`).
fn for_each_upsampled_row(
    logits: &[f32],
    lw: usize,
    new_h: usize,
    new_w: usize,
    out_h: usize,
    out_w: usize,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let ys = linear_axis(new_h, out_h);
    let xs = linear_axis(new_w, out_w);
    let horizontal = |sy: usize, dst: &mut Vec<f32>| {
        let r = &logits[sy * lw..sy * lw + new_w];
        dst.clear();
        dst.extend(
            xs.iter()
                .map(|&(x0, x1, wx0, wx1)| r[x0] * wx0 + r[x1] * wx1),
        );
    };
    // (source row, its horizontal interpolation) for y0 and y1
    let mut top: (usize, Vec<f32>) = (usize::MAX, Vec::with_capacity(out_w));
    let mut bottom: (usize, Vec<f32>) = (usize::MAX, Vec::with_capacity(out_w));
    let mut row = vec![0f32; out_w];
    for (y, &(y0, y1, wy0, wy1)) in ys.iter().enumerate() {
        if top.0 != y0 && bottom.0 == y0 {
            std::mem::swap(&mut top, &mut bottom);
        }
        if top.0 != y0 {
            horizontal(y0, &mut top.1);
            top.0 = y0;
        }
        if bottom.0 != y1 {
            horizontal(y1, &mut bottom.1);
            bottom.0 = y1;
        }
        for ((o, &t0), &t1) in row.iter_mut().zip(&top.1).zip(&bottom.1) {
            *o = t0 * wy0 + t1 * wy1;
        }
        emit(y, &row);
    }
}

/// [`upsample_logits`] one output pixel at a time, as the formula reads: the
/// reference of the row-wise form in tests.
#[cfg(test)]
fn upsample_logits_per_pixel(
    logits: &[f32],
    lw: usize,
    new_h: usize,
    new_w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let ys = linear_axis(new_h, out_h);
    let xs = linear_axis(new_w, out_w);
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, wy0, wy1) in &ys {
        let r0 = &logits[y0 * lw..y0 * lw + new_w];
        let r1 = &logits[y1 * lw..y1 * lw + new_w];
        for &(x0, x1, wx0, wx1) in &xs {
            let t0 = r0[x0] * wx0 + r0[x1] * wx1;
            let t1 = r1[x0] * wx0 + r1[x1] * wx1;
            out.push(t0 * wy0 + t1 * wy1);
        }
    }
    out
}

/// Step 12: foreground where the logit is > 0 (equivalent to the reference's
/// `sigmoid(logit) > 0.5` except for |logit| below ~1e-7). Output 0/1.
pub fn threshold_logits(logits: &[f32]) -> Vec<u8> {
    logits.iter().map(|&v| u8::from(v > 0.0)).collect()
}

/// Steps 11 and 12 on the decoder's 256×256 low-res logits: a 0/1 mask of
/// `prep.orig_h`×`prep.orig_w`.
pub fn postprocess_mask(low_res: &[f32], prep: &Preprocessed) -> Result<Vec<u8>, PrepError> {
    let (new_h, new_w, out_h, out_w) = (prep.new_h, prep.new_w, prep.orig_h, prep.orig_w);
    check_len("logits", low_res.len(), &[INPUT_SIZE, INPUT_SIZE])?;
    if new_h == 0
        || new_w == 0
        || new_h > INPUT_SIZE
        || new_w > INPUT_SIZE
        || out_h == 0
        || out_w == 0
    {
        return Err(PrepError::BadSize(format!(
            "crop {new_h}x{new_w} of {INPUT_SIZE}x{INPUT_SIZE} to {out_h}x{out_w}"
        )));
    }
    let len = out_h
        .checked_mul(out_w)
        .ok_or_else(|| PrepError::BadSize(format!("{out_h}x{out_w} overflows")))?;
    // upsample and threshold row by row: the same mask as
    // `threshold_logits(&upsample_logits(..))` without the f32 frame in between
    let mut mask = vec![0u8; len];
    for_each_upsampled_row(low_res, INPUT_SIZE, new_h, new_w, out_h, out_w, |y, row| {
        for (m, &v) in mask[y * out_w..(y + 1) * out_w].iter_mut().zip(row) {
            *m = u8::from(v > 0.0);
        }
    });
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_side_sizes_match_golden_table() {
        assert_eq!(longest_side_size(288, 384, 256), (192, 256));
        assert_eq!(longest_side_size(300, 300, 256), (256, 256));
        assert_eq!(longest_side_size(540, 800, 256), (173, 256));
        assert_eq!(longest_side_size(543, 783, 256), (178, 256));
    }

    #[test]
    fn fast_path_2x2_rounds_half_up() {
        // one channel 2x2 -> 1x1: sum 1+2+3+4 = 10 -> (10+2)>>2 = 3 (2.5 rounds up)
        assert_eq!(
            resize_area_u8(&[1, 2, 3, 4], 2, 2, 1, 1, 1).unwrap(),
            vec![3]
        );
        // 0+0+0+2 = 2 -> (2+2)>>2 = 1 (0.5 rounds up, half-even would give 0)
        assert_eq!(
            resize_area_u8(&[0, 0, 0, 2], 2, 2, 1, 1, 1).unwrap(),
            vec![1]
        );
    }

    #[test]
    fn fast_path_4x4_rounds_half_even() {
        // 16 pixels summing to 8 -> 0.5 -> 0 (half even); summing to 24 -> 1.5 -> 2
        let mut a = vec![0u8; 16];
        a[0] = 8;
        assert_eq!(resize_area_u8(&a, 4, 4, 1, 1, 1).unwrap(), vec![0]);
        a[0] = 24;
        assert_eq!(resize_area_u8(&a, 4, 4, 1, 1, 1).unwrap(), vec![2]);
    }

    #[test]
    fn general_area_constant_image_stays_constant() {
        let src = vec![77u8; 7 * 5 * 3];
        let out = resize_area_u8(&src, 7, 5, 3, 3, 2).unwrap();
        assert_eq!(out, vec![77u8; 3 * 2 * 3]);
    }

    #[test]
    fn general_area_averages_cells() {
        // 3 -> 2 on one axis: cells [0,1.5) and [1.5,3)
        let out = resize_area_u8(&[0, 30, 90], 1, 3, 1, 1, 2).unwrap();
        // (0*1 + 30*0.5)/1.5 = 10; (30*0.5 + 90)/1.5 = 70
        assert_eq!(out, vec![10, 70]);
    }

    #[test]
    fn enlarge_path_interpolates() {
        // constant stays constant, and a 2x enlarge of a ramp is monotone with
        // the source values at OpenCV's area-mode sample positions
        assert_eq!(resize_area_u8(&[9; 6], 2, 3, 1, 5, 7).unwrap(), vec![9; 35]);
        let up = resize_area_u8(&[0, 100], 1, 2, 1, 1, 4).unwrap();
        // dx=0: sx=0, fx=0 -> 0; dx=1: sx=0, fx=2-2=0 -> 0; dx=2: sx=1 (border) -> 100
        assert_eq!(up, vec![0, 0, 100, 100]);
        let up = resize_area_u8(&[0, 100, 200], 1, 3, 1, 1, 4).unwrap();
        // scale 0.75: dx=1: sx=0, fx=2-4/3=0.667 -> 66.7 -> 67
        assert_eq!(up[0], 0);
        assert_eq!(up[1], 67);
        assert!(up.windows(2).all(|w| w[0] <= w[1]), "{up:?}");
    }

    #[test]
    fn resize_rejects_bad_input() {
        assert!(resize_area_u8(&[0; 4], 2, 2, 1, 3, 3).is_ok());
        assert!(matches!(
            resize_area_u8(&[0; 3], 2, 2, 1, 1, 1),
            Err(PrepError::BadLength { .. })
        ));
        assert!(resize_area_u8(&[], 0, 2, 1, 1, 1).is_err());
        assert!(matches!(
            preprocess_rgb(&[0; 3], usize::MAX / 2, 3),
            Err(PrepError::BadSize(_))
        ));
    }

    #[test]
    fn normalize_and_pad() {
        let n = normalize_min_max(&[10, 20, 30]);
        assert_eq!(n, vec![0.0, 0.5, 1.0]);
        assert_eq!(normalize_min_max(&[5, 5]), vec![0.0, 0.0]);
        let p = pad_hwc_to_chw(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1, 2, 3, 2).unwrap();
        assert_eq!(
            p,
            vec![1.0, 4.0, 0.0, 0.0, 2.0, 5.0, 0.0, 0.0, 3.0, 6.0, 0.0, 0.0]
        );
    }

    #[test]
    fn prompt_transforms() {
        // golden cvc_clinicdb__375: 288x384, box 166,139,208,167 -> 110,92,138,111
        assert_eq!(
            box_to_256([166.0, 139.0, 208.0, 167.0], 288, 384),
            [110.0, 92.0, 138.0, 111.0]
        );
        let p = point_to_256([326.402, 232.291], 543, 783);
        assert!((p[0] - 106.7165).abs() < 1e-3 && (p[1] - 75.9469).abs() < 1e-3);
    }

    #[test]
    fn bilinear_matches_torch_small_case() {
        // torch: F.interpolate([[[[0., 1.]]]], size=(1, 4), bilinear, align_corners=False)
        // = [0, 0.25, 0.75, 1]
        let up = upsample_logits(&[0.0, 1.0], 1, 2, 1, 2, 1, 4).unwrap();
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
        // crop: only the top-left 1x1 of a 2x2 is used
        let up = upsample_logits(&[2.0, -9.0, -9.0, -9.0], 2, 2, 1, 1, 2, 2).unwrap();
        assert_eq!(up, vec![2.0; 4]);
        assert_eq!(threshold_logits(&[-1.0, 0.0, 1e-6]), vec![0, 0, 1]);
    }

    /// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The register-accumulating general area path is bit-identical to
        /// OpenCV's per-entry loop, for any fractional shrink and channel count.
        #[test]
        fn general_area_path_matches_per_entry_loop(
            src_h in 2usize..90, src_w in 2usize..90, c in 1usize..5,
            fy in 0.05f64..1.0, fx in 0.05f64..1.0, seed in 0u64..1000,
        ) {
            let dst_h = ((src_h as f64 * fy) as usize).clamp(1, src_h);
            let dst_w = ((src_w as f64 * fx) as usize).clamp(1, src_w);
            let src = noise(src_h * src_w * c, seed);
            let sx = 1.0 / (dst_w as f64 / src_w as f64);
            let sy = 1.0 / (dst_h as f64 / src_h as f64);
            let xtab = area_tab(src_w, dst_w, sx);
            let ytab = area_tab(src_h, dst_h, sy);
            let spans = area_spans(&xtab, dst_w);
            proptest::prop_assert!(spans.is_some());
            let spans = spans.unwrap();
            let fast = resize_area_general(
                &mut Rows::Slice(&src, src_w * c), c, dst_w, dst_h, &xtab, &spans, &ytab,
            ).unwrap();
            let slow = resize_area_general_per_entry(&src, src_w, c, dst_h, dst_w, &xtab, &ytab);
            proptest::prop_assert_eq!(fast, slow);
        }

        /// The row-wise block sums of the integer-scale path equal the
        /// per-sample loop (including a source wider or taller than the blocks).
        #[test]
        fn fast_area_path_matches_per_sample_loop(
            dst_h in 1usize..20, dst_w in 1usize..20, c in 1usize..5,
            sy in 1usize..7, sx in 1usize..7, extra_w in 0usize..3, seed in 0u64..1000,
        ) {
            let src_w = dst_w * sx + extra_w;
            let src = noise(dst_h * sy * src_w * c, seed);
            proptest::prop_assert_eq!(
                resize_area_fast(&mut Rows::Slice(&src, src_w * c), src_w, c, dst_h, dst_w, sy, sx).unwrap(),
                resize_area_fast_per_sample(&src, src_w, c, dst_h, dst_w, sy, sx)
            );
        }

        /// The row-wise bilinear upsampling (and its fused threshold) is
        /// bit-identical to the per-pixel formula.
        #[test]
        fn rowwise_upsampling_matches_per_pixel_formula(
            lh in 1usize..40, lw in 1usize..40, ch in 0.1f64..1.0, cw in 0.1f64..1.0,
            out_h in 1usize..120, out_w in 1usize..120, seed in 0u64..1000,
        ) {
            let new_h = ((lh as f64 * ch) as usize).clamp(1, lh);
            let new_w = ((lw as f64 * cw) as usize).clamp(1, lw);
            let logits: Vec<f32> = noise(lh * lw, seed)
                .into_iter()
                .map(|b| (f32::from(b) - 127.5) / 13.0)
                .collect();
            let fast = upsample_logits(&logits, lh, lw, new_h, new_w, out_h, out_w).unwrap();
            let slow = upsample_logits_per_pixel(&logits, lw, new_h, new_w, out_h, out_w);
            proptest::prop_assert_eq!(
                fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn fused_postprocess_matches_upsample_then_threshold() {
        for (h, w) in [(1080, 1920), (288, 384), (543, 783), (256, 256), (7, 300)] {
            let (new_h, new_w) = longest_side_size(h, w, INPUT_SIZE);
            let logits: Vec<f32> = noise(INPUT_SIZE * INPUT_SIZE, (h * w) as u64)
                .into_iter()
                .map(|b| (f32::from(b) - 127.5) / 13.0)
                .collect();
            let prep = Preprocessed {
                input: Vec::new(),
                resized: Vec::new(),
                orig_h: h,
                orig_w: w,
                new_h,
                new_w,
            };
            let up = upsample_logits(&logits, INPUT_SIZE, INPUT_SIZE, new_h, new_w, h, w).unwrap();
            assert_eq!(
                postprocess_mask(&logits, &prep).unwrap(),
                threshold_logits(&up)
            );
        }
    }
}
