//! [`ConvTranspose2x2`]: a transposed convolution whose 2×2 kernel moves by
//! 2, so that every output pixel gets exactly one tap (SAM's mask-decoder
//! upscaling).
//!
//! tract 0.23.9 runs it as a matmul with `k = C_in` (12–96 here; small `k`
//! leaves its kernels store-bound) into a `C_out·4 × H·W` buffer, a packing
//! of the activation, and a scatter (`DeconvSum`). This op computes each
//! output plane directly: for each block of input rows, four accumulators
//! (one per tap) over the `C_in` input planes, then one interleaving store
//! per output row. Output planes are split over tract's thread pool.

use super::{const_tensor, plain_f32, row_kernels};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Deconv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Input values per block of rows (16 KiB of taps).
const ROW_BLOCK: usize = 1024;

/// `ConvTranspose` with a 2×2 kernel, stride 2, no padding, dilation or
/// output adjustment, one group, on NCHW or CHW f32 data.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ConvTranspose2x2 {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Whether the data has a leading batch axis (NCHW) or not (CHW).
    pub batch_axis: bool,
    /// Weights `[c_out, c_in, 2, 2]`.
    pub weights: Arc<Tensor>,
    /// Bias `[c_out]`.
    pub bias: Arc<Tensor>,
}

impl Op for ConvTranspose2x2 {
    fn name(&self) -> StaticName {
        "ConvTranspose2x2".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{} -> {} channels", self.c_in, self.c_out)])
    }

    op_as_typed_op!();
}

impl ConvTranspose2x2 {
    fn dims(&self, shape: &[usize]) -> TractResult<(usize, usize, usize)> {
        let (n, rest) = if self.batch_axis {
            ensure!(
                shape.len() == 4,
                "ConvTranspose2x2 wants NCHW, got {shape:?}"
            );
            (shape[0], &shape[1..])
        } else {
            ensure!(
                shape.len() == 3,
                "ConvTranspose2x2 wants CHW, got {shape:?}"
            );
            (1, shape)
        };
        ensure!(
            rest[0] == self.c_in,
            "ConvTranspose2x2: {} input channels, expected {}",
            rest[0],
            self.c_in
        );
        Ok((n, rest[1], rest[2]))
    }
}

impl EvalOp for ConvTranspose2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("ConvTranspose2x2 needs an input")?;
        let (n, h, w) = self.dims(x.shape())?;
        let x_plain = x.try_as_plain_ram()?;
        let x = x_plain.as_slice::<f32>()?;
        let weights_plain = self.weights.try_as_plain_ram()?;
        let weights = weights_plain.as_slice::<f32>()?;
        let bias_plain = self.bias.try_as_plain_ram()?;
        let bias = bias_plain.as_slice::<f32>()?;
        let mut shape: TVec<usize> = if self.batch_axis { tvec!(n) } else { tvec!() };
        shape.extend([self.c_out, 2 * h, 2 * w]);
        let mut out = Tensor::zero::<f32>(&shape)?;
        let plane = 4 * h * w;
        if plane > 0 && self.c_out > 0 {
            let mut out_plain = out.try_as_plain_ram_mut()?;
            let data = out_plain.as_slice_mut::<f32>()?;
            let total = data.len();
            let (c_in, c_out) = (self.c_in, self.c_out);
            // input rows per block: at least ROW_BLOCK values, so that narrow
            // inputs still give long vector loops
            let rows = ROW_BLOCK.div_ceil(w.max(1)).clamp(1, h.max(1));
            tract_linalg::multithread::par_chunks_mut(data, plane, total, |first, chunk| {
                let mut taps = vec![0f32; 4 * rows * w];
                for (i, out_plane) in chunk.chunks_exact_mut(plane).enumerate() {
                    let (b, co) = ((first + i) / c_out, (first + i) % c_out);
                    let x_b = &x[b * c_in * h * w..][..c_in * h * w];
                    let w_co = &weights[co * c_in * 4..][..c_in * 4];
                    for (blk, out_rows) in out_plane.chunks_mut(4 * rows * w).enumerate() {
                        let (y0, n) = (blk * rows, out_rows.len() / (4 * w));
                        let taps = &mut taps[..4 * n * w];
                        taps.fill(0.0);
                        for (ci, w4) in w_co.chunks_exact(4).enumerate() {
                            let x_rows = &x_b[(ci * h + y0) * w..][..n * w];
                            row_kernels::axpy4(taps, [w4[0], w4[1], w4[2], w4[3]], x_rows);
                        }
                        // quarter q holds tap (dy, dx) = (q / 2, q % 2) of the n rows
                        let q = n * w;
                        for (r, pair) in out_rows.chunks_exact_mut(4 * w).enumerate() {
                            let (r0, r1) = pair.split_at_mut(2 * w);
                            let at = r * w;
                            let tap = |k: usize| &taps[k * q + at..][..w];
                            row_kernels::interleave2(r0, tap(0), tap(1), bias[co]);
                            row_kernels::interleave2(r1, tap(2), tap(3), bias[co]);
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for ConvTranspose2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        let r = s.rank();
        ensure!(r >= 3);
        let mut shape: TVec<TDim> = s.iter().cloned().collect();
        shape[r - 3] = self.c_out.to_dim();
        shape[r - 2] = shape[r - 2].clone() * 2;
        shape[r - 1] = shape[r - 1].clone() * 2;
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let s = &inputs[0].shape;
        let r = s.rank();
        let pixels: TDim = s.iter().skip(r.saturating_sub(2)).product();
        let batch: TDim = s.iter().take(r.saturating_sub(3)).product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            batch * pixels * (4 * self.c_in * self.c_out)
        )))
    }

    as_op!();
}

/// The replacement for the `Deconv` node `node`, if it is one this op
/// implements: 2×2 kernel, stride 2, no padding/dilation/adjustment, one
/// group, OIHW constant weights, constant bias, f32 NCHW or CHW input.
pub(super) fn from_node(model: &TypedModel, node: &TypedNode) -> Option<ConvTranspose2x2> {
    let op = node.op_as::<Deconv>()?;
    let ps = &op.pool_spec;
    let batch_axis = match ps.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return None,
    };
    let padding_none = match &ps.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(b, a) => b.iter().chain(a.iter()).all(|&p| p == 0),
        _ => false,
    };
    if op.group != 1
        || op.kernel_format != KernelFormat::OIHW
        || *ps.kernel_shape != [2, 2]
        || *ps.strides() != [2, 2]
        || ps.dilations().iter().any(|&d| d != 1)
        || op.adjustments.iter().any(|&a| a != 0)
        || !padding_none
        || node.inputs.len() != 3
    {
        return None;
    }
    let x = model.outlet_fact(node.inputs[0]).ok()?;
    if x.datum_type != f32::datum_type() || x.rank() != if batch_axis { 4 } else { 3 } {
        return None;
    }
    let (c_in, c_out) = (ps.input_channels, ps.output_channels);
    let weights = const_tensor(model, node.inputs[1])?;
    if weights.shape() != [c_out, c_in, 2, 2] {
        return None;
    }
    let bias = const_tensor(model, node.inputs[2])?;
    let bias = match bias.len() {
        n if n == c_out => bias.into_shape(&[c_out]).ok()?,
        1 => {
            let b = plain_f32(&bias)?[0];
            Tensor::from_shape(&[c_out], &vec![b; c_out]).ok()?
        }
        _ => return None,
    };
    Some(ConvTranspose2x2 {
        c_in,
        c_out,
        batch_axis,
        weights: weights.into_arc_tensor(),
        bias: bias.into_arc_tensor(),
    })
}
