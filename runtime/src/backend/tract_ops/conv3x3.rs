//! [`Conv3x3`]: a 3×3 convolution (padding 1, stride 1 or 2) on
//! channel-first f32 data, either depthwise (TinyViT's MBConv and
//! patch-merging convs) or dense with few input channels (the stride-2 stem
//! convs of the students' patch embedding).
//!
//! tract 0.23.9 runs channel-first depthwise convs at 0.4–3 GFLOP/s on the
//! dev VM (its channel-last ones are faster): the stage-0 MBConv's 128×64×64
//! conv alone took 3.2 ms of a 50 ms edge-s encoder. Its direct convolution
//! for the 3-channel stem reached 5 GFLOP/s, and the 16-channel stride-2
//! conv after it 11 GFLOP/s plus a separate padding pass. This op copies
//! every input channel once into a zero-bordered plane (for stride 2, each
//! row split into its even and odd columns), then computes each output row
//! as 3-tap row passes (three per input channel it reads) that vectorize.
//! Output channels are split over tract's thread pool.

use super::{const_tensor, plain_f32, row_kernels};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Largest input channel count of a dense conv this op takes: beyond it
/// tract's im2col matmul is faster.
pub const MAX_DENSE_INPUT_CHANNELS: usize = 16;

/// 3×3 convolution, padding 1 on every side, stride 1 or 2, dilation 1, on
/// NCHW or CHW f32 data, with constant weights and bias; depthwise (one group
/// per channel) or dense (one group).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Conv3x3 {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Depthwise (`c_in == c_out`, one input channel per output channel) or
    /// dense (every input channel).
    pub depthwise: bool,
    /// Stride on both spatial axes: 1 or 2.
    pub stride: usize,
    /// Whether the data has a leading batch axis (NCHW) or not (CHW).
    pub batch_axis: bool,
    /// Weights `[c_out, inputs per output, 9]`.
    pub weights: Arc<Tensor>,
    /// Bias `[c_out]`.
    pub bias: Arc<Tensor>,
}

impl Op for Conv3x3 {
    fn name(&self) -> StaticName {
        "Conv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} {} -> {} channels, stride {}",
            if self.depthwise { "depthwise" } else { "dense" },
            self.c_in,
            self.c_out,
            self.stride
        )])
    }

    op_as_typed_op!();
}

/// Output size along an axis of `n` input pixels (padding 1 each side).
fn out_len(n: usize, stride: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n - 1) / stride + 1
    }
}

