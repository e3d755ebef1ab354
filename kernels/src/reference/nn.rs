//! CPU references of the neural-network building blocks. They accumulate in f64
//! and round once to the output type, so they are the "true" value the kernels'
//! f32 (or f16-in, f32-accumulate) results are compared against with the tiers
//! of [`super::tol`]. The int8 GEMM is the exception: its result is defined bit
//! for bit (exact i32 accumulation, then a fixed sequence of f32 operations).
//!
//! Layouts are row-major; image tensors are NCHW. Shapes are checked with
//! [`NnError`] rather than panics.

/// Errors from the references (shape mismatches).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NnError {
    /// A buffer does not have the length its shape requires.
    #[error("{what}: {got} elements, expected {expected}")]
    BadLength {
        /// Which buffer.
        what: &'static str,
        /// Elements present.
        got: usize,
        /// Elements required.
        expected: usize,
    },
    /// An unusable shape or parameter.
    #[error("invalid shape: {0}")]
    BadShape(String),
}

fn check(what: &'static str, got: usize, dims: &[usize]) -> Result<(), NnError> {
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NnError::BadShape(format!("{what}: {dims:?} overflows")))?;
    if got == expected {
        Ok(())
    } else {
        Err(NnError::BadLength {
            what,
            got,
            expected,
        })
    }
}

/// Activation fused into conv and GEMM epilogues (`ACT_*` in `cu/prelude.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// GELU, exact erf form.
    Gelu,
}

impl Act {
    /// The kernel's activation code.
    pub fn code(self) -> i32 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Gelu => 2,
        }
    }

    /// Applies the activation in f64.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Gelu => gelu64(x),
        }
    }
}

/// GELU (erf form, PyTorch's default) in f64: `0.5·x·(1 + erf(x/√2))`, computed
/// as `0.5·x·erfc(−x/√2)`, which keeps full relative precision for negative `x`
/// (where `1 + erf` cancels).
pub fn gelu64(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Elementwise GELU.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| gelu64(f64::from(v)) as f32).collect()
}

/// LayerNorm over the last dimension of a `rows × c` matrix (biased variance,
/// like PyTorch): `(x − mean) / sqrt(var + eps) · gamma + beta`.
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<Vec<f32>, NnError> {
    check("layer_norm x", x.len(), &[rows, c])?;
    check("layer_norm gamma", gamma.len(), &[c])?;
    check("layer_norm beta", beta.len(), &[c])?;
    if c == 0 {
        return Err(NnError::BadShape("layer_norm over 0 channels".into()));
    }
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(c) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / c as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for (i, &v) in row.iter().enumerate() {
            out.push(
                ((f64::from(v) - mean) * inv * f64::from(gamma[i]) + f64::from(beta[i])) as f32,
            );
        }
    }
    Ok(out)
}

/// LayerNorm2d (SAM's): for an `n × c × hw` tensor, normalizes over `c` at
/// every `(n, pixel)`, then `· gamma[c] + beta[c]`.
pub fn layer_norm2d(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<Vec<f32>, NnError> {
    check("layer_norm2d x", x.len(), &[n, c, hw])?;
    check("layer_norm2d gamma", gamma.len(), &[c])?;
    check("layer_norm2d beta", beta.len(), &[c])?;
    if c == 0 {
        return Err(NnError::BadShape("layer_norm2d over 0 channels".into()));
    }
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for p in 0..hw {
            let at = |k: usize| b * c * hw + k * hw + p;
            let mean = (0..c).map(|k| f64::from(x[at(k)])).sum::<f64>() / c as f64;
            let var = (0..c)
                .map(|k| (f64::from(x[at(k)]) - mean).powi(2))
                .sum::<f64>()
                / c as f64;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            for k in 0..c {
                out[at(k)] = ((f64::from(x[at(k)]) - mean) * inv * f64::from(gamma[k])
                    + f64::from(beta[k])) as f32;
            }
        }
    }
    Ok(out)
}

