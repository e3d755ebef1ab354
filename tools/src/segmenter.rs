//! The segmenter interface of the evaluation harness, and the two non-learned baselines.
//!
//! Every model plugs into `edgeseg-tools eval` by implementing [`Segmenter`]. A segmenter gets
//! the whole case image and every prompt for it at once, so that a promptable model encodes
//! the image once and decodes once per prompt.
//!
//! Baselines (the floor that a learned model has to beat):
//! * [`BoxFill`] (`box-fill`): the prompt box itself, filled.
//! * [`EllipseBox`] (`ellipse-box`): the ellipse (ellipsoid in 3D) inscribed in the prompt box,
//!   the shape the distilled students' box prior starts from.
//! * [`OtsuBox`] (`otsu-box`): Otsu's threshold on the intensities inside the box; for each of
//!   the two classes, its largest face-connected component with holes filled; the candidate
//!   with the best Dice against the ellipse inscribed in the box, less half the fraction of the box
//!   border it covers, is the object (a tight box is mostly filled by its object, which touches
//!   the border only where it is widest; bright rims such as a fetal skull become filled discs).

use crate::dataset::CaseImage;
use crate::grid::{BinaryMask, Connectivity, GridBox};

/// Errors a segmenter reports for one case.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The segmenter cannot handle this kind of input (e.g. a 2D model given a volume).
    #[error("{segmenter} does not support {what}")]
    Unsupported {
        /// Segmenter name.
        segmenter: String,
        /// What it was given.
        what: String,
    },
    /// A prompt lies outside the image.
    #[error("prompt box {0:?} lies outside the image")]
    PromptOutside(GridBox),
    /// The model failed.
    #[error("{0}")]
    Model(String),
}

/// A method that segments one structure per prompt box.
pub trait Segmenter {
    /// The name used on the command line and in reports.
    fn name(&self) -> &str;

    /// Whether the method needs a prompt box (promptable models and the baselines do;
    /// few-shot prototype heads do not).
    fn needs_prompt(&self) -> bool {
        true
    }

    /// Segments `image` once per prompt; returns one mask per prompt, each of the image's
    /// spatial shape. Without prompts (`prompts` empty) a prompt-free method returns one mask.
    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError>;
}

/// Names of the built-in segmenters, for `--segmenter`.
pub const BUILTIN: &[&str] = &["box-fill", "ellipse-box", "otsu-box"];

/// Creates a built-in segmenter by name.
pub fn builtin(name: &str) -> Option<Box<dyn Segmenter>> {
    match name {
        "box-fill" => Some(Box::new(BoxFill)),
        "ellipse-box" => Some(Box::new(EllipseBox)),
        "otsu-box" => Some(Box::new(OtsuBox::default())),
        _ => None,
    }
}

fn check_inside(image: &CaseImage, b: &GridBox) -> Result<(), SegmentError> {
    let shape = image.shape();
    let dims = shape.dims();
    if b.ndim != shape.ndim() || (0..b.ndim).any(|d| b.min[d] > b.max[d] || b.max[d] >= dims[d]) {
        return Err(SegmentError::PromptOutside(*b));
    }
    Ok(())
}

fn fill_box(image: &CaseImage, b: &GridBox) -> BinaryMask {
    let shape = image.shape();
    let mut m = BinaryMask::empty(shape);
    for (idx, v) in m.data.iter_mut().enumerate() {
        *v = b.contains3(&shape, shape.coord(idx));
    }
    m
}

/// The prompt box, filled.
#[derive(Debug, Default, Clone, Copy)]
pub struct BoxFill;

impl Segmenter for BoxFill {
    fn name(&self) -> &str {
        "box-fill"
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        prompts
            .iter()
            .map(|b| {
                check_inside(image, b)?;
                Ok(fill_box(image, b))
            })
            .collect()
    }
}

/// The ellipse (ellipsoid) inscribed in the prompt box, filled.
#[derive(Debug, Default, Clone, Copy)]
pub struct EllipseBox;

