//! Times LiteMedSAM's CPU pre-processing (area resize to 256 + normalization + padding)
//! and post-processing (bilinear upsampling of the 256×256 logits + threshold) at common
//! frame sizes: medians over 30 runs after 3 warm-up runs. These run on the AI worker for
//! every frame it segments, so at 1080p they are a visible part of its latency.
//!
//! For a YUYV frame (what UVC grabbers deliver) it also times the AI's two ways to
//! its model input: converting the whole frame to RGB then pre-processing it, and
//! pre-processing row by row while converting (`preprocess_rows`, same output).
//!
//! `cargo run --release -p edgeseg-kernels --example prepost_bench`

use std::time::Instant;

use edgeseg_kernels::pixfmt::{self, RawFormat, RawRows};
use edgeseg_kernels::prepost::{postprocess_mask, preprocess_rgb, preprocess_rows, INPUT_SIZE};

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
        let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (i * 13 % 241) as u8).collect();
        let mut buf = vec![0u8; w * h * 3];
        let mut whole = || {
            pixfmt::to_rgb(RawFormat::Yuyv, w, h, &yuyv, &mut buf).expect("valid frame");
            preprocess_rgb(&buf, h, w).expect("valid frame")
        };
        let streamed = || {
            let mut rows = RawRows::new(RawFormat::Yuyv, w, h, &yuyv).expect("valid frame");
            preprocess_rows(&mut rows).expect("valid frame")
        };
        assert_eq!(whole().input, streamed().input, "the two paths must agree");
        // interleaved, so that both see the same machine state
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.push(median_ms(|| {
                std::hint::black_box(whole());
            }));
            b.push(median_ms(|| {
                std::hint::black_box(streamed());
            }));
        }
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!(
            "  yuyv -> model input: convert whole + preprocess {:.3} ms, row-streamed {:.3} ms (median of 5 medians)",
            a[2], b[2]
        );
    }
}
