//! SAM's mask decoder: a two-way transformer between prompt tokens and the
//! image embedding, transposed-conv upscalings (two for SAM and the teacher,
//! `LiteMedSamConfig::decoder_upscales` in general), hypernetwork MLPs per
//! mask token and an IoU prediction head.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::LiteMedSamConfig;
use crate::nn::{
    gelu, linear, softmax_last, ConvTranspose2x2, LayerNorm, LayerNorm2d, Linear, Mlp, Mode,
};

/// SAM attention with optional internal downsampling of the embedding width.
#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    mode: Mode,
}

impl Attention {
    fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        downsample: usize,
        mode: Mode,
    ) -> Result<Self> {
        let inner = dim / downsample;
        Ok(Self {
            q: linear(vb.pp("q_proj"), dim, inner, mode)?,
            k: linear(vb.pp("k_proj"), dim, inner, mode)?,
            v: linear(vb.pp("v_proj"), dim, inner, mode)?,
            out: linear(vb.pp("out_proj"), inner, dim, mode)?,
            heads,
            mode,
        })
    }

    fn separate(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        x.reshape((b, n, self.heads, c / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = self.separate(&self.q.forward(q)?)?;
        let k = self.separate(&self.k.forward(k)?)?;
        let v = self.separate(&self.v.forward(v)?)?;
        let (b, h, n, c) = q.dims4()?;
        let attn = (q.matmul(&k.t()?)? / (c as f64).sqrt())?;
        let attn = softmax_last(&attn, self.mode)?;
        attn.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, h * c))?
            .apply(&self.out)
    }
}

/// One `TwoWayAttentionBlock`.
#[derive(Debug, Clone)]
struct TwoWayBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_t2i: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_i2t: Attention,
    skip_first_pe: bool,
}

impl TwoWayBlock {
    fn new(
        vb: VarBuilder,
        cfg: &LiteMedSamConfig,
        skip_first_pe: bool,
        mode: Mode,
    ) -> Result<Self> {
        let (d, h) = (cfg.prompt_embed_dim, cfg.decoder_heads);
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), d, h, 1, mode)?,
            norm1: LayerNorm::new(vb.pp("norm1"), d, 1e-5, mode)?,
            cross_t2i: Attention::new(vb.pp("cross_attn_token_to_image"), d, h, 2, mode)?,
            norm2: LayerNorm::new(vb.pp("norm2"), d, 1e-5, mode)?,
            lin1: linear(vb.pp("mlp.lin1"), d, cfg.decoder_mlp_dim, mode)?,
            lin2: linear(vb.pp("mlp.lin2"), cfg.decoder_mlp_dim, d, mode)?,
            norm3: LayerNorm::new(vb.pp("norm3"), d, 1e-5, mode)?,
            norm4: LayerNorm::new(vb.pp("norm4"), d, 1e-5, mode)?,
            cross_i2t: Attention::new(vb.pp("cross_attn_image_to_token"), d, h, 2, mode)?,
            skip_first_pe,
        })
    }

    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        qpe: &Tensor,
        kpe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + qpe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;
        let q = (&queries + qpe)?;
        let k = (keys + kpe)?;
        let queries = (&queries + self.cross_t2i.forward(&q, &k, keys)?)?;
        let queries = self.norm2.forward(&queries)?;
        let mlp = self.lin2.forward(&self.lin1.forward(&queries)?.relu()?)?;
        let queries = self.norm3.forward(&(queries + mlp)?)?;
        let q = (&queries + qpe)?;
        let k = (keys + kpe)?;
        let keys = (keys + self.cross_i2t.forward(&k, &q, &queries)?)?;
        let keys = self.norm4.forward(&keys)?;
        Ok((queries, keys))
    }
}

/// The mask decoder (`mask_decoder.*`).
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    layers: Vec<TwoWayBlock>,
    final_attn: Attention,
    norm_final: LayerNorm,
    iou_token: Tensor,
    mask_tokens: Tensor,
    up1: ConvTranspose2x2,
    up_norm: LayerNorm2d,
    up2: ConvTranspose2x2,
    /// Upscalings beyond SAM's two (D/8 → D/8, GELU), `output_upscaling.5`,
    /// `.7`, …
    up_extra: Vec<ConvTranspose2x2>,
    hyper: Vec<Mlp>,
    iou_head: Mlp,
    num_mask_tokens: usize,
    mode: Mode,
}

