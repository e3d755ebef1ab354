//! The numeric primitives of the prototype head: masked average pooling of
//! feature maps and cosine similarity of every pixel's feature against a set of
//! prototypes, in plain Rust (the device runtime runs them without any ML
//! framework).
//!
//! The specification the CUDA kernels are tested against is
//! `edgeseg_kernels::reference::fewshot` (`masked_avg_pool`, `cosine_sim`); these
//! functions compute the same quantities (parity is tested in
//! `runtime/tests/fewshot.rs`) but are written for the CPU hot path: they work on
//! a rectangular [`Region`] of the grid (the part of the embedding that covers the
//! frame, or one pooling window), read every feature row once for all prototypes,
//! and refuse non-finite values and zero-norm prototypes instead of hiding them
//! behind an epsilon.
//!
//! Layout: a feature map is `channels × height × width` f32, row-major (CHW, the
//! layout of a SAM image embedding without its batch dimension). A per-pixel
//! weight map is `height × width` f32. A prototype set is `count × channels` f32,
//! row-major.
//!
//! Numerics: pooling accumulates in f64 and returns f32; cosine similarity
//! accumulates in f32 in channel order. No function returns NaN or infinity.

/// Errors of the few-shot primitives (all caused by bad sizes or bad values).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrimitiveError {
    /// A buffer does not have the length its dimensions require, or a size overflows.
    #[error("{what}: {message}")]
    BadSize {
        /// Which buffer or size.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A region reaches outside the grid or is empty.
    #[error("region {region:?} is empty or outside the {height}x{width} grid")]
    BadRegion {
        /// The region.
        region: Region,
        /// Grid rows.
        height: usize,
        /// Grid columns.
        width: usize,
    },
    /// A weight is negative or not finite.
    #[error("weight {value} at pixel {index} is negative or not finite")]
    BadWeight {
        /// Pixel index (row-major in the grid).
        index: usize,
        /// The weight.
        value: f32,
    },
    /// The weights inside the region sum to zero: there is nothing to pool.
    #[error("the mask covers no pixel of the region: nothing to pool")]
    EmptyMask,
    /// A feature or prototype value is NaN or infinite.
    #[error("{what} holds a non-finite value at index {index}")]
    NonFinite {
        /// Which buffer.
        what: &'static str,
        /// Flat index of the first bad value.
        index: usize,
    },
    /// A prototype has zero (or denormal) norm: its cosine similarity is undefined.
    #[error("prototype {index} has zero norm")]
    ZeroNorm {
        /// Prototype index.
        index: usize,
    },
}

/// The shape of a feature map: `channels × height × width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Feature channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Grid {
    /// `height * width`, checked.
    pub fn pixels(&self) -> Result<usize, PrimitiveError> {
        self.height
            .checked_mul(self.width)
            .ok_or_else(|| PrimitiveError::BadSize {
                what: "grid",
                message: format!("{}x{} overflows", self.height, self.width),
            })
    }

    /// `channels * height * width`, checked.
    pub fn len(&self) -> Result<usize, PrimitiveError> {
        self.pixels()?
            .checked_mul(self.channels)
            .ok_or_else(|| PrimitiveError::BadSize {
                what: "grid",
                message: format!("{}x{}x{} overflows", self.channels, self.height, self.width),
            })
    }

    /// Whether the grid holds no value.
    pub fn is_empty(&self) -> bool {
        self.channels == 0 || self.height == 0 || self.width == 0
    }

    /// The whole grid as a region.
    pub fn full(&self) -> Region {
        Region {
            y0: 0,
            x0: 0,
            y1: self.height,
            x1: self.width,
        }
    }

    fn check(&self, features: &[f32]) -> Result<(), PrimitiveError> {
        if self.is_empty() {
            return Err(PrimitiveError::BadSize {
                what: "feature map",
                message: format!(
                    "{}x{}x{} has a zero dimension",
                    self.channels, self.height, self.width
                ),
            });
        }
        let n = self.len()?;
        if features.len() != n {
            return Err(PrimitiveError::BadSize {
                what: "feature map",
                message: format!(
                    "{} values for {}x{}x{}",
                    features.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
            });
        }
        Ok(())
    }

    fn check_region(&self, r: Region) -> Result<(), PrimitiveError> {
        if r.y0 >= r.y1 || r.x0 >= r.x1 || r.y1 > self.height || r.x1 > self.width {
            return Err(PrimitiveError::BadRegion {
                region: r,
                height: self.height,
                width: self.width,
            });
        }
        Ok(())
    }
}

