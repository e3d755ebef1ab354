//! TinyViT image encoder as LiteMedSAM configures it (`tiny_vit_sam.py` of the
//! reference): a stem of two Conv+BN with GELU between, an MBConv stage, three
//! windowed-attention stages with patch merging between them (the last merge
//! has stride 1), and SAM's neck.
//!
//! The teacher's stem is two 1×1 convolutions that do not downsample; the
//! students' (`LiteMedSamConfig::stem_stride` 2 or 4) are MobileSAM's 3×3
//! stride-2 convolutions, with the same tensor names.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::LiteMedSamConfig;
use crate::nn::{
    gelu, linear, softmax_last, Conv2d, Conv2dBn, ConvGeom, LayerNorm, LayerNorm2d, Linear, Mode,
    ScaledSoftmax,
};
use crate::window_ops::{DepthwiseTokens, SplitQkv, WindowPartition, WindowReverseAdd};

#[allow(clippy::too_many_arguments)] // private helper mirroring Conv2d_BN(a, b, ks, stride, pad, groups)
fn conv_bn(
    vb: VarBuilder,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    mode: Mode,
    gelu: bool,
) -> Result<Conv2dBn> {
    Conv2dBn::new(
        vb,
        ConvGeom {
            c_in,
            c_out,
            k,
            stride,
            pad: k / 2,
            groups,
        },
        mode,
        gelu,
    )
}

/// `PatchEmbed`: Conv2d_BN(3→d/2) → GELU → Conv2d_BN(d/2→d); 1×1 convolutions
/// for the teacher, 3×3 strided ones for `stem_stride` 2 / 4
/// ([`LiteMedSamConfig::stem_convs`]).
#[derive(Debug, Clone)]
struct PatchEmbed {
    c1: Conv2dBn,
    c2: Conv2dBn,
}

