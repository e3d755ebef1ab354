//! Tolerance tiers of the GPU parity tests.
//!
//! * [`F32`]: f32 kernels against the f64-accumulating references, 1e-5 relative.
//! * [`F16`]: f16 inputs with f32 accumulation (f16 output), 1e-3 relative.
//! * int8 and the pre/post-processing kernels: bit-exact (`assert_eq!`).
//!
//! "Relative" is taken against `max(|want|, floor)`, where `floor` is the scale
//! of the quantity (e.g. the largest |value| of the output, or 1 for normalized
//! outputs), so values that cancel to near zero are not held to a relative bound
//! their inputs cannot carry.

/// A tolerance tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tier {
    /// Relative bound.
    pub rel: f64,
}

/// f32 tier.
pub const F32: Tier = Tier { rel: 1e-5 };
/// f16-in / f32-accumulate tier.
pub const F16: Tier = Tier { rel: 1e-3 };

/// Checks `got` against `want` elementwise: `|g − w| ≤ rel · max(|w|, floor)`.
/// On failure, names the worst element.
pub fn check_close(got: &[f32], want: &[f32], tier: Tier, floor: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} != {}", got.len(), want.len()));
    }
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let err = (g - w).abs() / w.abs().max(floor);
        let bad = err.is_nan() || err > tier.rel;
        if bad && worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
            worst = Some((i, err));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, e)) => Err(format!(
            "element {i}: got {} want {} (relative error {e:.3e} > {:.0e})",
            got[i], want[i], tier.rel
        )),
    }
}

/// The largest |value| of a slice (a natural `floor` for [`check_close`]).
pub fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |a, &x| a.max(f64::from(x).abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_accept_and_reject() {
        assert!(check_close(&[1.0, 2.0], &[1.0, 2.00001], F32, 0.0).is_ok());
        assert!(check_close(&[1.0, 2.001], &[1.0, 2.0], F32, 0.0).is_err());
        assert!(check_close(&[1.0005], &[1.0], F16, 0.0).is_ok());
        assert!(check_close(&[1e-9], &[0.0], F32, 1.0).is_ok());
        assert!(check_close(&[f32::NAN], &[0.0], F32, 1.0).is_err());
        assert!(check_close(&[1.0], &[1.0, 2.0], F32, 1.0).is_err());
    }
}
