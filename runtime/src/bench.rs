//! `edgeseg bench`: latency of a bundle on the CPU backend.
//!
//! Measures, in one process: cold start (open + verify the bundle, build the
//! plans, encode the first frame, decode the first mask), encoder latency
//! (preprocessed input → embedding) and decoder latency (box prompt → mask at
//! frame size, post-processing included) over `runs` runs after `warmup`
//! runs, and peak RSS. Optionally the same encoder/decoder graphs as plain
//! ONNX files run as bare tract plans on the same thread pool, interleaved
//! with the bundle runs, so that the overhead of the bundle path is a ratio
//! measured under the same machine noise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use crate::backend::cpu::{optimized, TractSegmenter};
use crate::backend::{BackendError, BackendOptions, PromptableSegmenter, RgbFrame};
use crate::bundle::Bundle;
use crate::profile::{profile_plan, PlanProfile};
use crate::prompt::{BoxPrompt, Prompt};

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Number of timed runs.
    pub runs: usize,
    /// Median.
    pub median_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
}

impl Stats {
    /// Statistics of `samples` (milliseconds); `None` when empty.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(Stats {
            runs: s.len(),
            median_ms: if s.len() % 2 == 1 {
                s[s.len() / 2]
            } else {
                (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
            },
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            min_ms: s[0],
            max_ms: s[s.len() - 1],
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The bundle.
    pub bundle: PathBuf,
    /// Backend options (threads, signature policy).
    pub options: BackendOptions,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// The frame (RGB8) and its size; a synthetic frame when `None`.
    pub frame: Option<(Vec<u8>, usize, usize)>,
    /// Box prompt in frame pixels; the central half of the frame when `None`.
    pub prompt_box: Option<BoxPrompt>,
    /// Folder with `encoder.onnx`/`decoder.onnx` (an export) to time as bare
    /// tract plans next to the bundle.
    pub bare_onnx: Option<PathBuf>,
    /// Build the bare plans of `bare_onnx` with edgeseg's fused ops
    /// (`backend::tract_ops`), as the backend does; without them, the
    /// bundle/bare ratio measures the fusion.
    pub bare_fused: bool,
    /// Without `bare_onnx`: time the bundle's own graphs as plans without
    /// edgeseg's ops (plain tract) next to the bundle, interleaved run by
    /// run, so that the ratio measures `backend::tract_ops`.
    pub unfused_baseline: bool,
    /// Also profile the bundle's encoder and decoder plans node by node
    /// (`runs` runs after `warmup`, after the latency runs).
    pub profile: bool,
    /// Profile the plans without edgeseg's fused ops too.
    pub profile_unfused: bool,
    /// Also time the few-shot prototype head + auto-prompter
    /// ([`crate::stream::fewshot::locate`]) with this set on the frame's
    /// embedding: the per-frame cost of prompt-free segmentation beyond the
    /// encoder and decoder.
    pub support: Option<crate::fewshot::PrototypeSet>,
    /// Untimed and timed runs of the few-shot head (its own counts: it is
    /// thousands of times cheaper than the encoder).
    pub fewshot_runs: (usize, usize),
}

/// Results of a bench run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Bundle path.
    pub bundle: String,
    /// Model name and version from the manifest.
    pub model: String,
    /// Worker threads.
    pub threads: usize,
    /// Frame size (width, height).
    pub frame: (usize, usize),
    /// Open + verify + plans + first frame + first mask, ms.
    pub cold_start_ms: f64,
    /// Parts of the cold start, ms.
    pub cold_start_parts: Vec<(String, f64)>,
    /// Nodes of the encoder and decoder plans that edgeseg's own tract ops
    /// replaced (`backend::tract_ops`).
    pub fused_ops: [crate::backend::tract_ops::Fused; 2],
    /// Encoder (preprocessed input → embedding).
    pub encoder: Stats,
    /// Decoder (box prompt → mask at frame size).
    pub decoder: Stats,
    /// What the `bare_*` plans are: `bare tract` (an export folder's ONNX)
    /// or `unfused tract` (the bundle's graphs without edgeseg's ops).
    pub baseline: Option<String>,
    /// Bare tract plan from plain ONNX, encoder (when requested).
    pub bare_encoder: Option<Stats>,
    /// Bare tract plan from plain ONNX, decoder graph only (when requested).
    pub bare_decoder: Option<Stats>,
    /// Peak resident set size of the process, bytes (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Per-node profiles of the encoder and decoder plans (when requested).
    pub profile: Vec<PlanProfile>,
    /// Few-shot prototype head + auto-prompter per frame, wall time (with a
    /// support set).
    pub fewshot_head: Option<Stats>,
    /// The same, mean CPU time of the thread per run in ms
    /// (`/proc/thread-self/schedstat`; does not count waiting for a core).
    pub fewshot_head_cpu_ms: Option<f64>,
    /// Prototypes in the support set.
    pub fewshot_prototypes: Option<usize>,
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Times [`crate::stream::fewshot::locate`] on the current frame of `seg`:
/// wall-time statistics and mean thread CPU ms per timed run.
fn time_fewshot_head(
    seg: &TractSegmenter,
    set: &crate::fewshot::PrototypeSet,
    frame: &[u8],
    warmup: usize,
    runs: usize,
) -> Result<(Vec<f64>, Option<f64>), BackendError> {
    let bad = |e: crate::fewshot::FewShotError| BackendError::Inference(e.to_string());
    if let Some(id) = seg.embedding_id() {
        set.embedding.check_model(&id).map_err(bad)?;
    }
    let e = seg
        .embedding()
        .ok_or_else(|| BackendError::Inference("no embedding".into()))?;
    let cfg = crate::fewshot::AutoPromptConfig::default();
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Some(0u64);
    for i in 0..warmup + runs {
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        let found = crate::stream::fewshot::locate(set, frame, &e, &cfg).map_err(bad)?;
        let dt = ms(t);
        let c1 = thread_cpu_ns();
        std::hint::black_box(found);
        if i >= warmup {
            wall.push(dt);
            cpu = match (cpu, c0, c1) {
                (Some(acc), Some(a), Some(b)) => Some(acc + b.saturating_sub(a)),
                _ => None,
            };
        }
    }
    Ok((wall, cpu.map(|ns| ns as f64 / 1e6 / runs.max(1) as f64)))
}

/// Peak resident set size of this process (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A deterministic synthetic RGB frame (smooth gradients and a bright disc).
pub fn synthetic_frame(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    let (cx, cy, r) = (w as f64 / 2.0, h as f64 / 2.0, w.min(h) as f64 / 4.0);
    for y in 0..h {
        for x in 0..w {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let base = if d < r {
                200.0
            } else {
                40.0 + 60.0 * (x as f64 / w as f64)
            };
            let g = (base + 20.0 * ((y as f64) / 17.0).sin()).clamp(0.0, 255.0) as u8;
            v.extend([g, g, g]);
        }
    }
    v
}

struct BarePlans {
    executor: Executor,
    encoder: Arc<TypedRunnableModel>,
    decoder: Arc<TypedRunnableModel>,
}

fn bare_plans(
    dir: &Path,
    threads: usize,
    emb: &[usize],
    fused: bool,
) -> Result<BarePlans, BackendError> {
    let un = |e: TractError| BackendError::Unavailable(format!("bare plan: {e:#}"));
    let executor = if threads == 1 {
        Executor::SingleThread
    } else {
        Executor::multithread_with_name(threads, "edgeseg-bare")
    };
    let s = crate::backend::cpu::model_input_size();
    let enc = tract_onnx::onnx()
        .model_for_path(dir.join(crate::backend::cpu::ENCODER_GRAPH))
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, s, s]).into()))
        .map_err(un)?;
    let dec = tract_onnx::onnx()
        .model_for_path(dir.join(crate::backend::cpu::DECODER_GRAPH))
        .and_then(|m| m.with_input_fact(0, f32::fact(emb).into()))
        .and_then(|m| m.with_input_fact(1, f32::fact([1, 2, 2]).into()))
        .and_then(|m| m.with_input_fact(2, f32::fact([1, 2]).into()))
        .map_err(un)?;
    let (encoder, decoder) = multithread_tract_scope(executor.clone(), || {
        Ok::<_, TractError>((
            optimized(enc, fused)?.0.into_runnable()?,
            optimized(dec, fused)?.0.into_runnable()?,
        ))
    })
    .map_err(un)?;
    Ok(BarePlans {
        executor,
        encoder,
        decoder,
    })
}

