//! The evaluation harness: run a [`Segmenter`] over one split of a dataset, measure every case
//! against its ground truth and aggregate.
//!
//! Prompts come from the ground truth: the tight box of the whole foreground
//! ([`PromptMode::Whole`]), or one box per connected component ([`PromptMode::Components`],
//! 8-connected in 2D / 26-connected in 3D, the per-component masks united into one prediction).
//! An optional seeded jitter moves every box edge by a uniform random amount of up to
//! `jitter × box extent` along that axis (rounded to whole pixels, clamped to the image); the
//! random stream depends only on the seed and the case's manifest line, so a case gets the same
//! box whatever `--limit` is.
//!
//! Cases whose ground truth is empty cannot be prompted: a promptable segmenter skips them and
//! the report says so (a prompt-free segmenter evaluates them, where Dice is 0 for any
//! prediction and undefined for an empty one).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::dataset::{Case, Dataset, DatasetError, Split};
use crate::grid::{BinaryMask, Connectivity, GridBox};
use crate::metrics::{MetricSet, MetricsError};
use crate::segmenter::{SegmentError, Segmenter};

/// How prompt boxes are derived from the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// One box around the whole foreground.
    Whole,
    /// One box per connected component (8/26-connected); predictions are united.
    Components,
}

/// Evaluation settings.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    /// The split to evaluate.
    pub split: Split,
    /// Evaluate only the first N cases of the split, in manifest order.
    pub limit: Option<usize>,
    /// How prompts are derived.
    pub prompt_mode: PromptMode,
    /// Components smaller than this many pixels/voxels get no prompt of their own
    /// (`Components` mode only; they still count in the ground truth).
    pub min_component: usize,
    /// Box jitter as a fraction of the box extent per axis (0 = exact tight boxes).
    pub jitter: f64,
    /// Seed of the jitter.
    pub seed: u64,
    /// Evaluate one label only (multi-label masks); `None` = all non-zero labels as one.
    pub label: Option<u8>,
    /// NSD tolerance in pixels/voxels.
    pub nsd_tolerance_px: f64,
    /// NSD tolerance in mm (used when the case's spacing is known).
    pub nsd_tolerance_mm: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            split: Split::Test,
            limit: None,
            prompt_mode: PromptMode::Whole,
            min_component: 0,
            jitter: 0.0,
            seed: 0,
            label: None,
            nsd_tolerance_px: 2.0,
            nsd_tolerance_mm: 2.0,
        }
    }
}

/// Errors that stop an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A dataset file is missing or malformed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The segmenter failed on a case.
    #[error("segmenter failed on case {case} ({image}): {source}")]
    Segment {
        /// Case id.
        case: String,
        /// Image path.
        image: String,
        /// The error.
        source: SegmentError,
    },
    /// The segmenter returned a mask that does not fit the case.
    #[error("segmenter returned an unusable result on case {case}: {message}")]
    BadOutput {
        /// Case id.
        case: String,
        /// What is wrong.
        message: String,
    },
    /// Metrics could not be computed (shape mismatch).
    #[error("case {case}: {source}")]
    Metrics {
        /// Case id.
        case: String,
        /// The error.
        source: MetricsError,
    },
    /// The split has no case.
    #[error("split '{0}' of this dataset has no case")]
    EmptySplit(Split),
}

/// Metrics of one case in one unit system.
#[derive(Debug, Clone, Serialize)]
pub struct CaseMetrics {
    /// Dice in [0, 1].
    pub dice: Option<f64>,
    /// IoU in [0, 1].
    pub iou: Option<f64>,
    /// HD95 in pixels/voxels.
    pub hd95_px: Option<f64>,
    /// Hausdorff (max) in pixels/voxels.
    pub hd_px: Option<f64>,
    /// NSD at the pixel tolerance.
    pub nsd_px: Option<f64>,
    /// HD95 in mm (spacing known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hd95_mm: Option<f64>,
    /// NSD at the mm tolerance (spacing known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsd_mm: Option<f64>,
}

