//! Frame sources: a folder of images, a dataset manifest (per-sequence order),
//! Y4M files, raw frames on stdin or from a file, a synthetic generator for
//! benchmarks and tests, and V4L2 capture devices (feature `v4l2`).
//!
//! A source yields `Result<RawFrame, FrameError>` items: a bad frame is one
//! error item and the source goes on with the next frame where the format
//! allows it (a truncated raw or Y4M stream ends after its error item).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use edgeseg_kernels::pixfmt::{self, RawFormat};

use super::frame::{decode_image, FrameError, PixelFormat, RawFrame, MAX_SIDE};
use super::y4m::Y4mReader;

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input specification is not understood.
    #[error("input `{spec}`: {message}")]
    Spec {
        /// The specification given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file or folder could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A manifest is malformed.
    #[error("{path}:{line}: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A Y4M header is malformed.
    #[error("{path}: {source}")]
    Y4m {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: super::y4m::Y4mError,
    },
    /// The V4L2 device failed or the feature is not built.
    #[error("v4l2: {0}")]
    V4l2(String),
}

/// A stream of frames.
pub trait Source: Send {
    /// Human-readable description for logs.
    fn describe(&self) -> String;
    /// Nominal frame rate, used to pace file sources like a live feed.
    fn fps(&self) -> Option<f64>;
    /// `true` when frames arrive at their own pace (capture devices, stdin):
    /// the pipeline then never adds pacing.
    fn is_live(&self) -> bool {
        false
    }
    /// The next frame, a per-frame error, or `None` at the end.
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>>;
}

/// Compares file names with digit runs as numbers (`2.png` < `10.png`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                let strip = |s: &[u8]| {
                    let z = s.iter().take_while(|&&c| c == b'0').count();
                    s[z..].to_vec()
                };
                let (sa, sb) = (strip(na), strip(nb));
                let o = sa.len().cmp(&sb.len()).then(sa.cmp(&sb));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Image files (PNG, JPEG) in a fixed order, decoded to RGB one at a time.
#[derive(Debug)]
pub struct ImageListSource {
    name: String,
    files: Vec<PathBuf>,
    pos: usize,
    fps: f64,
}

impl ImageListSource {
    /// The PNG and JPEG files of `dir` in natural name order.
    pub fn folder(dir: &Path, fps: f64) -> Result<Self, SourceError> {
        let io = |e: std::io::Error| SourceError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        files.sort_by(|a, b| {
            natural_cmp(
                &a.file_name().unwrap_or_default().to_string_lossy(),
                &b.file_name().unwrap_or_default().to_string_lossy(),
            )
        });
        if files.is_empty() {
            return Err(SourceError::Io {
                path: dir.to_path_buf(),
                message: "no .png/.jpg images in this folder".into(),
            });
        }
        Ok(Self {
            name: format!("folder {} ({} images)", dir.display(), files.len()),
            files,
            pos: 0,
            fps,
        })
    }

    /// The images of a dataset manifest (`image` column, paths relative to the
    /// manifest's folder) in per-sequence order: by `group`, then by the
    /// numeric `frame` column, then by line. `group` selects one sequence.
    pub fn manifest(path: &Path, group: Option<&str>, fps: f64) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let bad = |line: usize, message: String| SourceError::Manifest {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| bad(1, "empty manifest".into()))?
            .1
            .split(',')
            .map(str::trim)
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let image_col = col("image").ok_or_else(|| bad(1, "no `image` column".into()))?;
        let (group_col, frame_col) = (col("group"), col("frame"));
        let base = path.parent().unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let cell = |c: usize| {
                cells
                    .get(c)
                    .copied()
                    .ok_or_else(|| bad(i + 1, format!("missing column {}", c + 1)))
            };
            let g = group_col.map(cell).transpose()?.unwrap_or("").to_string();
            if group.is_some_and(|want| want != g) {
                continue;
            }
            let frame = match frame_col {
                Some(c) => cell(c)?
                    .parse::<u64>()
                    .map_err(|_| bad(i + 1, format!("frame `{}` is not a number", cells[c])))?,
                None => i as u64,
            };
            rows.push((g, frame, i, base.join(cell(image_col)?)));
        }
        rows.sort_by(|a, b| {
            natural_cmp(&a.0, &b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        if rows.is_empty() {
            return Err(bad(
                1,
                match group {
                    Some(g) => format!("no rows with group `{g}`"),
                    None => "no rows".into(),
                },
            ));
        }
        Ok(Self {
            name: format!(
                "manifest {}{} ({} images)",
                path.display(),
                group.map(|g| format!(" group {g}")).unwrap_or_default(),
                rows.len()
            ),
            files: rows.into_iter().map(|r| r.3).collect(),
            pos: 0,
            fps,
        })
    }

    /// The files in stream order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Source for ImageListSource {
    fn describe(&self) -> String {
        self.name.clone()
    }
    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
        let path = self.files.get(self.pos)?;
        let id = self.pos as u64;
        self.pos += 1;
        let what = path.display().to_string();
        let result = std::fs::read(path)
            .map_err(|e| FrameError::Source {
                id,
                message: format!("{what}: {e}"),
            })
            .and_then(|bytes| decode_image(id, &what, &bytes, None))
            .map(|img| RawFrame {
                id,
                width: img.width,
                height: img.height,
                format: PixelFormat::Raw(RawFormat::Rgb24),
                data: img.data,
                capture: Instant::now(),
            });
        Some(result)
    }
}

