//! A small YUV4MPEG2 (`.y4m`) reader and writer.
//!
//! Y4M is a text header line (`YUV4MPEG2 W… H… F…:… I… A…:… C…`) followed by
//! frames, each a `FRAME` line and the raw planes. The reader accepts 8-bit
//! 4:2:0 (`C420jpeg`, `C420paldv`, `C420mpeg2`, `C420`, the default when `C`
//! is absent) and `Cmono`; other colour spaces are refused with a clear error.
//! Header lines are limited to [`MAX_LINE`] bytes and sizes to
//! [`super::frame::MAX_SIDE`], so a corrupt file cannot make it allocate much.
//! The writer emits `C420jpeg` from RGB8 (BT.601 limited range, see
//! [`edgeseg_kernels::pixfmt`]).

use std::io::{BufRead, Read, Write};

use edgeseg_kernels::pixfmt::{self, RawFormat};

use super::frame::MAX_SIDE;

/// Longest header or `FRAME` line accepted.
pub const MAX_LINE: usize = 1024;

/// Errors of the Y4M reader and writer.
#[derive(Debug, thiserror::Error)]
pub enum Y4mError {
    /// The stream header is malformed or unsupported.
    #[error("y4m header: {0}")]
    Header(String),
    /// A frame header or frame body is malformed or truncated.
    #[error("y4m frame {index}: {message}")]
    Frame {
        /// 0-based index of the frame in the file.
        index: u64,
        /// What was wrong.
        message: String,
    },
    /// The frame to write does not fit the stream.
    #[error("y4m writer: {0}")]
    Write(String),
    /// I/O error.
    #[error("y4m: {0}")]
    Io(#[from] std::io::Error),
}

/// The stream parameters of a Y4M file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mHeader {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator.
    pub fps_den: u32,
    /// Plane layout of each frame.
    pub format: RawFormat,
}

impl Y4mHeader {
    /// Frames per second (25 when the header's rate is unusable).
    pub fn fps(&self) -> f64 {
        if self.fps_num == 0 || self.fps_den == 0 {
            25.0
        } else {
            f64::from(self.fps_num) / f64::from(self.fps_den)
        }
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes. `Ok(None)` at
/// a clean end of stream.
fn read_line<R: BufRead>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = Read::take(r, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line))
}

/// Reads frames from a Y4M stream.
#[derive(Debug)]
pub struct Y4mReader<R> {
    inner: R,
    header: Y4mHeader,
    frame_len: usize,
    index: u64,
    done: bool,
}

impl<R: BufRead> Y4mReader<R> {
    /// Parses the stream header.
    pub fn new(mut inner: R) -> Result<Self, Y4mError> {
        let line = read_line(&mut inner)?.ok_or_else(|| Y4mError::Header("empty file".into()))?;
        let line = line
            .strip_suffix(b"\n")
            .ok_or_else(|| Y4mError::Header(format!("no end of line in {MAX_LINE} bytes")))?;
        let text = std::str::from_utf8(line)
            .map_err(|_| Y4mError::Header("header is not ASCII".into()))?;
        let mut tokens = text.split(' ').filter(|t| !t.is_empty());
        if tokens.next() != Some("YUV4MPEG2") {
            return Err(Y4mError::Header("missing YUV4MPEG2 signature".into()));
        }
        let (mut width, mut height, mut fps) = (None, None, (25, 1));
        let mut format = RawFormat::I420;
        for t in tokens {
            let mut chars = t.chars();
            let key = chars.next().unwrap_or(' ');
            let val = chars.as_str();
            let num = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| Y4mError::Header(format!("bad number in `{t}`")))
            };
            match key {
                'W' => width = Some(num(val)?),
                'H' => height = Some(num(val)?),
                'F' => {
                    let (n, d) = val
                        .split_once(':')
                        .ok_or_else(|| Y4mError::Header(format!("bad frame rate `{t}`")))?;
                    let n = n
                        .parse()
                        .map_err(|_| Y4mError::Header(format!("bad `{t}`")))?;
                    let d = d
                        .parse()
                        .map_err(|_| Y4mError::Header(format!("bad `{t}`")))?;
                    fps = (n, d);
                }
                'I' if val != "p" && val != "?" => {
                    return Err(Y4mError::Header(format!(
                        "interlaced streams (`{t}`) are not supported"
                    )))
                }
                'C' => {
                    format = match val {
                        "420jpeg" | "420paldv" | "420mpeg2" | "420" => RawFormat::I420,
                        "mono" => RawFormat::Grey,
                        other => {
                            return Err(Y4mError::Header(format!(
                                "colour space C{other} is not supported (8-bit 4:2:0 or mono only)"
                            )))
                        }
                    }
                }
                _ => {} // I (progressive), A (aspect), X (comments) are ignored.
            }
        }
        let width = width.ok_or_else(|| Y4mError::Header("no W".into()))?;
        let height = height.ok_or_else(|| Y4mError::Header("no H".into()))?;
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(Y4mError::Header(format!(
                "size {width}x{height} exceeds {MAX_SIDE}"
            )));
        }
        let frame_len = pixfmt::frame_len(format, width, height)
            .map_err(|e| Y4mError::Header(e.to_string()))?;
        Ok(Self {
            inner,
            header: Y4mHeader {
                width,
                height,
                fps_num: fps.0,
                fps_den: fps.1,
                format,
            },
            frame_len,
            index: 0,
            done: false,
        })
    }

    /// The stream parameters.
    pub fn header(&self) -> Y4mHeader {
        self.header
    }

    /// Reads the next frame's planes into `buf` (resized to the frame length).
    /// `Ok(false)` at the end of the stream. After an error the stream is over
    /// (a truncated frame cannot be resynchronised).
    pub fn read_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, Y4mError> {
        if self.done {
            return Ok(false);
        }
        let index = self.index;
        let bad = |message: String| Y4mError::Frame { index, message };
        let line = match read_line(&mut self.inner) {
            Ok(Some(l)) => l,
            Ok(None) => {
                self.done = true;
                return Ok(false);
            }
            Err(e) => {
                self.done = true;
                return Err(e.into());
            }
        };
        if !line.starts_with(b"FRAME") || !line.ends_with(b"\n") {
            self.done = true;
            return Err(bad("missing FRAME header".into()));
        }
        buf.resize(self.frame_len, 0);
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Err(e.into());
                }
            }
        }
        self.index += 1;
        if got < buf.len() {
            self.done = true;
            buf.truncate(got);
            return Err(bad(format!("truncated: {got} of {} bytes", self.frame_len)));
        }
        Ok(true)
    }
}

