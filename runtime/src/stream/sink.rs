//! Sinks: where composed frames go. PNG frames, a Y4M video, mask PNGs and
//! the JSON-lines per-frame log. Sinks run on their own thread; a sink error
//! concerns one frame and the stream goes on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::pipeline::Output;
use super::y4m::Y4mWriter;

/// Errors of a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

fn werr(path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A consumer of composed frames.
pub trait Sink: Send {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// Consumes one output (also called for per-frame errors, with no image).
    fn write(&mut self, out: &Output) -> Result<(), SinkError>;
    /// Flushes at the end of the stream.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn create_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))
}

fn save_png(
    path: &Path,
    w: usize,
    h: usize,
    data: &[u8],
    color: image::ExtendedColorType,
) -> Result<(), SinkError> {
    let (w32, h32) = (
        u32::try_from(w).map_err(|e| werr(path, e))?,
        u32::try_from(h).map_err(|e| werr(path, e))?,
    );
    image::save_buffer_with_format(path, data, w32, h32, color, image::ImageFormat::Png)
        .map_err(|e| werr(path, e))
}

/// Writes every composed frame as `frame_NNNNNN.png`.
#[derive(Debug)]
pub struct PngFrames {
    dir: PathBuf,
}

impl PngFrames {
    /// Creates `dir` if needed.
    pub fn new(dir: &Path) -> Result<Self, SinkError> {
        create_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Sink for PngFrames {
    fn name(&self) -> &str {
        "png-frames"
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        let Some(img) = &out.image else { return Ok(()) };
        let path = self.dir.join(format!("frame_{:06}.png", out.id));
        save_png(
            &path,
            img.width,
            img.height,
            &img.data,
            image::ExtendedColorType::Rgb8,
        )
    }
}

/// Writes every AI mask the compositor received as `mask_NNNNNN.png` (0/255),
/// numbered by the frame the AI ran on.
#[derive(Debug)]
pub struct MaskPngs {
    dir: PathBuf,
}

impl MaskPngs {
    /// Creates `dir` if needed.
    pub fn new(dir: &Path) -> Result<Self, SinkError> {
        create_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Sink for MaskPngs {
    fn name(&self) -> &str {
        "mask-pngs"
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        let Some(a) = &out.new_annotation else {
            return Ok(());
        };
        let path = self.dir.join(format!("mask_{:06}.png", a.source_id));
        let data: Vec<u8> = a
            .seg
            .mask
            .iter()
            .map(|&v| if v != 0 { 255 } else { 0 })
            .collect();
        save_png(
            &path,
            a.seg.width,
            a.seg.height,
            &data,
            image::ExtendedColorType::L8,
        )
    }
}

/// Writes every composed frame to a Y4M video (`C420jpeg`). The first frame
/// fixes the size; frames of another size are refused one by one.
pub struct Y4mVideo {
    path: PathBuf,
    writer: Option<Y4mWriter<BufWriter<File>>>,
}

impl Y4mVideo {
    /// Creates the file.
    pub fn new(path: &Path, fps_num: u32, fps_den: u32) -> Result<Self, SinkError> {
        let f = File::create(path).map_err(|e| werr(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(Y4mWriter::new(
                BufWriter::with_capacity(1 << 20, f),
                fps_num,
                fps_den,
            )),
        })
    }
}

impl Sink for Y4mVideo {
    fn name(&self) -> &str {
        "y4m"
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        let Some(img) = &out.image else { return Ok(()) };
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| werr(&self.path, "already finished"))?;
        w.write_rgb(img.width, img.height, &img.data)
            .map_err(|e| werr(&self.path, format!("frame {}: {e}", out.id)))
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(w) = self.writer.take() {
            w.finish().map_err(|e| werr(&self.path, e))?;
        }
        Ok(())
    }
}

/// Writes the per-frame JSON-lines log.
pub struct JsonLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLog {
    /// Creates the file.
    pub fn new(path: &Path) -> Result<Self, SinkError> {
        let f = File::create(path).map_err(|e| werr(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }
}

impl Sink for JsonLog {
    fn name(&self) -> &str {
        "json-log"
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, &out.record).map_err(|e| werr(&self.path, e))?;
        self.out.write_all(b"\n").map_err(|e| werr(&self.path, e))
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| werr(&self.path, e))
    }
}
