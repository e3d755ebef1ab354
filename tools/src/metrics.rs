//! Segmentation metrics on 2D and 3D binary masks: Dice, IoU, HD95, Hausdorff and NSD.
//!
//! Conventions follow MONAI 1.6.1 (the reference values in `../shared/golden/metrics/` were
//! computed with it) so that numbers are comparable with the literature:
//!
//! * **Boundary**: the inner boundary, `mask AND NOT erode(mask)` with the face-connected cross
//!   (4 neighbours in 2D, 6 in 3D); outside the grid counts as background, so foreground on the
//!   grid border is boundary, and interior holes add boundary.
//! * **Surface distances**: for every boundary element of one mask, the Euclidean distance to the
//!   nearest boundary element of the other, in physical units (index × spacing per axis, axis
//!   order as stored: `[row, col]` or `[i, j, k]`), computed in f64 by an exact separable
//!   Euclidean distance transform and then rounded to f32 (as MONAI does).
//! * **HD95**: symmetric and not pooled: `max(q95(d(pred→gt)), q95(d(gt→pred)))`, with `q95`
//!   linear interpolation between order statistics (`torch.quantile` / numpy `linear`).
//!   (medpy pools both directions first, which gives smaller values.) **HD** is the maximum.
//! * **NSD** at tolerance τ: `(#{pred boundary with d ≤ τ} + #{gt boundary with d ≤ τ}) /
//!   (#pred boundary + #gt boundary)`, inclusive, compared in f32 like MONAI.
//!
//! Empty masks (MONAI gives `nan`/`inf`; we give `None`, written as JSON `null`, never a fake
//! number):
//!
//! | case | Dice, IoU | HD95, HD | NSD |
//! |---|---|---|---|
//! | both empty | `None` (undefined) | `None` | `None` |
//! | exactly one empty | `0` | `None` (undefined) | `0` |
//!
//! For "exactly one empty", Dice/IoU = 0 is MONAI's `ignore_empty=False` value (its default,
//! `ignore_empty=True`, gives `nan` when the ground truth is empty): a prediction on an empty
//! ground truth is a false positive and must count against the model. NSD = 0 equals MONAI.

use crate::grid::{BinaryMask, Shape};

/// Errors from metric computation (only mismatched inputs; the math itself cannot fail).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// Prediction and ground truth differ in shape.
    #[error("prediction is {pred} but ground truth is {gt}")]
    ShapeMismatch {
        /// Prediction shape.
        pred: String,
        /// Ground-truth shape.
        gt: String,
    },
    /// The spacing has the wrong number of axes or a non-positive value.
    #[error(
        "spacing {0:?} does not fit the mask (one positive value per axis, in array-axis order)"
    )]
    BadSpacing(Vec<f64>),
}

/// Overlap counts of two masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// Foreground elements in the prediction.
    pub pred: usize,
    /// Foreground elements in the ground truth.
    pub gt: usize,
    /// Foreground in both.
    pub intersection: usize,
}

impl Overlap {
    /// Counts the overlap of two masks of the same shape.
    pub fn of(pred: &BinaryMask, gt: &BinaryMask) -> Result<Self, MetricsError> {
        same_shape(pred, gt)?;
        let mut o = Overlap {
            pred: 0,
            gt: 0,
            intersection: 0,
        };
        for (&p, &g) in pred.data.iter().zip(&gt.data) {
            o.pred += usize::from(p);
            o.gt += usize::from(g);
            o.intersection += usize::from(p && g);
        }
        Ok(o)
    }

    /// Dice = 2|P∩G| / (|P| + |G|); `None` when both are empty.
    pub fn dice(&self) -> Option<f64> {
        let den = self.pred + self.gt;
        (den > 0).then(|| 2.0 * self.intersection as f64 / den as f64)
    }

    /// IoU = |P∩G| / |P∪G|; `None` when both are empty.
    pub fn iou(&self) -> Option<f64> {
        let union = self.pred + self.gt - self.intersection;
        (union > 0).then(|| self.intersection as f64 / union as f64)
    }
}

