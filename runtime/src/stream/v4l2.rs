//! V4L2 capture (UVC grabbers beside ultrasound and endoscopy towers).
//!
//! The device I/O is behind the cargo feature `v4l2` (the `v4l` crate, memory
//! mapped streaming; building it needs libclang for `v4l2-sys-mit`'s bindgen).
//! The part that turns a driver buffer into a frame — FourCC mapping, row
//! strides (`bytesperline`), `bytesused`, size checks — is plain code, always
//! built and tested on recorded buffers ([`frame_from_buffer`]).
//!
//! Spec: `v4l2:/dev/videoN[:WxH[:FORMAT]]` (FORMAT: yuyv, nv12, rgb24, grey,
//! i420, mjpeg; without it the device's current format is kept).

use std::time::Instant;

use edgeseg_kernels::pixfmt::{self, PixFmtError, RawFormat};

use super::frame::{FrameError, PixelFormat, RawFrame, MAX_SIDE};
use super::source::{Source, SourceError};

/// The pixel format of a V4L2 FourCC, if supported.
pub fn fourcc_format(fourcc: [u8; 4]) -> Option<PixelFormat> {
    Some(match &fourcc {
        b"YUYV" => PixelFormat::Raw(RawFormat::Yuyv),
        b"NV12" => PixelFormat::Raw(RawFormat::Nv12),
        b"YU12" => PixelFormat::Raw(RawFormat::I420),
        b"RGB3" => PixelFormat::Raw(RawFormat::Rgb24),
        b"GREY" => PixelFormat::Raw(RawFormat::Grey),
        b"MJPG" | b"JPEG" => PixelFormat::Mjpeg,
        _ => return None,
    })
}

/// The FourCC of a pixel format.
pub fn format_fourcc(format: PixelFormat) -> [u8; 4] {
    match format {
        PixelFormat::Raw(RawFormat::Yuyv) => *b"YUYV",
        PixelFormat::Raw(RawFormat::Nv12) => *b"NV12",
        PixelFormat::Raw(RawFormat::I420) => *b"YU12",
        PixelFormat::Raw(RawFormat::Rgb24) => *b"RGB3",
        PixelFormat::Raw(RawFormat::Grey) => *b"GREY",
        PixelFormat::Mjpeg => *b"MJPG",
    }
}

/// Turns one dequeued driver buffer into a tightly packed frame.
///
/// `stride` is the driver's `bytesperline` (of the luma plane for NV12/I420;
/// I420 chroma rows are `stride / 2`), `bytes` the filled part of the buffer
/// (`bytesused`). Padding at the end of each row is dropped. Every size is
/// checked before allocating; a short buffer is a per-frame error.
pub fn frame_from_buffer(
    id: u64,
    width: usize,
    height: usize,
    format: PixelFormat,
    stride: usize,
    bytes: &[u8],
) -> Result<RawFrame, FrameError> {
    let err = |source| FrameError::Pixels { id, source };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(FrameError::TooLarge { id, width, height });
    }
    let raw = match format {
        PixelFormat::Mjpeg => {
            if bytes.is_empty() {
                return Err(FrameError::Source {
                    id,
                    message: "empty MJPEG buffer".into(),
                });
            }
            return Ok(RawFrame {
                id,
                width,
                height,
                format,
                data: bytes.to_vec(),
                capture: Instant::now(),
            });
        }
        PixelFormat::Raw(f) => f,
    };
    let packed = pixfmt::frame_len(raw, width, height).map_err(err)?;
    let row = match raw {
        RawFormat::Rgb24 => width * 3,
        RawFormat::Yuyv => width * 2,
        RawFormat::Grey | RawFormat::Nv12 | RawFormat::I420 => width,
    };
    let stride = if stride == 0 { row } else { stride };
    let short = |expected| {
        err(PixFmtError::BadLength {
            format: raw.name(),
            which: "input",
            width,
            height,
            expected,
            got: bytes.len(),
        })
    };
    if stride < row {
        return Err(FrameError::Source {
            id,
            message: format!("bytesperline {stride} < {row} for {width}px {}", raw.name()),
        });
    }
    // (rows, bytes per row, stride) of each plane.
    let planes: Vec<(usize, usize, usize)> = match raw {
        RawFormat::Nv12 => vec![(height, row, stride), (height / 2, row, stride)],
        RawFormat::I420 => vec![
            (height, row, stride),
            (height / 2, row / 2, stride / 2),
            (height / 2, row / 2, stride / 2),
        ],
        _ => vec![(height, row, stride)],
    };
    let mut need = 0usize;
    for &(rows, _, s) in &planes {
        need = rows
            .checked_mul(s)
            .and_then(|n| n.checked_add(need))
            .ok_or_else(|| short(usize::MAX))?;
    }
    if bytes.len() < need {
        return Err(short(need));
    }
    if stride == row {
        return Ok(RawFrame {
            id,
            width,
            height,
            format,
            data: bytes[..packed].to_vec(),
            capture: Instant::now(),
        });
    }
    let mut data = Vec::with_capacity(packed);
    let mut at = 0;
    for (rows, len, s) in planes {
        for r in 0..rows {
            let start = at + r * s;
            data.extend_from_slice(&bytes[start..start + len]);
        }
        at += rows * s;
    }
    Ok(RawFrame {
        id,
        width,
        height,
        format,
        data,
        capture: Instant::now(),
    })
}

