//! Building blocks shared by the model architectures: an execution [`Mode`]
//! switch between fast inference kernels and differentiable forms, layer norms,
//! Conv2d+BatchNorm with folding, depthwise convolution, transposed 2×2
//! convolution, small MLPs.
//!
//! candle's fused `softmax_last_dim`, `layer_norm` and `rms_norm` have no
//! backward pass (gradients silently vanish through them). Every module here
//! takes a [`Mode`]: [`Mode::Inference`] uses fused or hand-written CPU kernels
//! without autograd, [`Mode::Training`] uses only differentiable tensor ops.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

/// How a model computes softmax, normalizations and depthwise convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fast kernels without a backward pass; BatchNorm folded once at load.
    #[default]
    Inference,
    /// Differentiable forms only (`candle_nn::ops::softmax`, `layer_norm_slow`,
    /// grouped `conv2d`, BatchNorm folded in the graph on every forward).
    Training,
}

/// Softmax over the last dimension in the form the mode requires.
pub fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Inference => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        Mode::Training => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Inference attention softmax fused in one parallel pass:
/// `softmax(x · scale + bias)` over the last dimension, `x` contiguous
/// `B×H×N×N`, `bias` `H×N×N` (or empty for none).
#[derive(Debug, Clone)]
pub struct ScaledSoftmax {
    /// Multiplier applied before the bias.
    pub scale: f32,
    /// Additive bias `H×N×N` (empty: no bias).
    pub bias: Vec<f32>,
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "edgeseg-scaled-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("scaled softmax: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("scaled softmax: input must be contiguous")
        };
        let src = &data[o1..o2];
        let n = *layout.dims().last().unwrap_or(&1);
        let bl = self.bias.len();
        if n == 0 || (bl > 0 && (src.len() % bl != 0 || !bl.is_multiple_of(n))) {
            candle_core::bail!(
                "scaled softmax: bias of {bl} does not fit {:?}",
                layout.dims()
            )
        }
        let mut dst = vec![0f32; src.len()];
        let rows_per_task = (4096 / n).max(1);
        dst.par_chunks_mut(n * rows_per_task)
            .zip(src.par_chunks(n * rows_per_task))
            .enumerate()
            .for_each(|(t, (d, s))| {
                for (r, (dr, sr)) in d.chunks_mut(n).zip(s.chunks(n)).enumerate() {
                    let row = t * rows_per_task + r;
                    if bl > 0 {
                        let off = (row * n) % bl;
                        for ((o, &v), &b) in dr.iter_mut().zip(sr).zip(&self.bias[off..off + n]) {
                            *o = v * self.scale + b;
                        }
                    } else {
                        for (o, &v) in dr.iter_mut().zip(sr) {
                            *o = v * self.scale;
                        }
                    }
                    let mx = dr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for o in dr.iter_mut() {
                        *o = (*o - mx).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    for o in dr.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// A linear layer `y = x Wᵀ + b` (PyTorch `nn.Linear` layout) whose bias
/// add (and optional GELU) is fused into one parallel pass in inference.
#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    b: Tensor,
    mode: Mode,
    add: BiasAct,
    add_gelu: BiasAct,
}

/// Loads a [`Linear`] (`weight` `[d_out, d_in]`, `bias` `[d_out]`).
pub fn linear(vb: VarBuilder, d_in: usize, d_out: usize, mode: Mode) -> Result<Linear> {
    let w = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let b = vb.get_with_hints(d_out, "bias", Init::Const(0.0))?;
    let bias = match mode {
        Mode::Inference => Some(b.to_vec1::<f32>()?),
        Mode::Training => None,
    };
    Ok(Linear {
        w,
        b,
        mode,
        add: BiasAct {
            bias: bias.clone(),
            channel_dim_last: true,
            gelu: false,
        },
        add_gelu: BiasAct {
            bias,
            channel_dim_last: true,
            gelu: true,
        },
    })
}

impl Linear {
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let wt = self.w.t()?;
        match *x.dims() {
            [b1, b2, m, k] if x.is_contiguous() => x
                .reshape((b1 * b2 * m, k))?
                .matmul(&wt)?
                .reshape((b1, b2, m, ())),
            [b, m, k] if x.is_contiguous() => {
                x.reshape((b * m, k))?.matmul(&wt)?.reshape((b, m, ()))
            }
            [_, _] => x.matmul(&wt),
            _ => x.broadcast_matmul(&wt),
        }
    }

    /// `gelu(x Wᵀ + b)` (exact GELU).
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        match self.mode {
            Mode::Inference => self.matmul(x)?.apply_op1_no_bwd(&self.add_gelu),
            Mode::Training => self.forward(x)?.gelu_erf(),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.mode {
            Mode::Inference => self.matmul(x)?.apply_op1_no_bwd(&self.add),
            Mode::Training => self.matmul(x)?.broadcast_add(&self.b),
        }
    }
}

/// Exact GELU `x/2 · (1 + erf(x/√2))` in the mode's form: a parallel CPU
/// kernel in inference (erf as in PyTorch's vectorized CPU kernel), candle's
/// differentiable `gelu_erf` in training.
pub fn gelu(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Inference => x.contiguous()?.apply_op1_no_bwd(&BiasAct {
            bias: None,
            channel_dim_last: true,
            gelu: true,
        }),
        Mode::Training => x.gelu_erf(),
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the formula of
/// PyTorch's vectorized CPU `erf` used by its GELU kernel.
#[inline]
fn erf_as(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r =
        (((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6;
    let y = 1.0 - r * t * exp_nonpos(-(a * a));
    y.copysign(x)
}

/// `exp(x)` for `x ≤ 0` (Cephes `expf` polynomial, ≤ 2 ulp; clamped below at
/// −87), written with plain arithmetic and bit casts only so that loops over
/// it vectorize (no libm call).
#[inline]
fn exp_nonpos(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline]
fn gelu_f32(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf_as(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Fused, parallel `y = act(x + bias)` for inference: bias per channel of the
/// last dimension or of dimension 1 (NCHW); optional exact GELU.
#[derive(Debug, Clone)]
struct BiasAct {
    bias: Option<Vec<f32>>,
    channel_dim_last: bool,
    gelu: bool,
}

impl CustomOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "edgeseg-bias-act"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("bias/act: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias/act: input must be contiguous")
        };
        let src = &data[o1..o2];
        let dims = layout.dims();
        let gelu = self.gelu;
        let mut dst = vec![0f32; src.len()];
        match &self.bias {
            None => {
                dst.par_chunks_mut(1 << 14)
                    .zip(src.par_chunks(1 << 14))
                    .for_each(|(d, s)| {
                        if gelu {
                            for (o, &v) in d.iter_mut().zip(s) {
                                *o = gelu_f32(v);
                            }
                        } else {
                            d.copy_from_slice(s);
                        }
                    });
            }
            Some(bias) => {
                let c = bias.len();
                let (chunk, per_channel) = if self.channel_dim_last {
                    if dims.last() != Some(&c) {
                        candle_core::bail!("bias/act: last dim of {dims:?} is not {c}")
                    }
                    (c, false)
                } else {
                    if dims.len() < 2 || dims[1] != c {
                        candle_core::bail!("bias/act: dim 1 of {dims:?} is not {c}")
                    }
                    (dims[2..].iter().product::<usize>().max(1), true)
                };
                dst.par_chunks_mut(chunk)
                    .zip(src.par_chunks(chunk))
                    .enumerate()
                    .for_each(|(i, (d, s))| match (per_channel, gelu) {
                        (true, true) => {
                            let b = bias[i % c];
                            for (o, &v) in d.iter_mut().zip(s) {
                                *o = gelu_f32(v + b);
                            }
                        }
                        (true, false) => {
                            let b = bias[i % c];
                            for (o, &v) in d.iter_mut().zip(s) {
                                *o = v + b;
                            }
                        }
                        (false, true) => {
                            for ((o, &v), &b) in d.iter_mut().zip(s).zip(bias) {
                                *o = gelu_f32(v + b);
                            }
                        }
                        (false, false) => {
                            for ((o, &v), &b) in d.iter_mut().zip(s).zip(bias) {
                                *o = v + b;
                            }
                        }
                    });
            }
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Layer norm over the last dimension (PyTorch `nn.LayerNorm`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    mode: Mode,
    op: Option<LayerNormOp>,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of size `dim`.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64, mode: Mode) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        let op = match mode {
            Mode::Inference => Some(LayerNormOp {
                w: weight.to_vec1()?,
                b: bias.to_vec1()?,
                eps,
            }),
            Mode::Training => None,
        };
        Ok(Self {
            weight,
            bias,
            eps,
            mode,
            op,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match (&self.op, self.mode) {
            (Some(op), Mode::Inference) => x.contiguous()?.apply_op1_no_bwd(op),
            _ => candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32),
        }
    }
}

/// Inference layer norm: two-pass mean and variance accumulated in f64 (candle's
/// fused `layer_norm` uses `E[x²] − E[x]²` in f32, which loses precision when the
/// mean is large).
#[derive(Debug, Clone)]
struct LayerNormOp {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f64,
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "edgeseg-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("layer norm: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("layer norm: input must be contiguous")
        };
        let n = self.w.len();
        if layout.dims().last() != Some(&n) {
            candle_core::bail!("layer norm: last dim of {:?} is not {n}", layout.dims())
        }
        let src = &data[o1..o2];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(n)
            .zip(src.par_chunks(n))
            .for_each(|(d, s)| {
                let mean = s.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let var = s
                    .iter()
                    .map(|&v| {
                        let t = f64::from(v) - mean;
                        t * t
                    })
                    .sum::<f64>()
                    / n as f64;
                let rstd = 1.0 / (var + self.eps).sqrt();
                for i in 0..n {
                    d[i] = ((f64::from(s[i]) - mean) * rstd) as f32 * self.w[i] + self.b[i];
                }
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// SAM's `LayerNorm2d`: layer norm over the channel dimension of `B×C×H×W`.
/// Differentiable tensor ops in training; one parallel pass (statistics in
/// f64) in inference.
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    op: Option<LayerNorm2dOp>,
}

impl LayerNorm2d {
    /// Loads `weight` and `bias` of size `channels` (eps 1e-6 in SAM).
    pub fn new(vb: VarBuilder, channels: usize, eps: f64, mode: Mode) -> Result<Self> {
        let w = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let b = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let op = match mode {
            Mode::Inference => Some(LayerNorm2dOp {
                w: w.to_vec1()?,
                b: b.to_vec1()?,
                eps,
            }),
            Mode::Training => None,
        };
        Ok(Self {
            weight: w.reshape((1, channels, 1, 1))?,
            bias: b.reshape((1, channels, 1, 1))?,
            eps,
            op,
        })
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(op) = &self.op {
            return x.contiguous()?.apply_op1_no_bwd(op);
        }
        let u = x.mean_keepdim(1)?;
        let xc = x.broadcast_sub(&u)?;
        let s = xc.sqr()?.mean_keepdim(1)?;
        let xn = xc.broadcast_div(&(s + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm2dOp {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f64,
}

impl CustomOp1 for LayerNorm2dOp {
    fn name(&self) -> &'static str {
        "edgeseg-layer-norm-2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("layer norm 2d: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("layer norm 2d: input must be contiguous")
        };
        let &[bsz, c, h, w] = layout.dims() else {
            candle_core::bail!("layer norm 2d: expected NCHW, got {:?}", layout.dims())
        };
        if c != self.w.len() {
            candle_core::bail!("layer norm 2d: {c} channels, expected {}", self.w.len())
        }
        let src = &data[o1..o2];
        let hw = h * w;
        const TILE: usize = 256;
        let tiles = hw.div_ceil(TILE);
        // each task normalizes a tile of pixels of one image; results are
        // gathered per task and scattered afterwards (channel-strided output)
        let parts: Vec<(usize, usize, Vec<f32>)> = (0..bsz * tiles)
            .into_par_iter()
            .map(|task| {
                let bi = task / tiles;
                let p0 = (task % tiles) * TILE;
                let n = TILE.min(hw - p0);
                let img = &src[bi * c * hw..(bi + 1) * c * hw];
                let mut mean = vec![0f64; n];
                for ch in 0..c {
                    for (m, &v) in mean.iter_mut().zip(&img[ch * hw + p0..ch * hw + p0 + n]) {
                        *m += f64::from(v);
                    }
                }
                mean.iter_mut().for_each(|m| *m /= c as f64);
                let mut var = vec![0f64; n];
                for ch in 0..c {
                    for ((s, &v), &m) in var
                        .iter_mut()
                        .zip(&img[ch * hw + p0..ch * hw + p0 + n])
                        .zip(&mean)
                    {
                        let d = f64::from(v) - m;
                        *s += d * d;
                    }
                }
                let rstd: Vec<f64> = var
                    .iter()
                    .map(|s| 1.0 / (s / c as f64 + self.eps).sqrt())
                    .collect();
                let mut out = vec![0f32; c * n];
                for ch in 0..c {
                    let (wv, bv) = (self.w[ch], self.b[ch]);
                    for (i, o) in out[ch * n..(ch + 1) * n].iter_mut().enumerate() {
                        let v = f64::from(img[ch * hw + p0 + i]);
                        *o = ((v - mean[i]) * rstd[i]) as f32 * wv + bv;
                    }
                }
                (bi, p0, out)
            })
            .collect();
        let mut dst = vec![0f32; src.len()];
        for (bi, p0, out) in parts {
            let n = out.len() / c;
            for ch in 0..c {
                let d0 = bi * c * hw + ch * hw + p0;
                dst[d0..d0 + n].copy_from_slice(&out[ch * n..(ch + 1) * n]);
            }
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Geometry of a 2D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Groups (`c_in` for a depthwise convolution).
    pub groups: usize,
}

impl ConvGeom {
    fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c_in && self.c_in == self.c_out
    }
}

/// Convolution with weight `[c_out, c_in/groups, k, k]` and bias `[c_out]`,
/// dispatched to the fastest form: depthwise with a hand-written kernel
/// (inference only, bias and activation fused), 1×1 as a matrix product, else
/// candle's `conv2d`; the bias (and activation) is then added by `bias_act`
/// when given, else by a broadcast add.
fn conv_forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeom,
    dw: Option<&DepthwiseOp>,
    bias_act: Option<&BiasAct>,
) -> Result<Tensor> {
    if let Some(op) = dw {
        return x.contiguous()?.apply_op1_no_bwd(op);
    }
    let (bsz, _, h, wd) = x.dims4()?;
    let y = if g.k == 1 && g.stride == 1 && g.pad == 0 && g.groups == 1 {
        let w2 = w.reshape((g.c_out, g.c_in))?;
        w2.broadcast_left(bsz)?
            .matmul(&x.reshape((bsz, g.c_in, h * wd))?)?
            .reshape((bsz, g.c_out, h, wd))?
    } else if g.is_depthwise() {
        depthwise_conv_shifted(x, w, g)?
    } else {
        x.conv2d(w, g.pad, g.stride, 1, g.groups)?
    };
    match (bias_act, b) {
        (Some(op), _) => y.apply_op1_no_bwd(op),
        (None, Some(b)) => y.broadcast_add(&b.reshape((1, g.c_out, 1, 1))?),
        (None, None) => Ok(y),
    }
}

/// A depthwise convolution (`groups == c_in == c_out`) as a sum of `k²` shifted,
/// per-channel-scaled views of the zero-padded input, every step differentiable.
///
/// candle's grouped `conv2d` runs one convolution per group (and as many in the
/// backward pass), which made a training step of a student spend most of its time
/// in its depthwise layers; this form is one pass over the tensor per kernel tap.
/// Strides above 1 subsample the stride-1 result.
pub fn depthwise_conv_shifted(x: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let (bsz, c, h, wd) = x.dims4()?;
    let k = g.k;
    let xp = x
        .pad_with_zeros(2, g.pad, g.pad)?
        .pad_with_zeros(3, g.pad, g.pad)?;
    let (ph, pw) = (h + 2 * g.pad, wd + 2 * g.pad);
    if ph < k || pw < k || g.stride == 0 {
        candle_core::bail!("depthwise conv: {h}x{wd} input, kernel {k}, pad {}", g.pad);
    }
    let (oh1, ow1) = (ph - k + 1, pw - k + 1);
    let mut acc: Option<Tensor> = None;
    for i in 0..k {
        for j in 0..k {
            let tap = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))?;
            let term = xp
                .narrow(2, i, oh1)?
                .narrow(3, j, ow1)?
                .broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    let y = acc.ok_or_else(|| candle_core::Error::Msg("depthwise conv: empty kernel".into()))?;
    let s = g.stride;
    if s == 1 {
        return Ok(y);
    }
    let (oh, ow) = (oh1.div_ceil(s), ow1.div_ceil(s));
    let y = y
        .pad_with_zeros(2, 0, oh * s - oh1)?
        .pad_with_zeros(3, 0, ow * s - ow1)?;
    y.reshape((bsz, c, oh, s, ow, s))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((bsz, c, oh, ow))
}

/// A plain convolution with bias (PyTorch `nn.Conv2d`, `weight` and `bias`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    w: Tensor,
    b: Option<Tensor>,
    g: ConvGeom,
}

impl Conv2d {
    /// Loads `weight` (and `bias` when `bias` is true).
    pub fn new(vb: VarBuilder, g: ConvGeom, bias: bool) -> Result<Self> {
        let w = vb.get_with_hints(
            (g.c_out, g.c_in / g.groups, g.k, g.k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let b = if bias {
            Some(vb.get_with_hints(g.c_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { w, b, g })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_forward(x, &self.w, self.b.as_ref(), &self.g, None, None)
    }
}

/// TinyViT's `Conv2d_BN`: convolution without bias (`c.weight`) followed by an
/// inference BatchNorm (`bn.weight`, `bn.bias`, `bn.running_mean`,
/// `bn.running_var`, eps 1e-5), folded into one convolution:
/// `s = γ / √(var + eps)`, `W' = W·s`, `b' = β − mean·s`.
///
/// In [`Mode::Inference`] the folding is done once; in [`Mode::Training`] it is
/// part of the graph, so γ, β and the convolution weight receive gradients
/// (batch statistics are not used: BatchNorm behaves as in `eval()`).
#[derive(Debug, Clone)]
pub struct Conv2dBn {
    g: ConvGeom,
    conv_w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    folded: Option<(Tensor, Tensor)>,
    dw: Option<DepthwiseOp>,
    bias_act: Option<BiasAct>,
    gelu: bool,
}

const BN_EPS: f64 = 1e-5;

impl Conv2dBn {
    /// Loads `c.weight` and the `bn.*` tensors under `vb`; `gelu` appends an
    /// exact GELU (fused into the convolution's output pass in inference).
    pub fn new(vb: VarBuilder, g: ConvGeom, mode: Mode, gelu: bool) -> Result<Self> {
        let conv_w = vb.pp("c").get_with_hints(
            (g.c_out, g.c_in / g.groups, g.k, g.k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bn = vb.pp("bn");
        let gamma = bn.get_with_hints(g.c_out, "weight", Init::Const(1.0))?;
        let beta = bn.get_with_hints(g.c_out, "bias", Init::Const(0.0))?;
        let mean = bn.get_with_hints(g.c_out, "running_mean", Init::Const(0.0))?;
        let var = bn.get_with_hints(g.c_out, "running_var", Init::Const(1.0))?;
        let mut s = Self {
            g,
            conv_w,
            gamma,
            beta,
            mean,
            var,
            folded: None,
            dw: None,
            bias_act: None,
            gelu,
        };
        if mode == Mode::Inference {
            let (w, b) = s.fold()?;
            if g.is_depthwise() {
                s.dw = Some(DepthwiseOp {
                    w: w.flatten_all()?.to_vec1()?,
                    b: b.to_vec1()?,
                    k: g.k,
                    stride: g.stride,
                    pad: g.pad,
                    gelu,
                });
            }
            s.bias_act = Some(BiasAct {
                bias: Some(b.to_vec1()?),
                channel_dim_last: false,
                gelu,
            });
            s.folded = Some((w.detach(), b.detach()));
        }
        Ok(s)
    }

    /// For a depthwise stride-1 convolution in inference: the same convolution
    /// on channels-last tokens (`B×(h·w)×C`), see [`crate::window_ops::DepthwiseTokens`].
    pub fn depthwise_tokens(
        &self,
        h: usize,
        w: usize,
    ) -> Result<Option<crate::window_ops::DepthwiseTokens>> {
        let (Some((wt, b)), true) = (
            &self.folded,
            self.g.is_depthwise() && self.g.stride == 1 && !self.gelu,
        ) else {
            return Ok(None);
        };
        let k = self.g.k;
        // (C, 1, k, k) -> (k·k, C)
        let wt = wt
            .reshape((self.g.c_out, k * k))?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        Ok(Some(crate::window_ops::DepthwiseTokens {
            w: wt,
            b: b.to_vec1()?,
            k,
            h,
            wd: w,
        }))
    }

    /// The folded weight and bias (differentiable tensor ops).
    fn fold(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.gamma.broadcast_div(&(&self.var + BN_EPS)?.sqrt()?)?;
        let w = self
            .conv_w
            .broadcast_mul(&scale.reshape((self.g.c_out, 1, 1, 1))?)?;
        let b = (&self.beta - self.mean.mul(&scale)?)?;
        Ok((w, b))
    }
}

impl Module for Conv2dBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.folded {
            Some((w, b)) => conv_forward(
                x,
                w,
                Some(b),
                &self.g,
                self.dw.as_ref(),
                self.bias_act.as_ref(),
            ),
            None => {
                let (w, b) = self.fold()?;
                let y = conv_forward(x, &w, Some(&b), &self.g, None, None)?;
                if self.gelu {
                    y.gelu_erf()
                } else {
                    Ok(y)
                }
            }
        }
    }
}

/// Depthwise convolution (one `k×k` filter per channel) with bias, NCHW f32,
/// parallel over channel planes. Inference only (no backward).
#[derive(Debug, Clone)]
struct DepthwiseOp {
    w: Vec<f32>,
    b: Vec<f32>,
    k: usize,
    stride: usize,
    pad: usize,
    gelu: bool,
}

impl CustomOp1 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "edgeseg-depthwise-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("depthwise conv: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise conv: input must be contiguous")
        };
        let &[bsz, c, h, w] = layout.dims() else {
            candle_core::bail!("depthwise conv: expected NCHW, got {:?}", layout.dims())
        };
        let (k, s, p) = (self.k, self.stride, self.pad);
        if c != self.b.len() || self.w.len() != c * k * k || h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("depthwise conv: bad shapes {:?}", layout.dims())
        }
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let src = &data[o1..o2];
        let mut dst = vec![0f32; bsz * c * ho * wo];
        dst.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(plane, out)| {
                let ch = plane % c;
                let inp = &src[plane * h * w..(plane + 1) * h * w];
                let wk = &self.w[ch * k * k..(ch + 1) * k * k];
                for oy in 0..ho {
                    let orow = &mut out[oy * wo..(oy + 1) * wo];
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let irow = &inp[iy as usize * w..(iy as usize + 1) * w];
                        for kx in 0..k {
                            let wv = wk[ky * k + kx];
                            // valid ox: 0 <= ox*s + kx - p < w
                            let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
                            let hi = if w + p > kx {
                                ((w + p - kx - 1) / s + 1).min(wo)
                            } else {
                                0
                            };
                            if hi <= lo {
                                continue;
                            }
                            if s == 1 {
                                let off = lo + kx - p;
                                for (o, &v) in orow[lo..hi].iter_mut().zip(&irow[off..]) {
                                    *o += wv * v;
                                }
                            } else {
                                for (ox, o) in orow.iter_mut().enumerate().take(hi).skip(lo) {
                                    *o += wv * irow[ox * s + kx - p];
                                }
                            }
                        }
                    }
                    let bv = self.b[ch];
                    if self.gelu {
                        orow.iter_mut().for_each(|o| *o = gelu_f32(*o + bv));
                    } else {
                        orow.iter_mut().for_each(|o| *o += bv);
                    }
                }
            });
        Ok((CpuStorage::F32(dst), Shape::from_dims(&[bsz, c, ho, wo])))
    }
}

/// PyTorch `nn.ConvTranspose2d` with kernel 2 and stride 2 (non-overlapping),
/// computed as one matrix product: weight `[c_in, c_out, 2, 2]`, bias `[c_out]`.
/// In inference the 2×2 pixel shuffle, bias and optional GELU are one pass.
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    w: Tensor,
    /// `(O·4)×C` weight matrix, precomputed in inference.
    wt: Option<Tensor>,
    b: Tensor,
    c_in: usize,
    c_out: usize,
    shuffle: Option<PixelShuffle2>,
    gelu: bool,
}

impl ConvTranspose2x2 {
    /// Loads `weight` and `bias`; `gelu` appends an exact GELU.
    pub fn new(vb: VarBuilder, c_in: usize, c_out: usize, mode: Mode, gelu: bool) -> Result<Self> {
        let w = vb.get_with_hints(
            (c_in, c_out, 2, 2),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let b = vb.get_with_hints(c_out, "bias", Init::Const(0.0))?;
        let (wt, shuffle) = match mode {
            Mode::Inference => (
                Some(w.reshape((c_in, c_out * 4))?.t()?.contiguous()?.detach()),
                Some(PixelShuffle2 {
                    bias: b.to_vec1()?,
                    gelu,
                }),
            ),
            Mode::Training => (None, None),
        };
        Ok(Self {
            w,
            wt,
            b,
            c_in,
            c_out,
            shuffle,
            gelu,
        })
    }
}

impl Module for ConvTranspose2x2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (bsz, _, h, w) = x.dims4()?;
        // out[o, 2i+ky, 2j+kx] = Σ_c x[c, i, j] · W[c, o, ky, kx] + b[o]
        let x2 = x.reshape((bsz, self.c_in, h * w))?;
        if let (Some(wt), Some(op)) = (&self.wt, &self.shuffle) {
            let y = wt.broadcast_left(bsz)?.matmul(&x2)?; // (B, O·4, H·W)
            return y.reshape((bsz, self.c_out * 4, h, w))?.apply_op1_no_bwd(op);
        }
        let wt = self.w.reshape((self.c_in, self.c_out * 4))?.t()?; // (O·4, C)
        let y = wt.broadcast_left(bsz)?.matmul(&x2)?;
        let y = y
            .reshape((bsz, self.c_out, 2, 2, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((bsz, self.c_out, 2 * h, 2 * w))?;
        let y = y.broadcast_add(&self.b.reshape((1, self.c_out, 1, 1))?)?;
        if self.gelu {
            y.gelu_erf()
        } else {
            Ok(y)
        }
    }
}

/// `B×(O·4)×H×W` (per output channel the 4 taps ky,kx) → `B×O×2H×2W`, plus
/// bias per output channel and optional GELU, in one parallel pass.
#[derive(Debug, Clone)]
struct PixelShuffle2 {
    bias: Vec<f32>,
    gelu: bool,
}

impl CustomOp1 for PixelShuffle2 {
    fn name(&self) -> &'static str {
        "edgeseg-pixel-shuffle-2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("pixel shuffle: only f32 is supported")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("pixel shuffle: input must be contiguous")
        };
        let &[bsz, c4, h, w] = layout.dims() else {
            candle_core::bail!("pixel shuffle: expected NCHW, got {:?}", layout.dims())
        };
        let o = self.bias.len();
        if c4 != 4 * o {
            candle_core::bail!("pixel shuffle: {c4} channels is not 4·{o}")
        }
        let src = &data[o1..o2];
        let mut dst = vec![0f32; src.len()];
        // one task per output row (b, o, y)
        dst.par_chunks_mut(2 * w)
            .enumerate()
            .for_each(|(row, out)| {
                let bi = row / (o * 2 * h);
                let oc = (row / (2 * h)) % o;
                let y = row % (2 * h);
                let (i, ky) = (y / 2, y % 2);
                let bias = self.bias[oc];
                for kx in 0..2 {
                    let plane = (bi * c4 + oc * 4 + ky * 2 + kx) * h * w;
                    let srow = &src[plane + i * w..plane + (i + 1) * w];
                    for (j, &v) in srow.iter().enumerate() {
                        let t = v + bias;
                        out[2 * j + kx] = if self.gelu { gelu_f32(t) } else { t };
                    }
                }
            });
        Ok((
            CpuStorage::F32(dst),
            Shape::from_dims(&[bsz, o, 2 * h, 2 * w]),
        ))
    }
}

/// SAM's `MLP`: `num_layers` linear layers with ReLU between them.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Loads `layers.{i}.weight/bias`.
    pub fn new(
        vb: VarBuilder,
        d_in: usize,
        hidden: usize,
        d_out: usize,
        n: usize,
        mode: Mode,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let a = if i == 0 { d_in } else { hidden };
            let b = if i + 1 == n { d_out } else { hidden };
            layers.push(linear(vb.pp(format!("layers.{i}")), a, b, mode)?);
        }
        Ok(Self { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < n {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shifted_depthwise_matches_grouped_conv2d_and_its_gradient() {
        for (h, w, k, stride) in [
            (9, 7, 3, 1),
            (8, 8, 3, 2),
            (7, 9, 3, 2),
            (6, 5, 5, 1),
            (5, 5, 1, 1),
        ] {
            let c = 4;
            let g = ConvGeom {
                c_in: c,
                c_out: c,
                k,
                stride,
                pad: k / 2,
                groups: c,
            };
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (2, c, h, w), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let wt = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (c, 1, k, k), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let want = x.conv2d(&wt, g.pad, stride, 1, c).unwrap();
            let got = depthwise_conv_shifted(&x, &wt, &g).unwrap();
            assert_eq!(want.dims(), got.dims(), "{h}x{w} k{k} s{stride}");
            let d = (&want - &got).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                d.to_scalar::<f32>().unwrap() < 1e-4,
                "{h}x{w} k{k} s{stride}"
            );
            let gw = want.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let gg = got.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let a = gw.get(v.as_tensor()).unwrap();
                let b = gg.get(v.as_tensor()).unwrap();
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let scale = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    d.to_scalar::<f32>().unwrap() <= 1e-4 * scale.max(1.0),
                    "gradient {h}x{w} k{k} s{stride}"
                );
            }
        }
    }

    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // deterministic pseudo-random values (no RNG dependency)
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The inference kernels (folded BN, depthwise op, f64 layer norm) agree
    /// with the differentiable training forms.
    #[test]
    fn inference_kernels_match_training_forms() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        for (i, (stride, h, w)) in [(1, 9, 11), (2, 9, 11), (2, 8, 8), (1, 3, 2)]
            .iter()
            .enumerate()
        {
            let g = ConvGeom {
                c_in: 6,
                c_out: 6,
                k: 3,
                stride: *stride,
                pad: 1,
                groups: 6,
            };
            let name = format!("dw{i}");
            let train = Conv2dBn::new(vb.pp(&name), g, Mode::Training, i % 2 == 0).unwrap();
            // non-trivial BN statistics
            for (n, v) in vm.data().lock().unwrap().iter() {
                if n.starts_with(&name) && n.contains("bn.") {
                    v.set(&(randn(v.dims(), n.len() as u64).abs().unwrap() + 0.5).unwrap())
                        .unwrap();
                }
            }
            let inf = Conv2dBn::new(vb.pp(&name), g, Mode::Inference, i % 2 == 0).unwrap();
            let x = randn(&[2, 6, *h, *w], 7);
            let a = train.forward(&x).unwrap();
            let b = inf.forward(&x).unwrap();
            assert_eq!(a.dims(), b.dims());
            assert!(max_abs_diff(&a, &b) < 1e-5, "depthwise stride {stride}");
        }
        let ln_t = LayerNorm::new(vb.pp("ln"), 16, 1e-5, Mode::Training).unwrap();
        let ln_i = LayerNorm::new(vb.pp("ln"), 16, 1e-5, Mode::Inference).unwrap();
        let x = (randn(&[3, 5, 16], 3) + 100.0).unwrap();
        assert!(max_abs_diff(&ln_t.forward(&x).unwrap(), &ln_i.forward(&x).unwrap()) < 1e-4);
        let l2_t = LayerNorm2d::new(vb.pp("ln2"), 5, 1e-6, Mode::Training).unwrap();
        let l2_i = LayerNorm2d::new(vb.pp("ln2"), 5, 1e-6, Mode::Inference).unwrap();
        let x = randn(&[2, 5, 17, 19], 4).affine(3.0, 2.0).unwrap();
        assert!(max_abs_diff(&l2_t.forward(&x).unwrap(), &l2_i.forward(&x).unwrap()) < 1e-5);
        let s = randn(&[4, 7], 9);
        let d = max_abs_diff(
            &softmax_last(&s, Mode::Training).unwrap(),
            &softmax_last(&s, Mode::Inference).unwrap(),
        );
        assert!(d < 1e-6);
    }

    /// The inline `exp` and GELU are accurate to float precision.
    #[test]
    fn fast_exp_and_gelu_are_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 4.5e-4; // 0 .. -90
            let e = f64::from(exp_nonpos(x));
            let r = f64::from(x).exp();
            if r > 1e-37 {
                worst = worst.max(((e - r) / r).abs());
            }
        }
        assert!(worst < 4e-7, "exp rel error {worst}");
        for i in -8000..=8000 {
            let x = i as f32 * 1e-3;
            let g = f64::from(gelu_f32(x));
            let xd = f64::from(x);
            // erf via the same A&S form in f64 is not exact either: compare
            // against candle's erf-based gelu
            let r = f64::from(
                candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0,
            ) * 0.5
                * xd;
            assert!(
                (g - r).abs() < 2e-6 * xd.abs().max(1.0),
                "gelu({x}) = {g} vs {r}"
            );
        }
    }

    /// The 2×2 transposed convolution equals candle's `conv_transpose2d`.
    #[test]
    fn conv_transpose_matches_candle() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // create the variables, then give the bias non-zero values
        ConvTranspose2x2::new(vb.pp("ct"), 4, 3, Mode::Training, false).unwrap();
        for (n, v) in vm.data().lock().unwrap().iter() {
            if n == "ct.bias" {
                v.set(&randn(&[3], 11)).unwrap();
            }
        }
        let ct = ConvTranspose2x2::new(vb.pp("ct"), 4, 3, Mode::Training, false).unwrap();
        let ct_inf = ConvTranspose2x2::new(vb.pp("ct"), 4, 3, Mode::Inference, false).unwrap();
        let ct_inf_gelu = ConvTranspose2x2::new(vb.pp("ct"), 4, 3, Mode::Inference, true).unwrap();
        let x = randn(&[2, 4, 3, 5], 1);
        let ours = ct.forward(&x).unwrap();
        assert!(max_abs_diff(&ours, &ct_inf.forward(&x).unwrap()) < 1e-5);
        assert!(max_abs_diff(&ours.gelu_erf().unwrap(), &ct_inf_gelu.forward(&x).unwrap()) < 1e-5);
        let reference = x
            .conv_transpose2d(&ct.w, 0, 0, 2, 1)
            .unwrap()
            .broadcast_add(&ct.b.reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(ours.dims(), &[2, 3, 6, 10]);
        assert!(max_abs_diff(&ours, &reference) < 1e-5);
    }
}
