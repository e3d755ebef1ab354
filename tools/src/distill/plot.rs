//! Loss curves as a PNG (plotters, drawn into a buffer and encoded with `image`).
//!
//! No text is drawn (plotters' font backends pull in system font libraries): the
//! x axis is the step, the y axis is logarithmic, and the series are, in order
//! of the CSV columns, total (black), embedding (blue), teacher (red) and
//! ground truth (green); the axis ranges are printed in the CSV's header-less
//! companion `loss.png.txt`.

use std::path::Path;

use plotters::prelude::*;

use super::DistillError;

const W: u32 = 900;
const H: u32 = 500;

/// Reads `loss.csv` and draws `png` (plus `png.txt` with the axis ranges).
pub fn plot_losses(csv: &Path, png: &Path) -> Result<(), DistillError> {
    let text = std::fs::read_to_string(csv).map_err(|e| DistillError::File {
        path: csv.to_path_buf(),
        message: e.to_string(),
    })?;
    // columns: step,epoch,lr,total,embedding,teacher,ground_truth,seconds
    let mut series: [Vec<(f64, f64)>; 4] = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<f64> = line.split(',').filter_map(|v| v.parse().ok()).collect();
        if f.len() < 7 {
            continue;
        }
        for (k, s) in series.iter_mut().enumerate() {
            let y = f[3 + k];
            if y > 0.0 && y.is_finite() {
                s.push((f[0], y));
            }
        }
    }
    let pts = series.iter().flatten();
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if y0 > y1 {
        (y0, y1) = (1e-3, 1.0);
    }
    let (y0, y1) = (y0 * 0.8, y1 * 1.25);
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        let draw = |root: &DrawingArea<BitMapBackend, _>| -> Result<(), String> {
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut chart = ChartBuilder::on(root)
                .margin(20)
                .build_cartesian_2d(0f64..x1, (y0..y1).log_scale())
                .map_err(|e| e.to_string())?;
            // axes as plain lines (plotters' mesh and labels need a font backend)
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(LineSeries::new([(0.0, y0), (x1, y0)], grey.stroke_width(1)))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(
                    [(0.0, y0), (0.0, y1)],
                    grey.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            // decade ticks on the y axis
            let mut d = 10f64.powf(y0.log10().ceil());
            while d < y1 {
                chart
                    .draw_series(LineSeries::new(
                        [(0.0, d), (x1 * 0.01, d)],
                        grey.stroke_width(1),
                    ))
                    .map_err(|e| e.to_string())?;
                d *= 10.0;
            }
            let colors = [BLACK, BLUE, RED, GREEN];
            for (s, c) in series.iter().zip(colors) {
                if s.len() > 1 {
                    chart
                        .draw_series(LineSeries::new(s.iter().copied(), c.stroke_width(2)))
                        .map_err(|e| e.to_string())?;
                }
            }
            root.present().map_err(|e| e.to_string())
        };
        draw(&root).map_err(|e| DistillError::Train(format!("plot: {e}")))?;
    }
    let img = image::RgbImage::from_raw(W, H, buf)
        .ok_or_else(|| DistillError::Train("plot buffer size".into()))?;
    img.save(png).map_err(|e| DistillError::File {
        path: png.to_path_buf(),
        message: e.to_string(),
    })?;
    let legend = format!(
        "loss curve {}: x = step 0..{x1}, y = loss (log) {y0:.3e}..{y1:.3e}; \
         black total, blue embedding, red teacher, green ground truth\n",
        png.display()
    );
    let txt = png.with_extension("png.txt");
    std::fs::write(&txt, legend).map_err(|e| DistillError::File {
        path: txt,
        message: e.to_string(),
    })
}