/// A parsed `v4l2:` input: device path, requested size and format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4l2Spec {
    /// Device path, e.g. `/dev/video0`.
    pub device: String,
    /// Requested size (else the device's current one).
    pub size: Option<(usize, usize)>,
    /// Requested pixel format (else the device's current one).
    pub format: Option<PixelFormat>,
}

/// Parses `DEVICE[:WxH[:FORMAT]]`.
pub fn parse_spec(spec: &str) -> Result<V4l2Spec, SourceError> {
    let bad = |message: &str| SourceError::Spec {
        spec: format!("v4l2:{spec}"),
        message: message.into(),
    };
    let mut parts = spec.split(':');
    let dev = parts
        .next()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("no device"))?;
    let size = parts
        .next()
        .map(|s| super::source::parse_size(s).ok_or_else(|| bad("size is WxH")))
        .transpose()?;
    let format = parts
        .next()
        .map(|f| PixelFormat::parse(f).ok_or_else(|| bad("unknown format")))
        .transpose()?;
    Ok(V4l2Spec {
        device: dev.to_string(),
        size,
        format,
    })
}

/// Opens `DEVICE[:WxH[:FORMAT]]`.
#[cfg(not(feature = "v4l2"))]
pub fn open(spec: &str) -> Result<Box<dyn Source>, SourceError> {
    parse_spec(spec)?;
    Err(SourceError::V4l2(format!(
        "`{spec}`: this build has no V4L2 support (rebuild with `--features v4l2`)"
    )))
}

#[cfg(feature = "v4l2")]
pub use device::open;

#[cfg(feature = "v4l2")]
mod device {
    use super::*;
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    /// A V4L2 capture device streaming through memory-mapped buffers.
    pub struct V4l2Source {
        name: String,
        stream: Stream<'static>,
        _device: Device,
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: usize,
        id: u64,
        errors_in_a_row: u32,
    }

    /// Opens `DEVICE[:WxH[:FORMAT]]`.
    pub fn open(spec: &str) -> Result<Box<dyn Source>, SourceError> {
        let V4l2Spec {
            device: path,
            size,
            format,
        } = parse_spec(spec)?;
        let e =
            |what: &str, err: std::io::Error| SourceError::V4l2(format!("{path}: {what}: {err}"));
        let device = Device::with_path(&path).map_err(|err| e("open", err))?;
        let mut fmt = device.format().map_err(|err| e("get format", err))?;
        if let Some((w, h)) = size {
            fmt.width = u32::try_from(w).map_err(|_| SourceError::V4l2("width".into()))?;
            fmt.height = u32::try_from(h).map_err(|_| SourceError::V4l2("height".into()))?;
        }
        if let Some(f) = format {
            fmt.fourcc = FourCC::new(&format_fourcc(f));
        }
        let fmt = device
            .set_format(&fmt)
            .map_err(|err| e("set format", err))?;
        let format = fourcc_format(fmt.fourcc.repr).ok_or_else(|| {
            SourceError::V4l2(format!("{path}: unsupported pixel format {}", fmt.fourcc))
        })?;
        let stream = Stream::with_buffers(&device, Type::VideoCapture, 4)
            .map_err(|err| e("start streaming", err))?;
        Ok(Box::new(V4l2Source {
            name: format!("v4l2 {path} ({}x{} {})", fmt.width, fmt.height, fmt.fourcc),
            stream,
            _device: device,
            width: fmt.width as usize,
            height: fmt.height as usize,
            format,
            stride: fmt.stride as usize,
            id: 0,
            errors_in_a_row: 0,
        }))
    }

