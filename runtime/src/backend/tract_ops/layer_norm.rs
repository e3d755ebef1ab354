//! [`AxisLayerNorm`]: layer normalization over one axis with a per-element
//! scale and shift, in one op.
//!
//! tract 0.23.9 declutters ONNX `LayerNormalization` (and the exported
//! `LayerNorm2d`, `ReduceMean`/`Sub`/`Pow`/`Sqrt`/`Div`) into six ops:
//! `Reduce<Sum>`, `Mul` by `1/n`, `Sub`, `RmsNorm`, `Mul` by the scale and
//! `Add` of the shift. The last two broadcast a `1×…×n` constant and take
//! tract's generic broadcasting path; in the edge-s encoder the chains cost
//! about 8 ms of 60 (`edgeseg bench --profile`). This op reads the input
//! twice (mean, then variance) and writes the output once.

use super::{const_tensor, plain_f32, row_kernels};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::math::{Add, Mul, Sub};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

/// `(x − mean) / sqrt(var + eps) · scale + shift` over `axis` of an f32
/// tensor; `scale` and `shift` have one value per position on that axis.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AxisLayerNorm {
    /// The normalized axis.
    pub axis: usize,
    /// `eps` as f32 bits (so that the op is `Eq` and `Hash`).
    pub eps_bits: u32,
    /// Scale, `[n]`.
    pub scale: Arc<Tensor>,
    /// Shift, `[n]`.
    pub shift: Arc<Tensor>,
}

impl Op for AxisLayerNorm {
    fn name(&self) -> StaticName {
        "AxisLayerNorm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {}, eps {:e}",
            self.axis,
            f32::from_bits(self.eps_bits)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for AxisLayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("AxisLayerNorm needs an input")?;
        let shape = x.shape();
        ensure!(
            self.axis < shape.len(),
            "AxisLayerNorm: axis {} of {shape:?}",
            self.axis
        );
        let n = shape[self.axis];
        let outer: usize = shape[..self.axis].iter().product();
        let inner: usize = shape[self.axis + 1..].iter().product();
        let scale_plain = self.scale.try_as_plain_ram()?;
        let scale = scale_plain.as_slice::<f32>()?;
        let shift_plain = self.shift.try_as_plain_ram()?;
        let shift = shift_plain.as_slice::<f32>()?;
        ensure!(
            scale.len() == n && shift.len() == n,
            "AxisLayerNorm: {n} values on the axis"
        );
        let eps = f32::from_bits(self.eps_bits);
        let x_plain = x.try_as_plain_ram()?;
        let x = x_plain.as_slice::<f32>()?;
        let mut out = Tensor::zero::<f32>(shape)?;
        if x.is_empty() || n == 0 {
            return Ok(tvec!(out.into_tvalue()));
        }
        let inv_n = 1.0 / n as f32;
        let mut out_plain = out.try_as_plain_ram_mut()?;
        let data = out_plain.as_slice_mut::<f32>()?;
        let total = data.len();
        if inner == 1 {
            tract_linalg::multithread::par_chunks_mut(data, n, total, |first, chunk| {
                for (i, row) in chunk.chunks_exact_mut(n).enumerate() {
                    let src = &x[(first + i) * n..][..n];
                    let mean = src.iter().sum::<f32>() * inv_n;
                    let var = src.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() * inv_n;
                    let rstd = 1.0 / (var + eps).sqrt();
                    row_kernels::normalize_row(row, src, mean, rstd, scale, shift);
                }
                Ok(())
            })?;
        } else {
            let block = n * inner;
            let mut mean = vec![0f32; inner];
            let mut rstd = vec![0f32; inner];
            for o in 0..outer {
                let src = &x[o * block..][..block];
                let dst = &mut data[o * block..][..block];
                mean.fill(0.0);
                for plane in src.chunks_exact(inner) {
                    row_kernels::add_to(&mut mean, plane);
                }
                mean.iter_mut().for_each(|m| *m *= inv_n);
                rstd.fill(0.0);
                for plane in src.chunks_exact(inner) {
                    row_kernels::add_squared_deviation(&mut rstd, plane, &mean);
                }
                rstd.iter_mut()
                    .for_each(|v| *v = 1.0 / (*v * inv_n + eps).sqrt());
                for (c, (d, s)) in dst
                    .chunks_exact_mut(inner)
                    .zip(src.chunks_exact(inner))
                    .enumerate()
                {
                    row_kernels::normalize_plane(d, s, &mean, &rstd, scale[c], shift[c]);
                }
            }
            let _ = total;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for AxisLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            inputs[0].shape.volume() * 4
        )))
    }

    as_op!();
}