/// Frames of a Y4M stream.
pub struct Y4mSource<R> {
    name: String,
    reader: Y4mReader<R>,
    id: u64,
}

impl<R: std::io::BufRead + Send> Y4mSource<R> {
    /// Wraps a parsed reader.
    pub fn new(name: String, reader: Y4mReader<R>) -> Self {
        Self {
            name,
            reader,
            id: 0,
        }
    }
}

impl Y4mSource<BufReader<std::fs::File>> {
    /// Opens a `.y4m` file.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let f = std::fs::File::open(path).map_err(|e| SourceError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let reader = Y4mReader::new(BufReader::with_capacity(1 << 20, f)).map_err(|source| {
            SourceError::Y4m {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let h = reader.header();
        Ok(Self::new(
            format!(
                "y4m {} ({}x{} {} @ {:.2} fps)",
                path.display(),
                h.width,
                h.height,
                h.format.name(),
                h.fps()
            ),
            reader,
        ))
    }
}

impl<R: std::io::BufRead + Send> Source for Y4mSource<R> {
    fn describe(&self) -> String {
        self.name.clone()
    }
    fn fps(&self) -> Option<f64> {
        Some(self.reader.header().fps())
    }
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
        let mut data = Vec::new();
        let id = self.id;
        self.id += 1;
        match self.reader.read_frame(&mut data) {
            Ok(true) => {
                let h = self.reader.header();
                Some(Ok(RawFrame {
                    id,
                    width: h.width,
                    height: h.height,
                    format: PixelFormat::Raw(h.format),
                    data,
                    capture: Instant::now(),
                }))
            }
            Ok(false) => None,
            Err(e) => Some(Err(FrameError::Source {
                id,
                message: e.to_string(),
            })),
        }
    }
}

/// Raw frames of a declared size and format, back to back (stdin or a file).
pub struct RawSource {
    name: String,
    reader: Box<dyn Read + Send>,
    width: usize,
    height: usize,
    format: RawFormat,
    frame_len: usize,
    id: u64,
    done: bool,
    live: bool,
}

impl RawSource {
    /// Frames of `width × height` in `format` read from `reader`. The size is
    /// checked here, so every later frame has a known, bounded length.
    pub fn new(
        name: String,
        reader: Box<dyn Read + Send>,
        width: usize,
        height: usize,
        format: RawFormat,
        live: bool,
    ) -> Result<Self, SourceError> {
        let spec = |message: String| SourceError::Spec {
            spec: name.clone(),
            message,
        };
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(spec(format!("size {width}x{height} exceeds {MAX_SIDE}")));
        }
        let frame_len =
            pixfmt::frame_len(format, width, height).map_err(|e| spec(e.to_string()))?;
        Ok(Self {
            name,
            reader,
            width,
            height,
            format,
            frame_len,
            id: 0,
            done: false,
            live,
        })
    }
}

impl Source for RawSource {
    fn describe(&self) -> String {
        format!(
            "{} (raw {}x{} {})",
            self.name,
            self.width,
            self.height,
            self.format.name()
        )
    }
    fn fps(&self) -> Option<f64> {
        None
    }
    fn is_live(&self) -> bool {
        self.live
    }
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
        if self.done {
            return None;
        }
        let id = self.id;
        self.id += 1;
        let mut data = vec![0; self.frame_len];
        let mut got = 0;
        while got < data.len() {
            match self.reader.read(&mut data[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(FrameError::Source {
                        id,
                        message: e.to_string(),
                    }));
                }
            }
        }
        if got == 0 {
            self.done = true;
            return None;
        }
        if got < data.len() {
            self.done = true;
            return Some(Err(FrameError::Source {
                id,
                message: format!(
                    "truncated raw {} frame: {got} of {} bytes",
                    self.format.name(),
                    self.frame_len
                ),
            }));
        }
        Some(Ok(RawFrame {
            id,
            width: self.width,
            height: self.height,
            format: PixelFormat::Raw(self.format),
            data,
            capture: Instant::now(),
        }))
    }
}