/// Softmax over the last dimension of a `rows × cols` matrix.
pub fn softmax_rows(x: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>, NnError> {
    check("softmax x", x.len(), &[rows, cols])?;
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols.max(1)).take(rows) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
        let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|&v| (v / s) as f32));
    }
    Ok(out)
}

/// Strides (in elements) of a `[batch, head, token, dim]` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Between batch entries.
    pub batch: usize,
    /// Between heads.
    pub head: usize,
    /// Between tokens.
    pub token: usize,
}

impl Strides {
    /// Contiguous `[b, h, n, d]`.
    pub fn bhnd(heads: usize, tokens: usize, dim: usize) -> Self {
        Self {
            batch: heads * tokens * dim,
            head: tokens * dim,
            token: dim,
        }
    }

    /// Contiguous `[b, n, h, d]` (a linear layer's output split into heads).
    pub fn bnhd(heads: usize, tokens: usize, dim: usize) -> Self {
        Self {
            batch: tokens * heads * dim,
            head: dim,
            token: heads * dim,
        }
    }

    fn at(&self, b: usize, h: usize, n: usize) -> usize {
        b * self.batch + h * self.head + n * self.token
    }
}

/// Head dimensions the GPU attention kernel is built for (`attention_f16_d*`).
pub const ATTENTION_HEAD_DIMS: [usize; 7] = [8, 12, 16, 24, 32, 48, 64];

/// Shape of an attention call: `batch × heads` independent problems of `nq`
/// queries against `nk` keys, head dimension `dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Batch (for windowed attention: batch × windows).
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Queries per head.
    pub nq: usize,
    /// Keys (and values) per head.
    pub nk: usize,
    /// Head dimension (on the GPU one of [`ATTENTION_HEAD_DIMS`]).
    pub dim: usize,
}

/// Multi-head attention, f16 inputs (bit patterns), f64 math, f16 output:
/// `o = softmax(q·kᵀ·scale + bias[h]) · v`, where the optional `bias` is
/// `heads × nq × nk` f32 and shared by the whole batch (TinyViT's attention
/// biases, which are the same for every window). `q`, `k`, `v`, `o` are read and
/// written through their [`Strides`]; `o` must be sized for its strides and is
/// written only at the addressed elements.
#[allow(clippy::too_many_arguments)]
pub fn attention_f16(
    s: AttnShape,
    q: &[u16],
    qs: Strides,
    k: &[u16],
    ks: Strides,
    v: &[u16],
    vs: Strides,
    bias: Option<&[f32]>,
    scale: f32,
    o: &mut [u16],
    os: Strides,
) -> Result<(), NnError> {
    let need = |st: Strides, n: usize| {
        if s.batch == 0 || s.heads == 0 || n == 0 {
            0
        } else {
            st.at(s.batch - 1, s.heads - 1, n - 1) + s.dim
        }
    };
    for (what, len, st, n) in [
        ("attention q", q.len(), qs, s.nq),
        ("attention k", k.len(), ks, s.nk),
        ("attention v", v.len(), vs, s.nk),
        ("attention o", o.len(), os, s.nq),
    ] {
        if len < need(st, n) {
            return Err(NnError::BadLength {
                what,
                got: len,
                expected: need(st, n),
            });
        }
    }
    if s.nk == 0 || s.dim == 0 {
        return Err(NnError::BadShape(format!("{s:?}")));
    }
    if let Some(b) = bias {
        check("attention bias", b.len(), &[s.heads, s.nq, s.nk])?;
    }
    let f = |x: u16| f64::from(half::f16::from_bits(x).to_f32());
    let mut p = vec![0f64; s.nk];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.nq {
                let qi = qs.at(b, h, i);
                for (j, pj) in p.iter_mut().enumerate() {
                    let kj = ks.at(b, h, j);
                    let dot: f64 = (0..s.dim).map(|d| f(q[qi + d]) * f(k[kj + d])).sum();
                    let bb = bias.map_or(0.0, |bs| f64::from(bs[(h * s.nq + i) * s.nk + j]));
                    *pj = dot * f64::from(scale) + bb;
                }
                let m = p.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                let mut den = 0.0;
                for pj in p.iter_mut() {
                    *pj = (*pj - m).exp();
                    den += *pj;
                }
                let oi = os.at(b, h, i);
                for d in 0..s.dim {
                    let num: f64 = (0..s.nk).map(|j| p[j] * f(v[vs.at(b, h, j) + d])).sum();
                    o[oi + d] = half::f16::from_f64(num / den).to_bits();
                }
            }
        }
    }
    Ok(())
}

