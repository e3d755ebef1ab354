//! The teacher cache: what the teacher says about every training image, computed
//! once so that distillation epochs never re-run it.
//!
//! A cache is a folder with three files:
//! - `cache.json`: the [`CacheHeader`] (teacher bundle SHA-256, shapes, prompt
//!   sampling settings, record size);
//! - `records.bin`: fixed-size records, one per image, memory-mapped by readers
//!   (layout in [`RecordLayout`]; every field 64-byte aligned, little endian):
//!   the resized image (u8 HWC, zero padded to the model input), the resized
//!   ground-truth mask (0/1), the teacher's image embedding (f16), and for
//!   `prompts` box prompts their boxes (f32, model coordinates), the teacher's
//!   single-mask low-res logits (f16) and IoU predictions (f32);
//! - `records.jsonl`: one [`RecordMeta`] line per finished record.
//!
//! Building resumes: a record counts only once its metadata line is written, and
//! a partly written record after a crash is cut off on the next start.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use edgeseg_kernels::prepost;
use edgeseg_runtime::backend::cpu::TractSegmenter;
use edgeseg_runtime::backend::{PromptableSegmenter, RgbFrame};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::DistillError;
use crate::dataset::{CaseImage, Dataset, Split};

/// The `format` string of a cache header.
pub const CACHE_FORMAT: &str = "edgeseg-teacher-cache";
/// The cache layout version this build reads and writes.
pub const CACHE_VERSION: u32 = 1;
/// Box prompts cached per image: the tight ground-truth box and jittered copies.
pub const DEFAULT_PROMPTS: usize = 4;
/// Largest record the reader accepts (bytes), checked before anything is mapped.
pub const MAX_RECORD_BYTES: usize = 1 << 28;

/// What a cache holds and how it was made. Two builds with equal headers
/// produce interchangeable records, so a resume requires an equal header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHeader {
    /// Always [`CACHE_FORMAT`].
    pub format: String,
    /// Always [`CACHE_VERSION`].
    pub version: u32,
    /// SHA-256 of the teacher bundle file.
    pub teacher_sha256: String,
    /// The teacher's model name from its bundle manifest.
    pub teacher_name: String,
    /// Square model input side (256).
    pub input_size: usize,
    /// Teacher embedding `[channels, height, width]`.
    pub embedding: [usize; 3],
    /// Box prompts per image.
    pub prompts: usize,
    /// Box jitter of prompts 1.. as a fraction of the box's longer side.
    pub box_jitter: f32,
    /// Seed of the prompt jitter.
    pub seed: u64,
    /// Bytes per record (from [`RecordLayout`]).
    pub record_bytes: usize,
}

/// One finished record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Record number (0-based, its position in `records.bin`).
    pub index: usize,
    /// Dataset name (its folder name).
    pub dataset: String,
    /// Case id (image file stem).
    pub case: String,
    /// The manifest split the image came from.
    pub split: String,
    /// Original image rows.
    pub orig_h: usize,
    /// Original image columns.
    pub orig_w: usize,
    /// Rows after the longest-side resize (the rest is padding).
    pub new_h: usize,
    /// Columns after the resize.
    pub new_w: usize,
    /// Whether the ground truth has foreground (records without it carry no
    /// meaningful prompts and are used for the embedding loss only).
    pub has_mask: bool,
}

/// Byte ranges of the fields inside one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLayout {
    /// `S×S×3` u8, HWC.
    pub image: Range<usize>,
    /// `S×S` u8, 0/1.
    pub mask: Range<usize>,
    /// `C×H×W` f16.
    pub embedding: Range<usize>,
    /// `K×S×S` f16.
    pub logits: Range<usize>,
    /// `K×4` f32 boxes `[x0, y0, x1, y1]`, model coordinates.
    pub boxes: Range<usize>,
    /// `K` f32.
    pub iou: Range<usize>,
    /// Bytes per record (a multiple of 64).
    pub total: usize,
}

fn overflow(what: &str) -> DistillError {
    DistillError::Cache(format!("{what}: size overflows"))
}