/// One evaluated (or skipped) case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case id (image stem).
    pub id: String,
    /// Image path relative to the dataset.
    pub image: String,
    /// Group.
    pub group: String,
    /// Manifest line.
    pub line: u64,
    /// `ok` or `skipped`.
    pub status: &'static str,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Ground-truth foreground size.
    pub gt_px: usize,
    /// Predicted foreground size.
    pub pred_px: usize,
    /// Physical spacing per axis in mm, when known (then the `_mm` metrics are set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spacing_mm: Option<Vec<f64>>,
    /// Prompt boxes given (min/max per axis, inclusive).
    pub prompts: Vec<GridBox>,
    /// Metrics (absent for skipped cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<CaseMetrics>,
    /// Segmenter wall time for this case (all prompts), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// Summary statistics of one metric over the cases where it is defined.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Cases where the metric is defined.
    pub n: usize,
    /// Cases where it is undefined (null), e.g. HD95 with an empty prediction.
    pub undefined: usize,
    /// Mean.
    pub mean: Option<f64>,
    /// Population standard deviation (ddof = 0).
    pub std: Option<f64>,
    /// Median (linear interpolation).
    pub median: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

impl Stats {
    /// Statistics over the defined values.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        let mut v = Vec::new();
        let mut undefined = 0;
        for x in values {
            match x {
                Some(x) if x.is_finite() => v.push(x),
                _ => undefined += 1,
            }
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Self {
                n,
                undefined,
                mean: None,
                std: None,
                median: None,
                min: None,
                max: None,
            };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        Self {
            n,
            undefined,
            mean: Some(mean),
            std: Some(var.sqrt()),
            median: Some(percentile(&v, 50.0)),
            min: v.first().copied(),
            max: v.last().copied(),
        }
    }
}

/// Linear-interpolation percentile of sorted values (`p` in 0–100).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Latency summary in ms.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// Timed cases.
    pub n: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

impl LatencyStats {
    fn of(ms: &[f64]) -> Self {
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        let some = |x: f64| (!v.is_empty()).then_some(x);
        Self {
            n: v.len(),
            p50: some(percentile(&v, 50.0)),
            p90: some(percentile(&v, 90.0)),
            p99: some(percentile(&v, 99.0)),
            max: v.last().copied(),
            mean: some(v.iter().sum::<f64>() / v.len().max(1) as f64),
        }
    }
}

/// Aggregates over all evaluated cases.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    /// Dice.
    pub dice: Stats,
    /// IoU.
    pub iou: Stats,
    /// HD95 in pixels/voxels.
    pub hd95_px: Stats,
    /// NSD at the pixel tolerance.
    pub nsd_px: Stats,
    /// HD95 in mm over cases with known spacing.
    pub hd95_mm: Stats,
    /// NSD at the mm tolerance over cases with known spacing.
    pub nsd_mm: Stats,
}

/// What was evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    /// Folder name.
    pub name: String,
    /// Folder path as given.
    pub path: String,
    /// The split.
    pub split: Split,
    /// Cases in the split.
    pub cases_in_split: usize,
    /// Cases taken (after `--limit`).
    pub cases_taken: usize,
    /// Cases evaluated.
    pub evaluated: usize,
    /// Cases skipped (with reasons in `cases`).
    pub skipped: usize,
}

/// The machine the evaluation ran on.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// CPU model (from /proc/cpuinfo when available).
    pub cpu: String,
    /// Logical CPUs available.
    pub threads: usize,
    /// `os-arch`.
    pub platform: String,
}

impl MachineInfo {
    /// Reads what the OS tells about this machine.
    pub fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// The full report written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Tool and version that wrote it.
    pub tool: String,
    /// The command line.
    pub command: String,
    /// The segmenter name.
    pub segmenter: String,
    /// Settings.
    pub config: EvalConfig,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Aggregates.
    pub aggregate: Aggregate,
    /// Segmenter latency per case.
    pub latency_ms: LatencyStats,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Per-case results, in manifest order.
    pub cases: Vec<CaseResult>,
}

