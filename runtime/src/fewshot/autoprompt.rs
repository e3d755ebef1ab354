//! Prompts for the mask decoder derived from a prototype probability map: the
//! largest confident component of each class gives a box, its most probable cell a
//! point.

use crate::prompt::{BoxPrompt, PointLabel, PointPrompt, Prompt};

use super::{FewShotError, ProbabilityMap};

/// Settings of the auto-prompter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPromptConfig {
    /// A grid cell is confident for a class when the class is its most probable
    /// one and its probability is at least this.
    pub threshold: f32,
    /// The largest confident component must have at least this many grid cells,
    /// or the structure counts as not found.
    pub min_cells: usize,
    /// Grow the box by this many grid cells on every side (clamped to the frame).
    pub margin_cells: f32,
    /// Also give the decoder the peak cell as a foreground point.
    pub peak_point: bool,
}

impl Default for AutoPromptConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_cells: 2,
            margin_cells: 0.0,
            peak_point: false,
        }
    }
}

/// A structure found on the prototype map.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundStructure {
    /// Its label.
    pub label: u8,
    /// The decoder prompt: the component's box in frame pixels (and the peak point
    /// when asked for).
    pub prompt: Prompt,
    /// The most probable cell of the component, in frame pixels.
    pub peak: PointPrompt,
    /// Grid cells of the component.
    pub cells: usize,
    /// Mean class probability over the component.
    pub mean_probability: f32,
    /// Class probability at the peak.
    pub peak_probability: f32,
}

/// The auto-prompt of one class.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassPrompt {
    /// A confident component was found.
    Found(FoundStructure),
    /// No cell (or too few) is confident: the structure is not in this frame.
    NotFound {
        /// The label.
        label: u8,
    },
}

/// Derives one prompt per class from `map` (classes in the map's label order).
pub fn auto_prompts(
    map: &ProbabilityMap,
    cfg: &AutoPromptConfig,
) -> Result<Vec<ClassPrompt>, FewShotError> {
    let threshold_ok = (0.0..=1.0).contains(&cfg.threshold);
    let margin_ok = cfg.margin_cells.is_finite() && cfg.margin_cells >= 0.0;
    if !threshold_ok || !margin_ok {
        return Err(FewShotError::InvalidConfig(format!(
            "auto-prompt threshold {} must be in [0, 1] and margin {} non-negative",
            cfg.threshold, cfg.margin_cells
        )));
    }
    let (h, w) = (map.height, map.width);
    let cells = h.checked_mul(w).unwrap_or(0);
    let k = map.class_count();
    if cells == 0 || map.probs.len() != k.saturating_mul(cells) {
        return Err(FewShotError::InvalidEmbedding(format!(
            "probability map {}x{} with {} values for {k} classes",
            h,
            w,
            map.probs.len()
        )));
    }
    // argmax class per cell
    let mut arg = vec![0usize; cells];
    for (p, a) in arg.iter_mut().enumerate() {
        let mut best = map.probs[p];
        for ci in 1..k {
            let v = map.probs[ci * cells + p];
            if v > best {
                best = v;
                *a = ci;
            }
        }
    }
    let mut out = Vec::with_capacity(k - 1);
    let mut seen = vec![false; cells];
    let mut stack = Vec::new();
    for (ci, &label) in map.labels.iter().enumerate().map(|(i, l)| (i + 1, l)) {
        let prob = &map.probs[ci * cells..(ci + 1) * cells];
        let confident = |p: usize| arg[p] == ci && prob[p] >= cfg.threshold;
        seen.iter_mut().for_each(|s| *s = false);
        // (mass, cells, bbox, peak)
        let mut best: Option<(f32, usize, [usize; 4], usize)> = None;
        for start in 0..cells {
            if seen[start] || !confident(start) {
                continue;
            }
            seen[start] = true;
            stack.clear();
            stack.push(start);
            let (mut mass, mut n) = (0.0f32, 0usize);
            let mut bb = [usize::MAX, usize::MAX, 0, 0]; // y0 x0 y1 x1
            let mut peak = start;
            while let Some(p) = stack.pop() {
                let (y, x) = (p / w, p % w);
                mass += prob[p];
                n += 1;
                bb = [bb[0].min(y), bb[1].min(x), bb[2].max(y), bb[3].max(x)];
                if prob[p] > prob[peak] {
                    peak = p;
                }
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let (ny, nx) = (y as isize + dy, x as isize + dx);
                        if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                            continue;
                        }
                        let q = ny as usize * w + nx as usize;
                        if !seen[q] && confident(q) {
                            seen[q] = true;
                            stack.push(q);
                        }
                    }
                }
            }
            if best.is_none_or(|b| mass > b.0) {
                best = Some((mass, n, bb, peak));
            }
        }
        match best {
            Some((mass, n, bb, peak)) if n >= cfg.min_cells.max(1) => {
                let (ry, rx) = (map.cells_per_pixel_y, map.cells_per_pixel_x);
                let m = f64::from(cfg.margin_cells);
                // cell g covers frame pixels whose centre maps into [g, g + 1)
                let lo = |g: f64, r: f64, size: usize| {
                    ((g / r - 0.5).ceil()).clamp(0.0, (size - 1) as f64) as f32
                };
                let hi = |g: f64, r: f64, size: usize| {
                    ((g / r - 0.5).ceil() - 1.0).clamp(0.0, (size - 1) as f64) as f32
                };
                let (fh, fw) = (map.frame_height, map.frame_width);
                let bx = BoxPrompt {
                    x0: lo(bb[1] as f64 - m, rx, fw),
                    y0: lo(bb[0] as f64 - m, ry, fh),
                    x1: hi(bb[3] as f64 + 1.0 + m, rx, fw),
                    y1: hi(bb[2] as f64 + 1.0 + m, ry, fh),
                };
                let centre = |g: usize, r: f64, size: usize| {
                    ((g as f64 + 0.5) / r - 0.5).clamp(0.0, (size - 1) as f64) as f32
                };
                let pk = PointPrompt {
                    x: centre(peak % w, rx, fw),
                    y: centre(peak / w, ry, fh),
                    label: PointLabel::Foreground,
                };
                let prompt = Prompt {
                    boxes: Some(BoxPrompt {
                        x0: bx.x0.min(bx.x1),
                        y0: bx.y0.min(bx.y1),
                        x1: bx.x1.max(bx.x0),
                        y1: bx.y1.max(bx.y0),
                    }),
                    points: if cfg.peak_point { vec![pk] } else { Vec::new() },
                };
                out.push(ClassPrompt::Found(FoundStructure {
                    label,
                    prompt,
                    peak: pk,
                    cells: n,
                    mean_probability: mass / n as f32,
                    peak_probability: prob[peak],
                }));
            }
            _ => out.push(ClassPrompt::NotFound { label }),
        }
    }
    Ok(out)
}