/// Encoder and decoder (box prompt) plans built from the bundle's graphs
/// exactly as [`TractSegmenter`] builds them, for profiling.
fn bundle_plans(
    bundle: &Bundle,
    threads: usize,
    emb: &[usize],
    fused: bool,
) -> Result<BarePlans, BackendError> {
    use crate::backend::cpu::{parse_graph, DECODER_GRAPH, ENCODER_GRAPH};
    let un = |e: TractError| BackendError::Unavailable(format!("profile plan: {e:#}"));
    let executor = if threads == 1 {
        Executor::SingleThread
    } else {
        Executor::multithread_with_name(threads, "edgeseg-prof")
    };
    let s = crate::backend::cpu::model_input_size();
    let enc = parse_graph(bundle, ENCODER_GRAPH)?
        .with_input_fact(0, f32::fact([1, 3, s, s]).into())
        .map_err(un)?;
    let dec = parse_graph(bundle, DECODER_GRAPH)?
        .with_input_fact(0, f32::fact(emb).into())
        .and_then(|m| m.with_input_fact(1, f32::fact([1, 2, 2]).into()))
        .and_then(|m| m.with_input_fact(2, f32::fact([1, 2]).into()))
        .map_err(un)?;
    let (encoder, decoder) = multithread_tract_scope(executor.clone(), || {
        Ok::<_, TractError>((
            optimized(enc, fused)?.0.into_runnable()?,
            optimized(dec, fused)?.0.into_runnable()?,
        ))
    })
    .map_err(un)?;
    Ok(BarePlans {
        executor,
        encoder,
        decoder,
    })
}