/// Derives the prompt boxes of one ground-truth mask (empty when the mask is empty).
pub fn prompts_from_gt(gt: &BinaryMask, cfg: &EvalConfig, case_line: u64) -> Vec<GridBox> {
    let mut boxes: Vec<GridBox> = match cfg.prompt_mode {
        PromptMode::Whole => gt.bbox().into_iter().collect(),
        PromptMode::Components => {
            let comps = gt.components(Connectivity::Full);
            let mut b: Vec<GridBox> = comps
                .iter()
                .filter(|c| c.count() >= cfg.min_component.max(1))
                .filter_map(|c| c.bbox())
                .collect();
            if b.is_empty() {
                // every component is below the size floor: prompt the largest one
                b.extend(comps.first().and_then(|c| c.bbox()));
            }
            b
        }
    };
    if cfg.jitter > 0.0 {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ case_line.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let dims = gt.shape.dims();
        for b in &mut boxes {
            for (d, &size) in dims.iter().enumerate().take(b.ndim) {
                let extent = (b.max[d] - b.min[d] + 1) as f64;
                let j = cfg.jitter * extent;
                let mut shift = |v: usize| -> usize {
                    let delta = rng.random_range(-j..=j).round();
                    (v as f64 + delta).clamp(0.0, (size - 1) as f64) as usize
                };
                let (a, z) = (shift(b.min[d]), shift(b.max[d]));
                b.min[d] = a.min(z);
                b.max[d] = a.max(z);
            }
        }
    }
    boxes
}

/// Runs the evaluation. `on_case` is called after each case (for progress bars, saving masks).
pub fn run_eval(
    dataset: &Dataset,
    segmenter: &mut dyn Segmenter,
    cfg: &EvalConfig,
    command: String,
    mut on_case: impl FnMut(&Case, &CaseResult, Option<&BinaryMask>),
) -> Result<EvalReport, EvalError> {
    let in_split: Vec<&Case> = dataset.split(cfg.split).collect();
    if in_split.is_empty() {
        return Err(EvalError::EmptySplit(cfg.split));
    }
    let taken: Vec<&Case> = in_split
        .iter()
        .copied()
        .take(cfg.limit.unwrap_or(usize::MAX))
        .collect();
    let mut results = Vec::with_capacity(taken.len());
    let mut latencies = Vec::new();
    for case in &taken {
        let loaded = dataset.load(case)?;
        let gt = loaded.labels.foreground(cfg.label);
        let prompts = prompts_from_gt(&gt, cfg, case.line);
        let base = CaseResult {
            id: case.id(),
            image: case.image.clone(),
            group: case.group.clone(),
            line: case.line,
            status: "ok",
            skip_reason: None,
            gt_px: gt.count(),
            pred_px: 0,
            spacing_mm: loaded.spacing_mm.clone(),
            prompts: prompts.clone(),
            metrics: None,
            latency_ms: None,
        };
        if segmenter.needs_prompt() && prompts.is_empty() {
            let r = CaseResult {
                status: "skipped",
                skip_reason: Some("empty ground truth: no prompt box can be derived".into()),
                ..base
            };
            on_case(case, &r, None);
            results.push(r);
            continue;
        }
        let start = Instant::now();
        let masks = segmenter
            .segment(&loaded.image, &prompts)
            .map_err(|source| EvalError::Segment {
                case: case.id(),
                image: case.image.clone(),
                source,
            })?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let expected = prompts.len().max(1);
        if masks.len() != expected {
            return Err(EvalError::BadOutput {
                case: case.id(),
                message: format!("{} masks for {} prompts", masks.len(), expected),
            });
        }
        let mut pred = BinaryMask::empty(gt.shape);
        for m in &masks {
            if m.shape != gt.shape || m.data.len() != pred.data.len() {
                return Err(EvalError::BadOutput {
                    case: case.id(),
                    message: format!("mask is {} but the case is {}", m.shape, gt.shape),
                });
            }
            for (p, &v) in pred.data.iter_mut().zip(&m.data) {
                *p |= v;
            }
        }
        let merr = |source| EvalError::Metrics {
            case: case.id(),
            source,
        };
        let px = MetricSet::compute(&pred, &gt, None, cfg.nsd_tolerance_px).map_err(merr)?;
        let mm = match &loaded.spacing_mm {
            Some(s) => {
                Some(MetricSet::compute(&pred, &gt, Some(s), cfg.nsd_tolerance_mm).map_err(merr)?)
            }
            None => None,
        };
        latencies.push(ms);
        let r = CaseResult {
            pred_px: pred.count(),
            metrics: Some(CaseMetrics {
                dice: px.dice,
                iou: px.iou,
                hd95_px: px.hd95,
                hd_px: px.hd,
                nsd_px: px.nsd,
                hd95_mm: mm.as_ref().and_then(|m| m.hd95),
                nsd_mm: mm.as_ref().and_then(|m| m.nsd),
            }),
            latency_ms: Some(ms),
            ..base
        };
        on_case(case, &r, Some(&pred));
        results.push(r);
    }
    let ok: Vec<&CaseMetrics> = results.iter().filter_map(|r| r.metrics.as_ref()).collect();
    let mm_cases: Vec<&CaseMetrics> = results
        .iter()
        .filter(|r| r.spacing_mm.is_some())
        .filter_map(|r| r.metrics.as_ref())
        .collect();
    let aggregate = Aggregate {
        dice: Stats::of(ok.iter().map(|m| m.dice)),
        iou: Stats::of(ok.iter().map(|m| m.iou)),
        hd95_px: Stats::of(ok.iter().map(|m| m.hd95_px)),
        nsd_px: Stats::of(ok.iter().map(|m| m.nsd_px)),
        hd95_mm: Stats::of(mm_cases.iter().map(|m| m.hd95_mm)),
        nsd_mm: Stats::of(mm_cases.iter().map(|m| m.nsd_mm)),
    };
    let evaluated = ok.len();
    Ok(EvalReport {
        tool: format!("edgeseg-tools {}", env!("CARGO_PKG_VERSION")),
        command,
        segmenter: segmenter.name().to_string(),
        config: cfg.clone(),
        dataset: DatasetInfo {
            name: dataset.name(),
            path: dataset.root.display().to_string(),
            split: cfg.split,
            cases_in_split: in_split.len(),
            cases_taken: taken.len(),
            evaluated,
            skipped: taken.len() - evaluated,
        },
        aggregate,
        latency_ms: LatencyStats::of(&latencies),
        machine: MachineInfo::current(),
        cases: results,
    })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.2}", 100.0 * x))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