/// Writes RGB8 frames as a `C420jpeg` Y4M stream.
#[derive(Debug)]
pub struct Y4mWriter<W: Write> {
    inner: W,
    width: usize,
    height: usize,
    fps: (u32, u32),
    started: bool,
    yuv: Vec<u8>,
}

impl<W: Write> Y4mWriter<W> {
    /// A writer whose size is fixed by its first frame.
    pub fn new(inner: W, fps_num: u32, fps_den: u32) -> Self {
        Self {
            inner,
            width: 0,
            height: 0,
            fps: (fps_num.max(1), fps_den.max(1)),
            started: false,
            yuv: Vec::new(),
        }
    }

    /// Appends one RGB8 frame. The first frame fixes the size; a frame of
    /// another size, or of odd size, is refused (the stream stays valid).
    pub fn write_rgb(&mut self, width: usize, height: usize, rgb: &[u8]) -> Result<(), Y4mError> {
        if !self.started {
            let len = pixfmt::frame_len(RawFormat::I420, width, height)
                .map_err(|e| Y4mError::Write(e.to_string()))?;
            writeln!(
                self.inner,
                "YUV4MPEG2 W{width} H{height} F{}:{} Ip A1:1 C420jpeg",
                self.fps.0, self.fps.1
            )?;
            self.width = width;
            self.height = height;
            self.yuv = vec![0; len];
            self.started = true;
        }
        if (width, height) != (self.width, self.height) {
            return Err(Y4mError::Write(format!(
                "frame size {width}x{height} differs from the stream's {}x{}; frame not written",
                self.width, self.height
            )));
        }
        pixfmt::rgb_to_i420(width, height, rgb, &mut self.yuv)
            .map_err(|e| Y4mError::Write(e.to_string()))?;
        self.inner.write_all(b"FRAME\n")?;
        self.inner.write_all(&self.yuv)?;
        Ok(())
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Y4mError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut w = Y4mWriter::new(Vec::new(), 30, 1);
        let rgb: Vec<u8> = (0..4 * 2).flat_map(|i| [i as u8 * 20, 100, 50]).collect();
        w.write_rgb(4, 2, &rgb).unwrap();
        w.write_rgb(4, 2, &rgb).unwrap();
        assert!(w.write_rgb(2, 2, &rgb[..12]).is_err());
        let bytes = w.finish().unwrap();
        let mut r = Y4mReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().width, 4);
        assert_eq!(r.header().fps(), 30.0);
        let mut buf = Vec::new();
        assert!(r.read_frame(&mut buf).unwrap());
        assert_eq!(buf.len(), 12);
        assert!(r.read_frame(&mut buf).unwrap());
        assert!(!r.read_frame(&mut buf).unwrap());
    }

    #[test]
    fn bad_headers_and_truncation() {
        for (h, what) in [
            (&b""[..], "empty"),
            (b"YUV4MPEG2 W4\n", "no H"),
            (b"YUV4MPEG2 W3 H3 C420jpeg\n", "even"),
            (b"YUV4MPEG2 W4 H4 C444\n", "not supported"),
            (b"YUV4MPEG2 W4 H4 It\n", "interlaced"),
            (b"YUV4MPEG2 W99999 H4\n", "exceeds"),
            (b"YUV4MPEG2 W0 H4\n", "zero"),
            (b"RIFF W4 H4\n", "signature"),
            (b"YUV4MPEG2 Wx H4\n", "bad number"),
        ] {
            let e = Y4mReader::new(h).unwrap_err().to_string();
            assert!(e.contains(what), "{e} lacks {what}");
        }
        let long = [b"YUV4MPEG2 ".as_slice(), &[b'X'; 2000]].concat();
        assert!(Y4mReader::new(&long[..]).is_err());
        let data = b"YUV4MPEG2 W2 H2 Cmono\nFRAME\nabcdFRAME\nab";
        let mut r = Y4mReader::new(&data[..]).unwrap();
        let mut buf = Vec::new();
        assert!(r.read_frame(&mut buf).unwrap());
        assert_eq!(buf, b"abcd");
        let e = r.read_frame(&mut buf).unwrap_err().to_string();
        assert!(e.contains("frame 1: truncated: 2 of 4"), "{e}");
        assert!(!r.read_frame(&mut buf).unwrap());
        let mut r = Y4mReader::new(&b"YUV4MPEG2 W2 H2 Cmono\nFRAMX\nabcd"[..]).unwrap();
        assert!(r.read_frame(&mut buf).is_err());
    }
}
