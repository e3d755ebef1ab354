//! Times the one-pass pixel-format conversion of a 1080p frame (the video path's main CPU
//! cost) against the plain per-pixel form of the same arithmetic, in one run: medians over
//! 50 runs after 5 warm-up runs.
//!
//! `cargo run --release -p edgeseg-kernels --example pixfmt_bench`
//! (add `RUSTFLAGS="-C target-cpu=native"` for the host's widest SIMD)

use std::time::Instant;

use edgeseg_kernels::pixfmt::{to_rgb, ycbcr_to_rgb, RawFormat};

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut t: Vec<f64> = (0..50)
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
    let (w, h) = (1920usize, 1080usize);
    let src: Vec<u8> = (0..w * h * 2).map(|i| (i * 7 % 251) as u8).collect();
    let mut dst = vec![0u8; w * h * 3];
    let mut per_pixel = vec![0u8; w * h * 3];
    for (fmt, name) in [
        (RawFormat::Yuyv, "yuyv"),
        (RawFormat::Rgb24, "rgb24 (copy)"),
    ] {
        let len = match fmt {
            RawFormat::Yuyv => w * h * 2,
            _ => w * h * 3,
        };
        let src: Vec<u8> = (0..len).map(|i| src[i % src.len()]).collect();
        let ms = median_ms(|| to_rgb(fmt, w, h, &src, &mut dst).expect("valid frame"));
        println!("{name:<14} to_rgb 1920x1080: {ms:.3} ms");
    }
    let ms_pp = median_ms(|| {
        for (o, i) in per_pixel.chunks_exact_mut(6).zip(src.chunks_exact(4)) {
            o[..3].copy_from_slice(&ycbcr_to_rgb(i[0], i[1], i[3]));
            o[3..].copy_from_slice(&ycbcr_to_rgb(i[2], i[1], i[3]));
        }
    });
    to_rgb(RawFormat::Yuyv, w, h, &src, &mut dst).expect("valid frame");
    assert_eq!(dst, per_pixel, "the two forms disagree");
    println!("yuyv           per-pixel form:   {ms_pp:.3} ms");
}