impl RecordLayout {
    /// The layout for input side `s`, embedding `emb` and `k` prompts, with every
    /// size computed in checked arithmetic.
    pub fn new(s: usize, emb: [usize; 3], k: usize) -> Result<Self, DistillError> {
        let mut at = 0usize;
        let mut field = |bytes: Option<usize>, what: &str| -> Result<Range<usize>, DistillError> {
            let bytes = bytes.ok_or_else(|| overflow(what))?;
            let start = at;
            let end = start.checked_add(bytes).ok_or_else(|| overflow(what))?;
            at = end
                .checked_next_multiple_of(64)
                .ok_or_else(|| overflow(what))?;
            Ok(start..end)
        };
        let ss = s.checked_mul(s);
        let image = field(ss.and_then(|v| v.checked_mul(3)), "image")?;
        let mask = field(ss, "mask")?;
        let embedding = field(
            emb[0]
                .checked_mul(emb[1])
                .and_then(|v| v.checked_mul(emb[2]))
                .and_then(|v| v.checked_mul(2)),
            "embedding",
        )?;
        let logits = field(
            ss.and_then(|v| v.checked_mul(k))
                .and_then(|v| v.checked_mul(2)),
            "logits",
        )?;
        let boxes = field(k.checked_mul(16), "boxes")?;
        let iou = field(k.checked_mul(4), "iou")?;
        Ok(Self {
            image,
            mask,
            embedding,
            logits,
            boxes,
            iou,
            total: at,
        })
    }
}

/// What to cache and how.
#[derive(Debug, Clone)]
pub struct CacheBuildConfig {
    /// Output folder (created; resumed when it holds a cache with an equal header).
    pub out: PathBuf,
    /// Dataset folders (2D only).
    pub datasets: Vec<PathBuf>,
    /// Splits to take (`test` is refused).
    pub splits: Vec<Split>,
    /// Box prompts per image.
    pub prompts: usize,
    /// Jitter of prompts 1.. as a fraction of the box's longer side.
    pub box_jitter: f32,
    /// Seed of the jitter.
    pub seed: u64,
    /// Stop after this many records in total (for smoke runs).
    pub limit: Option<usize>,
}

/// One image to cache.
struct Item {
    dataset: usize,
    case: usize,
}