fn same_shape(pred: &BinaryMask, gt: &BinaryMask) -> Result<(), MetricsError> {
    if pred.shape != gt.shape || pred.data.len() != gt.data.len() {
        return Err(MetricsError::ShapeMismatch {
            pred: pred.shape.to_string(),
            gt: gt.shape.to_string(),
        });
    }
    Ok(())
}

/// Directed surface distances between the boundaries of two masks (f32, physical units).
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceDistances {
    /// For each boundary element of the prediction, the distance to the nearest GT boundary.
    pub pred_to_gt: Vec<f32>,
    /// For each boundary element of the ground truth, the distance to the nearest prediction
    /// boundary.
    pub gt_to_pred: Vec<f32>,
}

impl SurfaceDistances {
    /// Computes both directed distance sets. `spacing` is one value per axis in array-axis
    /// order (`[row, col]` or `[i, j, k]`); `None` means unit spacing (pixels/voxels).
    /// When either mask is empty the vectors are empty (see [`hd95`](Self::hd95)).
    pub fn compute(
        pred: &BinaryMask,
        gt: &BinaryMask,
        spacing: Option<&[f64]>,
    ) -> Result<Self, MetricsError> {
        same_shape(pred, gt)?;
        let shape = pred.shape;
        let spacing3 = spacing3(&shape, spacing)?;
        let bp = boundary(pred);
        let bg = boundary(gt);
        let any_p = bp.iter().any(|&v| v);
        let any_g = bg.iter().any(|&v| v);
        if !(any_p && any_g) {
            return Ok(Self {
                pred_to_gt: Vec::new(),
                gt_to_pred: Vec::new(),
            });
        }
        let dist_to_g = squared_edt(&bg, &shape, &spacing3);
        let dist_to_p = squared_edt(&bp, &shape, &spacing3);
        let collect = |from: &[bool], dist: &[f64]| -> Vec<f32> {
            from.iter()
                .zip(dist)
                .filter(|(&b, _)| b)
                .map(|(_, &d2)| d2.sqrt() as f32)
                .collect()
        };
        Ok(Self {
            pred_to_gt: collect(&bp, &dist_to_g),
            gt_to_pred: collect(&bg, &dist_to_p),
        })
    }

    fn defined(&self) -> bool {
        !self.pred_to_gt.is_empty() && !self.gt_to_pred.is_empty()
    }

    /// Symmetric 95th-percentile Hausdorff distance; `None` if either mask is empty.
    pub fn hd95(&self) -> Option<f64> {
        self.hd_percentile(95.0)
    }

    /// Symmetric Hausdorff distance at a percentile (0–100) of each directed set, then the
    /// maximum of both directions; `None` if either mask is empty.
    pub fn hd_percentile(&self, percentile: f64) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let q = percentile / 100.0;
        Some(quantile_linear(&self.pred_to_gt, q).max(quantile_linear(&self.gt_to_pred, q)))
    }

    /// Symmetric (maximum) Hausdorff distance; `None` if either mask is empty.
    pub fn hausdorff(&self) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let m = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
        Some(f64::from(m(&self.pred_to_gt).max(m(&self.gt_to_pred))))
    }

    /// Normalized surface Dice at `tolerance` (same unit as the spacing).
    ///
    /// `None` when both masks are empty; `0` when exactly one is (call with the masks' overlap
    /// via [`nsd`] to get that distinction; on distances alone, empty sets give `None`).
    pub fn nsd_defined_only(&self, tolerance: f64) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let tol = tolerance as f32;
        let within = |v: &[f32]| v.iter().filter(|&&d| d <= tol).count();
        let num = within(&self.pred_to_gt) + within(&self.gt_to_pred);
        let den = self.pred_to_gt.len() + self.gt_to_pred.len();
        Some(num as f64 / den as f64)
    }
}

/// Normalized surface Dice with the empty-mask conventions of this module.
pub fn nsd(overlap: &Overlap, distances: &SurfaceDistances, tolerance: f64) -> Option<f64> {
    match (overlap.pred == 0, overlap.gt == 0) {
        (true, true) => None,
        (true, false) | (false, true) => Some(0.0),
        (false, false) => distances.nsd_defined_only(tolerance),
    }
}