/// Generated frames: a bright disc moving over a gradient, for benchmarks and
/// tests (the mock backend segments bright pixels, so it finds the disc).
#[derive(Debug)]
pub struct SyntheticSource {
    width: usize,
    height: usize,
    format: RawFormat,
    count: u64,
    id: u64,
    fps: f64,
    base: Vec<u8>,
}

impl SyntheticSource {
    /// `count` frames of `width × height` in `format` (RGB24, GREY or YUYV).
    pub fn new(
        width: usize,
        height: usize,
        format: RawFormat,
        count: u64,
        fps: f64,
    ) -> Result<Self, SourceError> {
        let spec = |message: String| SourceError::Spec {
            spec: format!("synthetic:{width}x{height}"),
            message,
        };
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(spec(format!("size exceeds {MAX_SIDE}")));
        }
        if !matches!(format, RawFormat::Rgb24 | RawFormat::Grey | RawFormat::Yuyv) {
            return Err(spec(format!("format {} is not generated", format.name())));
        }
        let len = pixfmt::frame_len(format, width, height).map_err(|e| spec(e.to_string()))?;
        let mut base = vec![0u8; len];
        let bpp = len / (width * height); // 3, 1 or 2 bytes per pixel.
        for (y, row) in base.chunks_exact_mut(width * bpp).enumerate() {
            for (x, px) in row.chunks_exact_mut(bpp).enumerate() {
                let v = (40 + (x * 60 / width) + (y * 40 / height)) as u8;
                match format {
                    RawFormat::Yuyv => px.copy_from_slice(&[v, if x % 2 == 0 { 118 } else { 140 }]),
                    _ => px.fill(v),
                }
            }
        }
        Ok(Self {
            width,
            height,
            format,
            count,
            id: 0,
            fps,
            base,
        })
    }

    /// Where the disc is on frame `id`: centre and radius.
    pub fn disc(&self, id: u64) -> (usize, usize, usize) {
        let r = self.width.min(self.height) / 8;
        let span_x = self.width.saturating_sub(4 * r).max(1) as u64;
        let span_y = self.height.saturating_sub(4 * r).max(1) as u64;
        let t = id * 4;
        let fold = |t: u64, span: u64| {
            let m = t % (2 * span);
            (if m < span { m } else { 2 * span - m }) as usize
        };
        (2 * r + fold(t, span_x), 2 * r + fold(t / 2, span_y), r)
    }
}

impl Source for SyntheticSource {
    fn describe(&self) -> String {
        format!(
            "synthetic {}x{} {} ({} frames)",
            self.width,
            self.height,
            self.format.name(),
            self.count
        )
    }
    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
        if self.id >= self.count {
            return None;
        }
        let id = self.id;
        self.id += 1;
        let mut data = self.base.clone();
        let (cx, cy, r) = self.disc(id);
        let bpp = data.len() / (self.width * self.height);
        for y in cy.saturating_sub(r)..(cy + r).min(self.height) {
            let dy = y.abs_diff(cy);
            let half = ((r * r).saturating_sub(dy * dy) as f64).sqrt() as usize;
            let (x0, x1) = (cx.saturating_sub(half), (cx + half).min(self.width - 1));
            let row = &mut data[y * self.width * bpp..(y + 1) * self.width * bpp];
            for x in x0..=x1 {
                match self.format {
                    RawFormat::Yuyv => row[x * 2] = 220,
                    _ => row[x * bpp..(x + 1) * bpp].fill(230),
                }
            }
        }
        Some(Ok(RawFrame {
            id,
            width: self.width,
            height: self.height,
            format: PixelFormat::Raw(self.format),
            data,
            capture: Instant::now(),
        }))
    }
}

