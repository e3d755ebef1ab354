//! edgeseg's own tract ops, patched into the plans the CPU backend builds:
//!
//! - a fused row softmax, registered into optimized plans by
//!   [`fuse_row_softmax`] (below);
//! - [`ConvTranspose2x2`], [`FewRowsMatMul`], [`Conv3x3`] and
//!   [`AxisLayerNorm`], patched into decluttered models (before tract's
//!   optimizer) by [`fuse_decluttered`], where tract 0.23.9's own lowering
//!   is slow for the shapes edge-s and LiteMedSAM use
//!   (`docs/perf/edge-s.md`).
//!
//! Every op is checked against the tract ops it replaces (unit tests in
//! `fused_tests`), and whole models against candle and the reference kernels.
//! Setting `EDGESEG_PLAIN_TRACT` builds the backend's plans without them.
//!
//! The row softmax:
//!
//! The profile of the LiteMedSAM plans (`edgeseg bench --profile`,
//! `docs/perf/tract-cpu.md`) showed tract 0.23.9 slow on the attention
//! softmaxes of TinyViT and SAM's decoder:
//!
//! - tract's vectorized softmax row kernel only runs on rows whose length is
//!   a multiple of 4; TinyViT's 7×7 windows give rows of 49, the decoder's
//!   image-to-token attention rows of 7, and those go through a per-row path
//!   of three kernel calls with a large fixed cost per row;
//! - the relative-position bias, a constant `1×H×N×N` added to the
//!   `B×H×N×N` scores, is not "unicast-aligned" for tract (H·N·N is not a
//!   multiple of 32), so the `Add` runs on tract's generic broadcasting path.
//!
//! [`RowSoftmax`] computes `softmax(x + bias)` over the last axis in one pass
//! per row (bias optional, broadcast over the leading axes), with a
//! vectorizable polynomial `exp` (Cephes `expf`, relative error about 1e-7),
//! rows split over tract's thread pool. No `unsafe`.

mod conv3x3;
mod conv_transpose;
mod few_rows_matmul;
mod layer_norm;
mod row_kernels;

pub use conv3x3::Conv3x3;
pub use conv_transpose::ConvTranspose2x2;
pub use few_rows_matmul::FewRowsMatMul;
pub use layer_norm::AxisLayerNorm;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// `softmax(x + bias)` over the last axis of an f32 tensor. Inputs: `x`, and
/// optionally a constant `bias` whose shape is `x`'s with leading axes of 1.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct RowSoftmax;

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "RowSoftmax".into()
    }

    op_as_typed_op!();
}

/// `e^x` for `x ≤ 0` (inputs are clamped to `[-87, 0]`): Cephes `expf`.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // round-to-nearest by the 1.5·2^23 trick (vectorizes without SSE4.1)
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let k = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - k * C1 - k * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^k, k in [-126, 0]; wrapping ops: no overflow-check branch, so the
    // loop calling this vectorizes in every profile
    let scale = f32::from_bits(((k as i32).wrapping_add(127) as u32).wrapping_shl(23));
    e * scale
}

/// Lanes of the partial reductions (lets LLVM vectorize max and sum).
const LANES: usize = 8;

/// Compiled for AVX2/SSE4.1/NEON too, chosen at run time; no `mul_add`, so
/// every version gives the same bits.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (x, b) in row.iter_mut().zip(b) {
            *x += *b;
        }
    }
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            if c[i] > m[i] {
                m[i] = c[i];
            }
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    if !max.is_finite() {
        // all -inf, +inf or NaN somewhere: the scalar definition
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        row.iter_mut().for_each(|x| *x /= sum);
        return;
    }
    row.iter_mut().for_each(|x| *x = exp_neg(*x - max));
    let mut s = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            s[i] += c[i];
        }
    }
    let sum: f32 = chunks.remainder().iter().chain(&s).sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let bias = if inputs.len() == 2 {
            inputs.pop()
        } else {
            None
        };
        let x = inputs.pop().context("RowSoftmax needs an input")?;
        let mut out = x.into_tensor();
        let row_len = *out.shape().last().context("RowSoftmax on a scalar")?;
        if row_len == 0 || out.len() == 0 {
            return Ok(tvec!(out.into_tvalue()));
        }
        let bias_plain = bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias: Option<&[f32]> = bias_plain
            .as_ref()
            .map(|b| b.as_slice::<f32>())
            .transpose()?;
        let bias_rows = bias.map(|b| b.len() / row_len).unwrap_or(1).max(1);
        if let Some(b) = bias {
            ensure!(
                b.len() % row_len == 0 && out.len() % b.len() == 0,
                "RowSoftmax: bias of {} values does not tile {:?}",
                b.len(),
                out.shape()
            );
        }
        let mut plain = out.try_as_plain_ram_mut()?;
        let data = plain.as_slice_mut::<f32>()?;
        let total = data.len();
        tract_linalg::multithread::par_chunks_mut(data, row_len, total, |first_row, chunk| {
            for (i, row) in chunk.chunks_exact_mut(row_len).enumerate() {
                let b = bias.map(|b| {
                    let r = (first_row + i) % bias_rows;
                    &b[r * row_len..(r + 1) * row_len]
                });
                softmax_row(row, b);
            }
            Ok(())
        })?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::Div(f32::datum_type()),
            inputs[0].shape.volume()
        )))
    }

    as_op!();
}