/// Runs the benchmark.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, BackendError> {
    let (frame, w, h) = match &cfg.frame {
        Some((f, w, h)) => (f.clone(), *w, *h),
        None => (synthetic_frame(640, 480), 640, 480),
    };
    let prompt = Prompt::from_box(cfg.prompt_box.unwrap_or(BoxPrompt {
        x0: w as f32 / 4.0,
        y0: h as f32 / 4.0,
        x1: 3.0 * w as f32 / 4.0,
        y1: 3.0 * h as f32 / 4.0,
    }));

    // cold start
    let t0 = Instant::now();
    let bundle = Bundle::open(&cfg.bundle, &cfg.options.verify)
        .map_err(|e| BackendError::Unavailable(format!("{}: {e}", cfg.bundle.display())))?;
    let open_ms = ms(t0);
    let model = format!(
        "{} {}",
        bundle.manifest().model.name,
        bundle.manifest().model.version
    );
    let mut seg = TractSegmenter::from_bundle(&bundle, &cfg.options)?;
    let plans_ms = ms(t0) - open_ms;
    let t1 = Instant::now();
    seg.set_frame(RgbFrame::new(w, h, &frame)?)?;
    let first_frame_ms = ms(t1);
    let t2 = Instant::now();
    seg.segment(&prompt)?;
    let first_mask_ms = ms(t2);
    let cold_start_ms = ms(t0);
    let lt = seg.load_timings().clone();
    let fused_ops = seg.fused_ops();
    let cold_start_parts = vec![
        ("open+verify".to_string(), open_ms),
        ("encoder parse".to_string(), lt.encoder_parse_ms),
        ("encoder plan".to_string(), lt.encoder_optimize_ms),
        ("decoder parse".to_string(), lt.decoder_parse_ms),
        ("decoder plan".to_string(), lt.decoder_optimize_ms),
        ("plans total".to_string(), plans_ms),
        ("first frame (pre + encoder)".to_string(), first_frame_ms),
        ("first mask (decoder + post)".to_string(), first_mask_ms),
    ];

    let prep = edgeseg_kernels::prepost::preprocess_rgb(&frame, h, w)
        .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
    let emb_shape = {
        let e = seg
            .embedding()
            .ok_or_else(|| BackendError::Inference("no embedding".into()))?;
        vec![1, e.channels, e.height, e.width]
    };
    let bare = match &cfg.bare_onnx {
        Some(dir) => Some(bare_plans(
            dir,
            cfg.options.threads,
            &emb_shape,
            cfg.bare_fused,
        )?),
        None if cfg.unfused_baseline => Some(bundle_plans(
            &bundle,
            cfg.options.threads,
            &emb_shape,
            false,
        )?),
        None => None,
    };
    let s = crate::backend::cpu::model_input_size();
    let input = Tensor::from_shape(&[1, 3, s, s], &prep.input)
        .map_err(|e| BackendError::Inference(e.to_string()))?;
    let emb_t: Tensor = {
        let e = seg
            .embedding()
            .ok_or_else(|| BackendError::Inference("no embedding".into()))?;
        Tensor::from_shape(&emb_shape, e.data)
            .map_err(|e| BackendError::Inference(e.to_string()))?
    };
    let (pc, pl) = seg.sam_points(&prompt)?;
    let coords = Tensor::from_shape(&[1, pl.len(), 2], &pc)
        .map_err(|e| BackendError::Inference(e.to_string()))?;
    let labels = Tensor::from_shape(&[1, pl.len()], &pl)
        .map_err(|e| BackendError::Inference(e.to_string()))?;

    let mut enc_ms = Vec::new();
    let mut dec_ms = Vec::new();
    let mut bare_enc_ms = Vec::new();
    let mut bare_dec_ms = Vec::new();
    let inf = |e: TractError| BackendError::Inference(format!("{e:#}"));
    for i in 0..cfg.warmup + cfg.runs {
        let timed = i >= cfg.warmup;
        let t = Instant::now();
        seg.encode_preprocessed(&prep.input)?;
        if timed {
            enc_ms.push(ms(t));
        }
        let t = Instant::now();
        seg.segment(&prompt)?;
        if timed {
            dec_ms.push(ms(t));
        }
        if let Some(b) = &bare {
            let t = Instant::now();
            multithread_tract_scope(b.executor.clone(), || {
                b.encoder.run(tvec!(input.clone().into()))
            })
            .map_err(inf)?;
            if timed {
                bare_enc_ms.push(ms(t));
            }
            let t = Instant::now();
            multithread_tract_scope(b.executor.clone(), || {
                b.decoder.run(tvec!(
                    emb_t.clone().into(),
                    coords.clone().into(),
                    labels.clone().into()
                ))
            })
            .map_err(inf)?;
            if timed {
                bare_dec_ms.push(ms(t));
            }
        }
    }
    let (fewshot_wall, fewshot_head_cpu_ms) = match &cfg.support {
        Some(set) => {
            // the embedding of the frame itself (the loop above re-encoded
            // only the preprocessed input)
            seg.set_frame(RgbFrame::new(w, h, &frame)?)?;
            time_fewshot_head(&seg, set, &frame, cfg.fewshot_runs.0, cfg.fewshot_runs.1)?
        }
        None => (Vec::new(), None),
    };
    let mut profile = Vec::new();
    if cfg.profile {
        drop(bare);
        let variants: &[(bool, &str)] = if cfg.profile_unfused {
            &[(true, ""), (false, " (tract ops only)")]
        } else {
            &[(true, "")]
        };
        for &(fused, tag) in variants {
            let p = bundle_plans(&bundle, cfg.options.threads, &emb_shape, fused)?;
            profile.push(
                profile_plan(
                    &format!("encoder{tag}"),
                    &p.encoder,
                    &p.executor,
                    tvec!(input.clone().into()),
                    cfg.warmup,
                    cfg.runs,
                )
                .map_err(inf)?,
            );
            profile.push(
                profile_plan(
                    &format!("decoder{tag}"),
                    &p.decoder,
                    &p.executor,
                    tvec!(
                        emb_t.clone().into(),
                        coords.clone().into(),
                        labels.clone().into()
                    ),
                    cfg.warmup,
                    cfg.runs,
                )
                .map_err(inf)?,
            );
        }
    }
    let empty = || BackendError::Inference("no timed runs (use --runs ≥ 1)".into());
    Ok(BenchReport {
        bundle: cfg.bundle.display().to_string(),
        model,
        threads: cfg.options.threads,
        frame: (w, h),
        cold_start_ms,
        cold_start_parts,
        fused_ops,
        encoder: Stats::of(&enc_ms).ok_or_else(empty)?,
        decoder: Stats::of(&dec_ms).ok_or_else(empty)?,
        baseline: if cfg.bare_onnx.is_some() {
            Some("bare tract".into())
        } else if cfg.unfused_baseline {
            Some("unfused tract".into())
        } else {
            None
        },
        bare_encoder: Stats::of(&bare_enc_ms),
        bare_decoder: Stats::of(&bare_dec_ms),
        peak_rss_bytes: peak_rss_bytes(),
        profile,
        fewshot_head: Stats::of(&fewshot_wall),
        fewshot_head_cpu_ms,
        fewshot_prototypes: cfg.support.as_ref().map(|s| s.prototypes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!(s.median_ms, 50.5);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert!(Stats::of(&[]).is_none());
        assert_eq!(Stats::of(&[3.0]).unwrap().p99_ms, 3.0);
    }
}
