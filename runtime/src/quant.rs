//! Weight-only quantization of a bundle's tensors, dequantized exactly at load.
//!
//! A quantized bundle stores some graph initializers (see [`crate::onnx_weights`]) in a
//! reduced form, and its manifest's `quantization` map says how, per tensor:
//!
//! * `per_channel {axis, scales, zero_points}`: `i8` (or `u8`) values with one `f32`
//!   (or `f16`) scale (and optionally one zero point of the values' type) per slice
//!   along `axis`;
//!   `value = scale[c] · (q − zero_point[c])`. edgeseg's quantizer writes symmetric `i8`
//!   per output channel (no zero points).
//! * `per_tensor {scale, zero_point}`: the same with one scale for the whole tensor.
//! * `cast`: `f16` or `bf16` values, widened to `f32`.
//!
//! A tensor without an entry must be `f32`. [`dequantize`] turns any of these into the
//! `f32` values the graph declares, so tract sees a float graph: no QDQ operator is
//! involved, which avoids tract 0.23.9's per-channel QDQ trap (see
//! `runtime/tests/tract_qdq_pin.rs`). The dequantization is exact: `(q − z)` is an
//! integer of at most 9 bits, so its product with an `f32` scale is correctly rounded
//! once, the same value on every backend.
//!
//! [`quantize_i8_per_channel`] and [`f32_to_f16`] are the quantizer's side (used by
//! `edgeseg-tools quantize`); they live here so that the round trip is tested in one place.

use half::{bf16, f16};

use crate::bundle::{Bundle, DType, Quantization, TensorView};

/// Why a tensor could not be quantized or dequantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// The tensor's stored type does not fit its scheme.
    #[error("tensor `{tensor}`: stored as {dtype:?}, which scheme {scheme} does not allow")]
    DType {
        /// Tensor name.
        tensor: String,
        /// Stored element type.
        dtype: DType,
        /// The scheme, in words.
        scheme: &'static str,
    },
    /// Shapes, axes or lengths do not agree.
    #[error("tensor `{tensor}`: {reason}")]
    Shape {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A scale or zero point is missing, not finite, not positive or out of range.
    #[error("tensor `{tensor}`: {reason}")]
    Parameters {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A value cannot be represented in the target type (NaN, infinite, too large).
    #[error("tensor `{tensor}`: value {value} at index {index} cannot be quantized: {reason}")]
    Value {
        /// Tensor name.
        tensor: String,
        /// Flat element index.
        index: usize,
        /// The value.
        value: f32,
        /// Why.
        reason: &'static str,
    },
}

/// Symmetric per-channel `i8` values and their scales.
#[derive(Debug, Clone, PartialEq)]
pub struct PerChannelI8 {
    /// Quantized values, same layout as the input.
    pub values: Vec<i8>,
    /// One scale per slice along the axis (`> 0`, finite).
    pub scales: Vec<f32>,
    /// Every scale is exactly a normal `f16`, so they may be stored as `f16`
    /// (half the bytes) with no change in value.
    pub scales_fit_f16: bool,
}

/// Largest magnitude of a symmetric `i8` value (−128 is not used, so the range is
/// symmetric and negation is exact).
pub const I8_MAX: f32 = 127.0;

fn elem_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// `(outer, channels, inner)` for a row-major `shape` split at `axis`.
fn split_axis(shape: &[usize], axis: usize) -> Option<(usize, usize, usize)> {
    let channels = *shape.get(axis)?;
    let outer = elem_count(&shape[..axis])?;
    let inner = elem_count(&shape[axis + 1..])?;
    Some((outer, channels, inner))
}

/// Quantizes `values` (row-major, `shape`) to symmetric `i8` with one scale per
/// slice along `axis`: `scale = max|v| / 127`, `q = round(v / scale)`. A slice of
/// zeros gets scale 1 (its values quantize to 0 exactly). Every value's error is at
/// most half its slice's scale.
pub fn quantize_i8_per_channel(
    tensor: &str,
    values: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<PerChannelI8, QuantError> {
    let shape_err = |reason: String| QuantError::Shape {
        tensor: tensor.to_string(),
        reason,
    };
    let (outer, channels, inner) = split_axis(shape, axis)
        .ok_or_else(|| shape_err(format!("axis {axis} is invalid for shape {shape:?}")))?;
    if elem_count(shape) != Some(values.len()) {
        return Err(shape_err(format!(
            "{} values for shape {shape:?}",
            values.len()
        )));
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantError::Value {
            tensor: tensor.to_string(),
            index,
            value,
            reason: "not finite",
        });
    }
    let mut max_abs = vec![0f32; channels];
    for o in 0..outer {
        for (c, m) in max_abs.iter_mut().enumerate() {
            let start = (o * channels + c) * inner;
            for v in &values[start..start + inner] {
                *m = m.max(v.abs());
            }
        }
    }
    let mut scales: Vec<f32> = max_abs
        .iter()
        .map(|&m| if m > 0.0 { m / I8_MAX } else { 1.0 })
        .collect();
    // Round every scale up to the next f16 when all of them are normal f16
    // numbers: the scale table then takes half the bytes, and rounding up keeps
    // every |v| / scale within 127 (the step grows by at most 2^-11).
    let f16_scales: Option<Vec<f32>> = scales.iter().map(|&s| f16_round_up(s)).collect();
    let scales_fit_f16 = f16_scales.is_some();
    if let Some(f) = f16_scales {
        scales = f;
    }
    // a tiny max|v| can give a scale that underflows to 0
    if let Some(c) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(QuantError::Parameters {
            tensor: tensor.to_string(),
            reason: format!(
                "channel {c}: max |value| {} gives scale {}",
                max_abs[c], scales[c]
            ),
        });
    }
    let mut q = vec![0i8; values.len()];
    for o in 0..outer {
        for (c, &s) in scales.iter().enumerate() {
            let start = (o * channels + c) * inner;
            for (dst, &v) in q[start..start + inner]
                .iter_mut()
                .zip(&values[start..start + inner])
            {
                // v / s is within ±127 (up to rounding); the clamp keeps it there
                *dst = (v / s).round().clamp(-I8_MAX, I8_MAX) as i8;
            }
        }
    }
    Ok(PerChannelI8 {
        values: q,
        scales,
        scales_fit_f16,
    })
}