/// Is `outlet` a constant f32 tensor shaped like `x` up to leading axes of 1?
fn broadcast_bias(model: &TypedModel, bias: OutletId, x: &TypedFact) -> bool {
    let Ok(b) = model.outlet_fact(bias) else {
        return false;
    };
    let Some(xs) = x.shape.as_concrete() else {
        return false;
    };
    let Some(bs) = b.shape.as_concrete() else {
        return false;
    };
    b.konst.is_some()
        && b.datum_type == f32::datum_type()
        && bs.len() == xs.len()
        && !bs.is_empty()
        && bs[bs.len() - 1] == xs[xs.len() - 1]
        && {
            // leading 1s, then equal to x
            let lead = bs.iter().take_while(|&&d| d == 1).count();
            bs[lead..] == xs[lead..]
        }
}

/// A constant f32 tensor at `outlet`, if that is what it is.
fn const_tensor(model: &TypedModel, outlet: OutletId) -> Option<Tensor> {
    let fact = model.outlet_fact(outlet).ok()?;
    let k = fact.konst.as_ref()?;
    (k.datum_type() == f32::datum_type()).then(|| (**k).clone())
}

/// The values of an f32 tensor.
fn plain_f32(t: &Tensor) -> Option<Vec<f32>> {
    let plain = t.try_as_plain_ram().ok()?;
    plain.as_slice::<f32>().ok().map(<[f32]>::to_vec)
}

/// How many nodes [`fuse_decluttered`] replaced, per op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Fused {
    /// `Deconv` nodes now [`ConvTranspose2x2`].
    pub conv_transpose: usize,
    /// `EinSum` nodes now [`FewRowsMatMul`].
    pub few_rows_matmul: usize,
    /// Channel-first 3×3 `Conv` nodes (depthwise, or dense with few input
    /// channels) now [`Conv3x3`].
    pub conv3x3: usize,
    /// Six-op layer-norm chains now [`AxisLayerNorm`].
    pub layer_norm: usize,
}

impl Fused {
    /// All replacements.
    pub fn total(&self) -> usize {
        self.conv_transpose + self.few_rows_matmul + self.conv3x3 + self.layer_norm
    }
}

impl std::fmt::Display for Fused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.conv_transpose, "ConvTranspose2x2"),
            (self.few_rows_matmul, "FewRowsMatMul"),
            (self.conv3x3, "Conv3x3"),
            (self.layer_norm, "AxisLayerNorm"),
        ];
        let named: Vec<String> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
        if named.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", named.join(", "))
        }
    }
}

/// Patches edgeseg's ops into a decluttered model (before
/// `into_optimized`): every node or chain that one of them implements
/// exactly is replaced; everything else is left to tract.
pub fn fuse_decluttered(model: &mut TypedModel) -> TractResult<Fused> {
    let mut fused = Fused::default();
    loop {
        let mut patch = None;
        for id in model.eval_order()? {
            let node = model.node(id);
            let (name, op, inputs, replaced): (String, Box<dyn TypedOp>, TVec<OutletId>, usize) =
                if let Some(op) = conv_transpose::from_node(model, node) {
                    fused.conv_transpose += 1;
                    (
                        format!("{}.edgeseg", node.name),
                        Box::new(op),
                        tvec!(node.inputs[0]),
                        id,
                    )
                } else if let Some(op) = conv3x3::from_node(model, node) {
                    fused.conv3x3 += 1;
                    (
                        format!("{}.edgeseg", node.name),
                        Box::new(op),
                        tvec!(node.inputs[0]),
                        id,
                    )
                } else if few_rows_matmul::matches(model, node) {
                    fused.few_rows_matmul += 1;
                    let op = Box::new(FewRowsMatMul);
                    (
                        format!("{}.edgeseg", node.name),
                        op,
                        node.inputs.iter().copied().collect(),
                        id,
                    )
                } else if let Some(chain) = layer_norm::chain_from(model, node) {
                    fused.layer_norm += 1;
                    let last = model.node(chain.last);
                    let name = format!("{}.edgeseg_layer_norm", last.name);
                    (name, Box::new(chain.op), tvec!(chain.input), chain.last)
                } else {
                    continue;
                };
            let mut p = TypedModelPatch::new("edgeseg op");
            let taps = p.taps(model, &inputs)?;
            let out = p.wire_node(name, op, &taps)?;
            p.shunt_outside(model, OutletId::new(replaced, 0), out[0])?;
            patch = Some(p);
            break;
        }
        match patch {
            Some(p) => p.apply(model)?,
            None => break,
        }
    }
    if fused.total() > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(fused)
}

