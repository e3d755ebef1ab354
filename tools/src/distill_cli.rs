//! `edgeseg-tools distill`: build a teacher cache, train a student stage. A
//! module of the binary; the logic is in the library's `distill` module.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use edgeseg_models::LiteMedSamConfig;
use edgeseg_runtime::backend::cpu::TractSegmenter;
use edgeseg_runtime::backend::BackendOptions;
use edgeseg_runtime::bundle::{hex, Bundle, VerifyPolicy};
use edgeseg_tools::dataset::Split;
use edgeseg_tools::distill::cache::{self, CacheBuildConfig, TeacherCache};
use edgeseg_tools::distill::embedding_norm::{EmbeddingNorm, EmbeddingTarget};
use edgeseg_tools::distill::provenance::TrainingProvenance;
use edgeseg_tools::distill::train::{self, LossWeights, RunPaths, Stage, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// The distillation subcommands.
#[derive(Subcommand, Debug)]
pub enum DistillCommand {
    /// Run the teacher bundle once over the training images of some datasets and store
    /// its embeddings and box-prompt logits in a memory-mapped cache (resumable).
    Cache(Box<CacheArgs>),
    /// Train one stage of a student from a teacher cache (resumable; checkpoints,
    /// loss.csv and loss.png in OUT/stageN/).
    Train(Box<TrainArgs>),
}

/// `distill cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// The teacher as a bundle (`export` + `bundle` of the LiteMedSAM checkpoint).
    #[arg(long)]
    pub teacher: PathBuf,
    /// A 2D dataset folder (with manifest.csv); repeat for several.
    #[arg(long = "dataset", required = true)]
    pub datasets: Vec<PathBuf>,
    /// Splits to cache (repeatable); `test` is refused.
    #[arg(long = "split", default_value = "train")]
    pub splits: Vec<Split>,
    /// Output folder (an existing cache with the same settings is resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// Box prompts per image: the tight ground-truth box, then jittered copies.
    #[arg(long, default_value_t = cache::DEFAULT_PROMPTS)]
    pub prompts: usize,
    /// Jitter of the extra boxes, as a fraction of the box's longer side.
    #[arg(long, default_value_t = 0.1)]
    pub box_jitter: f32,
    /// Seed of the jitter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many images (smoke runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Teacher threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `distill train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Teacher cache of the training images (from `distill cache`).
    #[arg(long)]
    pub cache: PathBuf,
    /// Teacher cache of validation images (`--split val`), scored after training.
    #[arg(long)]
    pub val_cache: Option<PathBuf>,
    /// Student architecture: a preset (edge-s, edge-m, tiny-student) or a JSON config file.
    #[arg(long, default_value = "edge-s")]
    pub student: String,
    /// 1 = encoder from the teacher embedding; 2 = whole student from teacher masks and ground truth.
    #[arg(long)]
    pub stage: u8,
    /// Run folder (stage1/ and stage2/ inside; an unfinished run is resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// Weights to start a fresh run from [stage 2 default: OUT/stage1/weights.safetensors].
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Passes over the cache.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Stop after this many steps in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Peak learning rate [default: 2e-3 for stage 1, 5e-4 for stage 2].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Turn off the photometric augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Checkpoint every this many steps (and at every epoch end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Stage-2 weight of the embedding loss.
    #[arg(long, default_value_t = LossWeights::default().embedding)]
    pub w_embedding: f64,
    /// Stage-2 weight of the teacher-mask loss.
    #[arg(long, default_value_t = LossWeights::default().teacher)]
    pub w_teacher: f64,
    /// Stage-2 weight of the ground-truth loss.
    #[arg(long, default_value_t = LossWeights::default().ground_truth)]
    pub w_gt: f64,
    /// Target of the embedding loss: the pooled teacher embedding standardised per channel
    /// (default), or as it is (`raw`, what runs before session 5 used; its loss is dominated
    /// by the channel means).
    #[arg(long, value_enum, default_value = "standardized")]
    pub embedding_target: EmbeddingTarget,
    /// Start from `--init` weights distilled from another bundle of the teacher (a teacher
    /// bundle re-made from the same weights has another SHA-256, because its manifest records
    /// the command that made it). The change is written into the run's provenance.
    #[arg(long)]
    pub accept_teacher_change: bool,
    /// With `--init`: keep only its image encoder and start from a freshly drawn prompt
    /// encoder and mask decoder.
    #[arg(long)]
    pub fresh_decoder: bool,
    /// Stage 2 with the image encoder frozen: only the prompt encoder and mask decoder
    /// learn (about 4× faster steps; the embedding loss is reported but not trained).
    #[arg(long)]
    pub freeze_encoder: bool,
}

/// Runs a distill subcommand.
pub fn run(cmd: DistillCommand) -> Result<()> {
    match cmd {
        DistillCommand::Cache(a) => build(*a),
        DistillCommand::Train(a) => train_stage(*a),
    }
}

/// A preset name or a JSON file.
pub fn student_config(spec: &str) -> Result<LiteMedSamConfig> {
    if let Some(c) = LiteMedSamConfig::preset(spec) {
        return Ok(c);
    }
    let p = Path::new(spec);
    if p.is_file() {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {spec}"))?;
        let c: LiteMedSamConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {spec}"))?;
        c.validate()
            .map_err(|e| anyhow::anyhow!("{spec}: invalid architecture: {e}"))?;
        return Ok(c);
    }
    bail!("unknown student `{spec}`: use edge-s, edge-m, tiny-student or a JSON config file")
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed} < {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

fn build(a: CacheArgs) -> Result<()> {
    let bundle = Bundle::open(&a.teacher, &VerifyPolicy::default())
        .with_context(|| format!("opening teacher bundle {}", a.teacher.display()))?;
    let sha = hex(&bundle.file_sha256());
    let name = bundle.manifest().model.name.clone();
    let mut opts = BackendOptions::default();
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    let mut teacher = TractSegmenter::from_bundle(&bundle, &opts)
        .with_context(|| format!("loading teacher {}", a.teacher.display()))?;
    drop(bundle);
    let cfg = CacheBuildConfig {
        out: a.out.clone(),
        datasets: a.datasets,
        splits: a.splits,
        prompts: a.prompts,
        box_jitter: a.box_jitter,
        seed: a.seed,
        limit: a.limit,
    };
    let pb = bar(0, "teacher");
    let n = cache::build_cache(&cfg, &mut teacher, &sha, &name, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish();
    println!("{n} records in {}", a.out.display());
    Ok(())
}

fn train_stage(a: TrainArgs) -> Result<()> {
    let stage = match a.stage {
        1 => Stage::Embedding,
        2 => Stage::Prompted,
        s => bail!("--stage must be 1 or 2, got {s}"),
    };
    if stage == Stage::Embedding && (a.freeze_encoder || a.fresh_decoder) {
        bail!("--freeze-encoder and --fresh-decoder are stage-2 options (stage 1 trains only the encoder)");
    }
    let student = student_config(&a.student)?;
    let cache = TeacherCache::open(&a.cache)
        .with_context(|| format!("opening teacher cache {}", a.cache.display()))?;
    let init = match (&a.init, stage) {
        (Some(p), _) => Some(p.clone()),
        (None, Stage::Prompted) => {
            let p = RunPaths::new(&a.out, Stage::Embedding).weights;
            if !p.is_file() {
                bail!(
                    "stage 2 starts from stage 1's weights, but {} does not exist; run \
                     --stage 1 first or pass --init",
                    p.display()
                );
            }
            Some(p)
        }
        (None, Stage::Embedding) => None,
    };
    let lr = a.lr.unwrap_or(match stage {
        Stage::Embedding => 2e-3,
        Stage::Prompted => 5e-4,
    });
    let cfg = TrainConfig {
        student_name: a.student.clone(),
        student,
        stage,
        epochs: a.epochs,
        max_steps: a.max_steps,
        batch: a.batch,
        lr,
        warmup_steps: a.warmup,
        weight_decay: a.weight_decay,
        seed: a.seed,
        augment: !a.no_augment,
        loss_weights: LossWeights {
            embedding: a.w_embedding,
            teacher: a.w_teacher,
            ground_truth: a.w_gt,
        },
        checkpoint_every: a.checkpoint_every,
        embedding_target: a.embedding_target,
        fresh_decoder: a.fresh_decoder,
        freeze_encoder: a.freeze_encoder,
    };
    println!(
        "{} stage {}: {} records, teacher {} ({})",
        cfg.student_name,
        a.stage,
        train::usable_records(&cache, stage).len(),
        cache.header.teacher_name,
        &cache.header.teacher_sha256[..12.min(cache.header.teacher_sha256.len())]
    );
    let paths = RunPaths::new(&a.out, stage);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    TrainingProvenance::for_run(&cache, init.as_deref(), &command, a.accept_teacher_change)?
        .write_beside(&paths.weights)?;
    let pb = bar(0, "training");
    let state = train::train(&cfg, &cache, &a.out, init.as_deref(), |row, total| {
        pb.set_length(total as u64);
        pb.set_position(row.step as u64);
        pb.set_message(format!(
            "epoch {} loss {:.4} (emb {:.4} teacher {:.4} gt {:.4})",
            row.epoch, row.total, row.embedding, row.teacher, row.ground_truth
        ));
    })?;
    pb.finish();
    println!(
        "{} steps in {:.0} s; weights {}; loss curve {} and {}",
        state.step,
        state.seconds,
        paths.weights.display(),
        paths.csv.display(),
        paths.plot.display()
    );
    if let Some(v) = &a.val_cache {
        let vc = TeacherCache::open(v)
            .with_context(|| format!("opening validation cache {}", v.display()))?;
        if vc.header.teacher_sha256 != cache.header.teacher_sha256 {
            bail!("the validation cache was made with another teacher");
        }
        let s = train::Student::new(&cfg.student, cache.header.embedding[0])?;
        s.load(&paths.weights)?;
        let e = cfg.student.embedding_size();
        let norm = EmbeddingNorm::for_run(
            cfg.embedding_target,
            &a.out,
            &cache,
            cache.header.embedding[1] / e.max(1),
        )?;
        let val = train::validate(&s, &vc, cfg.batch, &norm)?;
        println!(
            "validation ({} images): embedding MSE {:.5}; low-res Dice with the tight box: \
             student {:.2} %, teacher {:.2} %",
            val.records, val.embedding_mse, val.student_dice, val.teacher_dice
        );
        let p = paths.weights.with_file_name("validation.json");
        std::fs::write(&p, serde_json::to_string_pretty(&val)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
