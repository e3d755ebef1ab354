//! The few-shot commands of `edgeseg-tools` (`teach`, `fewshot-episodes`) and the
//! `eval --support` segmenter. A module of the binary; the logic is in the
//! library's `fewshot` module and the runtime's prototype head.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeseg_runtime::bundle::VerifyPolicy;
use edgeseg_runtime::fewshot::{AutoPromptConfig, HeadConfig, PrototypeSet};
use edgeseg_tools::dataset::{Dataset, Split};
use edgeseg_tools::fewshot::{
    check_supports, default_cache_dir, load_supports, run_episodes, teach_set, AutoPromptMode,
    EpisodeConfig, FewShotSegmenter, TeacherEmbedder,
};
use edgeseg_tools::{keys, teacher};

/// Prototype-head settings shared by `teach` and `fewshot-episodes`.
#[derive(Args, Debug, Clone)]
pub struct HeadArgs {
    /// Cosine-similarity scale before the softmax over classes.
    #[arg(long, default_value_t = HeadConfig::default().scale)]
    pub scale: f32,
    /// Local-prototype pooling window, in embedding-grid cells.
    #[arg(long, default_value_t = HeadConfig::default().window)]
    pub window: u32,
    /// Fraction of a window a class must cover to give a local prototype.
    #[arg(long, default_value_t = HeadConfig::default().local_min_coverage)]
    pub local_min_coverage: f32,
    /// Most local prototypes per structure (0 = global prototypes only, PANet).
    #[arg(long, default_value_t = HeadConfig::default().max_local_foreground)]
    pub max_local: u32,
    /// Most local background prototypes.
    #[arg(long, default_value_t = HeadConfig::default().max_local_background)]
    pub max_local_background: u32,
}

impl HeadArgs {
    fn config(&self) -> HeadConfig {
        HeadConfig {
            scale: self.scale,
            window: self.window,
            local_min_coverage: self.local_min_coverage,
            max_local_foreground: self.max_local,
            max_local_background: self.max_local_background,
        }
    }
}

/// Auto-prompt settings shared by `eval --support` and `fewshot-episodes`.
#[derive(Args, Debug, Clone)]
pub struct PromptArgs {
    /// Probability a grid cell needs to count as confident.
    #[arg(long, default_value_t = AutoPromptConfig::default().threshold)]
    pub confidence: f32,
    /// Smallest confident component (grid cells) that counts as a found structure.
    #[arg(long, default_value_t = AutoPromptConfig::default().min_cells)]
    pub min_cells: usize,
    /// Grow auto-prompt boxes by this many grid cells per side.
    #[arg(long, default_value_t = AutoPromptConfig::default().margin_cells)]
    pub box_margin: f32,
    /// Also give the decoder the peak cell as a foreground point.
    #[arg(long)]
    pub peak_point: bool,
}

impl PromptArgs {
    /// The auto-prompt configuration.
    pub fn config(&self) -> AutoPromptConfig {
        AutoPromptConfig {
            threshold: self.confidence,
            min_cells: self.min_cells,
            margin_cells: self.box_margin,
            peak_point: self.peak_point,
        }
    }
}

/// `edgeseg-tools teach`.
#[derive(Args, Debug)]
pub struct TeachArgs {
    /// Support images (PNG/JPEG, 1–16, all grey or all colour).
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// Their masks, in the same order (0/255 binary or multi-label).
    #[arg(long, num_args = 1.., required = true)]
    pub masks: Vec<PathBuf>,
    /// Mask label of a structure to learn; repeat for several structures
    /// [default: every non-zero pixel is one structure].
    #[arg(long = "label")]
    pub labels: Vec<u8>,
    /// Name of each structure (same order as --label).
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Output prototype file.
    #[arg(long)]
    pub out: PathBuf,
    /// Teacher weights [default: found by `fetch-teacher`'s search order].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Secret key (NAME.key from `keygen`) to sign the prototype file with.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Embedding cache folder [default: $EDGESEG_CACHE/embeddings or target/fewshot-cache].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not cache embeddings.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub head: HeadArgs,
}

