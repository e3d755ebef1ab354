//! CPU reference of the capture pixel-format conversions: YUYV, NV12, I420,
//! RGB24 and GREY to interleaved RGB8 in one pass, and RGB8 to I420 (for Y4M
//! output). These are the specification that fused GPU preprocessing kernels are
//! tested against.
//!
//! # Conventions
//!
//! - **Colour matrix: BT.601, limited ("video") range**, which is what V4L2
//!   reports by default for YUYV and NV12 capture (`V4L2_YCBCR_ENC_601`,
//!   `V4L2_QUANTIZATION_LIM_RANGE`) and what Y4M files conventionally hold:
//!   Y in 16..=235, Cb/Cr in 16..=240 centred on 128.
//!
//!   ```text
//!   R = 1.164383 (Y−16)                  + 1.596027 (Cr−128)
//!   G = 1.164383 (Y−16) − 0.391762 (Cb−128) − 0.812968 (Cr−128)
//!   B = 1.164383 (Y−16) + 2.017232 (Cb−128)
//!   ```
//!
//!   computed with OpenCV's 20-bit fixed-point coefficients
//!   ([`ycbcr_to_rgb`]; luma below 16 counts as 16), rounded half up and
//!   clamped to 0..=255. The inverse ([`rgb_to_ycbcr`]) uses the matching
//!   forward coefficients. MJPEG (JFIF) is full-range BT.601 and is decoded by
//!   the JPEG decoder of the runtime, not here.
//! - **Chroma siting:** 4:2:2 and 4:2:0 chroma is applied to its 2 (or 2×2)
//!   pixels unchanged (nearest neighbour, no interpolation); [`rgb_to_i420`]
//!   averages each 2×2 block (rounded half up). This is the cheapest one-pass
//!   scheme; the difference to interpolated siting is below one code value on
//!   smooth content and irrelevant for segmentation.
//! - **Layouts** are tightly packed (no row padding): YUYV is `Y0 U Y1 V` per
//!   pixel pair; NV12 is the Y plane followed by interleaved `U V` at half
//!   resolution; I420 is Y, then U, then V planes at half resolution; RGB24 is
//!   `R G B`; GREY is one byte per pixel, replicated to R, G and B.
//! - **Sizes:** zero sides are rejected; YUYV needs an even width, NV12 and I420
//!   need even width and height (odd sizes are an error, never silently
//!   cropped); buffer lengths must match exactly; size arithmetic is checked.

/// Capture pixel formats that convert to RGB8 without a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawFormat {
    /// Interleaved 8-bit R, G, B.
    Rgb24,
    /// 8-bit luma only.
    Grey,
    /// Packed 4:2:2 `Y0 U Y1 V` (V4L2 `YUYV`, FourCC `YUY2`).
    Yuyv,
    /// Semi-planar 4:2:0: Y plane, then interleaved `U V` (V4L2 `NV12`).
    Nv12,
    /// Planar 4:2:0: Y, U, V planes (Y4M `C420*`, V4L2 `YU12`).
    I420,
}

impl RawFormat {
    /// Short lower-case name used in logs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb24 => "rgb24",
            Self::Grey => "grey",
            Self::Yuyv => "yuyv",
            Self::Nv12 => "nv12",
            Self::I420 => "i420",
        }
    }
}