/// All metrics of one prediction against one ground truth.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricSet {
    /// Dice coefficient in [0, 1].
    pub dice: Option<f64>,
    /// Intersection over union in [0, 1].
    pub iou: Option<f64>,
    /// 95th-percentile symmetric Hausdorff distance.
    pub hd95: Option<f64>,
    /// Maximum symmetric Hausdorff distance.
    pub hd: Option<f64>,
    /// Normalized surface Dice at the tolerance given to [`MetricSet::compute`].
    pub nsd: Option<f64>,
}

impl MetricSet {
    /// Computes every metric; distances and the NSD tolerance are in the unit of `spacing`
    /// (pixels/voxels when `None`).
    pub fn compute(
        pred: &BinaryMask,
        gt: &BinaryMask,
        spacing: Option<&[f64]>,
        nsd_tolerance: f64,
    ) -> Result<Self, MetricsError> {
        let overlap = Overlap::of(pred, gt)?;
        let sd = SurfaceDistances::compute(pred, gt, spacing)?;
        Ok(Self {
            dice: overlap.dice(),
            iou: overlap.iou(),
            hd95: sd.hd95(),
            hd: sd.hausdorff(),
            nsd: nsd(&overlap, &sd, nsd_tolerance),
        })
    }
}

fn spacing3(shape: &Shape, spacing: Option<&[f64]>) -> Result<[f64; 3], MetricsError> {
    let mut s = [1.0f64; 3];
    if let Some(sp) = spacing {
        if sp.len() != shape.ndim() || sp.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(MetricsError::BadSpacing(sp.to_vec()));
        }
        s[shape.first_axis()..].copy_from_slice(sp);
    }
    Ok(s)
}

/// The inner boundary: foreground with a face neighbour in the background or off the grid.
pub fn boundary(mask: &BinaryMask) -> Vec<bool> {
    let shape = mask.shape;
    let d = shape.dims3();
    let f = shape.first_axis();
    let mut out = vec![false; mask.data.len()];
    for (idx, &v) in mask.data.iter().enumerate() {
        if !v {
            continue;
        }
        let c = shape.coord(idx);
        let mut edge = false;
        for a in f..3 {
            if c[a] == 0 || c[a] + 1 == d[a] {
                edge = true;
                break;
            }
            let mut lo = c;
            lo[a] -= 1;
            let mut hi = c;
            hi[a] += 1;
            if !mask.data[shape.index(lo)] || !mask.data[shape.index(hi)] {
                edge = true;
                break;
            }
        }
        out[idx] = edge;
    }
    out
}

/// Exact squared Euclidean distance (physical units) from every element to the nearest `true`
/// element of `sites`, by separable lower envelopes of parabolas (Felzenszwalb & Huttenlocher).
/// Elements have `f64::INFINITY` when there is no site.
fn squared_edt(sites: &[bool], shape: &Shape, spacing: &[f64; 3]) -> Vec<f64> {
    let d = shape.dims3();
    let mut g: Vec<f64> = sites
        .iter()
        .map(|&s| if s { 0.0 } else { f64::INFINITY })
        .collect();
    let n_max = *d.iter().max().unwrap_or(&1);
    let mut line = vec![0.0f64; n_max];
    let mut out = vec![0.0f64; n_max];
    let mut v = vec![0usize; n_max];
    let mut z = vec![0.0f64; n_max + 1];
    for axis in shape.first_axis()..3 {
        let n = d[axis];
        let stride = match axis {
            0 => d[1] * d[2],
            1 => d[2],
            _ => 1,
        };
        // iterate over every line along `axis`
        let (o1, o2) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for a in 0..d[o1] {
            for b in 0..d[o2] {
                let mut c = [0usize; 3];
                c[o1] = a;
                c[o2] = b;
                let base = shape.index(c);
                for i in 0..n {
                    line[i] = g[base + i * stride];
                }
                edt_1d(&line[..n], spacing[axis], &mut out[..n], &mut v, &mut z);
                for i in 0..n {
                    g[base + i * stride] = out[i];
                }
            }
        }
    }
    g
}