impl MaskDecoder {
    /// Loads the mask decoder.
    pub fn new(vb: VarBuilder, cfg: &LiteMedSamConfig, mode: Mode) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let d = cfg.prompt_embed_dim;
        let nm = cfg.num_multimask_outputs + 1;
        let t = vb.pp("transformer");
        let layers = (0..cfg.decoder_depth)
            .map(|i| TwoWayBlock::new(t.pp(format!("layers.{i}")), cfg, i == 0, mode))
            .collect::<Result<Vec<_>>>()?;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let up = vb.pp("output_upscaling");
        Ok(Self {
            layers,
            final_attn: Attention::new(
                t.pp("final_attn_token_to_image"),
                d,
                cfg.decoder_heads,
                2,
                mode,
            )?,
            norm_final: LayerNorm::new(t.pp("norm_final_attn"), d, 1e-5, mode)?,
            iou_token: vb.pp("iou_token").get_with_hints((1, d), "weight", randn)?,
            mask_tokens: vb
                .pp("mask_tokens")
                .get_with_hints((nm, d), "weight", randn)?,
            up1: ConvTranspose2x2::new(up.pp("0"), d, d / 4, mode, false)?,
            up_norm: LayerNorm2d::new(up.pp("1"), d / 4, 1e-6, mode)?,
            up2: ConvTranspose2x2::new(up.pp("3"), d / 4, d / 8, mode, true)?,
            up_extra: (2..cfg.decoder_upscales)
                .map(|i| {
                    ConvTranspose2x2::new(up.pp((2 * i + 1).to_string()), d / 8, d / 8, mode, true)
                })
                .collect::<Result<Vec<_>>>()?,
            hyper: (0..nm)
                .map(|i| {
                    Mlp::new(
                        vb.pp(format!("output_hypernetworks_mlps.{i}")),
                        d,
                        d,
                        d / 8,
                        3,
                        mode,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            iou_head: Mlp::new(
                vb.pp("iou_prediction_head"),
                d,
                cfg.iou_head_hidden_dim,
                nm,
                cfg.iou_head_depth,
                mode,
            )?,
            num_mask_tokens: nm,
            mode,
        })
    }

    /// `predict_masks`: all mask tokens. Inputs: image embedding `B×C×E×E`
    /// (or `1×C×E×E`, repeated for each prompt), dense PE `1×C×E×E`, sparse
    /// prompts `B×N×C`, dense prompts `B×C×E×E`. Returns logits `B×M×L×L`
    /// (L = E·2^`decoder_upscales` = the input side) and IoU predictions `B×M`
    /// (M = multimask outputs + 1).
    pub fn predict_all(
        &self,
        emb: &Tensor,
        pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let b = sparse.dim(0)?;
        let out_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?
            .unsqueeze(0)?
            .broadcast_as((b, self.num_mask_tokens + 1, self.iou_token.dim(1)?))?;
        let tokens = Tensor::cat(&[&out_tokens, sparse], 1)?;
        let emb = if emb.dim(0)? != b {
            emb.broadcast_as((b, emb.dim(1)?, emb.dim(2)?, emb.dim(3)?))?
        } else {
            emb.clone()
        };
        let src = (emb + dense)?;
        let (_, c, h, w) = src.dims4()?;
        // two-way transformer
        let keys0 = src.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let kpe = pe
            .flatten_from(2)?
            .transpose(1, 2)?
            .broadcast_as((b, h * w, c))?
            .contiguous()?;
        let mut queries = tokens.clone();
        let mut keys = keys0;
        for l in &self.layers {
            (queries, keys) = l.forward(&queries, &keys, &tokens, &kpe)?;
        }
        let q = (&queries + &tokens)?;
        let k = (&keys + &kpe)?;
        let queries = (&queries + self.final_attn.forward(&q, &k, &keys)?)?;
        let hs = self.norm_final.forward(&queries)?;

        let iou_out = hs.narrow(1, 0, 1)?.squeeze(1)?;
        let src = keys.transpose(1, 2)?.reshape((b, c, h, w))?;
        let up = self.up1.forward(&src)?;
        let up = gelu(&self.up_norm.forward(&up)?, self.mode)?;
        let mut up = self.up2.forward(&up)?;
        for u in &self.up_extra {
            up = u.forward(&up)?;
        }
        let hyper = (0..self.num_mask_tokens)
            .map(|i| self.hyper[i].forward(&hs.narrow(1, 1 + i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        let hyper = Tensor::cat(&hyper, 1)?; // B×M×C/8
        let (_, cu, hu, wu) = up.dims4()?;
        let masks = hyper.matmul(&up.reshape((b, cu, hu * wu))?)?.reshape((
            b,
            self.num_mask_tokens,
            hu,
            wu,
        ))?;
        let iou = self.iou_head.forward(&iou_out)?;
        Ok((masks, iou))
    }

    /// SAM's `forward`: the single-mask output (token 0) or, with `multimask`,
    /// the other tokens' masks. Returns (`B×k×L×L` logits, `B×k` IoU).
    pub fn forward(
        &self,
        emb: &Tensor,
        pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (masks, iou) = self.predict_all(emb, pe, sparse, dense)?;
        let (s, n) = if multimask {
            (1, self.num_mask_tokens - 1)
        } else {
            (0, 1)
        };
        Ok((masks.narrow(1, s, n)?, iou.narrow(1, s, n)?))
    }
}