impl EvalOp for Conv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("Conv3x3 needs an input")?;
        let shape = x.shape();
        let (n, c, h, w) = match (self.batch_axis, shape) {
            (true, [n, c, h, w]) => (*n, *c, *h, *w),
            (false, [c, h, w]) => (1, *c, *h, *w),
            _ => bail!("Conv3x3: unexpected input shape {shape:?}"),
        };
        ensure!(
            c == self.c_in,
            "Conv3x3: {c} input channels, expected {}",
            self.c_in
        );
        let s = self.stride;
        let (oh, ow) = (out_len(h, s), out_len(w, s));
        let x_plain = x.try_as_plain_ram()?;
        let x = x_plain.as_slice::<f32>()?;
        let weights_plain = self.weights.try_as_plain_ram()?;
        let weights = weights_plain.as_slice::<f32>()?;
        let bias_plain = self.bias.try_as_plain_ram()?;
        let bias = bias_plain.as_slice::<f32>()?;
        let c_out = self.c_out;
        let mut out_shape: TVec<usize> = if self.batch_axis { tvec!(n) } else { tvec!() };
        out_shape.extend([c_out, oh, ow]);
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        let out_plane = oh * ow;
        if out_plane == 0 || c_out == 0 {
            return Ok(tvec!(out.into_tvalue()));
        }
        // the bordered input rows: `w + 2` wide; with stride 2 stored as the
        // even bordered columns, then the odd ones
        let (pw, even) = (w + 2, (w + 3) / 2);
        let bordered_plane = (h + 2) * pw;
        let per_out = if self.depthwise { 1 } else { c };
        let mut out_plain = out.try_as_plain_ram_mut()?;
        let data = out_plain.as_slice_mut::<f32>()?;
        let total = data.len() * 9 * per_out;
        for (b, out_b) in data.chunks_exact_mut(c_out * out_plane).enumerate() {
            let x_b = &x[b * c * h * w..][..c * h * w];
            // dense: every input channel bordered once, shared by all outputs
            let shared = if self.depthwise {
                Vec::new()
            } else {
                let mut p = vec![0f32; c * bordered_plane];
                for (src, dst) in x_b
                    .chunks_exact(h * w)
                    .zip(p.chunks_exact_mut(bordered_plane))
                {
                    border(src, dst, w, s);
                }
                p
            };
            tract_linalg::multithread::par_chunks_mut(out_b, out_plane, total, |first, chunk| {
                let mut own = vec![0f32; if self.depthwise { bordered_plane } else { 0 }];
                for (i, out_ch) in chunk.chunks_exact_mut(out_plane).enumerate() {
                    let co = first + i;
                    let planes: &[f32] = if self.depthwise {
                        border(&x_b[co * h * w..][..h * w], &mut own, w, s);
                        &own
                    } else {
                        &shared
                    };
                    let k_co = &weights[co * per_out * 9..][..per_out * 9];
                    for (oy, row) in out_ch.chunks_exact_mut(ow).enumerate() {
                        row.fill(bias[co]);
                        for (plane, k) in planes
                            .chunks_exact(bordered_plane)
                            .zip(k_co.chunks_exact(9))
                        {
                            for ky in 0..3 {
                                let src = &plane[(oy * s + ky) * pw..][..pw];
                                let taps = [k[3 * ky], k[3 * ky + 1], k[3 * ky + 2]];
                                if s == 1 {
                                    row_kernels::taps3(row, src, taps);
                                } else {
                                    let (ev, od) = src.split_at(even);
                                    row_kernels::taps3_split(row, ev, od, taps);
                                }
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

/// Copies the `h × w` plane `src` into the bordered plane `dst`
/// (`(h + 2) × (w + 2)`, whose border stays zero); with stride 2 each
/// bordered row is stored as its even columns, then its odd ones.
fn border(src: &[f32], dst: &mut [f32], w: usize, stride: usize) {
    let pw = w + 2;
    let even = (w + 3) / 2;
    for (y, src_row) in src.chunks_exact(w.max(1)).enumerate() {
        let dst_row = &mut dst[(y + 1) * pw..][..pw];
        if stride == 1 {
            dst_row[1..=w].copy_from_slice(src_row);
        } else {
            // bordered column j + 1 holds src[j]: even bordered columns are
            // the odd source columns
            let (ev, od) = dst_row.split_at_mut(even);
            for (j, &v) in src_row.iter().enumerate() {
                let col = j + 1;
                if col % 2 == 0 {
                    ev[col / 2] = v;
                } else {
                    od[col / 2] = v;
                }
            }
        }
    }
}

impl TypedOp for Conv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        let r = s.rank();
        ensure!(r >= 3);
        let mut shape: TVec<TDim> = s.iter().cloned().collect();
        shape[r - 3] = self.c_out.to_dim();
        for ax in [r - 2, r - 1] {
            let n = shape[ax]
                .to_usize()
                .context("Conv3x3 needs concrete spatial sizes")?;
            shape[ax] = out_len(n, self.stride).to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = self.output_facts(inputs)?;
        let per_out = if self.depthwise { 1 } else { self.c_in };
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            out[0].shape.volume() * (9 * per_out)
        )))
    }

    as_op!();
}

/// The replacement for the `Conv` node `node`, if it is a 3×3 convolution
/// this op implements: depthwise, or dense with at most
/// [`MAX_DENSE_INPUT_CHANNELS`] input channels.
pub(super) fn from_node(model: &TypedModel, node: &TypedNode) -> Option<Conv3x3> {
    let op = node.op_as::<Conv>()?;
    let ps = &op.pool_spec;
    let batch_axis = match ps.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return None,
    };
    let (c_in, c_out) = (ps.input_channels, ps.output_channels);
    let depthwise = op.group == c_in && c_out == c_in && c_in > 1;
    let dense = op.group == 1 && (1..=MAX_DENSE_INPUT_CHANNELS).contains(&c_in);
    let pad_one = match &ps.padding {
        PaddingSpec::Explicit(b, a) => b.iter().chain(a.iter()).all(|&p| p == 1),
        _ => false,
    };
    let strides = ps.strides();
    if op.q_params.is_some()
        || op.kernel_fmt != KernelFormat::OIHW
        || !(depthwise || dense)
        || c_out == 0
        || *ps.kernel_shape != [3, 3]
        || !(*strides == [1, 1] || *strides == [2, 2])
        || ps.dilations().iter().any(|&d| d != 1)
        || !pad_one
        || node.inputs.len() != 3
    {
        return None;
    }
    let x = model.outlet_fact(node.inputs[0]).ok()?;
    let dims = x.shape.as_concrete()?;
    if x.datum_type != f32::datum_type() || dims.len() != if batch_axis { 4 } else { 3 } {
        return None;
    }
    let per_out = if depthwise { 1 } else { c_in };
    let weights = const_tensor(model, node.inputs[1])?;
    if weights.shape() != [c_out, per_out, 3, 3] {
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
    Some(Conv3x3 {
        c_in,
        c_out,
        depthwise,
        stride: strides[0],
        batch_axis,
        weights: weights
            .into_shape(&[c_out, per_out, 9])
            .ok()?
            .into_arc_tensor(),
        bias: bias.into_arc_tensor(),
    })
}
