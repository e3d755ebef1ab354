//! Distillation training on candle, from a [`TeacherCache`].
//!
//! - Stage 1 (decoupled, images only): the student image encoder plus a 1×1
//!   adapter (training only, never exported) learns to reproduce the teacher's
//!   image embedding, average-pooled to the student's grid (MSE).
//! - Stage 2 (prompt in the loop): the whole student (encoder, prompt encoder,
//!   mask decoder) learns the teacher's single-mask logits for the cached box
//!   prompts (soft binary cross-entropy) and the ground truth (BCE + Dice), with
//!   the stage-1 embedding loss kept as a regulariser.
//!
//! Runs are deterministic for a seed, checkpoint to safetensors every few steps
//! and at every epoch end, resume from the last checkpoint, and write the loss
//! curve as CSV and PNG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use edgeseg_kernels::prepost;
use edgeseg_models::{LiteMedSam, LiteMedSamConfig, Mode};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cache::TeacherCache;
use super::embedding_norm::{EmbeddingNorm, EmbeddingTarget};
use super::DistillError;

/// Prefix of the training-only adapter's tensors (not part of the student).
pub const ADAPTER_PREFIX: &str = "distill_adapter";

/// Which stage to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Encoder ← teacher embedding.
    Embedding,
    /// Whole student ← teacher masks and ground truth.
    Prompted,
}

impl Stage {
    /// `stage1` / `stage2`: the sub-folder of a run.
    pub fn dir_name(self) -> &'static str {
        match self {
            Stage::Embedding => "stage1",
            Stage::Prompted => "stage2",
        }
    }
}

/// Loss weights of stage 2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossWeights {
    /// Embedding MSE (stage 1's loss).
    pub embedding: f64,
    /// Soft BCE against the teacher's mask probabilities.
    pub teacher: f64,
    /// BCE + Dice against the ground truth.
    pub ground_truth: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            embedding: 1.0,
            teacher: 1.0,
            ground_truth: 1.0,
        }
    }
}

/// Everything a training run depends on (stored in the run's `state.json`; a
/// resume requires the same settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Student name (`edge-s`, …).
    pub student_name: String,
    /// Student architecture.
    pub student: LiteMedSamConfig,
    /// Stage.
    pub stage: Stage,
    /// Passes over the cache.
    pub epochs: usize,
    /// Stop after this many optimizer steps in total (smoke runs).
    pub max_steps: Option<usize>,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (AdamW), reached after `warmup_steps`, cosine-decayed to 5 %.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of shuffling, prompt choice and augmentation.
    pub seed: u64,
    /// Photometric augmentation (gamma, noise) of the student's input.
    pub augment: bool,
    /// Stage-2 loss weights.
    pub loss_weights: LossWeights,
    /// Checkpoint every this many steps (and at every epoch end).
    pub checkpoint_every: usize,
    /// Target of the embedding loss (runs stored without it read as `raw`).
    #[serde(default)]
    pub embedding_target: EmbeddingTarget,
    /// Start with a freshly drawn prompt encoder and mask decoder, keeping only the
    /// image encoder (and adapter) of the initial weights.
    #[serde(default)]
    pub fresh_decoder: bool,
    /// Stage 2 with the image encoder frozen: only the prompt encoder and mask
    /// decoder learn (about 4× faster steps; no embedding loss).
    #[serde(default)]
    pub freeze_encoder: bool,
}

/// Progress of a run, saved beside its checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// The settings.
    pub config: TrainConfig,
    /// The teacher cache's teacher SHA-256.
    pub teacher_sha256: String,
    /// Optimizer steps done.
    pub step: usize,
    /// Whether the run reached its end.
    pub finished: bool,
    /// Seconds of training so far (over all resumes).
    pub seconds: f64,
    /// Weights the run started from, if any.
    pub init: Option<PathBuf>,
}

/// One row of `loss.csv`.
#[derive(Debug, Clone, Copy)]
pub struct LossRow {
    /// Global step (1-based).
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Total loss.
    pub total: f32,
    /// Embedding MSE.
    pub embedding: f32,
    /// Teacher-mask BCE (stage 2).
    pub teacher: f32,
    /// Ground-truth BCE + Dice (stage 2).
    pub ground_truth: f32,
    /// Seconds of this step.
    pub seconds: f64,
}

/// Files of a stage's run folder.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// `weights.safetensors` (student + adapter).
    pub weights: PathBuf,
    /// `state.json`.
    pub state: PathBuf,
    /// `loss.csv`.
    pub csv: PathBuf,
    /// `loss.png`.
    pub plot: PathBuf,
}