/// Window partition (TinyViT / SAM-ViT): a `b × h × w × c` token map, zero-padded
/// at the bottom and right to multiples of `ws`, cut into `ws × ws` windows:
/// output `(b · ⌈h/ws⌉ · ⌈w/ws⌉) × ws² × c`, windows in row-major order.
pub fn window_partition<T: Copy + Default>(
    x: &[T],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    ws: usize,
) -> Result<Vec<T>, NnError> {
    check("window_partition x", x.len(), &[b, h, w, c])?;
    if ws == 0 {
        return Err(NnError::BadShape("window size 0".into()));
    }
    let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
    let mut out = vec![T::default(); b * nh * nw * ws * ws * c];
    for bi in 0..b {
        for y in 0..h {
            for xx in 0..w {
                let win = (bi * nh + y / ws) * nw + xx / ws;
                let t = (y % ws) * ws + xx % ws;
                let dst = (win * ws * ws + t) * c;
                let src = ((bi * h + y) * w + xx) * c;
                out[dst..dst + c].copy_from_slice(&x[src..src + c]);
            }
        }
    }
    Ok(out)
}

/// Inverse of [`window_partition`]: drops the padding.
pub fn window_reverse<T: Copy + Default>(
    win: &[T],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    ws: usize,
) -> Result<Vec<T>, NnError> {
    if ws == 0 {
        return Err(NnError::BadShape("window size 0".into()));
    }
    let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
    check("window_reverse input", win.len(), &[b, nh, nw, ws, ws, c])?;
    let mut out = vec![T::default(); b * h * w * c];
    for bi in 0..b {
        for y in 0..h {
            for xx in 0..w {
                let wi = (bi * nh + y / ws) * nw + xx / ws;
                let src = (wi * ws * ws + (y % ws) * ws + xx % ws) * c;
                let dst = ((bi * h + y) * w + xx) * c;
                out[dst..dst + c].copy_from_slice(&win[src..src + c]);
            }
        }
    }
    Ok(out)
}

/// BatchNorm folded into a per-channel affine map: `y = conv(x)·scale + shift`
/// with `scale = γ/√(var+eps)`, `shift = β − mean·scale + bias·scale`.
pub fn fold_bn(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    conv_bias: Option<&[f32]>,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut scale = Vec::with_capacity(gamma.len());
    let mut shift = Vec::with_capacity(gamma.len());
    for i in 0..gamma.len() {
        let s = f64::from(gamma[i]) / (f64::from(var[i]) + f64::from(eps)).sqrt();
        let b = conv_bias.map_or(0.0, |cb| f64::from(cb[i]));
        scale.push(s as f32);
        shift.push((f64::from(beta[i]) + (b - f64::from(mean[i])) * s) as f32);
    }
    (scale, shift)
}

/// Shape of a 2D convolution (NCHW, square kernel, zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (= `cin` for depthwise).
    pub cout: usize,
    /// Kernel size (1 or 3 on the GPU).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Depthwise (`groups = cin`).
    pub depthwise: bool,
}

impl ConvShape {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |i: usize| (i + 2 * self.pad).saturating_sub(self.k) / self.stride.max(1) + 1;
        (o(self.h), o(self.w))
    }
}