/// A rectangle of grid cells: rows `y0..y1`, columns `x0..x1` (ends exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First row.
    pub y0: usize,
    /// First column.
    pub x0: usize,
    /// One past the last row.
    pub y1: usize,
    /// One past the last column.
    pub x1: usize,
}

impl Region {
    /// Rows.
    pub fn height(&self) -> usize {
        self.y1.saturating_sub(self.y0)
    }
    /// Columns.
    pub fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }
    /// Cells.
    pub fn cells(&self) -> usize {
        self.height().saturating_mul(self.width())
    }
}

/// The weighted feature sum of a region and its total weight: the two halves of a
/// masked average, kept apart so that several shots or windows can be summed
/// before dividing.
#[derive(Debug, Clone, PartialEq)]
pub struct PooledSum {
    /// `Σ_p w_p · f[c, p]` per channel.
    pub sum: Vec<f64>,
    /// `Σ_p w_p`.
    pub weight: f64,
}

impl PooledSum {
    /// An empty accumulator of `channels` channels.
    pub fn zeros(channels: usize) -> Self {
        Self {
            sum: vec![0.0; channels],
            weight: 0.0,
        }
    }

    /// Adds another partial sum of the same channel count.
    pub fn add(&mut self, other: &PooledSum) -> Result<(), PrimitiveError> {
        if other.sum.len() != self.sum.len() {
            return Err(PrimitiveError::BadSize {
                what: "pooled sum",
                message: format!("{} channels added to {}", other.sum.len(), self.sum.len()),
            });
        }
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.weight += other.weight;
        Ok(())
    }

    /// The masked average `sum / weight` as f32; [`PrimitiveError::EmptyMask`]
    /// when the weight is zero.
    pub fn mean(&self) -> Result<Vec<f32>, PrimitiveError> {
        if !(self.weight > 0.0 && self.weight.is_finite()) {
            return Err(PrimitiveError::EmptyMask);
        }
        let out: Vec<f32> = self.sum.iter().map(|s| (s / self.weight) as f32).collect();
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(PrimitiveError::NonFinite {
                what: "pooled prototype",
                index: i,
            });
        }
        Ok(out)
    }
}

/// Masked sum pooling over `region`: `sum[c] = Σ_{p ∈ region} w_p · f[c, p]` and
/// `weight = Σ_{p ∈ region} w_p`, accumulated in f64.
///
/// `weights` is `height × width`, each in `[0, ∞)` and finite (a soft mask: the
/// fraction of each cell covered by the structure). Pixels of zero weight are not
/// read, so non-finite features there do not matter; a non-finite feature under a
/// positive weight is an error.
pub fn masked_sum_pool(
    features: &[f32],
    grid: Grid,
    weights: &[f32],
    region: Region,
) -> Result<PooledSum, PrimitiveError> {
    grid.check(features)?;
    grid.check_region(region)?;
    let hw = grid.pixels()?;
    if weights.len() != hw {
        return Err(PrimitiveError::BadSize {
            what: "weights",
            message: format!(
                "{} values for a {}x{} grid",
                weights.len(),
                grid.height,
                grid.width
            ),
        });
    }
    let mut out = PooledSum::zeros(grid.channels);
    for y in region.y0..region.y1 {
        for x in region.x0..region.x1 {
            let p = y * grid.width + x;
            let w = weights[p];
            if !(w >= 0.0 && w.is_finite()) {
                return Err(PrimitiveError::BadWeight { index: p, value: w });
            }
            if w == 0.0 {
                continue;
            }
            let w = f64::from(w);
            out.weight += w;
            for (c, s) in out.sum.iter_mut().enumerate() {
                let f = features[c * hw + p];
                if !f.is_finite() {
                    return Err(PrimitiveError::NonFinite {
                        what: "features",
                        index: c * hw + p,
                    });
                }
                *s += w * f64::from(f);
            }
        }
    }
    Ok(out)
}

