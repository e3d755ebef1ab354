//! Times a bundle on the CUDA backend against tract on the same machine, and
//! checks that the two agree (mask IoU per fixture frame).
//!
//! ```text
//! cargo run -p edgeseg-runtime --features cuda --example gpu_model_bench -- \
//!     [--runs N] [--threads T] BUNDLE...
//! ```
//!
//! For each bundle (default `models/zoo/edge-s.bundle`): the encoder
//! (`set_frame`: pre-processing, upload, encoder, embedding download) and the
//! decoder (`segment` with the ground-truth box: decoder, upsampling,
//! threshold) on every frame of `fixtures/sample2d`, median and p90 of `--runs`
//! runs (default 30) after 5 warm-ups, wall clock (the backend synchronises
//! when it downloads its outputs). Before the timing, one profiled frame (each
//! step synchronised, so slower than the timed runs): time per op kind and the
//! slowest steps. CUDA is profiled and timed before tract is opened in the
//! process; the agreement check comes last. Exits non-zero when the
//! CUDA backend cannot open or a mask's IoU with tract's is below 0.99.
//! The repository root is `$EDGESEG_REPO_ROOT` or the current directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use edgeseg_runtime::backend::{
    self, BackendOptions, Device, PromptableSegmenter, RgbFrame, TractSegmenter,
};
use edgeseg_runtime::{BoxPrompt, Prompt};

fn median_p90(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
}

fn mask_box(m: &image::GrayImage) -> Option<BoxPrompt> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, v) in m.enumerate_pixels() {
        if v[0] > 127 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x0 <= x1).then_some(BoxPrompt {
        x0: x0 as f32,
        y0: y0 as f32,
        x1: x1 as f32,
        y1: y1 as f32,
    })
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut i, mut u) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        i += usize::from(x != 0 && y != 0);
        u += usize::from(x != 0 || y != 0);
    }
    if u == 0 {
        1.0
    } else {
        i as f64 / u as f64
    }
}

/// Median / p90 milliseconds of encoder and decoder over `runs` runs per frame.
fn time_backend(
    seg: &mut dyn PromptableSegmenter,
    frames: &[(usize, usize, Vec<u8>, Prompt)],
    runs: usize,
) -> Result<[(f64, f64); 2]> {
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for (w, h, rgb, p) in frames {
        let frame = RgbFrame::new(*w, *h, rgb)?;
        for i in 0..runs + 5 {
            let t = Instant::now();
            seg.set_frame(frame)?;
            let e = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            seg.segment(p)?;
            let d = t.elapsed().as_secs_f64() * 1e3;
            if i >= 5 {
                enc.push(e);
                dec.push(d);
            }
        }
    }
    Ok([median_p90(enc), median_p90(dec)])
}

fn main() -> Result<()> {
    let mut runs = 30usize;
    let mut threads = 1usize;
    let mut bundles = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--threads" => threads = args.next().context("--threads T")?.parse()?,
            _ => bundles.push(PathBuf::from(a)),
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = std::env::var_os("EDGESEG_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if bundles.is_empty() {
        bundles.push(root.join("models/zoo/edge-s.bundle"));
    }
    let fixtures = root.join("fixtures/sample2d");
    let mut names: Vec<_> = std::fs::read_dir(fixtures.join("images"))
        .with_context(|| format!("reading {}", fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let mut frames = Vec::new();
    for n in &names {
        let img = image::open(fixtures.join("images").join(n))?.to_rgb8();
        let mask = image::open(fixtures.join("masks").join(n))?.to_luma8();
        let Some(bx) = mask_box(&mask) else { continue };
        frames.push((
            img.width() as usize,
            img.height() as usize,
            img.into_raw(),
            Prompt::from_box(bx),
        ));
    }
    let mut failed = false;
    for path in &bundles {
        let opts = |device| BackendOptions {
            threads,
            device,
            ..Default::default()
        };
        let t = Instant::now();
        let mut gpu = backend::gpu::open(path, &opts(Device::Gpu))
            .map_err(|e| anyhow::anyhow!("{}: CUDA backend did not open: {e}", path.display()))?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "== {} ({} frames, {runs} runs each; CUDA open {open_ms:.0} ms; {})",
            path.display(),
            frames.len(),
            gpu.name()
        );
        // CUDA first, before tract exists in this process
        let (w, h, rgb, p) = &frames[0];
        gpu.set_frame(RgbFrame::new(*w, *h, rgb)?)?;
        gpu.segment(p)?;
        gpu.executor_mut().set_profiling(true);
        gpu.set_frame(RgbFrame::new(*w, *h, rgb)?)?;
        gpu.segment(p)?;
        println!("  profile of one frame (each step synchronised): kind, steps, ms");
        for (k, n, ms) in gpu.executor_mut().profile() {
            println!("    {k:<20} {n:>5} {ms:>9.3}");
        }
        println!("  slowest steps: label, kind, ms");
        for (label, k, ms) in gpu.executor_mut().slowest_steps(8) {
            println!("    {label:<56} {k:<18} {ms:>9.3}");
        }
        gpu.executor_mut().set_profiling(false);
        println!(
            "  {:<28} {:>16} {:>16}",
            "ms (median / p90)", "encoder", "decoder"
        );
        let row = |name: String, [e, d]: [(f64, f64); 2]| {
            println!(
                "  {name:<28} {:>7.2} / {:>6.2} {:>7.2} / {:>6.2}",
                e.0, e.1, d.0, d.1
            );
        };
        let t = Instant::now();
        row(
            format!("cuda ({})", gpu.name()),
            time_backend(&mut gpu, &frames, runs)?,
        );
        let gpu_s = t.elapsed().as_secs_f64();
        let mut tract = TractSegmenter::open(path, &opts(Device::Cpu))?;
        let t = Instant::now();
        row(
            format!("tract, {threads} thread(s)"),
            time_backend(&mut tract, &frames, runs)?,
        );
        println!(
            "  (timing took {gpu_s:.1} s on CUDA, {:.1} s on tract)",
            t.elapsed().as_secs_f64()
        );
        let mut worst = 1.0f64;
        for ((w, h, rgb, p), n) in frames.iter().zip(&names) {
            let frame = RgbFrame::new(*w, *h, rgb)?;
            gpu.set_frame(frame)?;
            tract.set_frame(frame)?;
            let (a, b) = (gpu.segment(p)?, tract.segment(p)?);
            let m = iou(&a.mask, &b.mask);
            println!(
                "  {}: mask IoU cuda vs tract {m:.5} ({} vs {} px), IoU prediction {:.4} vs {:.4}",
                n.to_string_lossy(),
                a.area(),
                b.area(),
                a.iou_prediction.unwrap_or(f32::NAN),
                b.iou_prediction.unwrap_or(f32::NAN)
            );
            worst = worst.min(m);
        }
        if worst < 0.99 {
            println!("  FAIL: worst mask IoU {worst:.5} < 0.99");
            failed = true;
        }
    }
    if failed {
        bail!("CUDA and tract disagree (see FAIL above)");
    }
    Ok(())
}