/// The smallest normal `f16` that is at least `s` (as `f32`), or `None` when `s`
/// is not finite and positive or no normal `f16` holds it without a large
/// relative error (below `f16::MIN_POSITIVE` or above `f16::MAX`).
fn f16_round_up(s: f32) -> Option<f32> {
    if !(s.is_finite() && s >= f16::MIN_POSITIVE.to_f32() && s <= f16::MAX.to_f32()) {
        return None;
    }
    let mut h = f16::from_f32(s);
    if h.to_f32() < s {
        // positive finite: the next representable value up is the next bit pattern
        h = f16::from_bits(h.to_bits() + 1);
    }
    (h.is_finite() && h.to_f32() >= s).then(|| h.to_f32())
}

/// `values` as `f16`; a NaN, an infinity or a magnitude beyond `f16::MAX` is an error
/// (it would silently become infinite).
pub fn f32_to_f16(tensor: &str, values: &[f32]) -> Result<Vec<f16>, QuantError> {
    values
        .iter()
        .enumerate()
        .map(|(index, &v)| {
            let h = f16::from_f32(v);
            if !v.is_finite() || !h.is_finite() {
                Err(QuantError::Value {
                    tensor: tensor.to_string(),
                    index,
                    value: v,
                    reason: "outside the f16 range",
                })
            } else {
                Ok(h)
            }
        })
        .collect()
}

/// Little-endian bytes of `values`.
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian `f16` bytes of `values` (exact for values that are `f16`
/// numbers, such as the scales of a [`PerChannelI8`] with `scales_fit_f16`).
pub fn f16_le_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

fn check_len(view: &TensorView<'_>) -> Result<(usize, Vec<usize>), QuantError> {
    let shape_err = |reason: String| QuantError::Shape {
        tensor: view.name.to_string(),
        reason,
    };
    let shape: Vec<usize> = view
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| shape_err(format!("shape {:?} does not fit in memory", view.shape)))?;
    let n =
        elem_count(&shape).ok_or_else(|| shape_err(format!("shape {:?} overflows", view.shape)))?;
    let size = view.dtype.size() as usize;
    if n.checked_mul(size) != Some(view.bytes.len()) {
        return Err(shape_err(format!(
            "{} bytes for {n} elements of {:?}",
            view.bytes.len(),
            view.dtype
        )));
    }
    Ok((n, shape))
}