impl PatchEmbed {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        dim: usize,
        cfg: &LiteMedSamConfig,
        mode: Mode,
    ) -> Result<Self> {
        let [(k1, s1), (k2, s2)] = cfg.stem_convs();
        Ok(Self {
            c1: conv_bn(vb.pp("seq.0"), c_in, dim / 2, k1, s1, 1, mode, true)?,
            c2: conv_bn(vb.pp("seq.2"), dim / 2, dim, k2, s2, 1, mode, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c2.forward(&self.c1.forward(x)?)
    }
}

/// `MBConv`: 1×1 expand → GELU → 3×3 depthwise → GELU → 1×1 project, residual, GELU.
#[derive(Debug, Clone)]
struct MbConv {
    conv1: Conv2dBn,
    conv2: Conv2dBn,
    conv3: Conv2dBn,
    mode: Mode,
}

impl MbConv {
    fn new(vb: VarBuilder, dim: usize, expand: usize, mode: Mode) -> Result<Self> {
        let hid = dim * expand;
        Ok(Self {
            conv1: conv_bn(vb.pp("conv1"), dim, hid, 1, 1, 1, mode, true)?,
            conv2: conv_bn(vb.pp("conv2"), hid, hid, 3, 1, hid, mode, true)?,
            conv3: conv_bn(vb.pp("conv3"), hid, dim, 1, 1, 1, mode, false)?,
            mode,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x)?;
        let y = self.conv2.forward(&y)?;
        let y = self.conv3.forward(&y)?;
        gelu(&(y + x)?, self.mode)
    }
}

/// `PatchMerging`: 1×1 → GELU → 3×3 depthwise (stride 2, or 1 for the last
/// merge) → GELU → 1×1; output as tokens `B×L×C`.
#[derive(Debug, Clone)]
struct PatchMerging {
    conv1: Conv2dBn,
    conv2: Conv2dBn,
    conv3: Conv2dBn,
    res: usize,
}

impl PatchMerging {
    fn new(
        vb: VarBuilder,
        res: usize,
        dim: usize,
        out: usize,
        stride: usize,
        mode: Mode,
    ) -> Result<Self> {
        Ok(Self {
            conv1: conv_bn(vb.pp("conv1"), dim, out, 1, 1, 1, mode, true)?,
            conv2: conv_bn(vb.pp("conv2"), out, out, 3, stride, out, mode, true)?,
            conv3: conv_bn(vb.pp("conv3"), out, out, 1, 1, 1, mode, false)?,
            res,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if x.rank() == 3 {
            let (b, _, c) = x.dims3()?;
            x.reshape((b, self.res, self.res, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?
        } else {
            x.clone()
        };
        let x = self.conv1.forward(&x)?;
        let x = self.conv2.forward(&x)?;
        let x = self.conv3.forward(&x)?;
        x.flatten_from(2)?.transpose(1, 2)?.contiguous()
    }
}

/// TinyViT windowed attention with learned relative-position biases
/// (`attention_biases[heads, offsets]`, gathered by |Δy|,|Δx| offset index).
#[derive(Debug, Clone)]
struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    biases: Tensor,
    idxs: Tensor,
    fused: Option<ScaledSoftmax>,
    heads: usize,
    key_dim: usize,
    scale: f64,
    n: usize,
    mode: Mode,
}

impl Attention {
    fn new(vb: VarBuilder, dim: usize, heads: usize, window: usize, mode: Mode) -> Result<Self> {
        let key_dim = dim / heads;
        // offsets in the order itertools.product(range(ws), range(ws)) discovers them
        let points: Vec<(usize, usize)> = (0..window)
            .flat_map(|i| (0..window).map(move |j| (i, j)))
            .collect();
        let mut offsets: Vec<(usize, usize)> = Vec::new();
        let mut idxs = Vec::with_capacity(points.len() * points.len());
        for p1 in &points {
            for p2 in &points {
                let off = (p1.0.abs_diff(p2.0), p1.1.abs_diff(p2.1));
                let i = match offsets.iter().position(|o| *o == off) {
                    Some(i) => i,
                    None => {
                        offsets.push(off);
                        offsets.len() - 1
                    }
                };
                idxs.push(i as u32);
            }
        }
        let n = points.len();
        let biases =
            vb.get_with_hints((heads, offsets.len()), "attention_biases", Init::Const(0.0))?;
        let idxs = Tensor::from_vec(idxs, n * n, biases.device())?;
        let mut a = Self {
            norm: LayerNorm::new(vb.pp("norm"), dim, 1e-5, mode)?,
            qkv: linear(vb.pp("qkv"), dim, 3 * dim, mode)?,
            proj: linear(vb.pp("proj"), dim, dim, mode)?,
            biases,
            idxs,
            fused: None,
            heads,
            key_dim,
            scale: (key_dim as f64).powf(-0.5),
            n,
            mode,
        };
        if mode == Mode::Inference {
            a.fused = Some(ScaledSoftmax {
                scale: a.scale as f32,
                bias: a.bias_table()?.flatten_all()?.to_vec1()?,
            });
        }
        Ok(a)
    }

    fn bias_table(&self) -> Result<Tensor> {
        self.biases
            .index_select(&self.idxs, 1)?
            .reshape((1, self.heads, self.n, self.n))
    }

    /// `x`: `B×N×C` (N = window²).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let kd = self.key_dim;
        let x = self.norm.forward(x)?;
        let (q, k, v) = if self.mode == Mode::Inference {
            let parts = self.qkv.forward(&x)?.apply_op1_no_bwd(&SplitQkv {
                heads: self.heads,
                kd,
            })?;
            (parts.get(0)?, parts.get(1)?, parts.get(2)?)
        } else {
            let qkv = self.qkv.forward(&x)?.reshape((b, n, self.heads, 3 * kd))?;
            (
                qkv.narrow(3, 0, kd)?.permute((0, 2, 1, 3))?.contiguous()?,
                qkv.narrow(3, kd, kd)?.permute((0, 2, 1, 3))?.contiguous()?,
                qkv.narrow(3, 2 * kd, kd)?
                    .permute((0, 2, 1, 3))?
                    .contiguous()?,
            )
        };
        let logits = q.matmul(&k.t()?)?;
        let attn = match &self.fused {
            Some(op) => logits.apply_op1_no_bwd(op)?,
            None => {
                let attn = (logits * self.scale)?.broadcast_add(&self.bias_table()?)?;
                softmax_last(&attn, self.mode)?
            }
        };
        let y = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * kd))?;
        self.proj.forward(&y)
    }
}

/// TinyViT `Mlp`: LayerNorm → fc1 → GELU → fc2.
#[derive(Debug, Clone)]
struct VitMlp {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl VitMlp {
    fn new(vb: VarBuilder, dim: usize, hidden: usize, mode: Mode) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm::new(vb.pp("norm"), dim, 1e-5, mode)?,
            fc1: linear(vb.pp("fc1"), dim, hidden, mode)?,
            fc2: linear(vb.pp("fc2"), hidden, dim, mode)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.norm.forward(x)?;
        self.fc2.forward(&self.fc1.forward_gelu(&x)?)
    }
}

/// `TinyViTBlock`: windowed attention (zero padding bottom/right to a multiple
/// of the window) + residual, 3×3 depthwise `local_conv`, MLP + residual.
#[derive(Debug, Clone)]
struct VitBlock {
    attn: Attention,
    mlp: VitMlp,
    local_conv: Conv2dBn,
    /// Inference: `local_conv` on channels-last tokens.
    local_conv_tokens: Option<DepthwiseTokens>,
    res: usize,
    window: usize,
}

impl VitBlock {
    fn new(
        vb: VarBuilder,
        dim: usize,
        res: usize,
        heads: usize,
        window: usize,
        cfg: &LiteMedSamConfig,
        mode: Mode,
    ) -> Result<Self> {
        let local_conv = conv_bn(
            vb.pp("local_conv"),
            dim,
            dim,
            cfg.local_conv_size,
            1,
            dim,
            mode,
            false,
        )?;
        Ok(Self {
            attn: Attention::new(vb.pp("attn"), dim, heads, window, mode)?,
            mlp: VitMlp::new(vb.pp("mlp"), dim, dim * cfg.mlp_ratio, mode)?,
            local_conv_tokens: local_conv.depthwise_tokens(res, res)?,
            local_conv,
            res,
            window,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(dw) = &self.local_conv_tokens {
            return self.forward_inference(x, dw);
        }
        self.forward_generic(x)
    }

    /// Inference: window partition, reverse + residual and the local conv as
    /// single parallel passes on channels-last tokens.
    fn forward_inference(&self, x: &Tensor, dw: &DepthwiseTokens) -> Result<Tensor> {
        let x = x.contiguous()?;
        let ws = self.window;
        let x = if self.res == ws {
            (&x + self.attn.forward(&x)?)?
        } else {
            let part = WindowPartition {
                h: self.res,
                w: self.res,
                ws,
            };
            let t = self.attn.forward(&x.apply_op1_no_bwd(&part)?)?;
            x.apply_op2_no_bwd(&t, &WindowReverseAdd(part))?
        };
        let x = x.apply_op1_no_bwd(dw)?;
        &x + self.mlp.forward(&x)?
    }

    /// Differentiable form (and the reference for the inference kernels).
    fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let (h, w, ws) = (self.res, self.res, self.window);
        let y = if h == ws && w == ws {
            self.attn.forward(x)?
        } else {
            let pad_b = (ws - h % ws) % ws;
            let pad_r = (ws - w % ws) % ws;
            let mut t = x.reshape((b, h, w, c))?;
            if pad_b > 0 {
                t = t.pad_with_zeros(1, 0, pad_b)?;
            }
            if pad_r > 0 {
                t = t.pad_with_zeros(2, 0, pad_r)?;
            }
            let (ph, pw) = (h + pad_b, w + pad_r);
            let (nh, nw) = (ph / ws, pw / ws);
            let t = t
                .reshape((b, nh, ws, nw, ws, c))?
                .transpose(2, 3)?
                .contiguous()?
                .reshape((b * nh * nw, ws * ws, c))?;
            let t = self.attn.forward(&t)?;
            let mut t = t
                .reshape((b, nh, nw, ws, ws, c))?
                .transpose(2, 3)?
                .contiguous()?
                .reshape((b, ph, pw, c))?;
            if pad_b > 0 || pad_r > 0 {
                t = t.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()?;
            }
            t.reshape((b, l, c))?
        };
        let x = (x + y)?;
        let x = x.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        let x = self.local_conv.forward(&x)?;
        let x = x.reshape((b, c, l))?.transpose(1, 2)?.contiguous()?;
        &x + self.mlp.forward(&x)?
    }
}

/// The TinyViT image encoder: `B×3×S×S` → `B×D×E×E`
/// (E = [`LiteMedSamConfig::embedding_size`], S/4 for the teacher).
#[derive(Debug, Clone)]
pub struct TinyVit {
    patch_embed: PatchEmbed,
    mbconv: Vec<MbConv>,
    merges: Vec<PatchMerging>,
    stages: Vec<Vec<VitBlock>>,
    neck0: Conv2d,
    neck1: LayerNorm2d,
    neck2: Conv2d,
    neck3: LayerNorm2d,
    out_res: usize,
}

impl TinyVit {
    /// Builds the encoder from the tensors under `vb` (`image_encoder.*`).
    pub fn new(vb: VarBuilder, cfg: &LiteMedSamConfig, mode: Mode) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let d = cfg.embed_dims;
        let patch_embed = PatchEmbed::new(vb.pp("patch_embed"), 3, d[0], cfg, mode)?;
        let mut res = cfg.img_size / cfg.stem_stride;
        let l0 = vb.pp("layers.0");
        let mbconv = (0..cfg.depths[0])
            .map(|i| {
                MbConv::new(
                    l0.pp(format!("blocks.{i}")),
                    d[0],
                    cfg.mbconv_expand_ratio,
                    mode,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut merges = vec![PatchMerging::new(
            l0.pp("downsample"),
            res,
            d[0],
            d[1],
            cfg.merge_strides[0],
            mode,
        )?];
        res /= cfg.merge_strides[0];
        let mut stages = Vec::new();
        for s in 1..4 {
            let ls = vb.pp(format!("layers.{s}"));
            let blocks = (0..cfg.depths[s])
                .map(|i| {
                    VitBlock::new(
                        ls.pp(format!("blocks.{i}")),
                        d[s],
                        res,
                        cfg.num_heads[s],
                        cfg.window_sizes[s],
                        cfg,
                        mode,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(blocks);
            if s < 3 {
                merges.push(PatchMerging::new(
                    ls.pp("downsample"),
                    res,
                    d[s],
                    d[s + 1],
                    cfg.merge_strides[s],
                    mode,
                )?);
                res /= cfg.merge_strides[s];
            }
        }
        let nd = cfg.prompt_embed_dim;
        let neck = vb.pp("neck");
        let g1 = ConvGeom {
            c_in: d[3],
            c_out: nd,
            k: 1,
            stride: 1,
            pad: 0,
            groups: 1,
        };
        let g3 = ConvGeom {
            c_in: nd,
            c_out: nd,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
        };
        Ok(Self {
            patch_embed,
            mbconv,
            merges,
            stages,
            neck0: Conv2d::new(neck.pp("0"), g1, false)?,
            neck1: LayerNorm2d::new(neck.pp("1"), nd, 1e-6, mode)?,
            neck2: Conv2d::new(neck.pp("2"), g3, false)?,
            neck3: LayerNorm2d::new(neck.pp("3"), nd, 1e-6, mode)?,
            out_res: res,
        })
    }

    /// Runs the encoder on a normalized, padded `B×3×S×S` batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.patch_embed.forward(x)?;
        for b in &self.mbconv {
            x = b.forward(&x)?;
        }
        x = self.merges[0].forward(&x)?;
        for (s, blocks) in self.stages.iter().enumerate() {
            for b in blocks {
                x = b.forward(&x)?;
            }
            if let Some(m) = self.merges.get(s + 1) {
                x = m.forward(&x)?;
            }
        }
        let (b, _, c) = x.dims3()?;
        let x = x
            .reshape((b, self.out_res, self.out_res, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let x = self.neck1.forward(&self.neck0.forward(&x)?)?;
        self.neck3.forward(&self.neck2.forward(&x)?)
    }
}