/// Why a buffer cannot be converted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PixFmtError {
    /// A side is zero.
    #[error("{format} frame size {width}x{height} has a zero side")]
    ZeroSize {
        /// Format name.
        format: &'static str,
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// The format subsamples chroma and needs even sides.
    #[error("{format} needs an even {what}, got {width}x{height}")]
    OddSize {
        /// Format name.
        format: &'static str,
        /// `width` or `width and height`.
        what: &'static str,
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// The size overflows `usize`.
    #[error("{format} frame size {width}x{height} overflows")]
    Overflow {
        /// Format name.
        format: &'static str,
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// The input or output buffer has the wrong length.
    #[error("{format} {width}x{height} {which} buffer needs {expected} bytes, got {got}")]
    BadLength {
        /// Format name.
        format: &'static str,
        /// `input` or `output`.
        which: &'static str,
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
        /// Bytes required.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
}

/// Bytes of one tightly packed `width × height` frame in `format`, after
/// checking the size rules (non-zero, even where chroma is subsampled, no
/// overflow).
pub fn frame_len(format: RawFormat, width: usize, height: usize) -> Result<usize, PixFmtError> {
    let name = format.name();
    if width == 0 || height == 0 {
        return Err(PixFmtError::ZeroSize {
            format: name,
            width,
            height,
        });
    }
    let odd = |what| PixFmtError::OddSize {
        format: name,
        what,
        width,
        height,
    };
    match format {
        RawFormat::Yuyv if !width.is_multiple_of(2) => return Err(odd("width")),
        RawFormat::Nv12 | RawFormat::I420
            if !width.is_multiple_of(2) || !height.is_multiple_of(2) =>
        {
            return Err(odd("width and height"))
        }
        _ => {}
    }
    let overflow = || PixFmtError::Overflow {
        format: name,
        width,
        height,
    };
    let pixels = width.checked_mul(height).ok_or_else(overflow)?;
    match format {
        RawFormat::Rgb24 => pixels.checked_mul(3).ok_or_else(overflow),
        RawFormat::Grey => Ok(pixels),
        RawFormat::Yuyv => pixels.checked_mul(2).ok_or_else(overflow),
        // pixels is a multiple of 4 here, so / 2 * 3 is exact.
        RawFormat::Nv12 | RawFormat::I420 => (pixels / 2).checked_mul(3).ok_or_else(overflow),
    }
}

/// Bytes of a `width × height` RGB8 frame (checked; zero sides rejected).
pub fn rgb_len(width: usize, height: usize) -> Result<usize, PixFmtError> {
    frame_len(RawFormat::Rgb24, width, height)
}

fn check_buffers(
    format: RawFormat,
    width: usize,
    height: usize,
    src: &[u8],
    dst: &[u8],
) -> Result<(), PixFmtError> {
    let expected = frame_len(format, width, height)?;
    let bad = |which, expected, got| PixFmtError::BadLength {
        format: format.name(),
        which,
        width,
        height,
        expected,
        got,
    };
    if src.len() != expected {
        return Err(bad("input", expected, src.len()));
    }
    let out = rgb_len(width, height)?;
    if dst.len() != out {
        return Err(bad("output", out, dst.len()));
    }
    Ok(())
}

/// OpenCV's 20-bit fixed-point coefficients (see [`ycbcr_to_rgb`]).
const CY: i32 = 1_220_542;
const CUB: i32 = 2_116_026;
const CUG: i32 = -409_993;
const CVG: i32 = -852_492;
const CVR: i32 = 1_673_527;
const HALF20: i32 = 1 << 19;

#[inline(always)]
fn sat20(x: i32) -> u8 {
    (x >> 20).clamp(0, 255) as u8
}

/// The chroma terms `(rv, gu + gv, bu)` of one `Cb Cr` pair, rounding included.
///
/// Wrapping operations: every intermediate is below 2^31 in magnitude by
/// construction (|coefficient| < 2^22, |code − 128| ≤ 128, so each product is
/// below 2^29 and each sum of three terms below 2^31), so they never wrap; using
/// them keeps the overflow checks of this workspace's profiles out of the inner
/// loops, which then vectorise (AVX2/AVX-512/NEON when the target allows).
#[inline(always)]
fn chroma(u: u8, v: u8) -> (i32, i32, i32) {
    let (u, v) = (
        i32::from(u).wrapping_sub(128),
        i32::from(v).wrapping_sub(128),
    );
    (
        CVR.wrapping_mul(v).wrapping_add(HALF20),
        CVG.wrapping_mul(v)
            .wrapping_add(CUG.wrapping_mul(u))
            .wrapping_add(HALF20),
        CUB.wrapping_mul(u).wrapping_add(HALF20),
    )
}

/// One pixel from its luma and the chroma terms of [`chroma`].
#[inline(always)]
fn px(y: u8, c: (i32, i32, i32)) -> [u8; 3] {
    let yy = i32::from(y).wrapping_sub(16).max(0).wrapping_mul(CY);
    [
        sat20(yy.wrapping_add(c.0)),
        sat20(yy.wrapping_add(c.1)),
        sat20(yy.wrapping_add(c.2)),
    ]
}

/// Pixel pairs per block of the YUYV path.
const YUYV_BLOCK: usize = 32;

/// `YUYV_BLOCK` pixel pairs (`4 × YUYV_BLOCK` bytes) to RGB: the same arithmetic as
/// [`chroma`] and [`px`], written as fixed-length lane loops over planar
/// temporaries (deinterleave, compute, interleave) so that the compiler emits SIMD
/// for the arithmetic; the per-pixel form does not vectorise.
#[inline(always)]
fn yuyv_block(i: &[u8], o: &mut [u8]) {
    const N: usize = YUYV_BLOCK;
    let (Some(i), Some(o)) = (i.get(..4 * N), o.get_mut(..6 * N)) else {
        return;
    };
    let mut y0 = [0i32; N];
    let mut y1 = [0i32; N];
    let mut u = [0i32; N];
    let mut v = [0i32; N];
    // `chunks_exact` rather than `4 * k + j` indexing: with the workspace's
    // overflow checks the index arithmetic would keep this loop scalar.
    for (k, q) in i.chunks_exact(4).enumerate() {
        y0[k] = i32::from(q[0]);
        u[k] = i32::from(q[1]);
        y1[k] = i32::from(q[2]);
        v[k] = i32::from(q[3]);
    }
    let (mut cr, mut cg, mut cb) = ([0i32; N], [0i32; N], [0i32; N]);
    for k in 0..N {
        let (uu, vv) = (u[k].wrapping_sub(128), v[k].wrapping_sub(128));
        cr[k] = CVR.wrapping_mul(vv).wrapping_add(HALF20);
        cg[k] = CVG
            .wrapping_mul(vv)
            .wrapping_add(CUG.wrapping_mul(uu))
            .wrapping_add(HALF20);
        cb[k] = CUB.wrapping_mul(uu).wrapping_add(HALF20);
        y0[k] = y0[k].wrapping_sub(16).max(0).wrapping_mul(CY);
        y1[k] = y1[k].wrapping_sub(16).max(0).wrapping_mul(CY);
    }
    let mut rgb = [[0u8; 6]; N];
    for k in 0..N {
        rgb[k] = [
            sat20(y0[k].wrapping_add(cr[k])),
            sat20(y0[k].wrapping_add(cg[k])),
            sat20(y0[k].wrapping_add(cb[k])),
            sat20(y1[k].wrapping_add(cr[k])),
            sat20(y1[k].wrapping_add(cg[k])),
            sat20(y1[k].wrapping_add(cb[k])),
        ];
    }
    o.copy_from_slice(rgb.as_flattened());
}

/// Converts one BT.601 limited-range `Y Cb Cr` sample to `[R, G, B]`.
///
/// This is OpenCV's fixed-point conversion (`cv2.cvtColor` with
/// `COLOR_YUV2RGB_NV12` / `_YUYV`: 20-bit coefficients, luma below 16 treated
/// as 16, round half up, saturate), the same arithmetic as
/// `reference::yuv_to_rgb`, the spec of the GPU preprocessing kernel, so the
/// CPU stream path and the fused GPU path agree bit for bit.
#[inline(always)]
pub fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    px(y, chroma(cb, cr))
}

/// Converts `[R, G, B]` to BT.601 limited-range `[Y, Cb, Cr]` (rounded, clamped).
#[inline(always)]
pub fn rgb_to_ycbcr(rgb: [u8; 3]) -> [u8; 3] {
    const HALF: i32 = 1 << 15;
    let (r, g, b) = (i32::from(rgb[0]), i32::from(rgb[1]), i32::from(rgb[2]));
    // 16.16 fixed point of the BT.601 forward matrix scaled to 219/224 levels.
    let y = (16829 * r + 33039 * g + 6416 * b + HALF + (16 << 16)) >> 16;
    let cb = (-9714 * r - 19070 * g + 28784 * b + HALF + (128 << 16)) >> 16;
    let cr = (28784 * r - 24103 * g - 4681 * b + HALF + (128 << 16)) >> 16;
    [
        y.clamp(0, 255) as u8,
        cb.clamp(0, 255) as u8,
        cr.clamp(0, 255) as u8,
    ]
}

/// Converts a tightly packed `format` frame to interleaved RGB8 in `dst` in one
/// pass. `dst` must hold exactly `width * height * 3` bytes.
pub fn to_rgb(
    format: RawFormat,
    width: usize,
    height: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), PixFmtError> {
    check_buffers(format, width, height, src, dst)?;
    match format {
        RawFormat::Rgb24 => dst.copy_from_slice(src),
        RawFormat::Grey => {
            for (o, &g) in dst.chunks_exact_mut(3).zip(src) {
                o.copy_from_slice(&[g, g, g]);
            }
        }
        RawFormat::Yuyv => yuyv_to_rgb(src, dst),
        RawFormat::Nv12 | RawFormat::I420 => {
            for (row, out_row) in dst.chunks_exact_mut(width * 3).enumerate() {
                yuv420_row(format, width, height, src, row, out_row);
            }
        }
    }
    Ok(())
}

/// Row `row` of an NV12 or I420 frame (buffer already checked) to RGB8.
fn yuv420_row(
    format: RawFormat,
    width: usize,
    height: usize,
    src: &[u8],
    row: usize,
    out_row: &mut [u8],
) {
    let pixels = width * height;
    let (luma, uv) = src.split_at(pixels);
    let cw = width / 2;
    let (u_plane, v_plane) = uv.split_at(pixels / 4);
    let y_row = &luma[row * width..(row + 1) * width];
    let crow = row / 2;
    for (col, (o, y2)) in out_row
        .chunks_exact_mut(6)
        .zip(y_row.chunks_exact(2))
        .enumerate()
    {
        let c = if format == RawFormat::Nv12 {
            let k = 2 * (crow * cw + col);
            chroma(uv[k], uv[k + 1])
        } else {
            let k = crow * cw + col;
            chroma(u_plane[k], v_plane[k])
        };
        let (a, b) = (px(y2[0], c), px(y2[1], c));
        (o[0], o[1], o[2]) = (a[0], a[1], a[2]);
        (o[3], o[4], o[5]) = (b[0], b[1], b[2]);
    }
}

/// The rows of a raw frame converted to RGB8 one at a time, the same pixels
/// as the rows of [`to_rgb`]'s output: the AI's pre-processing reads a frame
/// through this ([`crate::prepost::preprocess_rows`]) instead of converting
/// it whole.
#[derive(Debug, Clone, Copy)]
pub struct RawRows<'a> {
    format: RawFormat,
    width: usize,
    height: usize,
    src: &'a [u8],
}

impl<'a> RawRows<'a> {
    /// Checks the frame as [`to_rgb`] does.
    pub fn new(
        format: RawFormat,
        width: usize,
        height: usize,
        src: &'a [u8],
    ) -> Result<Self, PixFmtError> {
        let expected = frame_len(format, width, height)?;
        if src.len() != expected {
            return Err(PixFmtError::BadLength {
                format: format.name(),
                which: "input",
                width,
                height,
                expected,
                got: src.len(),
            });
        }
        rgb_len(width, height)?;
        Ok(Self {
            format,
            width,
            height,
            src,
        })
    }

    /// Converts row `y` into `out` (`width × 3` bytes).
    pub fn convert_row(&self, y: usize, out: &mut [u8]) -> Result<(), PixFmtError> {
        let w = self.width;
        if y >= self.height || out.len() != w * 3 {
            return Err(PixFmtError::BadLength {
                format: self.format.name(),
                which: "output row",
                width: w,
                height: self.height,
                expected: w * 3,
                got: if y >= self.height { 0 } else { out.len() },
            });
        }
        match self.format {
            RawFormat::Rgb24 => out.copy_from_slice(&self.src[y * w * 3..(y + 1) * w * 3]),
            RawFormat::Grey => {
                for (o, &g) in out.chunks_exact_mut(3).zip(&self.src[y * w..(y + 1) * w]) {
                    o.copy_from_slice(&[g, g, g]);
                }
            }
            RawFormat::Yuyv => yuyv_to_rgb(&self.src[y * w * 2..(y + 1) * w * 2], out),
            RawFormat::Nv12 | RawFormat::I420 => {
                yuv420_row(self.format, w, self.height, self.src, y, out)
            }
        }
        Ok(())
    }
}

impl crate::prepost::RgbRows for RawRows<'_> {
    fn height(&self) -> usize {
        self.height
    }

    fn width(&self) -> usize {
        self.width
    }

    fn row(&mut self, y: usize, out: &mut [u8]) -> Result<(), crate::prepost::PrepError> {
        self.convert_row(y, out)
            .map_err(|e| crate::prepost::PrepError::BadSize(e.to_string()))
    }
}