/// Builds (or resumes) a cache with `teacher`; `progress(done, total)` is called
/// after every record. Returns the number of records in the cache.
pub fn build_cache(
    cfg: &CacheBuildConfig,
    teacher: &mut TractSegmenter,
    teacher_sha256: &str,
    teacher_name: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, DistillError> {
    if cfg.splits.contains(&Split::Test) {
        return Err(DistillError::Config(
            "the test split is for evaluation only; distillation never reads it".into(),
        ));
    }
    if cfg.prompts == 0 || cfg.prompts > 64 {
        return Err(DistillError::Config(format!(
            "prompts per image must be 1..=64, got {}",
            cfg.prompts
        )));
    }
    if !(0.0..=1.0).contains(&cfg.box_jitter) {
        return Err(DistillError::Config(format!(
            "box jitter must be in [0, 1], got {}",
            cfg.box_jitter
        )));
    }
    let s = teacher.input_size();
    let emb = teacher.embedding_dims();
    let layout = RecordLayout::new(s, emb, cfg.prompts)?;
    let header = CacheHeader {
        format: CACHE_FORMAT.into(),
        version: CACHE_VERSION,
        teacher_sha256: teacher_sha256.into(),
        teacher_name: teacher_name.into(),
        input_size: s,
        embedding: emb,
        prompts: cfg.prompts,
        box_jitter: cfg.box_jitter,
        seed: cfg.seed,
        record_bytes: layout.total,
    };

    let datasets = cfg
        .datasets
        .iter()
        .map(|d| Dataset::open(d).map_err(|e| DistillError::Data(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut items = Vec::new();
    for (di, ds) in datasets.iter().enumerate() {
        if ds.dimensionality != crate::dataset::Dimensionality::TwoD {
            return Err(DistillError::Config(format!(
                "{}: only 2D datasets can be distilled from",
                ds.root.display()
            )));
        }
        for (ci, case) in ds.cases.iter().enumerate() {
            if cfg.splits.contains(&case.split) {
                items.push(Item {
                    dataset: di,
                    case: ci,
                });
            }
        }
    }
    if let Some(limit) = cfg.limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        return Err(DistillError::Config(
            "no images in the chosen datasets and splits".into(),
        ));
    }

    let mut writer = CacheWriter::create_or_resume(&cfg.out, &header)?;
    let total = items.len();
    let mut scratch = vec![0u8; layout.total];
    for item in &items {
        let ds = &datasets[item.dataset];
        let case = &ds.cases[item.case];
        let key = (ds.name(), case.id());
        if writer.done.contains(&key) {
            continue;
        }
        let loaded = ds
            .load(case)
            .map_err(|e| DistillError::Data(e.to_string()))?;
        let CaseImage::TwoD(img) = &loaded.image else {
            return Err(DistillError::Data(format!(
                "{}: not a 2D image",
                case.image
            )));
        };
        let (h, w) = (img.height, img.width);
        let rgb = img.to_rgb();
        let fg = loaded.labels.foreground(None);
        let meta_index = writer.metas.len();
        scratch.fill(0);

        // image and mask, resized as the model's preprocessing does
        let prep = prepost::preprocess_rgb(&rgb, h, w)
            .map_err(|e| DistillError::Data(format!("{}: {e}", case.image)))?;
        let (nh, nw) = (prep.new_h, prep.new_w);
        let img_field = &mut scratch[layout.image.clone()];
        for r in 0..nh {
            let src = &prep.resized[r * nw * 3..(r + 1) * nw * 3];
            img_field[r * s * 3..r * s * 3 + nw * 3].copy_from_slice(src);
        }
        let mask255: Vec<u8> = fg.data.iter().map(|&b| if b { 255 } else { 0 }).collect();
        let mask_small = prepost::resize_area_u8(&mask255, h, w, 1, nh, nw)
            .map_err(|e| DistillError::Data(format!("{}: {e}", case.mask)))?;
        let mask_field = &mut scratch[layout.mask.clone()];
        for r in 0..nh {
            for c in 0..nw {
                mask_field[r * s + c] = u8::from(mask_small[r * nw + c] > 127);
            }
        }

        // teacher embedding
        let frame = RgbFrame::new(w, h, &rgb).map_err(|e| DistillError::Teacher(e.to_string()))?;
        teacher
            .set_frame(frame)
            .map_err(|e| DistillError::Teacher(format!("{}: {e}", case.image)))?;
        {
            let e = teacher
                .embedding()
                .ok_or_else(|| DistillError::Teacher("teacher gave no embedding".into()))?;
            write_f16(&mut scratch[layout.embedding.clone()], e.data);
        }

        // prompts: the tight box of the whole mask, then jittered copies
        let bbox = fg.bbox();
        let has_mask = bbox.is_some();
        if let Some(b) = bbox {
            let tight = prepost::box_to_256(
                [
                    b.min[1] as f64,
                    b.min[0] as f64,
                    b.max[1] as f64,
                    b.max[0] as f64,
                ],
                h,
                w,
            );
            let mut rng = ChaCha8Rng::seed_from_u64(record_seed(cfg.seed, &key.0, &key.1));
            let plane = s * s;
            for k in 0..cfg.prompts {
                let bx = if k == 0 {
                    tight
                } else {
                    jitter_box(tight, cfg.box_jitter, nw, nh, &mut rng)
                };
                let (logits, iou) = teacher
                    .decode_points(&bx, &[2.0, 3.0])
                    .map_err(|e| DistillError::Teacher(format!("{}: {e}", case.image)))?;
                if logits.len() < plane || iou.is_empty() {
                    return Err(DistillError::Teacher(format!(
                        "teacher decoder gave {} logits for a {s}×{s} plane",
                        logits.len()
                    )));
                }
                let lr = layout.logits.start + k * plane * 2;
                write_f16(&mut scratch[lr..lr + plane * 2], &logits[..plane]);
                let br = layout.boxes.start + k * 16;
                for (j, v) in bx.iter().enumerate() {
                    scratch[br + 4 * j..br + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
                }
                let ir = layout.iou.start + k * 4;
                scratch[ir..ir + 4].copy_from_slice(&iou[0].to_le_bytes());
            }
        }
        let meta = RecordMeta {
            index: meta_index,
            dataset: key.0.clone(),
            case: key.1.clone(),
            split: case.split.as_str().into(),
            orig_h: h,
            orig_w: w,
            new_h: nh,
            new_w: nw,
            has_mask,
        };
        writer.append(&scratch, meta)?;
        progress(writer.done.len().min(total), total);
    }
    Ok(writer.metas.len())
}

/// A per-record seed, so a resumed build jitters exactly like an uninterrupted one.
fn record_seed(seed: u64, dataset: &str, case: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(dataset.as_bytes());
    h.update([0]);
    h.update(case.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Moves every side of a box by up to `frac` × its longer side (at least 1 px),
/// keeping it inside the resized image and at least 1 px wide and tall.
pub fn jitter_box(b: [f32; 4], frac: f32, nw: usize, nh: usize, rng: &mut impl Rng) -> [f32; 4] {
    let side = (b[2] - b[0]).max(b[3] - b[1]).max(1.0);
    let m = (frac * side).max(1.0).round();
    let mut d = || (rng.random_range(-m..=m)).round();
    let (mx, my) = ((nw.max(1) - 1) as f32, (nh.max(1) - 1) as f32);
    let x0 = (b[0] + d()).clamp(0.0, mx);
    let y0 = (b[1] + d()).clamp(0.0, my);
    let x1 = (b[2] + d()).clamp(0.0, mx);
    let y1 = (b[3] + d()).clamp(0.0, my);
    [
        x0.min(x1),
        y0.min(y1),
        x0.max(x1).max(x0.min(x1) + 1.0),
        y0.max(y1).max(y0.min(y1) + 1.0),
    ]
}

fn write_f16(dst: &mut [u8], src: &[f32]) {
    for (d, v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

fn read_f16(src: &[u8]) -> Vec<f32> {
    src.chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> DistillError {
    DistillError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

struct CacheWriter {
    _lock: super::DirLock,
    bin: File,
    bin_path: PathBuf,
    jsonl: File,
    jsonl_path: PathBuf,
    record_bytes: usize,
    metas: Vec<RecordMeta>,
    done: HashSet<(String, String)>,
}

impl CacheWriter {
    fn create_or_resume(dir: &Path, header: &CacheHeader) -> Result<Self, DistillError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock = super::DirLock::acquire(dir)?;
        let header_path = dir.join("cache.json");
        let bin_path = dir.join("records.bin");
        let jsonl_path = dir.join("records.jsonl");
        let mut metas = Vec::new();
        if header_path.is_file() {
            let old = read_header(&header_path)?;
            if &old != header {
                return Err(DistillError::Cache(format!(
                    "{} holds a cache made with other settings (teacher, shapes, prompts or \
                     seed); choose another --out or delete it",
                    dir.display()
                )));
            }
            metas = read_metas(&jsonl_path)?;
        } else {
            let text = serde_json::to_string_pretty(header)
                .map_err(|e| DistillError::Cache(e.to_string()))?;
            std::fs::write(&header_path, text).map_err(|e| io_err(&header_path, e))?;
            // a header without records: start both files afresh
            File::create(&bin_path).map_err(|e| io_err(&bin_path, e))?;
            File::create(&jsonl_path).map_err(|e| io_err(&jsonl_path, e))?;
        }
        let bin = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&bin_path)
            .map_err(|e| io_err(&bin_path, e))?;
        let keep = metas
            .len()
            .checked_mul(header.record_bytes)
            .ok_or_else(|| overflow("records.bin"))?;
        let have = bin.metadata().map_err(|e| io_err(&bin_path, e))?.len() as usize;
        if have < keep {
            return Err(DistillError::Cache(format!(
                "{}: {have} bytes but {} finished records need {keep}; delete the cache",
                bin_path.display(),
                metas.len()
            )));
        }
        // cut a partly written record (crash between data and metadata)
        bin.set_len(keep as u64).map_err(|e| io_err(&bin_path, e))?;
        let jsonl = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&jsonl_path)
            .map_err(|e| io_err(&jsonl_path, e))?;
        let done = metas
            .iter()
            .map(|m| (m.dataset.clone(), m.case.clone()))
            .collect();
        Ok(Self {
            _lock: lock,
            bin,
            bin_path,
            jsonl,
            jsonl_path,
            record_bytes: header.record_bytes,
            metas,
            done,
        })
    }

    fn append(&mut self, record: &[u8], meta: RecordMeta) -> Result<(), DistillError> {
        use std::io::{Seek, SeekFrom};
        debug_assert_eq!(record.len(), self.record_bytes);
        let at = (self.metas.len() * self.record_bytes) as u64;
        self.bin
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.bin.write_all(record))
            .and_then(|_| self.bin.sync_data())
            .map_err(|e| io_err(&self.bin_path, e))?;
        let line = serde_json::to_string(&meta).map_err(|e| DistillError::Cache(e.to_string()))?;
        writeln!(self.jsonl, "{line}")
            .and_then(|_| self.jsonl.sync_data())
            .map_err(|e| io_err(&self.jsonl_path, e))?;
        self.done.insert((meta.dataset.clone(), meta.case.clone()));
        self.metas.push(meta);
        Ok(())
    }
}

fn read_header(path: &Path) -> Result<CacheHeader, DistillError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let h: CacheHeader = serde_json::from_str(&text)
        .map_err(|e| DistillError::Cache(format!("{}: {e}", path.display())))?;
    if h.format != CACHE_FORMAT || h.version != CACHE_VERSION {
        return Err(DistillError::Cache(format!(
            "{}: format {} v{} (this build reads {CACHE_FORMAT} v{CACHE_VERSION})",
            path.display(),
            h.format,
            h.version
        )));
    }
    Ok(h)
}

/// Reads finished-record lines; a torn last line (crash mid-write) is dropped.
fn read_metas(path: &Path) -> Result<Vec<RecordMeta>, DistillError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(path, e))?;
    let mut metas = Vec::new();
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<RecordMeta>(line) {
            Ok(m) if m.index == metas.len() => metas.push(m),
            Ok(m) => {
                return Err(DistillError::Cache(format!(
                    "{}:{}: record index {} out of order",
                    path.display(),
                    i + 1,
                    m.index
                )))
            }
            Err(_) if i + 1 == n => break,
            Err(e) => {
                return Err(DistillError::Cache(format!(
                    "{}:{}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    // rewrite without the torn line so appends start on a fresh line
    if metas.len() != n {
        let mut text = String::new();
        for m in &metas {
            text.push_str(
                &serde_json::to_string(m).map_err(|e| DistillError::Cache(e.to_string()))?,
            );
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| io_err(path, e))?;
    }
    Ok(metas)
}

/// A finished cache, memory-mapped for reading.
pub struct TeacherCache {
    /// The header.
    pub header: CacheHeader,
    /// One entry per record.
    pub metas: Vec<RecordMeta>,
    /// The field layout.
    pub layout: RecordLayout,
    map: edgeseg_models::weights::Mmap,
}

impl TeacherCache {
    /// Opens a cache folder; checks the header, the layout and that the data
    /// file holds every listed record, before anything is read from it.
    pub fn open(dir: &Path) -> Result<Self, DistillError> {
        let header = read_header(&dir.join("cache.json"))?;
        let layout = RecordLayout::new(header.input_size, header.embedding, header.prompts)?;
        if layout.total != header.record_bytes || layout.total > MAX_RECORD_BYTES {
            return Err(DistillError::Cache(format!(
                "{}: record size {} does not match its shapes ({})",
                dir.display(),
                header.record_bytes,
                layout.total
            )));
        }
        let metas = read_metas_readonly(&dir.join("records.jsonl"))?;
        let bin = dir.join("records.bin");
        let map = edgeseg_models::weights::map_file_readonly(&bin).map_err(|e| io_err(&bin, e))?;
        let need = metas
            .len()
            .checked_mul(layout.total)
            .ok_or_else(|| overflow("records.bin"))?;
        if map.len() < need {
            return Err(DistillError::Cache(format!(
                "{}: {} bytes, {} records need {need}",
                bin.display(),
                map.len(),
                metas.len()
            )));
        }
        for m in &metas {
            if m.new_h == 0
                || m.new_w == 0
                || m.new_h > header.input_size
                || m.new_w > header.input_size
            {
                return Err(DistillError::Cache(format!(
                    "record {} ({}/{}): resized size {}×{} outside the {} input",
                    m.index, m.dataset, m.case, m.new_h, m.new_w, header.input_size
                )));
            }
        }
        Ok(Self {
            header,
            metas,
            layout,
            map,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the cache holds no records.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Record `i` (panics never: out-of-range gives an error).
    pub fn record(&self, i: usize) -> Result<RecordView<'_>, DistillError> {
        let meta = self
            .metas
            .get(i)
            .ok_or_else(|| DistillError::Cache(format!("record {i} of {}", self.metas.len())))?;
        let start = i * self.layout.total;
        let bytes = self
            .map
            .get(start..start + self.layout.total)
            .ok_or_else(|| DistillError::Cache(format!("record {i} beyond the data file")))?;
        Ok(RecordView {
            bytes,
            meta,
            cache: self,
        })
    }
}

fn read_metas_readonly(path: &Path) -> Result<Vec<RecordMeta>, DistillError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let mut metas = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let m: RecordMeta = match serde_json::from_str(line) {
            Ok(m) => m,
            // a torn last line from a build still running or killed
            Err(_) if i + 1 == text.lines().count() => break,
            Err(e) => {
                return Err(DistillError::Cache(format!(
                    "{}:{}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        };
        if m.index != metas.len() {
            return Err(DistillError::Cache(format!(
                "{}:{}: record index {} out of order",
                path.display(),
                i + 1,
                m.index
            )));
        }
        metas.push(m);
    }
    Ok(metas)
}

/// One record of a [`TeacherCache`].
pub struct RecordView<'a> {
    bytes: &'a [u8],
    /// Its metadata.
    pub meta: &'a RecordMeta,
    cache: &'a TeacherCache,
}

impl RecordView<'_> {
    /// Resized image, `S×S×3` u8 HWC, zero outside `new_h × new_w`.
    pub fn image(&self) -> &[u8] {
        &self.bytes[self.cache.layout.image.clone()]
    }

    /// Resized ground truth, `S×S` 0/1.
    pub fn mask(&self) -> &[u8] {
        &self.bytes[self.cache.layout.mask.clone()]
    }

    /// Teacher embedding, `C×H×W`.
    pub fn embedding(&self) -> Vec<f32> {
        read_f16(&self.bytes[self.cache.layout.embedding.clone()])
    }

    /// Teacher single-mask low-res logits of prompt `k`, `S×S`.
    pub fn logits(&self, k: usize) -> Vec<f32> {
        let plane = self.cache.header.input_size * self.cache.header.input_size * 2;
        let start = self.cache.layout.logits.start + k.min(self.cache.header.prompts - 1) * plane;
        read_f16(&self.bytes[start..start + plane])
    }

    /// Box of prompt `k`, `[x0, y0, x1, y1]` in model coordinates.
    pub fn bbox(&self, k: usize) -> [f32; 4] {
        let start = self.cache.layout.boxes.start + k.min(self.cache.header.prompts - 1) * 16;
        let b = &self.bytes[start..start + 16];
        std::array::from_fn(|j| {
            f32::from_le_bytes([b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]])
        })
    }

    /// Teacher IoU prediction of prompt `k`.
    pub fn iou(&self, k: usize) -> f32 {
        let start = self.cache.layout.iou.start + k.min(self.cache.header.prompts - 1) * 4;
        let b = &self.bytes[start..start + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_sized() {
        let l = RecordLayout::new(256, [256, 64, 64], 4).unwrap();
        for r in [&l.image, &l.mask, &l.embedding, &l.logits, &l.boxes, &l.iou] {
            assert_eq!(r.start % 64, 0);
        }
        assert_eq!(l.embedding.len(), 256 * 64 * 64 * 2);
        assert_eq!(l.logits.len(), 4 * 256 * 256 * 2);
        assert_eq!(l.total % 64, 0);
        assert!(l.total >= l.iou.end);
        assert!(RecordLayout::new(usize::MAX / 2, [1, 1, 1], 1).is_err());
    }

    #[test]
    fn jittered_boxes_stay_valid() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let b = jitter_box([10.0, 20.0, 30.0, 60.0], 0.2, 100, 80, &mut rng);
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 100.0 && b[3] <= 80.0);
            assert!(b[2] > b[0] && b[3] > b[1], "{b:?}");
        }
        let same = jitter_box([1.0, 1.0, 1.0, 1.0], 0.0, 4, 4, &mut rng);
        assert!(same[2] > same[0] && same[3] > same[1]);
    }

    #[test]
    fn record_seeds_differ_per_case() {
        assert_ne!(record_seed(1, "a", "x"), record_seed(1, "a", "y"));
        assert_eq!(record_seed(1, "a", "x"), record_seed(1, "a", "x"));
    }
}