fn read_f16(view: &TensorView<'_>) -> Vec<f32> {
    view.bytes
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

fn read_f32(view: &TensorView<'_>) -> Vec<f32> {
    view.bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Integer values of an `i8`/`u8` tensor, as `i32`.
fn read_int8(view: &TensorView<'_>, scheme: &'static str) -> Result<Vec<i32>, QuantError> {
    match view.dtype {
        DType::I8 => Ok(view.bytes.iter().map(|&b| i32::from(b as i8)).collect()),
        DType::U8 => Ok(view.bytes.iter().map(|&b| i32::from(b)).collect()),
        dtype => Err(QuantError::DType {
            tensor: view.name.to_string(),
            dtype,
            scheme,
        }),
    }
}

fn check_scale(tensor: &str, what: String, s: f32) -> Result<f32, QuantError> {
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err(QuantError::Parameters {
            tensor: tensor.to_string(),
            reason: format!("{what} is {s}, not a finite positive number"),
        })
    }
}

/// The `f32` values of tensor `view` under `scheme` (`None`: unquantized, must be
/// `f32`). `lookup` finds the scale and zero-point tensors a per-channel scheme
/// names. Never panics on malformed input; every mismatch is an error.
pub fn dequantize<'a>(
    view: &TensorView<'_>,
    scheme: Option<&Quantization>,
    lookup: impl Fn(&str) -> Option<TensorView<'a>>,
) -> Result<Vec<f32>, QuantError> {
    let name = view.name;
    let (n, shape) = check_len(view)?;
    let params = |reason: String| QuantError::Parameters {
        tensor: name.to_string(),
        reason,
    };
    match scheme {
        None => match view.dtype {
            DType::F32 => Ok(read_f32(view)),
            dtype => Err(QuantError::DType {
                tensor: name.to_string(),
                dtype,
                scheme: "none (no quantization entry)",
            }),
        },
        Some(Quantization::Cast) => match view.dtype {
            DType::F16 => Ok(view
                .bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            DType::Bf16 => Ok(view
                .bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            dtype => Err(QuantError::DType {
                tensor: name.to_string(),
                dtype,
                scheme: "cast",
            }),
        },
        Some(Quantization::PerTensor { scale, zero_point }) => {
            let q = read_int8(view, "per_tensor")?;
            let s = check_scale(name, "scale".into(), *scale)?;
            let range = if view.dtype == DType::I8 {
                -128..=127
            } else {
                0..=255
            };
            if !range.contains(zero_point) {
                return Err(params(format!(
                    "zero point {zero_point} is outside the {:?} range",
                    view.dtype
                )));
            }
            Ok(q.iter().map(|&v| (v - zero_point) as f32 * s).collect())
        }
        Some(Quantization::PerChannel {
            axis,
            scales,
            zero_points,
        }) => {
            let q = read_int8(view, "per_channel")?;
            let axis = *axis as usize;
            let (outer, channels, inner) =
                split_axis(&shape, axis).ok_or_else(|| QuantError::Shape {
                    tensor: name.to_string(),
                    reason: format!("axis {axis} is invalid for shape {shape:?}"),
                })?;
            let sv = lookup(scales)
                .ok_or_else(|| params(format!("scale tensor `{scales}` is missing")))?;
            if !matches!(sv.dtype, DType::F32 | DType::F16) || sv.shape != [channels as u64] {
                return Err(params(format!(
                    "scale tensor `{scales}` is {:?} {:?}, expected F32 or F16 [{channels}]",
                    sv.dtype, sv.shape
                )));
            }
            let s: Vec<f32> = scale_values(&sv)?
                .into_iter()
                .enumerate()
                .map(|(c, s)| check_scale(name, format!("scale {c} (`{scales}`)"), s))
                .collect::<Result<_, _>>()?;
            let z: Vec<i32> = match zero_points {
                None => vec![0; channels],
                Some(zn) => {
                    let zv = lookup(zn)
                        .ok_or_else(|| params(format!("zero-point tensor `{zn}` is missing")))?;
                    if zv.dtype != view.dtype || zv.shape != [channels as u64] {
                        return Err(params(format!(
                            "zero-point tensor `{zn}` is {:?} {:?}, expected {:?} [{channels}]",
                            zv.dtype, zv.shape, view.dtype
                        )));
                    }
                    check_len(&zv)?;
                    read_int8(&zv, "per_channel")?
                }
            };
            let mut out = Vec::with_capacity(n);
            for _ in 0..outer {
                for c in 0..channels {
                    let start = out.len();
                    out.extend(
                        q[start..start + inner]
                            .iter()
                            .map(|&v| (v - z[c]) as f32 * s[c]),
                    );
                }
            }
            Ok(out)
        }
    }
}

/// The values of a per-channel scale tensor (`f32` or `f16`, which widens
/// exactly), unchecked otherwise: [`dequantize`] checks its shape and that every
/// scale is finite and positive.
pub fn scale_values(view: &TensorView<'_>) -> Result<Vec<f32>, QuantError> {
    match view.dtype {
        DType::F32 => {
            check_len(view)?;
            Ok(read_f32(view))
        }
        DType::F16 => {
            check_len(view)?;
            Ok(read_f16(view))
        }
        dtype => Err(QuantError::DType {
            tensor: view.name.to_string(),
            dtype,
            scheme: "per_channel scales",
        }),
    }
}

/// The `f32` values of tensor `name` of `bundle`, dequantized by the scheme its
/// manifest records (see [`dequantize`]); `None` if there is no such tensor.
pub fn tensor_f32(bundle: &Bundle, name: &str) -> Option<Result<Vec<f32>, QuantError>> {
    let view = bundle.tensor(name)?;
    let scheme = bundle.manifest().quantization.get(name);
    Some(dequantize(&view, scheme, |n| bundle.tensor(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(name: &'a str, dtype: DType, shape: &'a [u64], bytes: &'a [u8]) -> TensorView<'a> {
        TensorView {
            name,
            dtype,
            shape,
            bytes,
        }
    }

    /// Deterministic values in [-a, a] with a different range per channel.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn per_channel_round_trip_is_within_half_a_step_on_every_axis() {
        let shape = [3usize, 4, 2, 5];
        let n: usize = shape.iter().product();
        for axis in 0..shape.len() {
            let mut v = values(n, 7 + axis as u64);
            // channel-dependent magnitudes, so one scale for all would be visibly worse
            for (i, x) in v.iter_mut().enumerate() {
                let (_, c, inner) = split_axis(&shape, axis).unwrap();
                let ch = (i / inner) % c;
                *x *= 10f32.powi(ch as i32 - 1);
            }
            let q = quantize_i8_per_channel("w", &v, &shape, axis).unwrap();
            assert_eq!(q.scales.len(), shape[axis]);
            let bytes: Vec<u8> = q.values.iter().map(|&x| x as u8).collect();
            let sb = f32_le_bytes(&q.scales);
            let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let scheme = Quantization::PerChannel {
                axis: axis as u32,
                scales: "w.scale".into(),
                zero_points: None,
            };
            let scale_shape = [shape[axis] as u64];
            let d = dequantize(
                &view("w", DType::I8, &shape64, &bytes),
                Some(&scheme),
                |n| (n == "w.scale").then(|| view("w.scale", DType::F32, &scale_shape, &sb)),
            )
            .unwrap();
            let (outer, channels, inner) = split_axis(&shape, axis).unwrap();
            let mut i = 0;
            for _ in 0..outer {
                for c in 0..channels {
                    for _ in 0..inner {
                        let s = q.scales[c];
                        // reference in f64: exact, then rounded once to f32
                        let reference = (f64::from(q.values[i]) * f64::from(s)) as f32;
                        assert_eq!(d[i].to_bits(), reference.to_bits(), "axis {axis} index {i}");
                        assert!(
                            (d[i] - v[i]).abs() <= 0.5 * s * (1.0 + 1e-5),
                            "axis {axis} index {i}: {} vs {} (scale {s})",
                            d[i],
                            v[i]
                        );
                        i += 1;
                    }
                }
            }
            // the largest magnitude of each channel maps to ±127
            for c in 0..channels {
                let max_q = (0..n)
                    .filter(|i| (i / inner) % channels == c)
                    .map(|i| q.values[i].unsigned_abs())
                    .max()
                    .unwrap();
                assert_eq!(max_q, 127, "axis {axis} channel {c}");
            }
        }
    }

    #[test]
    fn f16_scales_are_exact_rounded_up_and_refused_when_subnormal() {
        let shape = [6usize, 7];
        let mut v = values(42, 3);
        for (i, x) in v.iter_mut().enumerate() {
            *x *= 10f32.powi((i / 7) as i32 - 2);
        }
        let q = quantize_i8_per_channel("w", &v, &shape, 0).unwrap();
        assert!(q.scales_fit_f16);
        for (c, &s) in q.scales.iter().enumerate() {
            let max_abs = v[c * 7..(c + 1) * 7]
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()));
            assert_eq!(f16::from_f32(s).to_f32(), s, "channel {c}: not an f16");
            assert!(s >= max_abs / I8_MAX, "channel {c}: rounded down");
            assert!(
                s <= max_abs / I8_MAX * (1.0 + 1.0 / 1024.0),
                "channel {c}: too coarse"
            );
        }
        // stored as f16 or f32, the scales dequantize to the same values
        let bytes: Vec<u8> = q.values.iter().map(|&x| x as u8).collect();
        let scheme = Quantization::PerChannel {
            axis: 0,
            scales: "s".into(),
            zero_points: None,
        };
        let (s16, s32) = (f16_le_bytes(&q.scales), f32_le_bytes(&q.scales));
        let deq = |dtype, sb: &[u8]| {
            dequantize(
                &view("w", DType::I8, &[6, 7], &bytes),
                Some(&scheme),
                |_| Some(view("s", dtype, &[6], sb)),
            )
            .unwrap()
        };
        assert_eq!(deq(DType::F16, &s16), deq(DType::F32, &s32));
        assert_eq!(s16.len() * 2, s32.len());
        // a channel whose scale is below f16's normal range keeps f32 scales
        let q = quantize_i8_per_channel("w", &[1.0, 0.5, 1e-3, -1e-3], &[2, 2], 0).unwrap();
        assert!(!q.scales_fit_f16);
        assert_eq!(q.scales[1], 1e-3 / I8_MAX);
        assert_eq!(f16_round_up(f32::NAN), None);
        assert_eq!(f16_round_up(1.0), Some(1.0));
        assert_eq!(f16_round_up(1e6), None);
    }

    #[test]
    fn zero_channel_and_non_finite_values() {
        let q = quantize_i8_per_channel("w", &[0.0, 0.0, 1.0, -2.0], &[2, 2], 0).unwrap();
        assert_eq!(q.scales[0], 1.0);
        assert_eq!(&q.values[..2], &[0, 0]);
        assert_eq!(q.values[3], -127);
        let e = quantize_i8_per_channel("w", &[0.0, f32::NAN], &[2], 0).unwrap_err();
        assert!(matches!(e, QuantError::Value { index: 1, .. }), "{e}");
        assert!(quantize_i8_per_channel("w", &[1.0; 4], &[2, 2], 2).is_err());
        assert!(quantize_i8_per_channel("w", &[1.0; 3], &[2, 2], 0).is_err());
    }

    #[test]
    fn f16_cast_round_trip_and_range() {
        let v = values(1000, 3);
        let h = f32_to_f16("w", &v).unwrap();
        let bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
        let d = dequantize(
            &view("w", DType::F16, &[1000], &bytes),
            Some(&Quantization::Cast),
            |_| None,
        )
        .unwrap();
        for (a, b) in v.iter().zip(&d) {
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-11) + 1e-7,
                "{a} vs {b}"
            );
        }
        assert!(f32_to_f16("w", &[1.0, 70000.0]).is_err());
        assert!(f32_to_f16("w", &[f32::INFINITY]).is_err());
    }

    #[test]
    fn per_tensor_and_zero_points() {
        let d = dequantize(
            &view("w", DType::U8, &[3], &[0, 128, 255]),
            Some(&Quantization::PerTensor {
                scale: 0.5,
                zero_point: 128,
            }),
            |_| None,
        )
        .unwrap();
        assert_eq!(d, vec![-64.0, 0.0, 63.5]);
        let sb = f32_le_bytes(&[2.0, 0.25]);
        let zb = [1u8, (-4i8) as u8];
        let d = dequantize(
            &view("w", DType::I8, &[2, 2], &[3, (-1i8) as u8, 4, 0]),
            Some(&Quantization::PerChannel {
                axis: 0,
                scales: "s".into(),
                zero_points: Some("z".into()),
            }),
            |n| match n {
                "s" => Some(view("s", DType::F32, &[2], &sb)),
                "z" => Some(view("z", DType::I8, &[2], &zb)),
                _ => None,
            },
        )
        .unwrap();
        assert_eq!(d, vec![4.0, -4.0, 2.0, 1.0]);
    }

    #[test]
    fn malformed_schemes_are_errors_not_panics() {
        let sb = f32_le_bytes(&[1.0, 1.0]);
        let bad_scale = f32_le_bytes(&[1.0, 0.0]);
        let nan_scale = f32_le_bytes(&[f32::NAN, 1.0]);
        let pc = |axis| Quantization::PerChannel {
            axis,
            scales: "s".into(),
            zero_points: None,
        };
        let w = [1u8, 2, 3, 4];
        let wv = view("w", DType::I8, &[2, 2], &w);
        // f32 tensor declared per-channel, i8 tensor without an entry, f32 declared cast
        let f = f32_le_bytes(&[1.0; 4]);
        let fv = view("w", DType::F32, &[2, 2], &f);
        assert!(matches!(
            dequantize(&fv, Some(&pc(0)), |_| None),
            Err(QuantError::DType { .. })
        ));
        assert!(matches!(
            dequantize(&wv, None, |_| None),
            Err(QuantError::DType { .. })
        ));
        assert!(matches!(
            dequantize(&fv, Some(&Quantization::Cast), |_| None),
            Err(QuantError::DType { .. })
        ));
        // missing scales, wrong axis, wrong scale shape, zero and NaN scales
        assert!(dequantize(&wv, Some(&pc(0)), |_| None).is_err());
        assert!(dequantize(&wv, Some(&pc(2)), |_| Some(view(
            "s",
            DType::F32,
            &[2],
            &sb
        )))
        .is_err());
        assert!(dequantize(&wv, Some(&pc(0)), |_| Some(view(
            "s",
            DType::F32,
            &[1],
            &sb[..4]
        )))
        .is_err());
        assert!(dequantize(&wv, Some(&pc(0)), |_| Some(view(
            "s",
            DType::F32,
            &[2],
            &bad_scale
        )))
        .is_err());
        assert!(dequantize(&wv, Some(&pc(0)), |_| Some(view(
            "s",
            DType::F32,
            &[2],
            &nan_scale
        )))
        .is_err());
        // byte length that does not match the shape, huge shapes, bad per-tensor parameters
        assert!(
            dequantize(&view("w", DType::I8, &[2, 3], &w), Some(&pc(0)), |_| Some(
                view("s", DType::F32, &[2], &sb)
            ))
            .is_err()
        );
        assert!(dequantize(
            &view("w", DType::I8, &[u64::MAX, 2], &w),
            Some(&pc(0)),
            |_| None
        )
        .is_err());
        let pt = |scale, zero_point| Quantization::PerTensor { scale, zero_point };
        assert!(dequantize(&wv, Some(&pt(0.0, 0)), |_| None).is_err());
        assert!(dequantize(&wv, Some(&pt(1.0, 200)), |_| None).is_err());
        assert!(dequantize(&wv, Some(&pt(f32::INFINITY, 0)), |_| None).is_err());
    }
}