impl RunPaths {
    /// The files under `run_dir/stageN/`.
    pub fn new(run_dir: &Path, stage: Stage) -> Self {
        let d = run_dir.join(stage.dir_name());
        Self {
            weights: d.join("weights.safetensors"),
            state: d.join("state.json"),
            csv: d.join("loss.csv"),
            plot: d.join("loss.png"),
        }
    }
}

pub(crate) fn cerr(e: candle_core::Error) -> DistillError {
    DistillError::Train(e.to_string())
}

pub(crate) fn ferr(path: &Path, e: impl std::fmt::Display) -> DistillError {
    DistillError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The student and its training-only adapter on one `VarMap`.
pub struct Student {
    /// All variables (student and adapter).
    pub vars: VarMap,
    /// The model in training mode.
    pub model: LiteMedSam,
    /// Student embedding → teacher channels (1×1 convolution).
    pub adapter: candle_nn::Conv2d,
}

impl Student {
    /// A freshly initialised student with an adapter to `teacher_channels`.
    pub fn new(cfg: &LiteMedSamConfig, teacher_channels: usize) -> Result<Self, DistillError> {
        cfg.validate().map_err(DistillError::Config)?;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = LiteMedSam::new(vb.clone(), cfg, Mode::Training).map_err(cerr)?;
        let adapter = candle_nn::conv2d(
            cfg.prompt_embed_dim,
            teacher_channels,
            1,
            Default::default(),
            vb.pp(ADAPTER_PREFIX),
        )
        .map_err(cerr)?;
        Ok(Self {
            vars,
            model,
            adapter,
        })
    }

    /// Re-draws every randomly initialised variable from a generator seeded by
    /// `seed` and the variable's name (candle's CPU random generator cannot be
    /// seeded, so without this two runs with the same seed would start from
    /// different weights). Constant-initialised variables (norm scales, biases,
    /// BatchNorm statistics) are left as they are. Embedding tables and SAM's
    /// Gaussian positional-encoding matrix ([`is_embedding_table`]) get N(0, 1)
    /// (as in SAM); other random matrices and kernels Kaiming-normal
    /// N(0, 2/fan_in); random vectors (biases candle initialises uniformly) zero.
    pub fn reseed(&self, seed: u64) -> Result<(), DistillError> {
        use rand_distr::{Distribution, StandardNormal};
        let data =
            self.vars.data().lock().map_err(|_| {
                DistillError::Train("variable map poisoned by an earlier panic".into())
            })?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let v = var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?;
            if v.windows(2).all(|w| w[0] == w[1]) {
                continue; // constant initialisation
            }
            let dims = var.dims();
            let sd = if is_embedding_table(name) {
                1.0
            } else if dims.len() >= 2 {
                let fan_in: usize = dims[1..].iter().product();
                (2.0 / fan_in.max(1) as f64).sqrt()
            } else {
                0.0
            };
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut h, seed.to_le_bytes());
            sha2::Digest::update(&mut h, name.as_bytes());
            let d = sha2::Digest::finalize(h);
            let mut key = [0u8; 32];
            key.copy_from_slice(&d);
            let mut rng = ChaCha8Rng::from_seed(key);
            let fresh: Vec<f32> = (0..v.len())
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (sd * z) as f32
                })
                .collect();
            let t = Tensor::from_vec(fresh, var.shape(), &Device::Cpu).map_err(cerr)?;
            var.set(&t).map_err(cerr)?;
        }
        Ok(())
    }

    /// Replaces the prompt encoder and mask decoder with freshly drawn ones (the
    /// initialisation of [`Self::reseed`] with `seed`), keeping the image encoder
    /// and the adapter: stage 2 from an encoder whose decoder should not be kept.
    pub fn redraw_decoder(&self, seed: u64) -> Result<(), DistillError> {
        let teacher_channels = self.adapter.weight().dim(0).map_err(cerr)?;
        let fresh = Student::new(self.model.config(), teacher_channels)?;
        fresh.reseed(seed)?;
        let poisoned = || DistillError::Train("variable map poisoned by an earlier panic".into());
        let src = fresh.vars.data().lock().map_err(|_| poisoned())?;
        let dst = self.vars.data().lock().map_err(|_| poisoned())?;
        for (name, var) in dst.iter() {
            if !is_decoder_variable(name) {
                continue;
            }
            let from = src
                .get(name)
                .ok_or_else(|| DistillError::Train(format!("fresh student lacks {name}")))?;
            var.set(from.as_tensor()).map_err(cerr)?;
        }
        Ok(())
    }

    /// Sets every variable from a safetensors file; all must be present with
    /// their shapes (tensors the file has beyond them are ignored).
    pub fn load(&self, path: &Path) -> Result<(), DistillError> {
        let map = edgeseg_models::weights::read_safetensors(path).map_err(|e| ferr(path, e))?;
        let data =
            self.vars.data().lock().map_err(|_| {
                DistillError::Train("variable map poisoned by an earlier panic".into())
            })?;
        let mut missing = Vec::new();
        for (name, var) in data.iter() {
            match map.get(name) {
                Some(t) => var
                    .set(t)
                    .map_err(|e| DistillError::Train(format!("{}: {name}: {e}", path.display())))?,
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(DistillError::Train(format!(
                "{} lacks {} of the student's tensors (first: {}); is it for another architecture?",
                path.display(),
                missing.len(),
                missing[0]
            )));
        }
        Ok(())
    }

    /// The variables a stage trains: BatchNorm statistics are buffers, never
    /// trained; stage 1 trains only the encoder and the adapter.
    pub fn trainable(&self, stage: Stage) -> Result<Vec<(String, Var)>, DistillError> {
        self.trainable_with(stage, false)
    }

    /// [`Self::trainable`]; with `freeze_encoder`, stage 2 trains only the prompt
    /// encoder and the mask decoder.
    pub fn trainable_with(
        &self,
        stage: Stage,
        freeze_encoder: bool,
    ) -> Result<Vec<(String, Var)>, DistillError> {
        let data =
            self.vars.data().lock().map_err(|_| {
                DistillError::Train("variable map poisoned by an earlier panic".into())
            })?;
        let mut v: Vec<(String, Var)> = data
            .iter()
            // buffers, not parameters: BatchNorm statistics and SAM's fixed random
            // Fourier features of the positional encoding
            .filter(|(n, _)| {
                !n.ends_with("running_mean")
                    && !n.ends_with("running_var")
                    && !n.ends_with("positional_encoding_gaussian_matrix")
            })
            .filter(|(n, _)| match stage {
                Stage::Embedding => {
                    n.starts_with("image_encoder.") || n.starts_with(ADAPTER_PREFIX)
                }
                Stage::Prompted => !freeze_encoder || is_decoder_variable(n),
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Saves every variable (student and adapter) atomically.
    pub fn save(&self, path: &Path) -> Result<(), DistillError> {
        let tmp = path.with_extension("tmp");
        self.vars.save(&tmp).map_err(|e| ferr(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ferr(path, e))
    }
}

/// Whether `name` is an embedding table (drawn N(0, 1) as in SAM): the mask and
/// IoU tokens, the prompt encoder's point and no-mask embeddings, and SAM's
/// Gaussian positional-encoding matrix. Names that merely contain `token` or
/// `embed` (the decoder's `cross_attn_token_to_image` projections, the
/// encoder's `patch_embed` convolutions) are ordinary layers and get Kaiming.
pub fn is_embedding_table(name: &str) -> bool {
    name.ends_with("positional_encoding_gaussian_matrix")
        || name == "mask_decoder.iou_token.weight"
        || name == "mask_decoder.mask_tokens.weight"
        || (name.starts_with("prompt_encoder.")
            && (name.contains(".point_embeddings.")
                || name.contains(".not_a_point_embed.")
                || name.contains(".no_mask_embed.")))
}

/// Whether `name` belongs to the prompt encoder or the mask decoder.
pub fn is_decoder_variable(name: &str) -> bool {
    name.starts_with("prompt_encoder.") || name.starts_with("mask_decoder.")
}

/// A batch assembled from cache records.
pub struct Batch {
    /// `B×3×S×S` normalised, padded input.
    pub images: Tensor,
    /// `B×C×H×W` teacher embeddings.
    pub embeddings: Tensor,
    /// `B×4` boxes.
    pub boxes: Tensor,
    /// `B×1×S×S` teacher logits for those boxes.
    pub teacher_logits: Tensor,
    /// `B×1×S×S` ground truth (0/1).
    pub masks: Tensor,
}

/// Gamma in [0.7, 1.4] and Gaussian-like noise (σ ≤ 0.03) on a normalised image.
fn augment(norm: &mut [f32], rng: &mut ChaCha8Rng) {
    let gamma: f32 = rng.random_range(0.7..1.4);
    let sigma: f32 = rng.random_range(0.0..0.03);
    for v in norm.iter_mut() {
        // sum of uniforms: cheap, bounded, close enough to Gaussian
        let n: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * sigma;
        *v = (v.max(0.0).powf(gamma) + n).clamp(0.0, 1.0);
    }
}

/// Builds the batch of records `idx` (prompt chosen at random per record).
pub fn make_batch(
    cache: &TeacherCache,
    idx: &[usize],
    augment_input: bool,
    rng: &mut ChaCha8Rng,
) -> Result<Batch, DistillError> {
    let s = cache.header.input_size;
    let [c, h, w] = cache.header.embedding;
    let b = idx.len();
    let mut images = Vec::with_capacity(b * 3 * s * s);
    let mut embs = Vec::with_capacity(b * c * h * w);
    let mut boxes = Vec::with_capacity(b * 4);
    let mut logits = Vec::with_capacity(b * s * s);
    let mut masks = Vec::with_capacity(b * s * s);
    for &i in idx {
        let r = cache.record(i)?;
        let (nh, nw) = (r.meta.new_h, r.meta.new_w);
        let img = r.image();
        let mut valid = Vec::with_capacity(nh * nw * 3);
        for row in 0..nh {
            valid.extend_from_slice(&img[row * s * 3..row * s * 3 + nw * 3]);
        }
        let mut norm = prepost::normalize_min_max(&valid);
        if augment_input {
            augment(&mut norm, rng);
        }
        let chw = prepost::pad_hwc_to_chw(&norm, nh, nw, 3, s)
            .map_err(|e| DistillError::Train(e.to_string()))?;
        images.extend_from_slice(&chw);
        embs.extend(r.embedding());
        let k = rng.random_range(0..cache.header.prompts);
        boxes.extend_from_slice(&r.bbox(k));
        logits.extend(r.logits(k));
        masks.extend(r.mask().iter().map(|&m| f32::from(m)));
    }
    let dev = Device::Cpu;
    Ok(Batch {
        images: Tensor::from_vec(images, (b, 3, s, s), &dev).map_err(cerr)?,
        embeddings: Tensor::from_vec(embs, (b, c, h, w), &dev).map_err(cerr)?,
        boxes: Tensor::from_vec(boxes, (b, 4), &dev).map_err(cerr)?,
        teacher_logits: Tensor::from_vec(logits, (b, 1, s, s), &dev).map_err(cerr)?,
        masks: Tensor::from_vec(masks, (b, 1, s, s), &dev).map_err(cerr)?,
    })
}

/// `σ(x)` from differentiable primitives.
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Mean binary cross-entropy with logits, stable for large |x|:
/// `max(x, 0) − x·t + log(1 + e^{−|x|})`.
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let pos = x.relu()?;
    let xt = (x * t)?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((pos - xt)? + soft)?.mean_all()
}

/// Mean soft Dice loss over the batch: `1 − (2Σpt + 1)/(Σp + Σt + 1)`.
pub fn dice_loss(p: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let inter = (p * t)?.flatten_from(1)?.sum(1)?;
    let sums = (p.flatten_from(1)?.sum(1)? + t.flatten_from(1)?.sum(1)?)?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&(sums + 1.0)?)?;
    dice.mean_all()?.affine(-1.0, 1.0)
}

/// The losses of one batch: `(total, embedding, teacher, ground truth)`. With
/// `freeze_encoder` (stage 2) the embedding is detached and its loss, still
/// reported, is left out of the total.
pub fn losses(
    student: &Student,
    batch: &Batch,
    stage: Stage,
    w: &LossWeights,
    norm: &EmbeddingNorm,
    freeze_encoder: bool,
) -> Result<(Tensor, [f32; 3]), DistillError> {
    let run = || -> candle_core::Result<(Tensor, [f32; 3])> {
        let emb = student
            .model
            .encode(&batch.images)
            .map_err(|e| candle_core::Error::Msg(format!("student encoder: {e}")))?;
        let frozen = freeze_encoder && stage == Stage::Prompted;
        let emb = if frozen { emb.detach() } else { emb };
        let (_, _, e, _) = emb.dims4()?;
        let (_, _, th, _) = batch.embeddings.dims4()?;
        let target = if th == e {
            batch.embeddings.clone()
        } else {
            batch.embeddings.avg_pool2d(th / e)?
        };
        let target = norm.apply(&target)?;
        let pred = student.adapter.forward(&emb)?;
        let l_emb = (pred - target)?.sqr()?.mean_all()?;
        let le = l_emb.to_scalar::<f32>()?;
        match stage {
            Stage::Embedding => Ok((l_emb, [le, 0.0, 0.0])),
            Stage::Prompted => {
                let (logits, _iou) = student.model.decode_boxes(&emb, &batch.boxes, false)?;
                let logits = logits.narrow(1, 0, 1)?;
                let soft = sigmoid(&batch.teacher_logits)?;
                let l_t = bce_with_logits(&logits, &soft)?;
                let l_g = (bce_with_logits(&logits, &batch.masks)?
                    + dice_loss(&sigmoid(&logits)?, &batch.masks)?)?;
                let lt = l_t.to_scalar::<f32>()?;
                let lg = l_g.to_scalar::<f32>()?;
                let masks = ((l_t * w.teacher)? + (l_g * w.ground_truth)?)?;
                let total = if frozen {
                    masks
                } else {
                    ((l_emb * w.embedding)? + masks)?
                };
                Ok((total, [le, lt, lg]))
            }
        }
    };
    run().map_err(cerr)
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, cosine to 5 %.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = total.saturating_sub(cfg.warmup_steps).max(1);
    let t = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
    cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Records a stage trains on: all for stage 1, those with a foreground for stage 2.
pub fn usable_records(cache: &TeacherCache, stage: Stage) -> Vec<usize> {
    cache
        .metas
        .iter()
        .filter(|m| stage == Stage::Embedding || m.has_mask)
        .map(|m| m.index)
        .collect()
}

/// Validation of a student on a cache (no augmentation, tight box): mean
/// embedding MSE, and for records with a mask the mean Dice of the student's
/// and the teacher's low-res masks against the ground truth (valid region).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Validation {
    /// Records used.
    pub records: usize,
    /// Mean embedding MSE (adapter output vs pooled teacher).
    pub embedding_mse: f64,
    /// Mean Dice (%) of the student's masks.
    pub student_dice: f64,
    /// Mean Dice (%) of the teacher's cached masks.
    pub teacher_dice: f64,
}

/// Runs [`Validation`] in batches of `batch`.
pub fn validate(
    student: &Student,
    cache: &TeacherCache,
    batch: usize,
    norm: &EmbeddingNorm,
) -> Result<Validation, DistillError> {
    let s = cache.header.input_size;
    let mut v = Validation::default();
    let (mut sd, mut td, mut n_mask) = (0.0, 0.0, 0usize);
    let idx: Vec<usize> = (0..cache.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for chunk in idx.chunks(batch.max(1)) {
        let mut b = make_batch(cache, chunk, false, &mut rng)?;
        // tight box, prompt 0
        let mut boxes = Vec::new();
        let mut tl = Vec::new();
        for &i in chunk {
            let r = cache.record(i)?;
            boxes.extend_from_slice(&r.bbox(0));
            tl.extend(r.logits(0));
        }
        b.boxes = Tensor::from_vec(boxes, (chunk.len(), 4), &Device::Cpu).map_err(cerr)?;
        b.teacher_logits =
            Tensor::from_vec(tl, (chunk.len(), 1, s, s), &Device::Cpu).map_err(cerr)?;
        let out = (|| -> candle_core::Result<(f32, Vec<f32>)> {
            let emb = student
                .model
                .encode(&b.images)
                .map_err(|e| candle_core::Error::Msg(format!("student encoder: {e}")))?;
            let (_, _, e, _) = emb.dims4()?;
            let (_, _, th, _) = b.embeddings.dims4()?;
            let target = if th == e {
                b.embeddings.clone()
            } else {
                b.embeddings.avg_pool2d(th / e)?
            };
            let target = norm.apply(&target)?;
            let mse = (student.adapter.forward(&emb)? - target)?
                .sqr()?
                .mean_all()?
                .to_scalar::<f32>()?;
            let (logits, _) = student.model.decode_boxes(&emb, &b.boxes, false)?;
            let logits = logits.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((mse, logits))
        })()
        .map_err(cerr)?;
        v.embedding_mse += out.0 as f64 * chunk.len() as f64;
        let teacher = b
            .teacher_logits
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>());
        let teacher = teacher.map_err(cerr)?;
        for (j, &i) in chunk.iter().enumerate() {
            let r = cache.record(i)?;
            if !r.meta.has_mask {
                continue;
            }
            let (nh, nw) = (r.meta.new_h, r.meta.new_w);
            let gt = r.mask();
            let plane = j * s * s;
            let dice_of = |lg: &[f32]| -> f64 {
                let (mut inter, mut a, mut g) = (0usize, 0usize, 0usize);
                for row in 0..nh {
                    for col in 0..nw {
                        let p = lg[plane + row * s + col] > 0.0;
                        let t = gt[row * s + col] != 0;
                        inter += usize::from(p && t);
                        a += usize::from(p);
                        g += usize::from(t);
                    }
                }
                if a + g == 0 {
                    100.0
                } else {
                    200.0 * inter as f64 / (a + g) as f64
                }
            };
            sd += dice_of(&out.1);
            td += dice_of(&teacher);
            n_mask += 1;
        }
    }
    v.records = cache.len();
    v.embedding_mse /= cache.len().max(1) as f64;
    if n_mask > 0 {
        v.student_dice = sd / n_mask as f64;
        v.teacher_dice = td / n_mask as f64;
    }
    Ok(v)
}

/// Runs (or resumes) one stage. `init` seeds a fresh run's weights (e.g. stage 1's
/// result for stage 2). `on_step` sees every logged row (for a progress bar).
pub fn train(
    cfg: &TrainConfig,
    cache: &TeacherCache,
    run_dir: &Path,
    init: Option<&Path>,
    mut on_step: impl FnMut(&LossRow, usize),
) -> Result<TrainState, DistillError> {
    if cfg.batch == 0 || cfg.epochs == 0 || cfg.checkpoint_every == 0 {
        return Err(DistillError::Config(
            "batch, epochs and checkpoint interval must be at least 1".into(),
        ));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(DistillError::Config(format!(
            "learning rate {} is not positive",
            cfg.lr
        )));
    }
    let s = cache.header.input_size;
    if cfg.student.img_size != s {
        return Err(DistillError::Config(format!(
            "student input {} but the cache holds {s}×{s} images",
            cfg.student.img_size
        )));
    }
    let e = cfg.student.embedding_size();
    let th = cache.header.embedding[1];
    if e == 0 || !th.is_multiple_of(e) || cache.header.embedding[2] != th {
        return Err(DistillError::Config(format!(
            "student grid {e} does not divide the teacher's {th}"
        )));
    }
    let paths = RunPaths::new(run_dir, cfg.stage);
    let dir = paths.weights.parent().unwrap_or(run_dir).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| ferr(&dir, e))?;
    let _lock = super::DirLock::acquire(&dir)?;

    let student = Student::new(&cfg.student, cache.header.embedding[0])?;
    let mut state = if paths.state.is_file() {
        let text = std::fs::read_to_string(&paths.state).map_err(|e| ferr(&paths.state, e))?;
        let st: TrainState = serde_json::from_str(&text).map_err(|e| ferr(&paths.state, e))?;
        // stage 1 never runs the decoder, so a run stored before the box prior
        // existed (read as `box_prior: false`) resumes under either setting
        let mut stored = st.config.clone();
        if cfg.stage == Stage::Embedding {
            stored.student.box_prior = cfg.student.box_prior;
        }
        if stored != *cfg || st.teacher_sha256 != cache.header.teacher_sha256 {
            return Err(DistillError::Config(format!(
                "{} holds a run with other settings or another teacher; use another --out \
                 or delete it",
                dir.display()
            )));
        }
        student.load(&paths.weights)?;
        st
    } else {
        match init {
            Some(p) => {
                student.load(p)?;
                if cfg.fresh_decoder {
                    student.redraw_decoder(cfg.seed)?;
                }
            }
            None => student.reseed(cfg.seed)?,
        }
        TrainState {
            config: cfg.clone(),
            teacher_sha256: cache.header.teacher_sha256.clone(),
            step: 0,
            finished: false,
            seconds: 0.0,
            init: init.map(Path::to_path_buf),
        }
    };
    if state.finished {
        return Ok(state);
    }

    let norm = EmbeddingNorm::for_run(cfg.embedding_target, run_dir, cache, th / e)?;
    let records = usable_records(cache, cfg.stage);
    if records.is_empty() {
        return Err(DistillError::Config(
            "the cache has no records this stage can use".into(),
        ));
    }
    let steps_per_epoch = records.len().div_ceil(cfg.batch);
    let total = (steps_per_epoch * cfg.epochs).min(cfg.max_steps.unwrap_or(usize::MAX));
    let trainable = student.trainable_with(cfg.stage, cfg.freeze_encoder)?;
    let mut opt = candle_nn::AdamW::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        candle_nn::ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )
    .map_err(cerr)?;

    let mut csv = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.csv)
        .map_err(|e| ferr(&paths.csv, e))?;
    if csv.metadata().map(|m| m.len() == 0).unwrap_or(true) {
        writeln!(
            csv,
            "step,epoch,lr,total,embedding,teacher,ground_truth,seconds"
        )
        .map_err(|e| ferr(&paths.csv, e))?;
    }
    // drop rows beyond the checkpoint (written after it, before a crash)
    truncate_csv(&paths.csv, state.step)?;

    let started = Instant::now();
    let seconds_before = state.seconds;
    while state.step < total {
        let epoch = state.step / steps_per_epoch;
        let mut order = records.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37));
        order.shuffle(&mut rng);
        let in_epoch = state.step % steps_per_epoch;
        let mut brng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1) ^ (state.step as u64) << 20);
        let idx: Vec<usize> = order
            .iter()
            .skip(in_epoch * cfg.batch)
            .take(cfg.batch)
            .copied()
            .collect();
        let t = Instant::now();
        let batch = make_batch(cache, &idx, cfg.augment, &mut brng)?;
        let lr = learning_rate(cfg, state.step, total);
        opt.set_learning_rate(lr);
        let (loss, parts) = losses(
            &student,
            &batch,
            cfg.stage,
            &cfg.loss_weights,
            &norm,
            cfg.freeze_encoder,
        )?;
        let total_loss = loss.to_scalar::<f32>().map_err(cerr)?;
        if !total_loss.is_finite() {
            return Err(DistillError::Train(format!(
                "loss became {total_loss} at step {}; lower --lr and resume from the last \
                 checkpoint",
                state.step + 1
            )));
        }
        opt.backward_step(&loss).map_err(cerr)?;
        state.step += 1;
        let row = LossRow {
            step: state.step,
            epoch,
            lr,
            total: total_loss,
            embedding: parts[0],
            teacher: parts[1],
            ground_truth: parts[2],
            seconds: t.elapsed().as_secs_f64(),
        };
        writeln!(
            csv,
            "{},{},{:.3e},{:.6},{:.6},{:.6},{:.6},{:.3}",
            row.step,
            row.epoch,
            row.lr,
            row.total,
            row.embedding,
            row.teacher,
            row.ground_truth,
            row.seconds
        )
        .map_err(|e| ferr(&paths.csv, e))?;
        on_step(&row, total);
        let epoch_end = state.step % steps_per_epoch == 0;
        if epoch_end || state.step % cfg.checkpoint_every == 0 || state.step == total {
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            state.finished = state.step >= total;
            checkpoint(&student, &state, &paths)?;
        }
    }
    state.finished = true;
    state.seconds = seconds_before + started.elapsed().as_secs_f64();
    checkpoint(&student, &state, &paths)?;
    super::plot::plot_losses(&paths.csv, &paths.plot)?;
    Ok(state)
}