/// Masked average pooling: [`masked_sum_pool`] divided by its weight.
/// [`PrimitiveError::EmptyMask`] when the weights in the region sum to zero.
pub fn masked_average_pool(
    features: &[f32],
    grid: Grid,
    weights: &[f32],
    region: Region,
) -> Result<Vec<f32>, PrimitiveError> {
    masked_sum_pool(features, grid, weights, region)?.mean()
}

/// Smallest norm accepted for a prototype (below it the direction is noise).
pub const MIN_PROTOTYPE_NORM: f32 = 1e-6;

/// `v / ‖v‖₂`; [`PrimitiveError::ZeroNorm`] (with `index`) when the norm is
/// below [`MIN_PROTOTYPE_NORM`], [`PrimitiveError::NonFinite`] on NaN/∞.
pub fn l2_normalize(v: &[f32], index: usize) -> Result<Vec<f32>, PrimitiveError> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(PrimitiveError::NonFinite {
            what: "prototype",
            index: i,
        });
    }
    let n = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if n.is_nan() || n < f64::from(MIN_PROTOTYPE_NORM) || !n.is_finite() {
        return Err(PrimitiveError::ZeroNorm { index });
    }
    Ok(v.iter().map(|&x| (f64::from(x) / n) as f32).collect())
}

/// Cosine similarity of every pixel of `region` against every prototype.
///
/// `prototypes` is `count × channels`. The result is `count × region.height() ×
/// region.width()`, row-major: `out[j, y, x] = ⟨f(y, x), q_j⟩ / (‖f(y, x)‖ ‖q_j‖)`.
/// A pixel whose feature norm is zero gets similarity 0 against every prototype
/// (it carries no direction); a prototype of zero norm is an error
/// ([`PrimitiveError::ZeroNorm`]), as is any non-finite feature in the region
/// or prototype value.
///
/// Accumulation is in f32 in channel order, over register tiles of 4 prototypes ×
/// 8 pixels (the result does not depend on the tiling), so the cost is
/// `(count + 1) × channels × cells` multiply-adds.
pub fn cosine_similarity(
    features: &[f32],
    grid: Grid,
    region: Region,
    prototypes: &[f32],
    count: usize,
) -> Result<Vec<f32>, PrimitiveError> {
    grid.check(features)?;
    grid.check_region(region)?;
    let c = grid.channels;
    let expected = count
        .checked_mul(c)
        .ok_or_else(|| PrimitiveError::BadSize {
            what: "prototypes",
            message: format!("{count}x{c} overflows"),
        })?;
    if prototypes.len() != expected {
        return Err(PrimitiveError::BadSize {
            what: "prototypes",
            message: format!(
                "{} values for {count} prototypes of {c} channels",
                prototypes.len()
            ),
        });
    }
    if let Some(i) = prototypes.iter().position(|v| !v.is_finite()) {
        return Err(PrimitiveError::NonFinite {
            what: "prototypes",
            index: i,
        });
    }
    let inv_norm: Vec<f32> = prototypes
        .chunks_exact(c)
        .enumerate()
        .map(|(j, q)| {
            let n = q
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            if n >= f64::from(MIN_PROTOTYPE_NORM) && n.is_finite() {
                Ok((1.0 / n) as f32)
            } else {
                Err(PrimitiveError::ZeroNorm { index: j })
            }
        })
        .collect::<Result<_, _>>()?;
    let hw = grid.pixels()?;
    let (rh, rw) = (region.height(), region.width());
    let cells = region.cells();
    let mut out = vec![0.0f32; count * cells];
    // Prototypes in blocks of PB, transposed to `[channel][PB]` (zero-padded), so the
    // inner loop keeps a PB × PX accumulator tile in registers and reads each
    // feature vector of PX pixels once per block.
    let blocks = count.div_ceil(PB);
    let mut qt = vec![0.0f32; blocks * c * PB];
    for j in 0..count {
        let (b, jj) = (j / PB, j % PB);
        for ch in 0..c {
            qt[(b * c + ch) * PB + jj] = prototypes[j * c + ch];
        }
    }
    let mut sq = vec![0.0f32; rw];
    for (ry, y) in (region.y0..region.y1).enumerate() {
        let row0 = y * grid.width + region.x0;
        sq.iter_mut().for_each(|v| *v = 0.0);
        for ch in 0..c {
            let row = &features[ch * hw + row0..ch * hw + row0 + rw];
            for (s, &f) in sq.iter_mut().zip(row) {
                *s += f * f;
            }
        }
        if let Some(x) = sq.iter().position(|v| !v.is_finite()) {
            // find the culprit for the message
            let index = (0..c)
                .map(|ch| ch * hw + row0 + x)
                .find(|&i| !features[i].is_finite())
                .unwrap_or(row0 + x);
            return Err(PrimitiveError::NonFinite {
                what: "features",
                index,
            });
        }
        for b in 0..blocks {
            let q = &qt[b * c * PB..(b + 1) * c * PB];
            let mut x = 0;
            while x < rw {
                let n = PX.min(rw - x);
                let mut acc = [[0.0f32; PX]; PB];
                if n == PX {
                    for ch in 0..c {
                        let start = ch * hw + row0 + x;
                        let Ok(f) = <&[f32; PX]>::try_from(&features[start..start + PX]) else {
                            continue;
                        };
                        let qc = &q[ch * PB..ch * PB + PB];
                        for (a, &qj) in acc.iter_mut().zip(qc) {
                            for (a, &f) in a.iter_mut().zip(f) {
                                *a += qj * f;
                            }
                        }
                    }
                } else {
                    for ch in 0..c {
                        let start = ch * hw + row0 + x;
                        let f = &features[start..start + n];
                        let qc = &q[ch * PB..ch * PB + PB];
                        for (a, &qj) in acc.iter_mut().zip(qc) {
                            for (a, &f) in a.iter_mut().zip(f) {
                                *a += qj * f;
                            }
                        }
                    }
                }
                for (jj, a) in acc.iter().enumerate() {
                    let j = b * PB + jj;
                    if j >= count {
                        break;
                    }
                    let dst = &mut out[j * cells + ry * rw + x..j * cells + ry * rw + x + n];
                    for ((d, &a), &s) in dst.iter_mut().zip(a).zip(&sq[x..x + n]) {
                        *d = if s > 0.0 {
                            (a * inv_norm[j] / s.sqrt()).clamp(-1.0, 1.0)
                        } else {
                            0.0
                        };
                    }
                }
                x += n;
            }
        }
    }
    debug_assert_eq!(out.len(), count * rh * rw);
    Ok(out)
}