/// The YUYV path of [`to_rgb`] (buffers already checked): blocks of
/// [`YUYV_BLOCK`] pixel pairs, then the per-pair tail.
///
/// Compiled for several instruction sets and chosen at run time: the block
/// arithmetic needs 32-bit vector multiply and min/max (SSE4.1 or AVX2 on
/// x86-64), which the baseline x86-64 target lacks, so a build without
/// `-C target-cpu` would otherwise run it scalar at about a third of the speed.
/// Every version is the same safe Rust, so the output is identical.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1", "aarch64+neon"))]
fn yuyv_to_rgb(src: &[u8], dst: &mut [u8]) {
    let blocks = src.len() / (4 * YUYV_BLOCK);
    let (src_blocks, src_tail) = src.split_at(blocks * 4 * YUYV_BLOCK);
    let (dst_blocks, dst_tail) = dst.split_at_mut(blocks * 6 * YUYV_BLOCK);
    for (o, i) in dst_blocks
        .chunks_exact_mut(6 * YUYV_BLOCK)
        .zip(src_blocks.chunks_exact(4 * YUYV_BLOCK))
    {
        yuyv_block(i, o);
    }
    for (o, i) in dst_tail.chunks_exact_mut(6).zip(src_tail.chunks_exact(4)) {
        let c = chroma(i[1], i[3]);
        let (a, b) = (px(i[0], c), px(i[2], c));
        (o[0], o[1], o[2]) = (a[0], a[1], a[2]);
        (o[3], o[4], o[5]) = (b[0], b[1], b[2]);
    }
}

