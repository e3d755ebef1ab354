//! Times LiteMedSAM's CPU pre-processing (area resize to 256 + normalization + padding)
//! and post-processing (bilinear upsampling of the 256×256 logits + threshold) at common
//! frame sizes: medians over 30 runs after 3 warm-up runs. These run on the AI worker for
//! every frame it segments, so at 1080p they are a visible part of its latency.
//!
//! `cargo run --release -p edgeseg-kernels --example prepost_bench`

use std::time::Instant;

use edgeseg_kernels::prepost::{postprocess_mask, preprocess_rgb, INPUT_SIZE};

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..30)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    // logits: a disc of positive values, so the mask has an edge everywhere
    let logits: Vec<f32> = (0..INPUT_SIZE * INPUT_SIZE)
        .map(|i| {
            let (y, x) = ((i / INPUT_SIZE) as f32, (i % INPUT_SIZE) as f32);
            60.0 - ((x - 128.0).powi(2) + (y - 70.0).powi(2)).sqrt()
        })
        .collect();
    for (w, h) in [(1920usize, 1080usize), (1280, 720), (640, 480)] {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let prep = preprocess_rgb(&rgb, h, w).expect("valid frame");
        let pre = median_ms(|| {
            std::hint::black_box(preprocess_rgb(&rgb, h, w).expect("valid frame"));
        });
        let post = median_ms(|| {
            std::hint::black_box(postprocess_mask(&logits, &prep).expect("valid logits"));
        });
        let mask = postprocess_mask(&logits, &prep).expect("valid logits");
        let area: usize = mask.iter().map(|&m| usize::from(m)).sum();
        println!("{w}x{h}: preprocess {pre:.3} ms, postprocess {post:.3} ms (mask area {area})");
    }
}
