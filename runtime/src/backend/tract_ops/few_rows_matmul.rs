//! [`FewRowsMatMul`]: `out[a, m, ·] = Σ_k h[m, k] · x[a, k, ·]` for a small
//! runtime matrix `h` and large planes `x` (SAM's hypernetwork product: 4
//! mask-token rows times the upscaled `C × 256 × 256` embedding).
//!
//! tract 0.23.9 lowers this `EinSum` (`mk,akbn->ambn`) to a matmul that first
//! packs the whole `K × 65 536` activation (6 ms of a 20 ms edge-s decoder on
//! the dev VM; `edgeseg bench --profile`). With `M·K` of 48 to 128 values
//! there is nothing to pack for: each output row is `K` scaled additions of
//! input rows, done in blocks that stay in the L1 cache.

use super::row_kernels;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// Largest `M·K` this op takes over: beyond it tract's packed matmul wins.
pub const MAX_LEFT_VALUES: usize = 1024;

/// The einsum expression this op implements.
pub const EXPRESSION: &str = "mk,akbn->ambn";

/// Values per block of an output row (4 KiB of f32: a block of each of the
/// `K` input rows and of the output stays in L1).
const BLOCK: usize = 1024;

/// `mk,akbn->ambn` on f32 with a small left matrix.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct FewRowsMatMul;

impl Op for FewRowsMatMul {
    fn name(&self) -> StaticName {
        "FewRowsMatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FewRowsMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 2, "FewRowsMatMul needs two inputs");
        let (h, x) = (&inputs[0], &inputs[1]);
        let (hs, xs) = (h.shape(), x.shape());
        ensure!(
            hs.len() == 2 && xs.len() == 4 && hs[1] == xs[1],
            "FewRowsMatMul: shapes {hs:?} and {xs:?} do not match {EXPRESSION}"
        );
        let (m, k, a) = (hs[0], hs[1], xs[0]);
        let plane = xs[2] * xs[3];
        let h_plain = h.try_as_plain_ram()?;
        let h = h_plain.as_slice::<f32>()?;
        let x_plain = x.try_as_plain_ram()?;
        let x = x_plain.as_slice::<f32>()?;
        let mut out = Tensor::zero::<f32>(&[a, m, xs[2], xs[3]])?;
        if plane > 0 && m > 0 {
            let mut out_plain = out.try_as_plain_ram_mut()?;
            let data = out_plain.as_slice_mut::<f32>()?;
            let total = data.len() * k.max(1);
            tract_linalg::multithread::par_chunks_mut(data, plane, total, |first, chunk| {
                for (i, row) in chunk.chunks_exact_mut(plane).enumerate() {
                    let (ai, mi) = ((first + i) / m, (first + i) % m);
                    let x_a = &x[ai * k * plane..][..k * plane];
                    let h_m = &h[mi * k..][..k];
                    for (bi, block) in row.chunks_mut(BLOCK).enumerate() {
                        let at = bi * BLOCK;
                        for (ki, &w) in h_m.iter().enumerate() {
                            let x_block = &x_a[ki * plane + at..][..block.len()];
                            row_kernels::axpy(block, w, x_block);
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for FewRowsMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (h, x) = (&inputs[0].shape, &inputs[1].shape);
        ensure!(h.rank() == 2 && x.rank() == 4);
        Ok(tvec!(f32::fact(tvec!(
            x[0].clone(),
            h[0].clone(),
            x[2].clone(),
            x[3].clone()
        ))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (h, x) = (&inputs[0].shape, &inputs[1].shape);
        let n: TDim = h.iter().product::<TDim>() * x[0].clone() * x[2].clone() * x[3].clone();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n)))
    }

    as_op!();
}

/// Whether the `EinSum` node `node` is one this op implements: f32,
/// `mk,akbn->ambn`, concrete shapes, a left matrix of at most
/// [`MAX_LEFT_VALUES`] values.
pub(super) fn matches(model: &TypedModel, node: &TypedNode) -> bool {
    let Some(op) = node.op_as::<EinSum>() else {
        return false;
    };
    if op.q_params.is_some()
        || op.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
        || op.axes.to_string() != EXPRESSION
    {
        return false;
    }
    let facts: Option<Vec<&TypedFact>> = node
        .inputs
        .iter()
        .map(|i| model.outlet_fact(*i).ok())
        .collect();
    let Some(facts) = facts else {
        return false;
    };
    let concrete: Option<Vec<TVec<usize>>> = facts
        .iter()
        .map(|f| f.shape.as_concrete().map(TVec::from))
        .collect();
    match concrete {
        Some(s) => {
            facts.iter().all(|f| f.datum_type == f32::datum_type())
                && s[0].len() == 2
                && s[1].len() == 4
                && s[0][1] == s[1][1]
                && s[0][0] * s[0][1] <= MAX_LEFT_VALUES
        }
        None => false,
    }
}