/// Convolution with folded BatchNorm and activation:
/// `y[n,co,y,x] = act((Σ w·x)·scale[co] + shift[co])`; weights are
/// `cout × cin × k × k`, or `c × 1 × k × k` when depthwise.
pub fn conv2d_bn_act(
    x: &[f32],
    wt: &[f32],
    scale: &[f32],
    shift: &[f32],
    s: ConvShape,
    act: Act,
) -> Result<Vec<f32>, NnError> {
    if s.k == 0 || s.stride == 0 || s.h + 2 * s.pad < s.k || s.w + 2 * s.pad < s.k {
        return Err(NnError::BadShape(format!("{s:?}")));
    }
    if s.depthwise && s.cin != s.cout {
        return Err(NnError::BadShape("depthwise needs cin == cout".into()));
    }
    check("conv x", x.len(), &[s.n, s.cin, s.h, s.w])?;
    let wcin = if s.depthwise { 1 } else { s.cin };
    check("conv weight", wt.len(), &[s.cout, wcin, s.k, s.k])?;
    check("conv scale", scale.len(), &[s.cout])?;
    check("conv shift", shift.len(), &[s.cout])?;
    let (ho, wo) = s.out_hw();
    let mut out = vec![0f32; s.n * s.cout * ho * wo];
    for b in 0..s.n {
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0f64;
                    let cis = if s.depthwise { co..co + 1 } else { 0..s.cin };
                    for ci in cis {
                        let wci = if s.depthwise { 0 } else { ci };
                        for ky in 0..s.k {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.k {
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((b * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = wt[((co * wcin + wci) * s.k + ky) * s.k + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    let y = acc * f64::from(scale[co]) + f64::from(shift[co]);
                    out[((b * s.cout + co) * ho + oy) * wo + ox] = act.apply(y) as f32;
                }
            }
        }
    }
    Ok(out)
}

/// Transposed convolution with a 2×2 kernel and stride 2 (SAM's mask-decoder
/// upscaling, `ConvTranspose2d(cin, cout, 2, stride=2)`), NCHW:
/// `y[n,co,2i+dy,2j+dx] = bias[co] + Σ_ci x[n,ci,i,j]·w[ci,co,dy,dx]`, weights
/// `cin × cout × 2 × 2` (PyTorch/ONNX layout), output `n × cout × 2h × 2w`.
/// The windows do not overlap, so every output pixel is one dot product of
/// length `cin`. There is no CUDA kernel for it yet (it is a GEMM over the
/// `h·w × cin` tokens followed by a pixel shuffle).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2x2(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
) -> Result<Vec<f32>, NnError> {
    check("conv_transpose x", x.len(), &[n, cin, h, w])?;
    check("conv_transpose weight", wt.len(), &[cin, cout, 2, 2])?;
    check("conv_transpose bias", bias.len(), &[cout])?;
    let (ho, wo) = (2 * h, 2 * w);
    let mut out = vec![0f32; n * cout * ho * wo];
    for b in 0..n {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (i, j, dy, dx) = (oy / 2, ox / 2, oy % 2, ox % 2);
                    let mut acc = f64::from(bias[co]);
                    for ci in 0..cin {
                        let xv = x[((b * cin + ci) * h + i) * w + j];
                        let wv = wt[((ci * cout + co) * 2 + dy) * 2 + dx];
                        acc += f64::from(xv) * f64::from(wv);
                    }
                    out[((b * cout + co) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
    Ok(out)
}

/// GEMM with fused bias and activation, in PyTorch `Linear` layout:
/// `c[m,n] = act(Σ_k a[m,k]·w[n,k] + bias[n])` (`a`: `m × k`, `w`: `n × k`).
pub fn gemm_bias_act(
    a: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    act: Act,
) -> Result<Vec<f32>, NnError> {
    check("gemm a", a.len(), &[m, k])?;
    check("gemm w", w.len(), &[n, k])?;
    if let Some(b) = bias {
        check("gemm bias", b.len(), &[n])?;
    }
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|t| f64::from(a[i * k + t]) * f64::from(w[j * k + t]))
                .sum();
            c[i * n + j] = act.apply(dot + bias.map_or(0.0, |b| f64::from(b[j]))) as f32;
        }
    }
    Ok(c)
}

/// The f16 GEMM: f16 inputs (bit patterns), f32 bias, f16 output rounded once
/// from the f64 value.
pub fn gemm_bias_act_f16(
    a: &[u16],
    w: &[u16],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    act: Act,
) -> Result<Vec<u16>, NnError> {
    let c = gemm_bias_act(
        &super::from_f16_bits(a),
        &super::from_f16_bits(w),
        bias,
        m,
        n,
        k,
        act,
    )?;
    Ok(super::to_f16_bits(&c))
}

/// int8 GEMM with per-output-channel dequantization, defined bit for bit:
/// `acc = Σ_k a[m,k]·w[n,k]` exactly in i32, then in f32
/// `c[m,n] = (acc as f32)·scale[n] + bias[n]` (one rounding per operation, no
/// FMA), where `scale[n] = a_scale·w_scale[n]` is folded by the caller.
/// `k` must be a multiple of 4 (the kernel reads packed 4-byte groups, dp4a).
#[allow(clippy::too_many_arguments)]
pub fn gemm_i8_dequant(
    a: &[i8],
    w: &[i8],
    scale: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<f32>, NnError> {
    if !k.is_multiple_of(4) {
        return Err(NnError::BadShape(format!(
            "int8 gemm k = {k} not a multiple of 4"
        )));
    }
    check("gemm_i8 a", a.len(), &[m, k])?;
    check("gemm_i8 w", w.len(), &[n, k])?;
    check("gemm_i8 scale", scale.len(), &[n])?;
    if let Some(b) = bias {
        check("gemm_i8 bias", b.len(), &[n])?;
    }
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: i32 = (0..k)
                .map(|t| i32::from(a[i * k + t]) * i32::from(w[j * k + t]))
                .sum();
            c[i * n + j] = (acc as f32) * scale[j] + bias.map_or(0.0, |b| b[j]);
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_known_values() {
        // (Python: 0.5 * x * (1 + math.erf(x / math.sqrt(2))))
        let want = [
            -0.00404969409489031,
            -0.15865525393145707,
            0.0,
            0.34573123063700656,
            1.9544997361036416,
        ];
        for (x, w) in [-3.0, -1.0, 0.0, 0.5, 2.0].iter().zip(want) {
            assert!((gelu64(*x) - w).abs() < 1e-12, "gelu({x}) = {}", gelu64(*x));
        }
        // far left tail: relative precision kept (1 + erf would give 0 or noise here)
        // (Python: 0.5 * -10 * math.erfc(10 / math.sqrt(2)) = -7.619853024160593e-23)
        let g = gelu64(-10.0);
        assert!((g / -7.6198530241605e-23 - 1.0).abs() < 1e-10, "{g}");
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_unit_variance() {
        let x: Vec<f32> = (0..12).map(|i| (i * i) as f32 * 0.3 - 2.0).collect();
        let y = layer_norm(&x, 3, 4, &[1.0; 4], &[0.0; 4], 0.0).unwrap();
        for row in y.chunks(4) {
            let m: f64 = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0;
            let v: f64 = row.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / 4.0;
            assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5, "{m} {v}");
        }
        assert!(layer_norm(&x, 3, 5, &[1.0; 5], &[0.0; 5], 0.0).is_err());
    }

    #[test]
    fn layer_norm2d_equals_layer_norm_on_transposed() {
        let (n, c, hw) = (2, 5, 3);
        let x: Vec<f32> = (0..n * c * hw)
            .map(|i| ((i * 7) % 11) as f32 - 4.0)
            .collect();
        let g: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * -0.1).collect();
        let y2 = layer_norm2d(&x, n, c, hw, &g, &b, 1e-6).unwrap();
        let mut t = vec![0f32; x.len()];
        for bi in 0..n {
            for k in 0..c {
                for p in 0..hw {
                    t[(bi * hw + p) * c + k] = x[(bi * c + k) * hw + p];
                }
            }
        }
        let y1 = layer_norm(&t, n * hw, c, &g, &b, 1e-6).unwrap();
        for bi in 0..n {
            for k in 0..c {
                for p in 0..hw {
                    assert_eq!(y2[(bi * c + k) * hw + p], y1[(bi * hw + p) * c + k]);
                }
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_are_shift_invariant() {
        let x = [1.0f32, 2.0, 3.0, 1000.0, 1001.0, 1002.0];
        let y = softmax_rows(&x, 2, 3).unwrap();
        assert!((y[0..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for i in 0..3 {
            assert!((y[i] - y[3 + i]).abs() < 1e-7);
        }
    }

    #[test]
    fn attention_with_one_key_returns_its_value_and_strides_agree() {
        let s = AttnShape {
            batch: 1,
            heads: 2,
            nq: 3,
            nk: 1,
            dim: 4,
        };
        let q = super::super::to_f16_bits(&[0.5; 24]);
        let k = super::super::to_f16_bits(&[0.25; 8]);
        let v = super::super::to_f16_bits(&[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0]);
        let mut o = vec![0u16; 24];
        let st = |n| Strides::bhnd(2, n, 4);
        attention_f16(s, &q, st(3), &k, st(1), &v, st(1), None, 0.5, &mut o, st(3)).unwrap();
        let of = super::super::from_f16_bits(&o);
        assert_eq!(&of[0..4], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(&of[12..16], &[-1.0, -2.0, -3.0, -4.0]);
        // the same problem through [b, n, h, d] strides gives the same numbers
        let mut o2 = vec![0u16; 24];
        let bn = |n| Strides::bnhd(2, n, 4);
        attention_f16(
            s,
            &q,
            bn(3),
            &k,
            bn(1),
            &v,
            bn(1),
            None,
            0.5,
            &mut o2,
            bn(3),
        )
        .unwrap();
        assert_eq!(
            &super::super::from_f16_bits(&o2)[4..8],
            &[-1.0, -2.0, -3.0, -4.0]
        );
    }

    #[test]
    fn window_partition_roundtrips_with_padding() {
        let (b, h, w, c, ws) = (2, 5, 7, 3, 4);
        let x: Vec<u16> = (0..(b * h * w * c) as u16).collect();
        let win = window_partition(&x, b, h, w, c, ws).unwrap();
        assert_eq!(win.len(), b * 2 * 2 * ws * ws * c);
        assert_eq!(window_reverse(&win, b, h, w, c, ws).unwrap(), x);
    }

    #[test]
    fn conv1x1_is_a_gemm_and_depthwise_identity_kernel_copies() {
        let s = ConvShape {
            n: 1,
            cin: 3,
            h: 2,
            w: 2,
            cout: 2,
            k: 1,
            stride: 1,
            pad: 0,
            depthwise: false,
        };
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let wt = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5];
        let y = conv2d_bn_act(&x, &wt, &[1.0, 2.0], &[0.0, 1.0], s, Act::None).unwrap();
        assert_eq!(y, vec![-8.0, -8.0, -8.0, -8.0, 13.0, 16.0, 19.0, 22.0]);
        let d = ConvShape {
            cout: 3,
            k: 3,
            pad: 1,
            depthwise: true,
            ..s
        };
        let mut id = vec![0f32; 27];
        for c in 0..3 {
            id[c * 9 + 4] = 1.0;
        }
        let y = conv2d_bn_act(&x, &id, &[1.0; 3], &[0.0; 3], d, Act::Relu).unwrap();
        assert_eq!(y, x);
    }

    #[test]
    fn conv_transpose2x2_scatters_each_input_pixel_to_its_2x2_block() {
        // one input channel, two output channels, 1×2 input
        let x = [1.0f32, 2.0];
        let wt = [1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.5, 0.25];
        let y = conv_transpose2x2(&x, &wt, &[0.5, -0.5], 1, 1, 2, 1, 2).unwrap();
        // channel 0: block of pixel (0,0) = 1·[1 2; 3 4] + 0.5, of (0,1) = 2·[1 2; 3 4] + 0.5
        assert_eq!(&y[..8], &[1.5, 2.5, 2.5, 4.5, 3.5, 4.5, 6.5, 8.5]);
        // channel 1: 1·[-1 0; .5 .25] − 0.5 and 2·[...] − 0.5
        assert_eq!(&y[8..], &[-1.5, -0.5, -2.5, -0.5, 0.0, -0.25, 0.5, 0.0]);
        // two input channels add up
        let x2 = [1.0f32, 1.0];
        let w2 = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0];
        let y2 = conv_transpose2x2(&x2, &w2, &[0.0], 1, 2, 1, 1, 1).unwrap();
        assert_eq!(y2, vec![3.0; 4]);
        assert!(conv_transpose2x2(&x2, &w2, &[0.0; 2], 1, 2, 1, 1, 1).is_err());
    }

    #[test]
    fn fold_bn_matches_unfolded() {
        let (s, t) = fold_bn(&[2.0], &[0.5], &[1.0], &[3.0], Some(&[0.25]), 1.0);
        // bn(conv + bias) = (z + 0.25 - 1) * 2 / 2 + 0.5 = z - 0.25
        assert!((s[0] - 1.0).abs() < 1e-7 && (t[0] + 0.25).abs() < 1e-7);
    }

    #[test]
    fn int8_gemm_is_exact_at_the_extremes() {
        let k = 64;
        let a = vec![-128i8; k];
        let w = vec![-128i8; k];
        let c = gemm_i8_dequant(&a, &w, &[1.0], None, 1, 1, k).unwrap();
        assert_eq!(c[0], (128 * 128 * 64) as f32);
        assert!(gemm_i8_dequant(&a[..3], &w[..3], &[1.0], None, 1, 1, 3).is_err());
    }
}

// ------------------------------------------------ data movement (tensor.cu)

/// `y = act(a + b)` (the sum in f32, the activation in f64, as the plan's host
/// op computed it).
pub fn add_act(a: &[f32], b: &[f32], act: Act) -> Result<Vec<f32>, NnError> {
    check("add b", b.len(), &[a.len()])?;
    Ok(a.iter()
        .zip(b)
        .map(|(&p, &q)| act.apply(f64::from(p + q)) as f32)
        .collect())
}

/// `y[i] = x[i] + c[i mod len(c)]`.
pub fn add_broadcast(x: &[f32], c: &[f32]) -> Result<Vec<f32>, NnError> {
    if c.is_empty() || !x.len().is_multiple_of(c.len()) {
        return Err(NnError::BadShape(format!(
            "add of a {}-value constant to {} values",
            c.len(),
            x.len()
        )));
    }
    Ok(x.iter()
        .zip(c.iter().cycle())
        .map(|(&p, &q)| p + q)
        .collect())
}

/// `y` (`cols × rows`) = `x` (`rows × cols`) transposed.
pub fn transpose<T: Copy + Default>(x: &[T], rows: usize, cols: usize) -> Result<Vec<T>, NnError> {
    check("transpose x", x.len(), &[rows, cols])?;
    let mut y = vec![T::default(); x.len()];
    for (r, row) in x.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            y[c * rows + r] = v;
        }
    }
    Ok(y)
}

/// Dense `batch × heads × n × dim` f16 (bit patterns) gathered from f32 `x`:
/// element `(b, h, t, d)` is `x[offset + b·batch + h·head + t·token + d]`.
#[allow(clippy::too_many_arguments)]
pub fn gather_heads_f16(
    x: &[f32],
    offset: usize,
    strides: Strides,
    batch: usize,
    heads: usize,
    n: usize,
    dim: usize,
) -> Result<Vec<u16>, NnError> {
    let mut out = Vec::with_capacity(batch * heads * n * dim);
    for b in 0..batch {
        for h in 0..heads {
            for t in 0..n {
                let at = offset + strides.at(b, h, t);
                let row = x.get(at..at + dim).ok_or(NnError::BadLength {
                    what: "gather x",
                    got: x.len(),
                    expected: at + dim,
                })?;
                out.extend(row.iter().map(|&v| half::f16::from_f32(v).to_bits()));
            }
        }
    }
    Ok(out)
}

/// The box of the distilled students' box prior, from the prompt points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxPriorParams {
    /// Centre x, model-input pixels.
    pub cx: f32,
    /// Centre y.
    pub cy: f32,
    /// Half-width, at least 1.
    pub rx: f32,
    /// Half-height, at least 1.
    pub ry: f32,
    /// The prior's height in logits.
    pub height: f32,
    /// 1 when the prompt has both box corners, else 0 (no prior).
    pub has_box: f32,
}

impl BoxPriorParams {
    /// The box from `n` points (`coords` `n × 2`, SAM `labels`): the mean
    /// top-left (label 2) and bottom-right (label 3) corner, computed as the
    /// exported graph does (`Σ sel·p / max(Σ sel², 1)` with
    /// `sel = relu(1 − |label − l|)`).
    pub fn from_points(coords: &[f32], labels: &[f32], height: f32) -> Result<Self, NnError> {
        check("box prior coords", coords.len(), &[labels.len(), 2])?;
        let corner = |lab: f32| {
            let (mut sx, mut sy, mut count) = (0f32, 0f32, 0f32);
            for (p, &l) in coords.chunks_exact(2).zip(labels) {
                let sel = (1.0 - (l - lab).abs()).max(0.0);
                sx += sel * p[0];
                sy += sel * p[1];
                count += sel * sel;
            }
            let denom = count.max(1.0);
            ([sx / denom, sy / denom], count.min(1.0))
        };
        let (tl, has_tl) = corner(2.0);
        let (br, has_br) = corner(3.0);
        Ok(Self {
            cx: (tl[0] + br[0]) * 0.5,
            cy: (tl[1] + br[1]) * 0.5,
            rx: ((br[0] - tl[0]) * 0.5).max(1.0),
            ry: ((br[1] - tl[1]) * 0.5).max(1.0),
            height,
            has_box: has_tl * has_br,
        })
    }
}

/// `x` (`masks × side × side` logits) plus the box prior of `p` on the grid of
/// cell centres `xs` (columns) and `ys` (rows):
/// `height · clip(1 − (u² + v²), −1, 1) · has_box`, `u = (xs − cx)/rx`,
/// `v = (ys − cy)/ry`, in that f32 operation order.
pub fn box_prior_add(
    x: &[f32],
    xs: &[f32],
    ys: &[f32],
    p: BoxPriorParams,
    masks: usize,
    side: usize,
) -> Result<Vec<f32>, NnError> {
    check("box prior x", x.len(), &[masks, side, side])?;
    check("box prior xs", xs.len(), &[side])?;
    check("box prior ys", ys.len(), &[side])?;
    let mut prior = Vec::with_capacity(side * side);
    for &yv in ys {
        let v = (yv - p.cy) / p.ry;
        for &xv in xs {
            let u = (xv - p.cx) / p.rx;
            let q = (1.0 - (u * u + v * v)).clamp(-1.0, 1.0);
            prior.push(q * p.height * p.has_box);
        }
    }
    Ok(x.chunks_exact((side * side).max(1))
        .flat_map(|m| m.iter().zip(&prior).map(|(a, b)| a + b))
        .collect())
}
