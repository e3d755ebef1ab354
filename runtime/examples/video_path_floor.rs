//! The machine's floor for the pass-through figures of `edgeseg bench-stream`: the video
//! path's own work, one 1080p YUYV → RGB conversion into a recycled buffer, done alone on
//! one thread every frame period (30 fps), with no pipeline, no AI, no other thread. The
//! duration of each conversion is timed. Whatever tail this shows is the machine's (CPU
//! sharing, virtualisation), not the pipeline's; compare `bench-stream`'s pass-through
//! percentiles with these, measured in the same session.
//!
//! A second loop does a fixed cache-resident computation (no memory traffic: a 512 KiB
//! buffer rewritten 12 times) on the same schedule, to tell a memory-bandwidth tail from a
//! CPU-availability one.
//!
//! `cargo run --release -p edgeseg-runtime --example video_path_floor [-- FRAMES]`
//! (default 3000 frames per loop, 100 s each).

use std::time::{Duration, Instant};

use edgeseg_kernels::pixfmt::RawFormat;
use edgeseg_runtime::stream::frame::conversion_floor;
use edgeseg_runtime::stream::{PixelFormat, RawFrame};

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let over = ms.iter().filter(|&&t| t > 5.0).count();
    println!(
        "{name}: {} frames, p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms, over 5 ms: {over}",
        ms.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

/// Runs `work` once per 1/30 s for `frames` periods and returns its durations in ms.
fn paced(frames: usize, mut work: impl FnMut()) -> Vec<f64> {
    let period = Duration::from_secs_f64(1.0 / 30.0);
    let start = Instant::now();
    (0..frames)
        .map(|i| {
            let due = start + period * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let t = Instant::now();
            work();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000)
        .max(1);
    let (w, h) = (1920usize, 1080usize);
    let raw = RawFrame {
        id: 1,
        width: w,
        height: h,
        format: PixelFormat::Raw(RawFormat::Yuyv),
        data: (0..w * h * 2).map(|i| (i * 13 % 253) as u8).collect(),
        capture: Instant::now(),
    };
    // The same probe `edgeseg bench-stream` runs before streaming (`--floor-frames`).
    let convert = conversion_floor(&raw, 30.0, frames).expect("converts");
    summary(
        "1080p YUYV conversion alone, every 33.3 ms",
        convert.iter().map(|&us| us as f64 / 1e3).collect(),
    );

    let mut buf = vec![1u8; 512 << 10];
    let compute = paced(frames, || {
        for r in 0..12u8 {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = b.wrapping_mul(3).wrapping_add(k as u8).wrapping_add(r);
            }
        }
        std::hint::black_box(&buf);
    });
    summary("512 KiB cache-resident compute, every 33.3 ms", compute);
}