/// The only successor of `outlet`, if it has exactly one.
fn single_successor(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let succ = model.outlet_successors(outlet);
    if succ.len() != 1 {
        return None;
    }
    Some(model.node(succ[0].node))
}

/// The binary op `B` of `node`, if that is what it is.
fn is_bin<B: BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<B>()) && node.inputs.len() == 2
}

/// The constant input of a binary node other than `from`, as f32 values,
/// with its shape.
fn other_const(model: &TypedModel, node: &TypedNode, from: OutletId) -> Option<Tensor> {
    let other = if node.inputs[0] == from {
        node.inputs[1]
    } else if node.inputs[1] == from {
        node.inputs[0]
    } else {
        return None;
    };
    const_tensor(model, other)
}

/// `t` as `n` values along `axis` of a rank-`rank` tensor (all other axes 1,
/// missing leading axes allowed), or `None`.
fn along_axis(t: &Tensor, axis: usize, rank: usize, n: usize) -> Option<Tensor> {
    let s = t.shape();
    if s.len() > rank || t.len() != n {
        return None;
    }
    let lead = rank - s.len();
    let fits = s
        .iter()
        .enumerate()
        .all(|(i, &d)| if i + lead == axis { d == n } else { d == 1 });
    if !fits && n != 1 {
        return None;
    }
    t.clone().into_shape(&[n]).ok()
}

/// A match of the decluttered layer-norm chain ending at the returned node.
pub(super) struct Chain {
    /// The replacement op.
    pub op: AxisLayerNorm,
    /// The chain's input.
    pub input: OutletId,
    /// The chain's last node (the `Add` of the shift).
    pub last: usize,
}

/// The layer-norm chain starting at the `Reduce<Sum>` node `node`, if it is
/// one: `Reduce<Sum>(x, [a])` → `Mul` by `1/n` → `Sub(x, ·)` →
/// `RmsNorm(a)` → `Mul` by a constant along `a` → `Add` of a constant along
/// `a`, every intermediate used once.
pub(super) fn chain_from(model: &TypedModel, node: &TypedNode) -> Option<Chain> {
    let reduce = node.op_as::<Reduce>()?;
    if reduce.reducer != Reducer::Sum || reduce.axes.len() != 1 || node.inputs.len() != 1 {
        return None;
    }
    let axis = reduce.axes[0];
    let x = node.inputs[0];
    let x_fact = model.outlet_fact(x).ok()?;
    let dims = x_fact.shape.as_concrete()?;
    let rank = dims.len();
    if x_fact.datum_type != f32::datum_type() || axis >= rank {
        return None;
    }
    let n = dims[axis];
    let sum = OutletId::new(node.id, 0);
    let mul = single_successor(model, sum)?;
    if !is_bin::<Mul>(mul) {
        return None;
    }
    let k = plain_f32(&other_const(model, mul, sum)?)?;
    if k.len() != 1 || (k[0] * n as f32 - 1.0).abs() > 1e-6 {
        return None;
    }
    let mean = OutletId::new(mul.id, 0);
    let sub = single_successor(model, mean)?;
    if !is_bin::<Sub>(sub) || sub.inputs[0] != x || sub.inputs[1] != mean {
        return None;
    }
    let rms = single_successor(model, OutletId::new(sub.id, 0))?;
    let rms_op = rms.op_as::<RmsNorm>()?;
    if rms_op.axis != axis {
        return None;
    }
    let eps: f32 = rms_op.eps.cast_to_scalar::<f32>().ok()?;
    let rms_out = OutletId::new(rms.id, 0);
    let scale_node = single_successor(model, rms_out)?;
    if !is_bin::<Mul>(scale_node) {
        return None;
    }
    let scale = along_axis(&other_const(model, scale_node, rms_out)?, axis, rank, n)?;
    let scaled = OutletId::new(scale_node.id, 0);
    let shift_node = single_successor(model, scaled)?;
    if !is_bin::<Add>(shift_node) {
        return None;
    }
    let shift = along_axis(&other_const(model, shift_node, scaled)?, axis, rank, n)?;
    // the output keeps the input's shape (no broadcast by the constants)
    if model
        .outlet_fact(OutletId::new(shift_node.id, 0))
        .ok()?
        .shape
        != x_fact.shape
    {
        return None;
    }
    Some(Chain {
        op: AxisLayerNorm {
            axis,
            eps_bits: eps.to_bits(),
            scale: scale.into_arc_tensor(),
            shift: shift.into_arc_tensor(),
        },
        input: x,
        last: shift_node.id,
    })
}