/// One-dimensional squared distance transform of sampled function `f` with sample spacing `s`.
fn edt_1d(f: &[f64], s: f64, out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let pos = |i: usize| i as f64 * s;
    let Some(first) = f.iter().position(|x| x.is_finite()) else {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    };
    let mut k = 0usize;
    v[0] = first;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for q in first + 1..n {
        if !f[q].is_finite() {
            continue;
        }
        let xq = pos(q);
        loop {
            let p = v[k];
            let xp = pos(p);
            let sep = ((f[q] + xq * xq) - (f[p] + xp * xp)) / (2.0 * (xq - xp));
            if sep <= z[k] {
                // z[0] is -inf, so k > 0 here
                k -= 1;
            } else {
                k += 1;
                v[k] = q;
                z[k] = sep;
                z[k + 1] = f64::INFINITY;
                break;
            }
        }
    }
    k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        let xq = pos(q);
        while z[k + 1] < xq {
            k += 1;
        }
        let dx = xq - pos(v[k]);
        *o = dx * dx + f[v[k]];
    }
}

/// Quantile with linear interpolation between order statistics (numpy `linear`,
/// `torch.quantile` default). `q` in [0, 1]. NaN for an empty slice.
pub fn quantile_linear(values: &[f32], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f32> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    f64::from(v[lo]) + (f64::from(v[hi]) - f64::from(v[lo])) * frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn from_fn(shape: Shape, f: impl Fn([usize; 3]) -> bool) -> BinaryMask {
        BinaryMask {
            shape,
            data: (0..shape.len()).map(|i| f(shape.coord(i))).collect(),
        }
    }

    /// Brute-force reference: every boundary point against every other.
    fn brute(pred: &BinaryMask, gt: &BinaryMask, sp: [f64; 3]) -> (Vec<f32>, Vec<f32>) {
        let bp = boundary(pred);
        let bg = boundary(gt);
        let pts = |b: &[bool]| -> Vec<[usize; 3]> {
            b.iter()
                .enumerate()
                .filter(|(_, &v)| v)
                .map(|(i, _)| pred.shape.coord(i))
                .collect()
        };
        let (pp, gg) = (pts(&bp), pts(&bg));
        let dir = |a: &[[usize; 3]], b: &[[usize; 3]]| -> Vec<f32> {
            a.iter()
                .map(|x| {
                    b.iter()
                        .map(|y| {
                            (0..3)
                                .map(|k| ((x[k] as f64 - y[k] as f64) * sp[k]).powi(2))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .fold(f64::INFINITY, f64::min) as f32
                })
                .collect()
        };
        (dir(&pp, &gg), dir(&gg, &pp))
    }

    #[test]
    fn dice_iou_edge_cases() {
        let s = Shape::d2(4, 4);
        let empty = BinaryMask::empty(s);
        let one = from_fn(s, |c| c[1] == 1 && c[2] == 1);
        let m = MetricSet::compute(&empty, &empty, None, 1.0).unwrap();
        assert_eq!(
            (m.dice, m.iou, m.hd95, m.hd, m.nsd),
            (None, None, None, None, None)
        );
        for (p, g) in [(&empty, &one), (&one, &empty)] {
            let m = MetricSet::compute(p, g, None, 1.0).unwrap();
            assert_eq!((m.dice, m.iou, m.nsd), (Some(0.0), Some(0.0), Some(0.0)));
            assert_eq!((m.hd95, m.hd), (None, None));
        }
        let m = MetricSet::compute(&one, &one, None, 1.0).unwrap();
        assert_eq!(
            (m.dice, m.iou, m.hd95, m.hd, m.nsd),
            (Some(1.0), Some(1.0), Some(0.0), Some(0.0), Some(1.0))
        );
    }

    #[test]
    fn shape_and_spacing_errors() {
        let a = BinaryMask::empty(Shape::d2(2, 3));
        let b = BinaryMask::empty(Shape::d2(3, 2));
        assert!(matches!(
            Overlap::of(&a, &b),
            Err(MetricsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            SurfaceDistances::compute(&a, &a, Some(&[1.0])),
            Err(MetricsError::BadSpacing(_))
        ));
        assert!(matches!(
            SurfaceDistances::compute(&a, &a, Some(&[1.0, 0.0])),
            Err(MetricsError::BadSpacing(_))
        ));
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.percentile([1,2,3,4,10], 95) == 8.8
        let v = [10.0f32, 1.0, 3.0, 2.0, 4.0];
        assert!((quantile_linear(&v, 0.95) - 8.8).abs() < 1e-6);
        assert_eq!(quantile_linear(&[7.0], 0.95), 7.0);
        assert!(quantile_linear(&[], 0.5).is_nan());
    }

    #[test]
    fn boundary_includes_grid_border_and_holes() {
        let s = Shape::d2(5, 5);
        let full = from_fn(s, |_| true);
        // every pixel on the grid border is boundary, interior 3x3 is not
        assert_eq!(boundary(&full).iter().filter(|&&b| b).count(), 16);
        let holed = from_fn(s, |c| !(c[1] == 2 && c[2] == 2));
        assert_eq!(boundary(&holed).iter().filter(|&&b| b).count(), 16 + 4);
    }

    proptest! {
        #[test]
        fn edt_distances_equal_brute_force_2d(
            h in 1usize..12, w in 1usize..12,
            bits_p in proptest::collection::vec(any::<bool>(), 144),
            bits_g in proptest::collection::vec(any::<bool>(), 144),
            sy in 0.1f64..3.0, sx in 0.1f64..3.0,
        ) {
            let s = Shape::d2(h, w);
            let p = from_fn(s, |c| bits_p[c[1] * 12 + c[2]]);
            let g = from_fn(s, |c| bits_g[c[1] * 12 + c[2]]);
            let sd = SurfaceDistances::compute(&p, &g, Some(&[sy, sx])).unwrap();
            if p.count() > 0 && g.count() > 0 {
                let (a, b) = brute(&p, &g, [1.0, sy, sx]);
                prop_assert_eq!(sd.pred_to_gt.len(), a.len());
                for (x, y) in sd.pred_to_gt.iter().zip(&a) { prop_assert!((x - y).abs() <= 1e-5 * y.max(1.0)); }
                for (x, y) in sd.gt_to_pred.iter().zip(&b) { prop_assert!((x - y).abs() <= 1e-5 * y.max(1.0)); }
            } else {
                prop_assert!(sd.hd95().is_none());
            }
        }

        #[test]
        fn edt_distances_equal_brute_force_3d(
            dims in (1usize..6, 1usize..6, 1usize..6),
            bits_p in proptest::collection::vec(any::<bool>(), 216),
            bits_g in proptest::collection::vec(any::<bool>(), 216),
            sp in (0.2f64..2.0, 0.2f64..2.0, 0.2f64..2.0),
        ) {
            let s = Shape::d3(dims.0, dims.1, dims.2);
            let p = from_fn(s, |c| bits_p[(c[0] * 6 + c[1]) * 6 + c[2]]);
            let g = from_fn(s, |c| bits_g[(c[0] * 6 + c[1]) * 6 + c[2]]);
            let sd = SurfaceDistances::compute(&p, &g, Some(&[sp.0, sp.1, sp.2])).unwrap();
            if p.count() > 0 && g.count() > 0 {
                let (a, b) = brute(&p, &g, [sp.0, sp.1, sp.2]);
                for (x, y) in sd.pred_to_gt.iter().zip(&a) { prop_assert!((x - y).abs() <= 1e-5 * y.max(1.0)); }
                for (x, y) in sd.gt_to_pred.iter().zip(&b) { prop_assert!((x - y).abs() <= 1e-5 * y.max(1.0)); }
            }
        }

        #[test]
        fn dice_iou_relation(bits_p in proptest::collection::vec(any::<bool>(), 64), bits_g in proptest::collection::vec(any::<bool>(), 64)) {
            let s = Shape::d2(8, 8);
            let p = BinaryMask { shape: s, data: bits_p };
            let g = BinaryMask { shape: s, data: bits_g };
            let o = Overlap::of(&p, &g).unwrap();
            if let (Some(d), Some(j)) = (o.dice(), o.iou()) {
                prop_assert!((d - 2.0 * j / (1.0 + j)).abs() < 1e-12);
                prop_assert!((0.0..=1.0).contains(&d));
            } else {
                prop_assert_eq!(o.pred + o.gt, 0);
            }
        }
    }
}
