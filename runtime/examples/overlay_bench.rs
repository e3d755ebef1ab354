//! Times the per-result and per-frame overlay work at 1080p for a large mask (an
//! ellipse covering ~70 % of the frame, like the synthetic stream of `bench-stream`):
//! `MaskShape::of` and `MaskStats::of` (once per AI result, on the AI worker) and
//! `draw_annotation` (on every frame the overlay is drawn on, on the video path).
//! Medians over 30 runs after 3 warm-up runs.
//!
//! `cargo run --release -p edgeseg-runtime --example overlay_bench`

use std::time::Instant;

use edgeseg_runtime::backend::Segmentation;
use edgeseg_runtime::prompt::BoxPrompt;
use edgeseg_runtime::stream::overlay::{draw_annotation, Canvas, MaskShape, OverlayStyle};
use edgeseg_runtime::stream::prompting::MaskStats;

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
}