/// Parses `WxH`.
pub fn parse_size(s: &str) -> Option<(usize, usize)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Opens an input:
///
/// - a folder → its PNG/JPEG images in natural order;
/// - `….csv` or `….csv#GROUP` → a dataset manifest in per-sequence order;
/// - `….y4m` → a Y4M file (`-.y4m`... is not special);
/// - `raw:WxH:FORMAT[:PATH]` → raw frames from PATH, or stdin without PATH;
/// - `synthetic:WxH[:COUNT[:FORMAT]]` → generated frames;
/// - `v4l2:/dev/videoN[:WxH[:FORMAT]]` → a capture device (feature `v4l2`).
///
/// `fps` paces file sources (folders, manifests, synthetic); Y4M uses its
/// header's rate.
pub fn open_source(spec: &str, fps: f64) -> Result<Box<dyn Source>, SourceError> {
    let bad = |message: &str| SourceError::Spec {
        spec: spec.to_string(),
        message: message.to_string(),
    };
    if let Some(rest) = spec.strip_prefix("raw:") {
        let mut parts = rest.splitn(3, ':');
        let (w, h) = parts
            .next()
            .and_then(parse_size)
            .ok_or_else(|| bad("expected raw:WxH:FORMAT[:PATH]"))?;
        let format = match parts.next().and_then(PixelFormat::parse) {
            Some(PixelFormat::Raw(f)) => f,
            _ => return Err(bad("raw FORMAT is one of rgb24, grey, yuyv, nv12, i420")),
        };
        return match parts.next() {
            None | Some("-") => RawSource::new(
                "stdin".into(),
                Box::new(std::io::stdin()),
                w,
                h,
                format,
                true,
            )
            .map(|s| Box::new(s) as Box<dyn Source>),
            Some(path) => {
                let f = std::fs::File::open(path).map_err(|e| SourceError::Io {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                RawSource::new(
                    path.to_string(),
                    Box::new(BufReader::with_capacity(1 << 20, f)),
                    w,
                    h,
                    format,
                    false,
                )
                .map(|s| Box::new(s) as Box<dyn Source>)
            }
        };
    }
    if let Some(rest) = spec.strip_prefix("synthetic:") {
        let mut parts = rest.split(':');
        let (w, h) = parts
            .next()
            .and_then(parse_size)
            .ok_or_else(|| bad("expected synthetic:WxH[:COUNT[:FORMAT]]"))?;
        let count = match parts.next() {
            Some(c) => c.parse().map_err(|_| bad("COUNT is not a number"))?,
            None => 100,
        };
        let format = match parts.next().map(PixelFormat::parse) {
            None => RawFormat::Rgb24,
            Some(Some(PixelFormat::Raw(f))) => f,
            Some(_) => return Err(bad("FORMAT is one of rgb24, grey, yuyv")),
        };
        return Ok(Box::new(SyntheticSource::new(w, h, format, count, fps)?));
    }
    if let Some(rest) = spec.strip_prefix("v4l2:") {
        return super::v4l2::open(rest);
    }
    let (path_part, group) = match spec.split_once('#') {
        Some((p, g)) if p.ends_with(".csv") => (p, Some(g)),
        _ => (spec, None),
    };
    let path = Path::new(path_part);
    if path.is_dir() {
        return Ok(Box::new(ImageListSource::folder(path, fps)?));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Ok(Box::new(ImageListSource::manifest(path, group, fps)?)),
        Some("y4m") => Ok(Box::new(Y4mSource::open(path)?)),
        Some("mp4" | "avi" | "mkv" | "mov" | "h264") => Err(bad(
            "compressed video containers are not supported (see docs/streaming.md); \
             convert to Y4M, e.g. `ffmpeg -i in.mp4 -pix_fmt yuv420p out.y4m`",
        )),
        _ if !path.exists() => Err(SourceError::Io {
            path: path.to_path_buf(),
            message: "no such file or folder".into(),
        }),
        _ => Err(bad(
            "unknown input: expected a folder, a .csv manifest, a .y4m file, \
             raw:WxH:FORMAT[:PATH], synthetic:WxH[:COUNT[:FORMAT]] or v4l2:DEVICE",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["10.png", "2.png", "1.png", "a02.png", "a1.png", "002.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["1.png", "2.png", "002.png", "10.png", "a1.png", "a02.png"]
        );
    }

    #[test]
    fn raw_source_truncation_ends_with_an_error() {
        let data = vec![0u8; 4 * 2 * 2 + 5];
        let mut s = RawSource::new(
            "t".into(),
            Box::new(std::io::Cursor::new(data)),
            4,
            2,
            RawFormat::Yuyv,
            false,
        )
        .unwrap();
        assert!(s.next_frame().unwrap().is_ok());
        let e = s.next_frame().unwrap().unwrap_err();
        assert!(
            e.to_string().contains("truncated raw yuyv frame: 5 of 16"),
            "{e}"
        );
        assert!(s.next_frame().is_none());
        assert!(RawSource::new(
            "t".into(),
            Box::new(std::io::empty()),
            3,
            3,
            RawFormat::Nv12,
            false
        )
        .is_err());
    }

    #[test]
    fn specs() {
        assert!(open_source("raw:4x4", 25.0).is_err());
        assert!(open_source("raw:4x4:h264", 25.0).is_err());
        assert!(open_source("clip.mp4", 25.0)
            .err()
            .unwrap()
            .to_string()
            .contains("Y4M"));
        assert!(open_source("/nonexistent/x.png", 25.0).is_err());
        let mut s = open_source("synthetic:64x48:3:yuyv", 25.0).unwrap();
        let mut n = 0;
        while let Some(f) = s.next_frame() {
            let f = f.unwrap();
            assert_eq!(f.data.len(), 64 * 48 * 2);
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