impl EvalReport {
    /// A Markdown summary: settings, aggregate table, latency, per-case table.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let a = &self.aggregate;
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# {} on {} ({} split)\n",
            self.segmenter, self.dataset.name, self.dataset.split
        );
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Cases: {} evaluated, {} skipped, of {} taken ({} in the split). Prompts: {:?} ground-truth boxes, jitter {} (seed {}). NSD tolerance {} px / {} mm. Machine: {} ({} threads, {}).\n",
            self.dataset.evaluated,
            self.dataset.skipped,
            self.dataset.cases_taken,
            self.dataset.cases_in_split,
            c.prompt_mode,
            c.jitter,
            c.seed,
            c.nsd_tolerance_px,
            c.nsd_tolerance_mm,
            self.machine.cpu,
            self.machine.threads,
            self.machine.platform
        );
        let _ = writeln!(s, "| metric | n | mean | std | median | min | max |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let row = |s: &mut String, name: &str, st: &Stats, scale: f64, d: usize| {
            let f = |v: Option<f64>| num(v.map(|x| x * scale), d);
            let undefined = if st.undefined > 0 {
                format!(" ({} undefined)", st.undefined)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {name} | {}{undefined} | {} | {} | {} | {} | {} |",
                st.n,
                f(st.mean),
                f(st.std),
                f(st.median),
                f(st.min),
                f(st.max)
            );
        };
        row(&mut s, "Dice %", &a.dice, 100.0, 2);
        row(&mut s, "IoU %", &a.iou, 100.0, 2);
        row(&mut s, "HD95 px", &a.hd95_px, 1.0, 2);
        row(
            &mut s,
            &format!("NSD@{}px %", c.nsd_tolerance_px),
            &a.nsd_px,
            100.0,
            2,
        );
        if a.hd95_mm.n + a.nsd_mm.n > 0 {
            row(&mut s, "HD95 mm", &a.hd95_mm, 1.0, 3);
            row(
                &mut s,
                &format!("NSD@{}mm %", c.nsd_tolerance_mm),
                &a.nsd_mm,
                100.0,
                2,
            );
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "\nSegmenter latency per case (ms, all prompts of the case, excluding image decoding): p50 {} · p90 {} · p99 {} · max {} (n = {})\n",
            num(l.p50, 2),
            num(l.p90, 2),
            num(l.p99, 2),
            num(l.max, 2),
            l.n
        );
        let _ = writeln!(s, "<details><summary>Per case</summary>\n");
        let _ = writeln!(
            s,
            "| case | group | prompts | GT px | pred px | Dice % | IoU % | HD95 px | NSD % | ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.cases {
            match &r.metrics {
                Some(m) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.id,
                        r.group,
                        r.prompts.len(),
                        r.gt_px,
                        r.pred_px,
                        pct(m.dice),
                        pct(m.iou),
                        num(m.hd95_px, 2),
                        pct(m.nsd_px),
                        num(r.latency_ms, 2)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | – | {} | – | skipped: {} | | | | |",
                        r.id,
                        r.group,
                        r.gt_px,
                        r.skip_reason.as_deref().unwrap_or("")
                    );
                }
            }
        }
        let _ = writeln!(s, "\n</details>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Shape;

    #[test]
    fn stats_ignore_undefined() {
        let s = Stats::of([Some(1.0), None, Some(3.0), Some(f64::NAN)]);
        assert_eq!((s.n, s.undefined), (2, 2));
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        assert_eq!(s.median, Some(2.0));
        let e = Stats::of([None]);
        assert_eq!((e.n, e.mean), (0, None));
    }

    #[test]
    fn latency_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = LatencyStats::of(&v);
        assert_eq!(l.p50, Some(50.5));
        assert!((l.p99.unwrap() - 99.01).abs() < 1e-9);
        assert_eq!(l.max, Some(100.0));
    }

    fn two_blobs() -> BinaryMask {
        let shape = Shape::d2(20, 30);
        let data = (0..600)
            .map(|i| {
                let (y, x) = (i / 30, i % 30);
                ((2..6).contains(&y) && (3..8).contains(&x))
                    || ((10..18).contains(&y) && (20..28).contains(&x))
            })
            .collect();
        BinaryMask { shape, data }
    }

    #[test]
    fn prompts_whole_and_components() {
        let gt = two_blobs();
        let whole = prompts_from_gt(&gt, &EvalConfig::default(), 2);
        assert_eq!(whole.len(), 1);
        assert_eq!(
            (&whole[0].min[..2], &whole[0].max[..2]),
            (&[2, 3][..], &[17, 27][..])
        );
        let cfg = EvalConfig {
            prompt_mode: PromptMode::Components,
            ..EvalConfig::default()
        };
        let comps = prompts_from_gt(&gt, &cfg, 2);
        assert_eq!(comps.len(), 2);
        // largest first
        assert_eq!(&comps[0].min[..2], &[10, 20]);
        let floor = EvalConfig {
            min_component: 1000,
            ..cfg
        };
        assert_eq!(prompts_from_gt(&gt, &floor, 2).len(), 1);
        assert!(prompts_from_gt(&BinaryMask::empty(gt.shape), &cfg, 2).is_empty());
    }

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let gt = two_blobs();
        let cfg = EvalConfig {
            jitter: 0.2,
            seed: 7,
            ..EvalConfig::default()
        };
        let a = prompts_from_gt(&gt, &cfg, 5);
        let b = prompts_from_gt(&gt, &cfg, 5);
        assert_eq!(a, b);
        let c = prompts_from_gt(
            &gt,
            &EvalConfig {
                seed: 8,
                ..cfg.clone()
            },
            5,
        );
        let exact = prompts_from_gt(&gt, &EvalConfig::default(), 5)[0];
        assert_ne!(a, c);
        for bx in a.iter().chain(&c) {
            for d in 0..2 {
                let ext = (exact.max[d] - exact.min[d] + 1) as f64;
                let lim = (0.2 * ext).round() as isize;
                assert!((bx.min[d] as isize - exact.min[d] as isize).abs() <= lim);
                assert!((bx.max[d] as isize - exact.max[d] as isize).abs() <= lim);
                assert!(bx.max[d] < gt.shape.dims()[d]);
            }
        }
    }
}