fn checkpoint(student: &Student, state: &TrainState, paths: &RunPaths) -> Result<(), DistillError> {
    student.save(&paths.weights)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| ferr(&paths.state, e))?;
    let tmp = paths.state.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| ferr(&tmp, e))?;
    std::fs::rename(&tmp, &paths.state).map_err(|e| ferr(&paths.state, e))?;
    super::plot::plot_losses(&paths.csv, &paths.plot)
}

/// Keeps the header and the rows of steps `≤ step`.
fn truncate_csv(path: &Path, step: usize) -> Result<(), DistillError> {
    let text = std::fs::read_to_string(path).map_err(|e| ferr(path, e))?;
    let mut out = String::new();
    let mut changed = false;
    for (i, line) in text.lines().enumerate() {
        let keep = i == 0
            || line
                .split(',')
                .next()
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|s| s <= step);
        if keep {
            out.push_str(line);
            out.push('\n');
        } else {
            changed = true;
        }
    }
    if changed {
        std::fs::write(path, out).map_err(|e| ferr(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bce_matches_the_formula_and_is_stable() {
        let x = Tensor::new(&[-200.0f32, -1.0, 0.0, 2.0, 300.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0.0f32, 1.0, 0.5, 0.0, 1.0], &Device::Cpu).unwrap();
        let got = bce_with_logits(&x, &t).unwrap().to_scalar::<f32>().unwrap();
        let xs = [-200.0f64, -1.0, 0.0, 2.0, 300.0];
        let ts = [0.0f64, 1.0, 0.5, 0.0, 1.0];
        let want: f64 = xs
            .iter()
            .zip(ts)
            .map(|(&x, t)| {
                let p = 1.0 / (1.0 + (-x).exp());
                -(t * p.max(1e-300).ln() + (1.0 - t) * (1.0 - p).max(1e-300).ln())
            })
            .sum::<f64>()
            / 5.0;
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn reseeded_students_are_identical_and_seeds_differ() {
        let cfg = LiteMedSamConfig::tiny_student();
        let weights = |seed: u64| -> Vec<(String, Vec<f32>)> {
            let s = Student::new(&cfg, 16).unwrap();
            s.reseed(seed).unwrap();
            let data = s.vars.data().lock().unwrap();
            let mut v: Vec<(String, Vec<f32>)> = data
                .iter()
                .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (a, b, c) = (weights(7), weights(7), weights(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // norm scales stay at their constant initialisation
        let ln = a.iter().find(|(k, _)| k.ends_with("bn.weight")).unwrap();
        assert!(ln.1.iter().all(|&x| x == 1.0));
    }

    fn rms(v: &[f32]) -> f64 {
        (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    /// A variable's name, shape and values.
    type NamedValues = (String, Vec<usize>, Vec<f32>);

    /// The student (edge-s preset) after `reseed`, with its variables by name.
    fn reseeded_edge_s() -> (Student, Vec<NamedValues>) {
        let s = Student::new(&LiteMedSamConfig::edge_s(), 256).unwrap();
        s.reseed(3).unwrap();
        let v = {
            let data = s.vars.data().lock().unwrap();
            let mut v: Vec<_> = data
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.dims().to_vec(),
                        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        (s, v)
    }

    #[test]
    fn reseed_gives_kaiming_scale_to_layers_and_unit_scale_to_embedding_tables() {
        let (_, vars) = reseeded_edge_s();
        let mut checked = (0, 0);
        for (name, dims, v) in &vars {
            if dims.len() < 2 || v.len() < 64 || v.windows(2).all(|w| w[0] == w[1]) {
                continue;
            }
            let want = if is_embedding_table(name) {
                checked.1 += 1;
                1.0
            } else {
                checked.0 += 1;
                (2.0 / dims[1..].iter().product::<usize>() as f64).sqrt()
            };
            let got = rms(v);
            assert!(
                (got / want - 1.0).abs() < 0.3,
                "{name} {dims:?}: rms {got:.3}, want {want:.3}"
            );
        }
        // the layers whose names contain `token` or `embed` are among the checked ones
        for layer in [
            "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight",
            "mask_decoder.transformer.final_attn_token_to_image.k_proj.weight",
            "image_encoder.patch_embed.seq.0.c.weight",
        ] {
            assert!(vars.iter().any(|(n, ..)| n == layer), "{layer} missing");
            assert!(!is_embedding_table(layer), "{layer}");
        }
        assert!(is_embedding_table("mask_decoder.mask_tokens.weight"));
        assert!(is_embedding_table(
            "prompt_encoder.point_embeddings.2.weight"
        ));
        assert!(checked.0 > 50 && checked.1 >= 3, "{checked:?}");
    }

    #[test]
    fn redraw_decoder_keeps_the_encoder_and_draws_the_decoder_afresh() {
        let (s, before) = reseeded_edge_s();
        // a "trained" student: every variable moved
        {
            let data = s.vars.data().lock().unwrap();
            for var in data.values() {
                var.set(&(var.as_tensor() + 0.5).unwrap()).unwrap();
            }
        }
        s.redraw_decoder(3).unwrap();
        let data = s.vars.data().lock().unwrap();
        for (name, _, v0) in &before {
            let now = data[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            if is_decoder_variable(name) {
                assert_eq!(&now, v0, "{name} was not redrawn");
            } else {
                assert!(
                    now.iter().zip(v0).all(|(a, b)| *a == b + 0.5),
                    "{name} changed"
                );
            }
        }
    }

    #[test]
    fn a_frozen_encoder_leaves_only_the_decoder_trainable() {
        let s = Student::new(&LiteMedSamConfig::tiny_student(), 16).unwrap();
        let all = s.trainable_with(Stage::Prompted, false).unwrap();
        let frozen = s.trainable_with(Stage::Prompted, true).unwrap();
        assert!(all.iter().any(|(n, _)| n.starts_with("image_encoder.")));
        assert!(!frozen.is_empty() && frozen.len() < all.len());
        assert!(frozen.iter().all(|(n, _)| is_decoder_variable(n)));
        assert_eq!(
            frozen.len(),
            all.iter().filter(|(n, _)| is_decoder_variable(n)).count()
        );
    }

    #[test]
    fn dice_loss_is_zero_for_a_perfect_mask() {
        let t = Tensor::new(&[[1.0f32, 0.0, 1.0, 1.0]], &Device::Cpu).unwrap();
        let l = dice_loss(&t, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!(l.abs() < 1e-6, "{l}");
        let z = t.zeros_like().unwrap();
        let l = dice_loss(&z, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - 0.75).abs() < 1e-6, "{l}");
    }

    #[test]
    fn learning_rate_warms_up_and_decays() {
        let cfg = TrainConfig {
            student_name: "x".into(),
            student: LiteMedSamConfig::tiny(),
            stage: Stage::Embedding,
            epochs: 1,
            max_steps: None,
            batch: 1,
            lr: 1.0,
            warmup_steps: 10,
            weight_decay: 0.0,
            seed: 0,
            augment: false,
            loss_weights: LossWeights::default(),
            embedding_target: EmbeddingTarget::Standardized,
            checkpoint_every: 1,
            fresh_decoder: false,
            freeze_encoder: false,
        };
        assert!((learning_rate(&cfg, 0, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&cfg, 9, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 100, 100) - 0.05).abs() < 1e-12);
        let mid = learning_rate(&cfg, 55, 100);
        assert!(mid < 1.0 && mid > 0.05);
    }
}
