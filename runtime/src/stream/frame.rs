//! Frames as sources deliver them (any pixel format) and as the pipeline uses
//! them (RGB8), with the one-pass conversion between the two.

use std::time::Instant;

use edgeseg_kernels::pixfmt::{self, PixFmtError, RawFormat};

use super::overlay::RowFill;

/// Largest side accepted from any source (8K plus margin): a corrupt header
/// must not make the runtime allocate gigabytes.
pub const MAX_SIDE: usize = 16_384;

/// Pixel format of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// An uncompressed layout converted by [`edgeseg_kernels::pixfmt`].
    Raw(RawFormat),
    /// One baseline JPEG per frame (UVC MJPEG, JPEG files).
    Mjpeg,
}

impl PixelFormat {
    /// Parses `rgb24`, `rgb`, `grey`, `gray`, `yuyv`, `nv12`, `i420`, `mjpeg`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "rgb24" | "rgb" | "rgb3" => Self::Raw(RawFormat::Rgb24),
            "grey" | "gray" | "y8" => Self::Raw(RawFormat::Grey),
            "yuyv" | "yuy2" => Self::Raw(RawFormat::Yuyv),
            "nv12" => Self::Raw(RawFormat::Nv12),
            "i420" | "yu12" => Self::Raw(RawFormat::I420),
            "mjpeg" | "mjpg" | "jpeg" => Self::Mjpeg,
            _ => return None,
        })
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw(f) => f.name(),
            Self::Mjpeg => "mjpeg",
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one frame could not be read or converted. The stream goes on after it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Bad size, odd size for a subsampled format, truncated buffer ...
    #[error("frame {id}: {source}")]
    Pixels {
        /// Frame id.
        id: u64,
        /// What was wrong.
        #[source]
        source: PixFmtError,
    },
    /// A side is larger than [`MAX_SIDE`].
    #[error("frame {id}: size {width}x{height} exceeds the {MAX_SIDE}-pixel limit")]
    TooLarge {
        /// Frame id.
        id: u64,
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// A compressed frame or an image file could not be decoded.
    #[error("frame {id}: cannot decode {what}: {message}")]
    Decode {
        /// Frame id.
        id: u64,
        /// File name or format.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// The source could not deliver the frame (I/O error, truncated file ...).
    #[error("frame {id}: {message}")]
    Source {
        /// Frame id.
        id: u64,
        /// What happened.
        message: String,
    },
}

impl FrameError {
    /// The id of the frame at fault.
    pub fn id(&self) -> u64 {
        match self {
            Self::Pixels { id, .. }
            | Self::TooLarge { id, .. }
            | Self::Decode { id, .. }
            | Self::Source { id, .. } => *id,
        }
    }
}

/// One captured frame, as its source delivered it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// Frame id: increasing within a stream (a source may skip ids).
    pub id: u64,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Pixel layout of `data`.
    pub format: PixelFormat,
    /// Tightly packed pixels (or one JPEG for [`PixelFormat::Mjpeg`]).
    pub data: Vec<u8>,
    /// When the source captured or read the frame.
    pub capture: Instant,
}

/// An owned RGB8 image, `height × width × 3`, row-major, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Pixels.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Borrows the image as the backend's frame type.
    pub fn as_frame(&self) -> Result<crate::RgbFrame<'_>, crate::BackendError> {
        crate::RgbFrame::new(self.width, self.height, &self.data)
    }
}

/// A frame travelling through the pipeline as the source delivered it, shared
/// (never modified) between the compositor and the AI mailbox. Ingest converts
/// it once for the video path and the compositor draws on that copy in place;
/// the AI worker, which takes only some frames, converts its own copy off the
/// video path ([`Frame::to_rgb`]).
#[derive(Debug)]
pub struct Frame {
    /// Frame id from the source.
    pub id: u64,
    /// Capture time from the source.
    pub capture: Instant,
    /// When ingest received the frame (before conversion).
    pub ingest: Instant,
    /// Format the source delivered.
    pub format: PixelFormat,
    /// Columns after conversion (a JPEG frame need not declare its size).
    pub width: usize,
    /// Rows after conversion.
    pub height: usize,
    /// The source's frame, unconverted.
    pub raw: RawFrame,
}