/// Prototypes per register tile of [`cosine_similarity`].
const PB: usize = 4;
/// Pixels per register tile of [`cosine_similarity`].
const PX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(c: usize, h: usize, w: usize) -> Grid {
        Grid {
            channels: c,
            height: h,
            width: w,
        }
    }

    #[test]
    fn pooling_is_the_weighted_mean() {
        let g = grid(2, 2, 3);
        // channel 0 = pixel index, channel 1 = 10 * pixel index
        let f: Vec<f32> = (0..6)
            .map(|p| p as f32)
            .chain((0..6).map(|p| 10.0 * p as f32))
            .collect();
        let w = [1.0, 0.0, 0.0, 0.0, 0.5, 0.0];
        let m = masked_average_pool(&f, g, &w, g.full()).unwrap();
        // (1*0 + 0.5*4) / 1.5
        assert!((m[0] - 4.0 / 3.0).abs() < 1e-6);
        assert!((m[1] - 40.0 / 3.0).abs() < 1e-5);
        // a window that excludes pixel 0
        let r = Region {
            y0: 1,
            x0: 0,
            y1: 2,
            x1: 3,
        };
        assert_eq!(masked_average_pool(&f, g, &w, r).unwrap(), vec![4.0, 40.0]);
        // nothing under the mask
        let r = Region {
            y0: 0,
            x0: 1,
            y1: 1,
            x1: 3,
        };
        assert_eq!(
            masked_average_pool(&f, g, &w, r),
            Err(PrimitiveError::EmptyMask)
        );
    }

    #[test]
    fn pooling_refuses_bad_input() {
        let g = grid(1, 2, 2);
        let f = [1.0, 2.0, 3.0, f32::NAN];
        assert!(matches!(
            masked_average_pool(&f, g, &[1.0, 0.0, 0.0, 1.0], g.full()),
            Err(PrimitiveError::NonFinite { index: 3, .. })
        ));
        // NaN under zero weight is never read
        assert_eq!(
            masked_average_pool(&f, g, &[1.0, 0.0, 0.0, 0.0], g.full()).unwrap(),
            vec![1.0]
        );
        assert!(matches!(
            masked_average_pool(&f, g, &[-1.0, 0.0, 0.0, 0.0], g.full()),
            Err(PrimitiveError::BadWeight { index: 0, .. })
        ));
        assert!(matches!(
            masked_average_pool(&f, g, &[1.0], g.full()),
            Err(PrimitiveError::BadSize { .. })
        ));
        assert!(matches!(
            masked_average_pool(
                &f,
                g,
                &[1.0; 4],
                Region {
                    y0: 0,
                    x0: 0,
                    y1: 3,
                    x1: 1
                }
            ),
            Err(PrimitiveError::BadRegion { .. })
        ));
        assert!(matches!(
            masked_average_pool(&[], grid(0, 2, 2), &[1.0; 4], g.full()),
            Err(PrimitiveError::BadSize { .. })
        ));
    }

    #[test]
    fn pooled_sums_add_across_shots() {
        let g = grid(1, 1, 2);
        let a = masked_sum_pool(&[2.0, 4.0], g, &[1.0, 1.0], g.full()).unwrap();
        let b = masked_sum_pool(&[10.0, 0.0], g, &[1.0, 0.0], g.full()).unwrap();
        let mut s = PooledSum::zeros(1);
        s.add(&a).unwrap();
        s.add(&b).unwrap();
        assert_eq!(s.mean().unwrap(), vec![16.0 / 3.0]);
        assert!(s.add(&PooledSum::zeros(2)).is_err());
        assert_eq!(PooledSum::zeros(3).mean(), Err(PrimitiveError::EmptyMask));
    }

    #[test]
    fn cosine_matches_the_definition() {
        let g = grid(3, 2, 2);
        // pixel p has feature (p, 1, 0); pixel 3 is all zero
        let mut f = vec![0.0f32; 12];
        for p in 0..3 {
            f[p] = p as f32;
            f[4 + p] = 1.0;
        }
        let protos = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0];
        let s = cosine_similarity(&f, g, g.full(), &protos, 2).unwrap();
        for p in 0..3 {
            let n = ((p * p + 1) as f32).sqrt();
            assert!((s[p] - p as f32 / n).abs() < 1e-6);
            assert!((s[4 + p] - 1.0 / n).abs() < 1e-6);
        }
        assert_eq!((s[3], s[7]), (0.0, 0.0));
        // a sub-region
        let r = Region {
            y0: 0,
            x0: 1,
            y1: 2,
            x1: 2,
        };
        let s = cosine_similarity(&f, g, r, &protos, 2).unwrap();
        assert_eq!(s.len(), 4);
        assert!((s[0] - 1.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn cosine_refuses_bad_prototypes_and_features() {
        let g = grid(2, 1, 2);
        let f = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(
            cosine_similarity(&f, g, g.full(), &[1.0, 0.0, 0.0, 0.0], 2),
            Err(PrimitiveError::ZeroNorm { index: 1 })
        );
        assert!(matches!(
            cosine_similarity(&f, g, g.full(), &[f32::NAN, 0.0], 1),
            Err(PrimitiveError::NonFinite { .. })
        ));
        assert!(matches!(
            cosine_similarity(&[1.0, f32::INFINITY, 0.0, 1.0], g, g.full(), &[1.0, 0.0], 1),
            Err(PrimitiveError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            cosine_similarity(&f, g, g.full(), &[1.0, 0.0, 0.0], 2),
            Err(PrimitiveError::BadSize { .. })
        ));
        assert!(cosine_similarity(&f, g, g.full(), &[], 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn normalize_refuses_zero_and_nan() {
        assert_eq!(l2_normalize(&[3.0, 4.0], 0).unwrap(), vec![0.6, 0.8]);
        assert_eq!(
            l2_normalize(&[0.0, 0.0], 5),
            Err(PrimitiveError::ZeroNorm { index: 5 })
        );
        assert!(matches!(
            l2_normalize(&[f32::NAN], 0),
            Err(PrimitiveError::NonFinite { .. })
        ));
    }
}
