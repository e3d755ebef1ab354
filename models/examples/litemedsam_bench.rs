//! Times the LiteMedSAM encoder and decoder on the CPU (median of N runs after
//! warm-up, one box prompt).
//!
//! `cargo run --release -p edgeseg-models --example litemedsam_bench -- [CHECKPOINT] [ENC_RUNS] [DEC_RUNS]`
//! (defaults: `../shared/teacher/lite_medsam.pth`, 10, 30).

use std::time::Instant;

use candle_core::Tensor;
use edgeseg_models::litemedsam::{LiteMedSam, Prompt};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU time (user + system) of this process in ms, from /proc (Linux); 0 elsewhere.
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) * 10.0)
        })
        .unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let ckpt = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/teacher/lite_medsam.pth".into());
    let enc_runs: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let dec_runs: usize = args.get(3).map_or(Ok(30), |s| s.parse())?;
    let t = Instant::now();
    let model = LiteMedSam::load(&ckpt)?;
    println!("load {ckpt}: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    println!("threads: rayon {}", rayon::current_num_threads());

    // a deterministic synthetic image (smooth pattern), preprocessed as usual
    let (h, w) = (288usize, 384usize);
    let rgb: Vec<u8> = (0..h * w * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (y, x) = (p / w, p % w);
            ((x * 7 + y * 3 + c * 40 + (x * y) % 29) % 256) as u8
        })
        .collect();
    let t = Instant::now();
    let prepared = model.preprocess(&rgb, h, w)?;
    println!(
        "preprocess {h}x{w}: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let x: Tensor = prepared.input.clone();
    let prompt = Prompt::from_original(Some([100.0, 80.0, 250.0, 200.0]), &[], h, w);

    for _ in 0..2 {
        model.encode(&x)?;
    }
    let mut enc = Vec::new();
    let mut emb = None;
    let c0 = cpu_ms();
    for _ in 0..enc_runs {
        let t = Instant::now();
        emb = Some(model.encode(&x)?);
        enc.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let enc_cpu = (cpu_ms() - c0) / enc_runs as f64;
    let emb = emb.ok_or("no encoder run")?;
    for _ in 0..3 {
        model.decode(&emb, &prompt, false)?;
    }
    let mut dec = Vec::new();
    let c0 = cpu_ms();
    for _ in 0..dec_runs {
        let t = Instant::now();
        let d = model.decode(&emb, &prompt, false)?;
        // include the host copy of the logits, as a caller would do
        let _ = d.low_res.flatten_all()?.to_vec1::<f32>()?;
        dec.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let dec_cpu = (cpu_ms() - c0) / dec_runs as f64;
    let d = model.decode(&emb, &prompt, false)?;
    let t = Instant::now();
    let _mask = model.postprocess(&d, 0, &prepared.prep)?;
    let post = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "encoder: median {:.1} ms (min {:.1}, max {:.1}, n={enc_runs}); CPU time {enc_cpu:.0} ms/run",
        median(enc.clone()),
        enc.iter().copied().fold(f64::INFINITY, f64::min),
        enc.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "decoder (prompt encoder + mask decoder, 1 box): median {:.1} ms (min {:.1}, max {:.1}, n={dec_runs}); CPU time {dec_cpu:.0} ms/run",
        median(dec.clone()),
        dec.iter().copied().fold(f64::INFINITY, f64::min),
        dec.iter().copied().fold(0.0, f64::max)
    );
    println!("postprocess {h}x{w}: {post:.2} ms");
    Ok(())
}