impl Segmenter for EllipseBox {
    fn name(&self) -> &str {
        "ellipse-box"
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        prompts
            .iter()
            .map(|b| {
                check_inside(image, b)?;
                Ok(inscribed_ellipse(&image.shape(), b))
            })
            .collect()
    }
}

/// Otsu threshold inside the box; of the two classes (each reduced to its largest component
/// with holes filled), the one closest to the box's inscribed ellipse.
#[derive(Debug, Clone, Copy)]
pub struct OtsuBox {
    /// Histogram bins (256 for 8-bit images; volumes are binned over their in-box range).
    pub bins: usize,
}

impl Default for OtsuBox {
    fn default() -> Self {
        Self { bins: 256 }
    }
}

/// Otsu's threshold over a histogram: the bin index `t` maximizing the between-class variance
/// of `{bins ≤ t}` vs `{bins > t}`; `None` when all mass is in one bin.
pub fn otsu_threshold(hist: &[u64]) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0) = (0u64, 0.0f64);
    let mut best: Option<(f64, usize)> = None;
    for (t, &c) in hist.iter().enumerate() {
        w0 += c;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum_all - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t));
        }
    }
    best.map(|(_, t)| t)
}

impl OtsuBox {
    fn one(&self, image: &CaseImage, b: &GridBox) -> BinaryMask {
        let shape = image.shape();
        // intensity per element, binned
        let values: Vec<f32> = match image {
            CaseImage::TwoD(im) => im.to_grey().into_iter().map(f32::from).collect(),
            CaseImage::ThreeD(v) => v.data.clone(),
        };
        let inside: Vec<usize> = (0..shape.len())
            .filter(|&i| b.contains3(&shape, shape.coord(i)))
            .collect();
        let (lo, hi) = match image {
            CaseImage::TwoD(_) => (0.0f32, 255.0f32),
            CaseImage::ThreeD(_) => {
                inside
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &i| {
                        let v = values[i];
                        if v.is_finite() {
                            (l.min(v), h.max(v))
                        } else {
                            (l, h)
                        }
                    })
            }
        };
        let bins = self.bins.max(2);
        let bin_of = |v: f32| -> usize {
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || !v.is_finite() {
                return 0;
            }
            let t = ((v - lo) / (hi - lo) * (bins - 1) as f32).round();
            (t.max(0.0) as usize).min(bins - 1)
        };
        let mut hist = vec![0u64; bins];
        for &i in &inside {
            hist[bin_of(values[i])] += 1;
        }
        let Some(t) = otsu_threshold(&hist) else {
            // a uniform box: nothing separates object from background
            return fill_box(image, b);
        };
        // The object is one of the two classes. A tight box is mostly filled by its object,
        // which touches the box border only where it is widest; so keep the class whose
        // cleaned-up mask (largest component, holes filled) scores best on
        // Dice(mask, ellipse inscribed in the box) - 0.5 × the fraction of the box border it covers.
        let prior = inscribed_ellipse(&shape, b);
        let f = shape.first_axis();
        let border: Vec<usize> = inside
            .iter()
            .copied()
            .filter(|&i| {
                let c = shape.coord(i);
                (0..b.ndim).any(|d| c[f + d] == b.min[d] || c[f + d] == b.max[d])
            })
            .collect();
        let candidate = |bright: bool| {
            let mut m = BinaryMask::empty(shape);
            for &i in &inside {
                m.data[i] = (bin_of(values[i]) > t) == bright;
            }
            let m = m.largest_component(Connectivity::Face).fill_holes(Some(b));
            let inter = m
                .data
                .iter()
                .zip(&prior.data)
                .filter(|(&a, &p)| a && p)
                .count();
            let dice = 2.0 * inter as f64 / (m.count() + prior.count()).max(1) as f64;
            let on_border = border.iter().filter(|&&i| m.data[i]).count();
            let coverage = on_border as f64 / border.len().max(1) as f64;
            (dice - 0.5 * coverage, m)
        };
        let (d_bright, bright) = candidate(true);
        let (d_dark, dark) = candidate(false);
        if d_bright >= d_dark {
            bright
        } else {
            dark
        }
    }
}

