//! Per-frame cost of the few-shot prototype head and the auto-prompter on the CPU,
//! at the LiteMedSAM embedding size (256 × 64 × 64), beyond the encoder/decoder.
//!
//! ```text
//! cargo run --release -p edgeseg-runtime --example fewshot_bench -- [ITERATIONS]
//! ```
//!
//! Embeddings are synthetic (the cost depends on the sizes and the prototype count,
//! not on the values): a support with a structure and a textured background, so
//! that teaching yields the full complement of local prototypes (default head:
//! up to 4 local per structure and 8 for the background). Reported per frame
//! size: the median and p90 of `predict` (cosine similarity + class softmax),
//! `auto_prompts` (components, box, peak) and `label_mask` (the prototype-only
//! mask, bilinear upsampling to the frame), single-threaded, in wall time; and the
//! mean thread CPU time of `predict` + `auto_prompts` per frame (from
//! `/proc/thread-self/schedstat`), which stays meaningful on a busy machine.

use std::time::Instant;

use edgeseg_runtime::fewshot::{
    self, auto_prompts, AutoPromptConfig, EmbeddingId, HeadConfig, LabelMask, Modality, SupportShot,
};
use edgeseg_runtime::Embedding;

const C: usize = 256;
const G: usize = 64;

fn noise(i: usize) -> f32 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Features: a structure direction inside `[y0, y1) × [x0, x1)` (grid cells), a
/// background direction that drifts across the frame, plus noise.
fn features(valid: (usize, usize), b: [usize; 4], seed: usize) -> Vec<f32> {
    let mut d = vec![0.0f32; C * G * G];
    for y in 0..valid.0 {
        for x in 0..valid.1 {
            let p = y * G + x;
            for c in 0..C {
                d[c * G * G + p] = 0.3 * noise(seed * 7_919 + c * 4_099 + p);
            }
            let inside = (b[0]..b[2]).contains(&y) && (b[1]..b[3]).contains(&x);
            let ch = if inside { 1 } else { 2 + (x / 8 + y / 8) % 16 };
            d[ch * G * G + p] += 1.0;
        }
    }
    d
}

/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`, Linux);
/// unlike wall time it does not count time the thread waited for a busy CPU.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let id = EmbeddingId {
        family: "bench".into(),
        name: "synthetic".into(),
        version: "1".into(),
        weights_sha256: None,
        encoder_sha256: None,
        channels: C as u32,
        grid_height: G as u32,
        grid_width: G as u32,
    };
    println!("iterations {iters}, 1 thread, embedding {C}x{G}x{G}");
    println!("| frame | valid grid | shots | prototypes | predict p50 / p90 ms | auto_prompts p50 / p90 ms | label_mask p50 / p90 ms | head + auto-prompt p50 ms | head + auto-prompt CPU ms/frame |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (fh, fw) in [(288usize, 384usize), (300, 300), (540, 800)] {
        let r = G as f64 / fh.max(fw) as f64;
        let valid = (
            (fh as f64 * r).ceil() as usize,
            (fw as f64 * r).ceil() as usize,
        );
        let support_feats: Vec<Vec<f32>> = (0..5)
            .map(|i| features(valid, [10 + i, 12, 30 + i, 34], i))
            .collect();
        let mut mask = vec![0u8; fh * fw];
        for y in 0..fh {
            for x in 0..fw {
                let (gy, gx) = ((y as f64 + 0.5) * r, (x as f64 + 0.5) * r);
                mask[y * fw + x] =
                    u8::from((10.0..30.0).contains(&gy) && (12.0..34.0).contains(&gx));
            }
        }
        let query = features(valid, [20, 30, 45, 50], 99);
        fn emb(d: &[f32], valid: (usize, usize), fh: usize, fw: usize) -> Embedding<'_> {
            Embedding {
                channels: C,
                height: G,
                width: G,
                valid_height: valid.0,
                valid_width: valid.1,
                frame_height: fh,
                frame_width: fw,
                data: d,
            }
        }
        for shots in [1usize, 5] {
            let support: Vec<SupportShot<'_>> = support_feats[..shots]
                .iter()
                .map(|f| SupportShot {
                    embedding: emb(f, valid, fh, fw),
                    mask: LabelMask {
                        width: fw,
                        height: fh,
                        labels: &mask,
                    },
                })
                .collect();
            let set = fewshot::teach(
                &support,
                &[1],
                &[],
                id.clone(),
                Modality::Grey,
                HeadConfig::default(),
            )
            .expect("teach");
            let q = emb(&query, valid, fh, fw);
            let cfg = AutoPromptConfig::default();
            let (mut tp, mut ta, mut tm, mut th) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // CPU time of predict + auto_prompts only, summed over the timed iterations
            let mut cpu_ns = 0u64;
            for i in 0..iters + 5 {
                let c0 = thread_cpu_ns();
                let t0 = Instant::now();
                let map = set.predict(&q).expect("predict");
                let t1 = Instant::now();
                let prompts = auto_prompts(&map, &cfg).expect("prompts");
                let t2 = Instant::now();
                let c1 = thread_cpu_ns();
                let m = map.label_mask();
                let t3 = Instant::now();
                std::hint::black_box((&prompts, &m));
                if i >= 5 {
                    tp.push((t1 - t0).as_secs_f64() * 1e3);
                    ta.push((t2 - t1).as_secs_f64() * 1e3);
                    tm.push((t3 - t2).as_secs_f64() * 1e3);
                    th.push((t2 - t0).as_secs_f64() * 1e3);
                    if let (Some(a), Some(b)) = (c0, c1) {
                        cpu_ns += b.saturating_sub(a);
                    }
                }
            }
            println!(
                "| {fw}x{fh} | {}x{} | {shots} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} | {:.3} |",
                valid.1,
                valid.0,
                set.prototypes.len(),
                pct(&mut tp, 0.5),
                pct(&mut tp, 0.9),
                pct(&mut ta, 0.5),
                pct(&mut ta, 0.9),
                pct(&mut tm, 0.5),
                pct(&mut tm, 0.9),
                pct(&mut th, 0.5),
                cpu_ns as f64 / 1e6 / iters as f64,
            );
        }
    }
}
