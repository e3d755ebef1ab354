//! Times the per-result and per-frame overlay work at 1080p for a large mask (an
//! ellipse covering ~70 % of the frame, like the synthetic stream of `bench-stream`):
//! `MaskShape::of` and `MaskStats::of` (once per AI result, on the AI worker) and
//! `draw_annotation` (on every frame the overlay is drawn on, on the video path).
//! Then the video path of one YUYV frame with an overlay, both ways the pipeline
//! can take it: convert the whole frame, then draw (`to_rgb` + `draw_annotation`),
//! or blend the fill into each row as it is converted (`to_rgb_filled` +
//! `draw_annotation_outline`); and the conversion alone. Medians over 30 runs
//! after 3 warm-up runs; the two paths are checked to give the same bytes.
//!
//! `cargo run --release -p edgeseg-runtime --example overlay_bench`

use std::time::Instant;

use edgeseg_kernels::pixfmt::RawFormat;
use edgeseg_runtime::backend::Segmentation;
use edgeseg_runtime::prompt::BoxPrompt;
use edgeseg_runtime::stream::frame::{to_rgb, to_rgb_filled};
use edgeseg_runtime::stream::overlay::{
    draw_annotation, draw_annotation_outline, Canvas, MaskShape, OverlayStyle, RowFill,
};
use edgeseg_runtime::stream::prompting::MaskStats;
use edgeseg_runtime::stream::{PixelFormat, RawFrame};

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
    let (w, h) = (1920usize, 1080usize);
    let mask: Vec<u8> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64 - 960.0, (i / w) as f64 - 540.0);
            u8::from((x / 900.0).powi(2) + (y / 530.0).powi(2) <= 1.0)
        })
        .collect();
    let seg = Segmentation {
        width: w,
        height: h,
        mask,
        iou_prediction: Some(0.9),
    };
    let shape = MaskShape::of(&seg);
    let t_shape = median_ms(|| {
        std::hint::black_box(MaskShape::of(&seg));
    });
    let t_stats = median_ms(|| {
        std::hint::black_box(MaskStats::of(&seg));
    });
    let mut frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let style = OverlayStyle::default();
    let prompt = Some(BoxPrompt {
        x0: 60.0,
        y0: 10.0,
        x1: 1860.0,
        y1: 1070.0,
    });
    let t_draw = median_ms(|| {
        let mut canvas = Canvas::new(w, h, &mut frame, None).expect("sizes agree");
        draw_annotation(&mut canvas, &shape, prompt, "edge-s", "AI 85 ms", &style);
    });
    println!(
        "1920x1080, mask area {} ({} runs, {} contour pixels): MaskShape::of {t_shape:.3} ms, \
         MaskStats::of {t_stats:.3} ms, draw_annotation {t_draw:.3} ms",
        shape.area,
        shape.runs.len(),
        shape.contour.len()
    );

    // The video path of a frame with an overlay.
    let raw = RawFrame {
        id: 1,
        width: w,
        height: h,
        format: PixelFormat::Raw(RawFormat::Yuyv),
        data: (0..w * h * 2).map(|i| (i * 13 % 253) as u8).collect(),
        capture: Instant::now(),
    };
    let mut after = Vec::new();
    let mut during = Vec::new();
    let mut plain = Vec::new();
    let fill = RowFill {
        runs: &shape.runs,
        rgb: style.mask,
        alpha: style.fill_alpha,
    };
    let mut convert_then_draw = || {
        to_rgb(&raw, &mut after).expect("converts");
        let mut canvas = Canvas::new(w, h, &mut after, None).expect("sizes agree");
        draw_annotation(&mut canvas, &shape, prompt, "edge-s", "AI 85 ms", &style);
    };
    let mut fill_while_converting = || {
        to_rgb_filled(&raw, &mut during, &fill).expect("converts");
        let mut canvas = Canvas::new(w, h, &mut during, None).expect("sizes agree");
        draw_annotation_outline(&mut canvas, &shape, prompt, "edge-s", "AI 85 ms", &style);
    };
    // Interleaved rounds, so that both see the same machine.
    let (mut t_after, mut t_during, mut t_convert) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        t_after.push(median_ms(&mut convert_then_draw));
        t_during.push(median_ms(&mut fill_while_converting));
        t_convert.push(median_ms(|| {
            to_rgb(&raw, &mut plain).expect("converts");
        }));
    }
    convert_then_draw();
    fill_while_converting();
    assert!(after == during, "both paths give the same frame");
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, d, c) = (med(t_after), med(t_during), med(t_convert));
    println!(
        "1080p YUYV video path, median of 5 interleaved rounds: convert {c:.3} ms; \
         convert then draw {a:.3} ms (overlay +{:.3}); fill while converting + outline \
         {d:.3} ms (overlay +{:.3}); ratio {:.2}",
        a - c,
        d - c,
        d / a
    );
}