/// The ellipse (2D) or ellipsoid (3D) inscribed in a box, as a mask.
fn inscribed_ellipse(shape: &crate::grid::Shape, b: &GridBox) -> BinaryMask {
    let f = shape.first_axis();
    let mut m = BinaryMask::empty(*shape);
    for (idx, v) in m.data.iter_mut().enumerate() {
        let c = shape.coord(idx);
        let r: f64 = (0..b.ndim)
            .map(|d| {
                let centre = (b.min[d] + b.max[d]) as f64 / 2.0;
                let half = (b.max[d] - b.min[d] + 1) as f64 / 2.0;
                ((c[f + d] as f64 - centre) / half).powi(2)
            })
            .sum();
        *v = r <= 1.0;
    }
    m
}

impl Segmenter for OtsuBox {
    fn name(&self) -> &str {
        "otsu-box"
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        prompts
            .iter()
            .map(|b| {
                check_inside(image, b)?;
                Ok(self.one(image, b))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Image2d;

    fn disc_image(dark_object: bool) -> CaseImage {
        let (h, w) = (40usize, 50usize);
        let mut data = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                let inside = (y as f32 - 20.0).powi(2) + (x as f32 - 25.0).powi(2) <= 100.0;
                let noise = ((x * 7 + y * 13) % 11) as u8;
                data[y * w + x] = if inside != dark_object {
                    180 + noise
                } else {
                    60 + noise
                };
            }
        }
        CaseImage::TwoD(Image2d {
            width: w,
            height: h,
            channels: 1,
            data,
        })
    }

    fn bx(y0: usize, x0: usize, y1: usize, x1: usize) -> GridBox {
        GridBox {
            min: [y0, x0, 0],
            max: [y1, x1, 0],
            ndim: 2,
        }
    }

    #[test]
    fn box_fill_fills_the_box() {
        let img = disc_image(false);
        let m = BoxFill.segment(&img, &[bx(10, 15, 30, 35)]).unwrap();
        assert_eq!(m[0].count(), 21 * 21);
        assert!(BoxFill.segment(&img, &[bx(10, 15, 40, 35)]).is_err());
    }

    #[test]
    fn ellipse_box_fills_the_inscribed_ellipse() {
        let img = disc_image(false);
        // a 21×21 box: the inscribed disc of radius 10.5 about (20, 25)
        let m = EllipseBox.segment(&img, &[bx(10, 15, 30, 35)]).unwrap();
        let want = (0..40 * 50)
            .filter(|i| {
                let (y, x) = ((i / 50) as f64, (i % 50) as f64);
                (y - 20.0).powi(2) + (x - 25.0).powi(2) <= 10.5 * 10.5
            })
            .count();
        assert_eq!(m[0].count(), want);
        assert!(m[0].count() < 21 * 21);
        assert!(EllipseBox.segment(&img, &[bx(10, 15, 40, 35)]).is_err());
    }

    #[test]
    fn otsu_finds_bright_and_dark_discs() {
        for dark in [false, true] {
            let img = disc_image(dark);
            let m = OtsuBox::default()
                .segment(&img, &[bx(7, 12, 33, 38)])
                .unwrap();
            let disc_px = (0..40 * 50)
                .filter(|i| {
                    let (y, x) = (i / 50, i % 50);
                    (y as f32 - 20.0).powi(2) + (x as f32 - 25.0).powi(2) <= 100.0
                })
                .count();
            assert_eq!(m[0].count(), disc_px, "dark={dark}");
        }
    }

    #[test]
    fn otsu_threshold_splits_two_modes() {
        let mut h = vec![0u64; 256];
        h[10] = 100;
        h[200] = 50;
        let t = otsu_threshold(&h).unwrap();
        assert!((10..200).contains(&t));
        assert_eq!(otsu_threshold(&[0, 5, 0]), None);
    }

    #[test]
    fn builtins_resolve() {
        for n in BUILTIN {
            assert_eq!(builtin(n).unwrap().name(), *n);
        }
        assert!(builtin("nope").is_none());
    }
}