/// `edgeseg-tools fewshot-episodes`.
#[derive(Args, Debug)]
pub struct EpisodeArgs {
    /// Dataset folder (2D).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Split to draw supports and queries from.
    #[arg(long, default_value = "test", value_parser = |s: &str| s.parse::<Split>())]
    pub split: Split,
    /// Shot counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    pub shots: Vec<usize>,
    /// Random supports (episodes).
    #[arg(long, default_value_t = 5)]
    pub episodes: usize,
    /// Queries (a fixed random set from groups that never give supports).
    #[arg(long, default_value_t = 40)]
    pub max_queries: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JSON report.
    #[arg(long)]
    pub out: PathBuf,
    /// Markdown summary [default: the report path with .md].
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Teacher weights [default: found by `fetch-teacher`'s search order].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Embedding cache folder [default: $EDGESEG_CACHE/embeddings or target/fewshot-cache].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub head: HeadArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
}

fn weights_path(w: Option<&Path>) -> Result<PathBuf> {
    Ok(match w {
        Some(p) => p.to_path_buf(),
        None => teacher::find_teacher()?,
    })
}

fn command_line() -> String {
    std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `teach`.
pub fn teach(args: TeachArgs) -> Result<()> {
    if !args.names.is_empty() && args.names.len() != args.labels.len() {
        bail!(
            "{} --name for {} --label: give one name per label",
            args.names.len(),
            args.labels.len()
        );
    }
    let key = args
        .key
        .as_deref()
        .map(keys::read_signing_key)
        .transpose()?;
    let supports = load_supports(&args.images, &args.masks).context("reading the supports")?;
    // Refuse bad supports before the model is looked for and loaded.
    check_supports(&supports, &args.labels).context("checking the supports")?;
    let cache = (!args.no_cache).then(|| args.cache.clone().unwrap_or_else(default_cache_dir));
    let weights = weights_path(args.weights.as_deref())?;
    let mut embedder = TeacherEmbedder::load(&weights, cache)?;
    let start = std::time::Instant::now();
    let set = teach_set(
        &mut embedder,
        &supports,
        &args.labels,
        &args.names,
        args.head.config(),
    )
    .context("teaching")?;
    let mut provenance = BTreeMap::new();
    provenance.insert(
        "tool".into(),
        serde_json::json!(format!("edgeseg-tools {}", env!("CARGO_PKG_VERSION"))),
    );
    provenance.insert("command".into(), serde_json::json!(command_line()));
    provenance.insert(
        "support".into(),
        serde_json::json!(args
            .images
            .iter()
            .zip(&args.masks)
            .map(|(i, m)| [i.display().to_string(), m.display().to_string()])
            .collect::<Vec<_>>()),
    );
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let bytes = set
        .write_to(&args.out, &provenance, key.as_ref())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let per_class: Vec<String> = (0..set.class_count())
        .map(|c| {
            let n = set.prototypes.iter().filter(|p| p.class == c).count();
            let name = if c == 0 {
                "background".to_string()
            } else {
                set.names[c - 1].clone()
            };
            format!("{name}: {n}")
        })
        .collect();
    println!(
        "{}: {} bytes, {} shots ({}), {} prototypes ({}), {}, sha256 {}; {:.1} s ({} encoder runs, {} cached)",
        args.out.display(),
        bytes.len(),
        set.shots,
        set.modality,
        set.prototypes.len(),
        per_class.join(", "),
        if key.is_some() { "signed" } else { "unsigned" },
        edgeseg_runtime::bundle::hex(&edgeseg_runtime::bundle::sha256(&bytes)),
        start.elapsed().as_secs_f64(),
        embedder.encoded,
        embedder.cache_hits
    );
    Ok(())
}

/// Builds the `eval --support` segmenter.
pub fn support_segmenter(
    support: &Path,
    pubkey: Option<&Path>,
    weights: Option<&Path>,
    mode: AutoPromptMode,
    prompt: AutoPromptConfig,
) -> Result<FewShotSegmenter> {
    let policy = match pubkey {
        Some(p) => {
            let k = keys::read_public_key(p)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&k)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            VerifyPolicy::require_signature(vk)
        }
        None => VerifyPolicy::default(),
    };
    let (set, _info) = PrototypeSet::open(support, &policy)
        .with_context(|| format!("reading the prototype set {}", support.display()))?;
    let weights = weights_path(weights)?;
    let embedder = TeacherEmbedder::load(&weights, Some(default_cache_dir()))?;
    FewShotSegmenter::new(embedder, set, mode, prompt).with_context(|| {
        format!(
            "{} does not fit the teacher {}",
            support.display(),
            weights.display()
        )
    })
}

/// Runs `fewshot-episodes`.
pub fn episodes(args: EpisodeArgs) -> Result<()> {
    if args.shots.is_empty() || args.shots.iter().any(|&k| k == 0 || k > 16) {
        bail!("--shots must list shot counts in 1..=16");
    }
    if args.episodes == 0 || args.max_queries == 0 {
        bail!("--episodes and --max-queries must be at least 1");
    }
    let dataset = Dataset::open(&args.dataset)
        .with_context(|| format!("opening dataset {}", args.dataset.display()))?;
    let weights = weights_path(args.weights.as_deref())?;
    let cache = args.cache.clone().unwrap_or_else(default_cache_dir);
    let mut embedder = TeacherEmbedder::load(&weights, Some(cache))?;
    let cfg = EpisodeConfig {
        split: args.split,
        shots: args.shots.clone(),
        episodes: args.episodes,
        max_queries: args.max_queries,
        seed: args.seed,
        head: args.head.config(),
        prompt: args.prompt.config(),
    };
    let report = run_episodes(&dataset, &mut embedder, &cfg, command_line(), |line| {
        eprintln!("{line}");
        let _ = std::io::stderr().flush();
    })
    .with_context(|| format!("few-shot episodes on {}", args.dataset.display()))?;
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    let md = args
        .summary
        .unwrap_or_else(|| args.out.with_extension("md"));
    std::fs::write(&md, report.to_markdown())
        .with_context(|| format!("writing {}", md.display()))?;
    let t = report.teacher_box.map_or(f64::NAN, |m| m.mean);
    for r in &report.results {
        let d = r.prototype_decoder.dice.map_or(f64::NAN, |m| m.mean);
        let p = r.prototype_only.dice.map_or(f64::NAN, |m| m.mean);
        println!(
            "{} {}-shot: prototype {:.2}%, prototype->decoder {:.2}% ({:.0}% of the box-prompted teacher's {:.2}%)",
            report.dataset,
            r.shots,
            100.0 * p,
            100.0 * d,
            100.0 * d / t,
            100.0 * t
        );
    }
    println!("report: {}  summary: {}", args.out.display(), md.display());
    Ok(())
}