impl Frame {
    /// The frame's rows, converted to RGB one at a time when read (the same
    /// pixels as [`Frame::to_rgb`]), checked as `to_rgb` checks them; `None`
    /// for MJPEG, which decodes whole.
    pub fn rgb_rows(&self) -> Result<Option<pixfmt::RawRows<'_>>, FrameError> {
        let raw = &self.raw;
        let PixelFormat::Raw(format) = raw.format else {
            return Ok(None);
        };
        check_side(raw.id, raw.width, raw.height)?;
        pixfmt::RawRows::new(format, raw.width, raw.height, &raw.data)
            .map(Some)
            .map_err(|source| FrameError::Pixels { id: raw.id, source })
    }

    /// Converts the frame to RGB in `buf`'s allocation (the same one-pass
    /// conversion as ingest, so the same pixels).
    pub fn to_rgb(&self, mut buf: Vec<u8>) -> Result<RgbImage, FrameError> {
        let (width, height) = to_rgb(&self.raw, &mut buf)?;
        Ok(RgbImage {
            width,
            height,
            data: buf,
        })
    }
}

/// Recycled frame buffers. Every 1080p frame would otherwise allocate (and
/// page-fault in) 6 MB, which costs more than the conversion itself on a
/// small or virtualised CPU.
#[derive(Debug)]
pub struct BufferPool {
    bufs: std::sync::Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl BufferPool {
    /// A pool keeping at most `max` idle buffers.
    pub fn new(max: usize) -> Self {
        Self {
            bufs: std::sync::Mutex::new(Vec::new()),
            max,
        }
    }

    /// A buffer with room for at least `len` bytes (contents unspecified,
    /// length 0 or a previous frame's length).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        match bufs.iter().position(|b| b.capacity() >= len) {
            Some(i) => bufs.swap_remove(i),
            None => Vec::new(),
        }
    }

    /// Returns a buffer for reuse (dropped if the pool is full).
    pub fn put(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        if bufs.len() < self.max {
            bufs.push(buf);
        }
    }
}

fn check_side(id: u64, width: usize, height: usize) -> Result<(), FrameError> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(FrameError::TooLarge { id, width, height });
    }
    Ok(())
}

/// Converts a raw frame to RGB8 in one pass, reusing `out`'s allocation where
/// possible. Every size and length is checked before allocating.
pub fn to_rgb(frame: &RawFrame, out: &mut Vec<u8>) -> Result<(usize, usize), FrameError> {
    to_rgb_split(frame, out, 1)
}

/// [`to_rgb`] with a mask fill blended into each row right after the row is
/// converted, while it is still in cache: the same bytes as converting the
/// frame and then blending every run with [`super::overlay::Canvas::blend_run`],
/// for one pass over the frame instead of two. `Ok(None)` (nothing converted)
/// for MJPEG, which decodes whole: convert it with [`to_rgb`] and draw the fill
/// afterwards.
pub fn to_rgb_filled(
    frame: &RawFrame,
    out: &mut Vec<u8>,
    fill: &RowFill<'_>,
) -> Result<Option<(usize, usize)>, FrameError> {
    let id = frame.id;
    let PixelFormat::Raw(format) = frame.format else {
        return Ok(None);
    };
    check_side(id, frame.width, frame.height)?;
    let px = |source| FrameError::Pixels { id, source };
    // Checks the input's length before touching `out`.
    let rows = pixfmt::RawRows::new(format, frame.width, frame.height, &frame.data).map_err(px)?;
    let (w, h) = (frame.width, frame.height);
    out.resize(pixfmt::rgb_len(w, h).map_err(px)?, 0);
    if !fill.in_row_order() {
        // Not made by `MaskShape::of`: convert, then blend every run.
        pixfmt::to_rgb(format, w, h, &frame.data, out).map_err(px)?;
        if let Some(mut canvas) = super::overlay::Canvas::new(w, h, out, None) {
            for &(y, x0, x1) in fill.runs {
                canvas.blend_run(y as usize, x0 as usize, x1 as usize, fill.rgb, fill.alpha);
            }
        }
        return Ok(Some((w, h)));
    }
    let mut cursor = 0;
    // `w > 0` here: `rgb_len` refuses empty frames.
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        rows.convert_row(y, row).map_err(px)?;
        let runs = fill.runs_of_row(y, &mut cursor);
        if !runs.is_empty() {
            fill.blend_row(row, w, runs);
        }
    }
    Ok(Some((w, h)))
}

