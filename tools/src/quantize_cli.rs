//! `edgeseg-tools quantize`: the command line of [`edgeseg_tools::quantize`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use edgeseg_tools::quantize::{self, Guard, Mode, QuantizeOptions};
use edgeseg_tools::{bundling, keys};

/// `--mode`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// int8 weights per output channel, f16 for the other float tensors.
    Int8,
    /// f16 for every float tensor.
    F16,
    /// int8, keeping the most sensitive weights in f16 until the guard holds.
    Mixed,
}

/// Arguments of `quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Float bundle to quantize (read only).
    #[arg(long)]
    bundle: PathBuf,
    /// Folder of calibration frames (.png/.jpg; use `train` or `val` images, never `test`).
    #[arg(long)]
    calib: PathBuf,
    /// Quantization mode.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Output bundle (must differ from --bundle).
    #[arg(long)]
    out: PathBuf,
    /// Use at most this many calibration frames (spread over the sorted folder).
    #[arg(long)]
    calib_limit: Option<usize>,
    /// mixed: frames used for the per-tensor sensitivity runs [default: all].
    #[arg(long)]
    sensitivity_images: Option<usize>,
    /// mixed: after the bisection, try up to this many kept tensors back in int8 (most
    /// bytes saved per unit of sensitivity first), keeping each that leaves the guard
    /// holding; 0 turns this size-aware step off.
    #[arg(long, default_value_t = 8)]
    give_back: usize,
    /// Refuse the bundle when the mean mask IoU (quantized vs float) on the calibration
    /// frames is below this.
    #[arg(long, default_value_t = quantize::DEFAULT_MIN_MEAN_IOU)]
    min_iou: f64,
    /// Also refuse it when the relative RMS error of the low-res logits exceeds this.
    #[arg(long)]
    max_logit_error: Option<f64>,
    /// Write the bundle even when it misses the guard (recorded in its manifest).
    #[arg(long)]
    force: bool,
    /// Require the input to be signed by this public key (NAME.pub).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Sign the output with this secret key (NAME.key); otherwise it is unsigned.
    #[arg(long)]
    sign: Option<PathBuf>,
    /// tract worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Runs `quantize`.
pub fn run(args: QuantizeArgs) -> Result<()> {
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let signing_key = match &args.sign {
        Some(k) => Some(keys::read_signing_key(k)?),
        None => None,
    };
    let opts = QuantizeOptions {
        bundle: args.bundle.clone(),
        calib: args.calib.clone(),
        calib_limit: args.calib_limit,
        sensitivity_images: args.sensitivity_images,
        give_back: args.give_back,
        mode: match args.mode {
            ModeArg::Int8 => Mode::Int8,
            ModeArg::F16 => Mode::F16,
            ModeArg::Mixed => Mode::Mixed,
        },
        out: args.out.clone(),
        guard: Guard {
            min_mean_iou: args.min_iou,
            max_logit_rel_rms: args.max_logit_error,
        },
        force: args.force,
        verify: bundling::policy(args.pubkey.as_deref())?,
        threads,
        signing_key,
        command: super::command_line(),
        progress: true,
    };
    let r = quantize::quantize(&opts)
        .with_context(|| format!("quantizing {}", args.bundle.display()))?;
    let e = &r.error;
    println!(
        "wrote {} ({} bytes, {:.1}% of the float bundle's {} bytes){}",
        args.out.display(),
        r.quantized_bytes,
        100.0 * r.quantized_bytes as f64 / r.float_bytes.max(1) as f64,
        r.float_bytes,
        if args.sign.is_some() {
            ", signed"
        } else {
            ", unsigned"
        }
    );
    println!(
        "tensors: {}",
        r.counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "calibration ({} frames, {} box prompts): mask IoU vs float mean {:.4}, worst {:.4}; logits: relative RMS error {:.4}, MAE {:.4}, max {:.4}, sign flips {:.5}; embedding relative RMS error {:.4}{}",
        e.images,
        e.prompts,
        e.mean_iou,
        e.min_iou,
        e.logit_rel_rms,
        e.logit_mae,
        e.logit_max_abs,
        e.logit_sign_flips,
        e.embedding_rel_rms,
        if r.forced { " (BELOW the guard, forced)" } else { "" }
    );
    if !r.given_back.is_empty() {
        println!(
            "back in int8 after the bisection, guard still holding: {}",
            r.given_back.join(", ")
        );
    }
    if !r.kept.is_empty() {
        println!("kept above int8 (most sensitive first):");
        for k in &r.kept {
            println!(
                "  {} as {:?} (alone in int8: logit rel. RMS {:.4}, IoU {:.4})",
                k.tensor, k.precision, k.sensitivity_logit_rel_rms, k.sensitivity_mean_iou
            );
        }
    }
    for t in &r.f16_out_of_range {
        println!("kept f32 (outside the f16 range): {t}");
    }
    if !r.activations.is_empty() {
        let worst = r
            .activations
            .iter()
            .filter_map(|a| a.heldout_rel_mse.get(&a.method).map(|e| (e, a)))
            .max_by(|x, y| x.0.total_cmp(y.0));
        println!(
            "activation ranges (symmetric int8, recorded for int8-compute backends): {} tensors, chosen by held-out error: {}{}",
            r.activations.len(),
            edgeseg_tools::actcalib::method_counts(&r.activations)
                .iter()
                .map(|(m, n)| format!("{n} {m:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            worst.map_or(String::new(), |(e, a)| format!(
                "; worst held-out relative MSE {e:.2e} ({}/{})",
                a.graph, a.tensor
            ))
        );
    }
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