/// Replaces every f32 last-axis `Softmax` of an optimized model by
/// [`RowSoftmax`], absorbing a preceding `Add` of a constant broadcast bias
/// when the softmax is its only consumer. Returns how many softmaxes were
/// replaced.
pub fn fuse_row_softmax(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    loop {
        let mut patch = None;
        for node in model.eval_order()? {
            let node = model.node(node);
            let Some(sm) = node.op_as::<Softmax>() else {
                continue;
            };
            let x_fact = model.outlet_fact(node.inputs[0])?;
            let rank = x_fact.rank();
            if sm.kind != SoftmaxKind::Softmax
                || sm.quant_output_dt.is_some()
                || x_fact.datum_type != f32::datum_type()
                || rank == 0
                || *sm.axes != [rank - 1]
            {
                continue;
            }
            let mut inputs: TVec<OutletId> = tvec!(node.inputs[0]);
            let prev = model.node(node.inputs[0].node);
            if let Some(bin) = prev.op_as::<TypedBinOp>() {
                let single_use = model.outlet_successors(node.inputs[0]).len() == 1;
                if bin.0.is::<Add>() && single_use && prev.inputs.len() == 2 {
                    for (xi, bi) in [(0, 1), (1, 0)] {
                        let xo = prev.inputs[xi];
                        let xf = model.outlet_fact(xo)?;
                        if xf.shape == x_fact.shape && broadcast_bias(model, prev.inputs[bi], xf) {
                            inputs = tvec!(xo, prev.inputs[bi]);
                            break;
                        }
                    }
                }
            }
            let mut p = TypedModelPatch::new("edgeseg RowSoftmax");
            let taps = p.taps(model, &inputs)?;
            let out = p.wire_node(format!("{}.row_softmax", node.name), RowSoftmax, &taps)?;
            p.shunt_outside(model, OutletId::new(node.id, 0), out[0])?;
            patch = Some(p);
            break;
        }
        match patch {
            Some(p) => {
                p.apply(model)?;
                done += 1;
            }
            None => break,
        }
    }
    if done > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_neg(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(-1000.0), (-87f32).exp().max(exp_neg(-87.0)));
    }

    fn reference(x: &[f32], bias: &[f32], row: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for (i, r) in x.chunks(row).enumerate() {
            let b = &bias[(i % (bias.len() / row)) * row..][..row];
            let v: Vec<f64> = r.iter().zip(b).map(|(a, b)| (*a + *b) as f64).collect();
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = v.iter().map(|a| (a - m).exp()).sum();
            out.extend(v.iter().map(|a| ((a - m).exp() / s) as f32));
        }
        out
    }

    #[test]
    fn fused_matches_add_then_softmax() -> TractResult<()> {
        // B=3, H=2, N=7 rows of 7 (the decoder's and TinyViT's odd row lengths)
        let (b, h, n) = (3usize, 2usize, 7usize);
        let xs: Vec<f32> = (0..b * h * n * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let bs: Vec<f32> = (0..h * n * n)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([b, h, n, n]))?;
        let bias = model.add_const("bias", Tensor::from_shape(&[1, h, n, n], &bs)?)?;
        let s = model.wire_node("add", TypedBinOp(Box::new(Add), None), &[x, bias])?;
        let y = model.wire_node(
            "softmax",
            Softmax::new(tvec!(3), None, SoftmaxKind::Softmax),
            &s,
        )?;
        model.select_output_outlets(&y)?;
        let mut fused = model.clone();
        assert_eq!(fuse_row_softmax(&mut fused)?, 1);
        assert!(fused.nodes().iter().all(|n| n.op_as::<Softmax>().is_none()));
        assert!(fused
            .nodes()
            .iter()
            .all(|n| n.op_as::<TypedBinOp>().is_none()));
        let input = Tensor::from_shape(&[b, h, n, n], &xs)?;
        let got = fused.into_runnable()?.run(tvec!(input.clone().into()))?;
        let got = got[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let want = reference(&xs, &bs, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{g} vs {w}");
        }
        let plain = model.into_runnable()?.run(tvec!(input.into()))?;
        let plain = plain[0].try_as_plain_ram()?;
        for (g, w) in got.iter().zip(plain.as_slice::<f32>()?) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{g} vs {w}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod fused_tests;