/// Converts interleaved RGB8 to planar I420 (BT.601 limited range, chroma
/// averaged over each 2×2 block). `dst` must hold `width * height * 3 / 2`
/// bytes; both sides must be even.
pub fn rgb_to_i420(
    width: usize,
    height: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), PixFmtError> {
    let need = frame_len(RawFormat::I420, width, height)?;
    let rgb = rgb_len(width, height)?;
    let bad = |which, expected, got| PixFmtError::BadLength {
        format: "rgb24",
        which,
        width,
        height,
        expected,
        got,
    };
    if src.len() != rgb {
        return Err(bad("input", rgb, src.len()));
    }
    if dst.len() != need {
        return Err(bad("output", need, dst.len()));
    }
    let pixels = width * height;
    let (y_plane, chroma) = dst.split_at_mut(pixels);
    let (u_plane, v_plane) = chroma.split_at_mut(pixels / 4);
    let cw = width / 2;
    for crow in 0..height / 2 {
        for ccol in 0..cw {
            let (mut su, mut sv) = (0u32, 0u32);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (r, c) = (2 * crow + dy, 2 * ccol + dx);
                let i = (r * width + c) * 3;
                let [y, u, v] = rgb_to_ycbcr([src[i], src[i + 1], src[i + 2]]);
                y_plane[r * width + c] = y;
                su += u32::from(u);
                sv += u32::from(v);
            }
            // Four values of at most 255: the rounded mean fits a u8.
            u_plane[crow * cw + ccol] = ((su + 2) / 4) as u8;
            v_plane[crow * cw + ccol] = ((sv + 2) / 4) as u8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_colours() {
        // Limited-range black and white are exact.
        assert_eq!(ycbcr_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(ycbcr_to_rgb(235, 128, 128), [255, 255, 255]);
        // The 100% primaries come back within one code value.
        for (ycc, rgb) in [
            ([81, 90, 240], [255, 0, 0]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [0, 0, 255]),
        ] {
            let got = ycbcr_to_rgb(ycc[0], ycc[1], ycc[2]);
            for (g, e) in got.iter().zip(rgb) {
                assert!((i32::from(*g) - e).abs() <= 1, "{ycc:?} -> {got:?}");
            }
        }
        // The fixed-point path equals the float formula rounded, everywhere.
        for y in 0..=255u8 {
            for cb in (0..=255u8).step_by(5) {
                for cr in (0..=255u8).step_by(5) {
                    let (yf, d, e) = (
                        (f64::from(y) - 16.0).max(0.0),
                        f64::from(cb) - 128.0,
                        f64::from(cr) - 128.0,
                    );
                    let f = [
                        1.164383 * yf + 1.596027 * e,
                        1.164383 * yf - 0.391762 * d - 0.812968 * e,
                        1.164383 * yf + 2.017232 * d,
                    ];
                    let got = ycbcr_to_rgb(y, cb, cr);
                    for (g, v) in got.iter().zip(f) {
                        let want = (v + 0.5).floor().clamp(0.0, 255.0);
                        assert!((f64::from(*g) - want).abs() <= 1.0, "{y},{cb},{cr}");
                    }
                }
            }
        }
    }

    #[test]
    fn forward_then_inverse_is_close() {
        for r in (0..=255).step_by(17) {
            for g in (0..=255).step_by(17) {
                for b in (0..=255).step_by(17) {
                    let [y, u, v] = rgb_to_ycbcr([r as u8, g as u8, b as u8]);
                    let back = ycbcr_to_rgb(y, u, v);
                    for (a, e) in back.iter().zip([r, g, b]) {
                        assert!((i32::from(*a) - e).abs() <= 2, "{r},{g},{b} -> {back:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// The blocked YUYV path equals the per-pixel conversion bit for bit, for frames
        /// with and without a partial block, and every byte value.
        #[test]
        fn yuyv_blocks_match_per_pixel(w2 in 1usize..40, h in 1usize..4, seed in 0u64..u64::MAX) {
            let (w, n) = (2 * w2, 2 * w2 * h);
            let mut x = seed | 1;
            let src: Vec<u8> = (0..2 * n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            let mut out = vec![0; 3 * n];
            to_rgb(RawFormat::Yuyv, w, h, &src, &mut out).unwrap();
            for (p, i) in src.chunks_exact(4).enumerate() {
                let a = ycbcr_to_rgb(i[0], i[1], i[3]);
                let b = ycbcr_to_rgb(i[2], i[1], i[3]);
                proptest::prop_assert_eq!(&out[6 * p..6 * p + 3], &a[..]);
                proptest::prop_assert_eq!(&out[6 * p + 3..6 * p + 6], &b[..]);
            }
        }
    }

    fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
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
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Row-streamed pre-processing of a raw frame equals converting the whole
        /// frame and pre-processing that, bit for bit: fractional shrinks (the
        /// general area path), integer shrinks (the fast path), and sides up to
        /// 256 (materialized), in every format.
        #[test]
        fn row_streamed_preprocessing_equals_whole_frame(
            format in 0usize..5, size_kind in 0usize..3, a in 1usize..200, b in 1usize..200,
            wide in proptest::bool::ANY, seed in 0u64..u64::MAX,
        ) {
            let format = [RawFormat::Rgb24, RawFormat::Grey, RawFormat::Yuyv, RawFormat::Nv12, RawFormat::I420][format];
            let (long, short) = match size_kind {
                0 => (256 + 2 * a, 2 + 2 * (b % 128)),   // fractional shrink
                1 => (512, 2 * (1 + b % 128)),             // 2x integer on the long side
                _ => (2 * (1 + a % 128), 2 * (1 + b % 128)), // no shrink
            };
            let (w, h) = if wide { (long, short) } else { (short, long) };
            let src = noise_bytes(frame_len(format, w, h).unwrap(), seed);
            let mut rgb = vec![0u8; rgb_len(w, h).unwrap()];
            to_rgb(format, w, h, &src, &mut rgb).unwrap();
            let whole = crate::prepost::preprocess_rgb(&rgb, h, w).unwrap();
            let mut rows = RawRows::new(format, w, h, &src).unwrap();
            let streamed = crate::prepost::preprocess_rows(&mut rows).unwrap();
            proptest::prop_assert_eq!(&streamed.resized, &whole.resized);
            proptest::prop_assert_eq!(&streamed.input, &whole.input);
            proptest::prop_assert_eq!((streamed.new_h, streamed.new_w), (whole.new_h, whole.new_w));
            let mut row = vec![0u8; 3 * w];
            for y in [0, h / 2, h - 1] {
                rows.convert_row(y, &mut row).unwrap();
                proptest::prop_assert_eq!(&row[..], &rgb[y * 3 * w..(y + 1) * 3 * w]);
            }
        }
    }

    #[test]
    fn raw_rows_refuse_bad_buffers_and_rows() {
        assert!(RawRows::new(RawFormat::Yuyv, 4, 2, &[0; 15]).is_err());
        assert!(RawRows::new(RawFormat::Nv12, 3, 2, &[0; 9]).is_err());
        assert!(RawRows::new(RawFormat::Rgb24, 0, 2, &[]).is_err());
        let src = [0u8; 16];
        let rows = RawRows::new(RawFormat::Yuyv, 4, 2, &src).unwrap();
        assert!(rows.convert_row(2, &mut [0; 12]).is_err());
        assert!(rows.convert_row(0, &mut [0; 11]).is_err());
        assert!(rows.convert_row(1, &mut [0; 12]).is_ok());
    }

    #[test]
    fn yuyv_extremes_match_per_pixel() {
        // every (Y, Cb, Cr) corner, in full blocks
        let vals = [0u8, 15, 16, 128, 235, 240, 255];
        let mut src = Vec::new();
        for &y in &vals {
            for &u in &vals {
                for &v in &vals {
                    src.extend_from_slice(&[y, u, 255 - y, v]);
                }
            }
        }
        while src.len() % (4 * YUYV_BLOCK) != 0 {
            src.extend_from_slice(&[16, 128, 235, 128]);
        }
        let n = src.len() / 2;
        let mut out = vec![0; 3 * n];
        to_rgb(RawFormat::Yuyv, n, 1, &src, &mut out).unwrap();
        for (p, i) in src.chunks_exact(4).enumerate() {
            assert_eq!(out[6 * p..6 * p + 3], ycbcr_to_rgb(i[0], i[1], i[3]));
            assert_eq!(out[6 * p + 3..6 * p + 6], ycbcr_to_rgb(i[2], i[1], i[3]));
        }
    }

    #[test]
    fn layouts() {
        // 2x2 frame, one chroma sample: Y = 16, 81, 145, 235.
        let (w, h) = (2, 2);
        let mut out = vec![0; 12];
        let i420 = [16, 81, 145, 235, 128, 128];
        to_rgb(RawFormat::I420, w, h, &i420, &mut out).unwrap();
        assert_eq!(&out[..3], &[0, 0, 0]);
        assert_eq!(&out[9..], &[255, 255, 255]);
        let nv12 = [16, 81, 145, 235, 128, 128];
        let mut out2 = vec![0; 12];
        to_rgb(RawFormat::Nv12, w, h, &nv12, &mut out2).unwrap();
        assert_eq!(out, out2);
        // NV12 interleaves U V; I420 has U plane then V plane.
        let nv12 = [16, 16, 16, 16, 90, 240];
        let i420 = [16, 16, 16, 16, 90, 240];
        to_rgb(RawFormat::Nv12, w, h, &nv12, &mut out).unwrap();
        to_rgb(RawFormat::I420, w, h, &i420, &mut out2).unwrap();
        assert_eq!(out, out2);
        // YUYV: one pair sharing chroma.
        let yuyv = [81, 90, 145, 240, 16, 128, 235, 128];
        let mut out = vec![0; 12];
        to_rgb(RawFormat::Yuyv, 2, 2, &yuyv, &mut out).unwrap();
        assert_eq!(&out[6..], &[0, 0, 0, 255, 255, 255]);
        assert_eq!(out[0], ycbcr_to_rgb(81, 90, 240)[0]);
        // GREY replicates, RGB24 copies.
        let mut out = vec![0; 6];
        to_rgb(RawFormat::Grey, 2, 1, &[7, 9], &mut out).unwrap();
        assert_eq!(out, [7, 7, 7, 9, 9, 9]);
        to_rgb(RawFormat::Rgb24, 2, 1, &[1, 2, 3, 4, 5, 6], &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn i420_round_trip() {
        let (w, h) = (6, 4);
        let src: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 120, 40]).collect();
        let mut yuv = vec![0; frame_len(RawFormat::I420, w, h).unwrap()];
        rgb_to_i420(w, h, &src, &mut yuv).unwrap();
        let mut back = vec![0; w * h * 3];
        to_rgb(RawFormat::I420, w, h, &yuv, &mut back).unwrap();
        for (a, b) in back.iter().zip(&src) {
            assert!((i32::from(*a) - i32::from(*b)).abs() <= 2);
        }
    }

    #[test]
    fn size_errors() {
        let mut out = vec![0; 12];
        assert!(matches!(
            to_rgb(RawFormat::Nv12, 0, 2, &[], &mut out),
            Err(PixFmtError::ZeroSize { .. })
        ));
        assert!(matches!(
            frame_len(RawFormat::I420, 3, 2),
            Err(PixFmtError::OddSize { .. })
        ));
        assert!(matches!(
            frame_len(RawFormat::Nv12, 2, 3),
            Err(PixFmtError::OddSize { .. })
        ));
        assert!(matches!(
            frame_len(RawFormat::Yuyv, 3, 2),
            Err(PixFmtError::OddSize { .. })
        ));
        assert_eq!(frame_len(RawFormat::Grey, 3, 3), Ok(9));
        assert!(matches!(
            frame_len(RawFormat::Rgb24, usize::MAX, 2),
            Err(PixFmtError::Overflow { .. })
        ));
        // Truncated input and wrong output length.
        assert!(matches!(
            to_rgb(RawFormat::Yuyv, 2, 2, &[0; 7], &mut out),
            Err(PixFmtError::BadLength { which: "input", .. })
        ));
        assert!(matches!(
            to_rgb(RawFormat::Yuyv, 2, 2, &[0; 8], &mut out[..11]),
            Err(PixFmtError::BadLength {
                which: "output",
                ..
            })
        ));
    }
}