/// The machine's floor for the video path: `frame` converted to RGB (into one
/// recycled buffer, as ingest does) once per `1 / fps` for `periods` periods,
/// alone on the calling thread; returns each conversion's duration in µs. A
/// pass-through percentile of `bench-stream` means little without this one,
/// measured on the same machine in the same session: on a shared or
/// virtualised CPU the bare conversion can have a long tail by itself.
pub fn conversion_floor(
    frame: &RawFrame,
    fps: f64,
    periods: usize,
) -> Result<Vec<u64>, FrameError> {
    let mut rgb = Vec::new();
    to_rgb(frame, &mut rgb)?;
    let period = if fps.is_finite() && fps > 0.0 {
        std::time::Duration::from_secs_f64(1.0 / fps)
    } else {
        std::time::Duration::ZERO
    };
    let start = Instant::now();
    let mut due = start;
    let mut out = Vec::with_capacity(periods);
    for _ in 0..periods {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        due += period;
        let t = Instant::now();
        to_rgb(frame, &mut rgb)?;
        std::hint::black_box(&rgb);
        out.push(t.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
    }
    Ok(out)
}

/// [`to_rgb`] with the rows of packed layouts (YUYV, RGB24, GREY) split over
/// `threads` threads: the calling thread and `threads − 1` scoped helpers.
/// Rows convert independently, so the output is identical to [`to_rgb`]'s.
/// Planar layouts (NV12, I420) and JPEG run on the calling thread; so does
/// the whole frame if a helper cannot be started.
pub fn to_rgb_split(
    frame: &RawFrame,
    out: &mut Vec<u8>,
    threads: usize,
) -> Result<(usize, usize), FrameError> {
    let id = frame.id;
    match frame.format {
        PixelFormat::Raw(raw) => {
            check_side(id, frame.width, frame.height)?;
            let px = |source| FrameError::Pixels { id, source };
            let n = pixfmt::rgb_len(frame.width, frame.height).map_err(px)?;
            // Check the input before touching `out` so a bad frame costs nothing.
            let need = pixfmt::frame_len(raw, frame.width, frame.height).map_err(px)?;
            if frame.data.len() != need {
                return Err(px(PixFmtError::BadLength {
                    format: raw.name(),
                    which: "input",
                    width: frame.width,
                    height: frame.height,
                    expected: need,
                    got: frame.data.len(),
                }));
            }
            out.resize(n, 0);
            convert_rows(raw, frame.width, frame.height, &frame.data, out, threads).map_err(px)?;
            Ok((frame.width, frame.height))
        }
        PixelFormat::Mjpeg => {
            let img = decode_image(id, "mjpeg", &frame.data, Some(image::ImageFormat::Jpeg))?;
            if frame.width != 0
                && frame.height != 0
                && (img.width != frame.width || img.height != frame.height)
            {
                return Err(FrameError::Decode {
                    id,
                    what: "mjpeg".into(),
                    message: format!(
                        "JPEG is {}x{}, the stream declared {}x{}",
                        img.width, img.height, frame.width, frame.height
                    ),
                });
            }
            *out = img.data;
            Ok((img.width, img.height))
        }
    }
}

/// Rows per part below which a frame is not split (thread start-up would cost
/// more than the conversion it saves).
const MIN_SPLIT_ROWS: usize = 64;

/// Converts checked buffers, splitting packed layouts by rows (see
/// [`to_rgb_split`]).
fn convert_rows(
    raw: RawFormat,
    width: usize,
    height: usize,
    src: &[u8],
    dst: &mut [u8],
    threads: usize,
) -> Result<(), PixFmtError> {
    let in_px = match raw {
        RawFormat::Rgb24 => 3,
        RawFormat::Grey => 1,
        RawFormat::Yuyv => 2,
        RawFormat::Nv12 | RawFormat::I420 => 0,
    };
    let rows = height.div_ceil(threads.max(1));
    if in_px == 0 || threads <= 1 || rows < MIN_SPLIT_ROWS {
        return pixfmt::to_rgb(raw, width, height, src, dst);
    }
    // The sizes were checked by the caller: `height × width × 3` fits.
    let (in_part, out_part) = (rows * width * in_px, rows * width * 3);
    let all_started = std::thread::scope(|scope| {
        let mut parts = src.chunks(in_part).zip(dst.chunks_mut(out_part));
        let Some((first_in, first_out)) = parts.next() else {
            return Ok(true);
        };
        let mut helpers = Vec::new();
        let mut all_started = true;
        for (i, o) in parts {
            let part_rows = o.len() / (width * 3);
            let run = move || pixfmt::to_rgb(raw, width, part_rows, i, o);
            match std::thread::Builder::new()
                .name("convert".into())
                .spawn_scoped(scope, run)
            {
                Ok(h) => helpers.push(h),
                Err(_) => all_started = false,
            }
        }
        pixfmt::to_rgb(
            raw,
            width,
            first_out.len() / (width * 3),
            first_in,
            first_out,
        )?;
        for h in helpers {
            match h.join() {
                Ok(r) => r?,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(all_started)
    })?;
    if !all_started {
        // A helper could not be started: convert the whole frame here.
        pixfmt::to_rgb(raw, width, height, src, dst)?;
    }
    Ok(())
}

/// Decodes an encoded image (JPEG or PNG) to RGB8, refusing sizes above
/// [`MAX_SIDE`] before decoding the pixels.
pub fn decode_image(
    id: u64,
    what: &str,
    bytes: &[u8],
    format: Option<image::ImageFormat>,
) -> Result<RgbImage, FrameError> {
    let err = |message: String| FrameError::Decode {
        id,
        what: what.to_string(),
        message,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    match format {
        Some(f) => reader.set_format(f),
        None => {
            reader = reader
                .with_guessed_format()
                .map_err(|e| err(e.to_string()))?
        }
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    let rgb = img.into_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(err(format!("image size {width}x{height} has a zero side")));
    }
    Ok(RgbImage {
        width,
        height,
        data: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(format: PixelFormat, width: usize, height: usize, len: usize) -> RawFrame {
        RawFrame {
            id: 7,
            width,
            height,
            format,
            data: vec![128; len],
            capture: Instant::now(),
        }
    }

    /// Noise bytes from a seed (xorshift), so frames have varied pixels.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
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
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Blending the fill into each row as it is converted gives exactly
        /// the bytes of converting the frame and then blending every run over
        /// it, for every raw layout, runs in row order or not, runs that leave
        /// the frame, and any opacity.
        #[test]
        fn fill_during_conversion_equals_fill_after(
            format_index in 0usize..5,
            half_w in 1usize..40,
            half_h in 1usize..12,
            runs in proptest::collection::vec((0u32..30, 0u32..90, 0u32..90), 0..40),
            sorted in proptest::bool::ANY,
            rgb in proptest::array::uniform3(0u8..=255),
            alpha in 0u16..300,
            seed in 0u64..u64::MAX,
        ) {
            let format = [
                RawFormat::Yuyv,
                RawFormat::Rgb24,
                RawFormat::Grey,
                RawFormat::Nv12,
                RawFormat::I420,
            ][format_index];
            let (w, h) = (2 * half_w, 2 * half_h);
            let len = pixfmt::frame_len(format, w, h).expect("valid size");
            let frame = RawFrame {
                id: 1,
                width: w,
                height: h,
                format: PixelFormat::Raw(format),
                data: noise(len, seed),
                capture: Instant::now(),
            };
            let mut runs: Vec<(u32, u32, u32)> = runs
                .into_iter()
                .map(|(y, a, b)| (y, a.min(b), a.max(b)))
                .collect();
            if sorted {
                runs.sort_by_key(|r| r.0);
            }
            let fill = RowFill { runs: &runs, rgb, alpha };
            let mut want = Vec::new();
            to_rgb(&frame, &mut want).expect("converts");
            let mut canvas = super::super::overlay::Canvas::new(w, h, &mut want, None)
                .expect("sizes agree");
            for &(y, x0, x1) in &runs {
                canvas.blend_run(y as usize, x0 as usize, x1 as usize, rgb, alpha);
            }
            let mut got = vec![9u8; 5];
            let size = to_rgb_filled(&frame, &mut got, &fill).expect("converts");
            proptest::prop_assert_eq!(size, Some((w, h)));
            proptest::prop_assert!(got == want);
        }
    }

    /// The floor probe times one conversion per period and refuses a frame
    /// that does not convert.
    #[test]
    fn conversion_floor_times_each_period() {
        let frame = raw(PixelFormat::Raw(RawFormat::Yuyv), 16, 8, 16 * 8 * 2);
        let t = Instant::now();
        let us = conversion_floor(&frame, 200.0, 5).expect("converts");
        assert_eq!(us.len(), 5);
        // five periods of 5 ms, the first one not waited for
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
        let bad = raw(PixelFormat::Raw(RawFormat::Yuyv), 16, 8, 3);
        assert!(conversion_floor(&bad, 30.0, 5).is_err());
        assert!(conversion_floor(&frame, 0.0, 0)
            .expect("no periods")
            .is_empty());
    }

    /// A bad frame gives the same kind of error through the fused path, and
    /// MJPEG is left to the whole-frame decoder.
    #[test]
    fn fill_during_conversion_refuses_bad_frames() {
        let fill = RowFill {
            runs: &[(0, 0, 3)],
            rgb: [1, 2, 3],
            alpha: 90,
        };
        let mut out = Vec::new();
        let short = raw(PixelFormat::Raw(RawFormat::Yuyv), 8, 4, 10);
        assert!(matches!(
            to_rgb_filled(&short, &mut out, &fill),
            Err(FrameError::Pixels { id: 7, .. })
        ));
        let odd = raw(PixelFormat::Raw(RawFormat::Nv12), 7, 4, 42);
        assert!(to_rgb_filled(&odd, &mut out, &fill).is_err());
        let empty = raw(PixelFormat::Raw(RawFormat::Grey), 0, 4, 0);
        assert!(to_rgb_filled(&empty, &mut out, &fill).is_err());
        let jpeg = raw(PixelFormat::Mjpeg, 8, 4, 10);
        assert!(matches!(to_rgb_filled(&jpeg, &mut out, &fill), Ok(None)));
        assert!(out.is_empty(), "nothing written for refused frames");
    }

    /// Splitting the rows over threads gives exactly the one-thread output,
    /// for every packed layout and for part sizes that do not divide the
    /// height (and planar layouts, which are not split, are unchanged too).
    #[test]
    fn split_conversion_is_identical() {
        for (format, bytes_per_px) in [
            (RawFormat::Yuyv, 2),
            (RawFormat::Rgb24, 3),
            (RawFormat::Grey, 1),
            (RawFormat::Nv12, 0),
        ] {
            for (width, height) in [(64, 200), (130, 257), (2, 64), (130, 258)] {
                if bytes_per_px == 0 && height % 2 == 1 {
                    continue; // NV12 needs even sides
                }
                let len = if bytes_per_px == 0 {
                    width * height * 3 / 2
                } else {
                    width * height * bytes_per_px
                };
                let mut frame = raw(PixelFormat::Raw(format), width, height, len);
                for (k, b) in frame.data.iter_mut().enumerate() {
                    *b = (k.wrapping_mul(2_654_435_761) >> 7) as u8;
                }
                let mut one = Vec::new();
                assert_eq!(to_rgb(&frame, &mut one).unwrap(), (width, height));
                for threads in [2, 3, 8] {
                    let mut split = vec![9; 5];
                    let size = to_rgb_split(&frame, &mut split, threads).unwrap();
                    assert_eq!(size, (width, height));
                    assert!(
                        split == one,
                        "{format:?} {width}x{height} on {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn frame_errors_are_per_frame_and_clear() {
        let mut out = Vec::new();
        let nv12 = PixelFormat::Raw(RawFormat::Nv12);
        let e = to_rgb(&raw(nv12, 0, 4, 0), &mut out).unwrap_err();
        assert!(e.to_string().contains("frame 7") && e.to_string().contains("zero side"));
        let e = to_rgb(&raw(nv12, 5, 4, 30), &mut out).unwrap_err();
        assert!(e.to_string().contains("even"), "{e}");
        let e = to_rgb(&raw(nv12, 4, 4, 23), &mut out).unwrap_err();
        assert!(e.to_string().contains("needs 24 bytes, got 23"), "{e}");
        let e = to_rgb(&raw(nv12, 20_000, 4, 0), &mut out).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }));
        assert!(out.is_empty(), "nothing allocated for bad frames");
        assert_eq!(to_rgb(&raw(nv12, 4, 4, 24), &mut out), Ok((4, 4)));
        assert_eq!(out.len(), 48);
        let e = to_rgb(&raw(PixelFormat::Mjpeg, 4, 4, 10), &mut out).unwrap_err();
        assert!(matches!(e, FrameError::Decode { .. }));
    }

    #[test]
    fn mjpeg_decodes_in_one_call() {
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([200, 30, 30]));
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let mut f = raw(PixelFormat::Mjpeg, 16, 8, 0);
        f.data = jpeg;
        let mut out = Vec::new();
        assert_eq!(to_rgb(&f, &mut out), Ok((16, 8)));
        assert!((i32::from(out[0]) - 200).abs() < 8);
        f.width = 32;
        assert!(to_rgb(&f, &mut out).is_err(), "declared size must match");
    }

    #[test]
    fn parse_formats() {
        assert_eq!(
            PixelFormat::parse("YUYV"),
            Some(PixelFormat::Raw(RawFormat::Yuyv))
        );
        assert_eq!(PixelFormat::parse("mjpg"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("h264"), None);
    }
}