    impl Source for V4l2Source {
        fn describe(&self) -> String {
            self.name.clone()
        }
        fn fps(&self) -> Option<f64> {
            None
        }
        fn is_live(&self) -> bool {
            true
        }
        fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
            let id = self.id;
            self.id += 1;
            match self.stream.next() {
                Ok((buf, meta)) => {
                    self.errors_in_a_row = 0;
                    let used = (meta.bytesused as usize).min(buf.len());
                    Some(frame_from_buffer(
                        id,
                        self.width,
                        self.height,
                        self.format,
                        self.stride,
                        &buf[..used],
                    ))
                }
                Err(err) => {
                    self.errors_in_a_row += 1;
                    if self.errors_in_a_row > 10 {
                        return None; // the device is gone
                    }
                    Some(Err(FrameError::Source {
                        id,
                        message: format!("v4l2 dequeue: {err}"),
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays frames out the way a driver does: rows padded to `stride`.
    fn record(packed: &[u8], rows: &[(usize, usize, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(n, len, stride) in rows {
            for _ in 0..n {
                out.extend_from_slice(&packed[at..at + len]);
                out.resize(out.len() + stride - len, 0xEE);
                at += len;
            }
        }
        out
    }

    #[test]
    fn recorded_buffers_with_row_padding_are_repacked() {
        let (w, h) = (6, 4);
        let yuyv: Vec<u8> = (0..w * h * 2).map(|i| i as u8).collect();
        let buf = record(&yuyv, &[(h, w * 2, 16)]);
        let f = frame_from_buffer(3, w, h, PixelFormat::Raw(RawFormat::Yuyv), 16, &buf).unwrap();
        assert_eq!(f.data, yuyv);
        let nv12: Vec<u8> = (0..w * h * 3 / 2).map(|i| i as u8).collect();
        let buf = record(&nv12, &[(h, w, 8), (h / 2, w, 8)]);
        let f = frame_from_buffer(3, w, h, PixelFormat::Raw(RawFormat::Nv12), 8, &buf).unwrap();
        assert_eq!(f.data, nv12);
        let i420 = nv12.clone();
        let buf = record(&i420, &[(h, w, 8), (h / 2, w / 2, 4), (h / 2, w / 2, 4)]);
        let f = frame_from_buffer(3, w, h, PixelFormat::Raw(RawFormat::I420), 8, &buf).unwrap();
        assert_eq!(f.data, i420);
        // No padding: a plain copy (bytesused may exceed the image).
        let f = frame_from_buffer(
            3,
            w,
            h,
            PixelFormat::Raw(RawFormat::Yuyv),
            12,
            &[yuyv.clone(), vec![0; 9]].concat(),
        )
        .unwrap();
        assert_eq!(f.data, yuyv);
    }

    #[test]
    fn bad_driver_buffers_are_per_frame_errors() {
        let yuyv = PixelFormat::Raw(RawFormat::Yuyv);
        let e = frame_from_buffer(9, 6, 4, yuyv, 16, &[0; 60])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("frame 9") && e.contains("needs 64 bytes, got 60"),
            "{e}"
        );
        assert!(
            frame_from_buffer(9, 6, 4, yuyv, 10, &[0; 100]).is_err(),
            "stride < row"
        );
        assert!(
            frame_from_buffer(9, 5, 4, PixelFormat::Raw(RawFormat::Nv12), 5, &[0; 100]).is_err()
        );
        assert!(frame_from_buffer(9, 0, 4, yuyv, 0, &[]).is_err());
        assert!(frame_from_buffer(9, 4, 4, PixelFormat::Mjpeg, 0, &[]).is_err());
        assert!(frame_from_buffer(9, 1 << 20, 4, yuyv, 0, &[]).is_err());
        assert!(frame_from_buffer(9, 8, 8, yuyv, usize::MAX, &[0; 10]).is_err());
    }

    #[test]
    fn fourccs_and_specs() {
        for f in ["yuyv", "nv12", "i420", "rgb24", "grey", "mjpeg"] {
            let p = PixelFormat::parse(f).unwrap();
            assert_eq!(fourcc_format(format_fourcc(p)), Some(p));
        }
        assert_eq!(fourcc_format(*b"H264"), None);
        let s = parse_spec("/dev/video0:1280x720:mjpeg").unwrap();
        assert_eq!(
            (s.device.as_str(), s.size, s.format),
            ("/dev/video0", Some((1280, 720)), Some(PixelFormat::Mjpeg))
        );
        assert!(parse_spec("").is_err());
        assert!(parse_spec("/dev/video0:big").is_err());
    }
}
