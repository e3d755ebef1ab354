//! SAM's prompt encoder: random-Fourier positional encoding of points and box
//! corners plus learned type embeddings, and the dense (mask) embedding.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::config::LiteMedSamConfig;
use crate::nn::{Conv2d, ConvGeom, LayerNorm2d, Mode};

/// The prompt encoder (`prompt_encoder.*`).
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    gauss: Tensor,
    point_embeddings: [Tensor; 4],
    not_a_point: Tensor,
    no_mask: Tensor,
    mask_down: (Conv2d, LayerNorm2d, Conv2d, LayerNorm2d, Conv2d),
    dim: usize,
    input_size: usize,
    emb_size: usize,
}

impl PromptEncoder {
    /// Loads the prompt encoder.
    pub fn new(vb: VarBuilder, cfg: &LiteMedSamConfig, mode: Mode) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let dim = cfg.prompt_embed_dim;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let emb = |name: String| -> Result<Tensor> {
            vb.pp(name).get_with_hints((1, dim), "weight", randn)
        };
        let gauss = vb.pp("pe_layer").get_with_hints(
            (2, dim / 2),
            "positional_encoding_gaussian_matrix",
            randn,
        )?;
        let m = cfg.mask_in_chans;
        let md = vb.pp("mask_downscaling");
        let g = |c_in, c_out, k| ConvGeom {
            c_in,
            c_out,
            k,
            stride: k,
            pad: 0,
            groups: 1,
        };
        let mask_down = (
            Conv2d::new(md.pp("0"), g(1, m / 4, 2), true)?,
            LayerNorm2d::new(md.pp("1"), m / 4, 1e-6, mode)?,
            Conv2d::new(md.pp("3"), g(m / 4, m, 2), true)?,
            LayerNorm2d::new(md.pp("4"), m, 1e-6, mode)?,
            Conv2d::new(md.pp("6"), g(m, dim, 1), true)?,
        );
        Ok(Self {
            gauss,
            point_embeddings: [
                emb("point_embeddings.0".into())?,
                emb("point_embeddings.1".into())?,
                emb("point_embeddings.2".into())?,
                emb("point_embeddings.3".into())?,
            ],
            not_a_point: emb("not_a_point_embed".into())?,
            no_mask: emb("no_mask_embed".into())?,
            mask_down,
            dim,
            input_size: cfg.img_size,
            emb_size: cfg.embedding_size(),
        })
    }

    /// `_pe_encoding`: coords in [0,1] (`…×2`) → `[sin, cos]` of `2π (2c−1) G`.
    fn pe_encoding(&self, coords: &Tensor) -> Result<Tensor> {
        let c = ((coords * 2.0)? - 1.0)?;
        let c = c.broadcast_matmul(&self.gauss)?;
        let c = (c * (2.0 * std::f64::consts::PI))?;
        Tensor::cat(&[c.sin()?, c.cos()?], D::Minus1)
    }

    /// `get_dense_pe`: the positional encoding of the embedding grid (cell
    /// centres `(i + 0.5) / size`), `1×dim×E×E`.
    pub fn dense_pe(&self) -> Result<Tensor> {
        let e = self.emb_size;
        let dev = self.gauss.device();
        let r: Vec<f32> = (0..e).map(|i| (i as f32 + 1.0 - 0.5) / e as f32).collect();
        let mut xy = Vec::with_capacity(e * e * 2);
        for y in 0..e {
            for x in 0..e {
                xy.push(r[x]);
                xy.push(r[y]);
            }
        }
        let coords = Tensor::from_vec(xy, (e, e, 2), dev)?;
        self.pe_encoding(&coords)?.permute((2, 0, 1))?.unsqueeze(0)
    }

    /// `forward_with_coords`: pixel coords (`B×N×2`, x,y in the padded input
    /// space) → `B×N×dim`.
    fn embed_coords(&self, coords: &Tensor) -> Result<Tensor> {
        self.pe_encoding(&(coords / self.input_size as f64)?)
    }

    /// Sparse embeddings of points and/or a box, `B×N×dim`.
    ///
    /// `points`: coordinates `B×N×2` (x, y in 256 space) and labels `B×N`
    /// (1 foreground, 0 background, −1 padding). When no box is given a padding
    /// point (0, 0) with label −1 is appended, as SAM does. `boxes`: `B×4`
    /// (x0, y0, x1, y1 in 256 space). Coordinates are shifted by +0.5 (pixel
    /// centres) before encoding.
    pub fn sparse(
        &self,
        points: Option<(&Tensor, &Tensor)>,
        boxes: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut parts = Vec::new();
        if let Some((coords, labels)) = points {
            let (b, _, _) = coords.dims3()?;
            let mut coords = (coords + 0.5)?;
            let mut labels = labels.clone();
            if boxes.is_none() {
                let dev = coords.device().clone();
                coords = Tensor::cat(
                    &[&coords, &Tensor::zeros((b, 1, 2), coords.dtype(), &dev)?],
                    1,
                )?;
                labels = Tensor::cat(
                    &[
                        &labels,
                        &(Tensor::ones((b, 1), labels.dtype(), &dev)? * -1.0)?,
                    ],
                    1,
                )?;
            }
            let pe = self.embed_coords(&coords)?;
            let is = |v: f64| -> Result<Tensor> {
                labels.eq(v)?.to_dtype(pe.dtype())?.unsqueeze(D::Minus1)
            };
            let (pad, neg, pos) = (is(-1.0)?, is(0.0)?, is(1.0)?);
            let keep = (1.0 - &pad)?;
            let e = pe
                .broadcast_mul(&keep)?
                .add(&pad.broadcast_mul(&self.not_a_point.unsqueeze(0)?)?)?
                .add(&neg.broadcast_mul(&self.point_embeddings[0].unsqueeze(0)?)?)?
                .add(&pos.broadcast_mul(&self.point_embeddings[1].unsqueeze(0)?)?)?;
            parts.push(e);
        }
        if let Some(bx) = boxes {
            let b = bx.dim(0)?;
            let corners = (bx + 0.5)?.reshape((b, 2, 2))?;
            let pe = self.embed_coords(&corners)?;
            let c0 = pe
                .narrow(1, 0, 1)?
                .broadcast_add(&self.point_embeddings[2])?;
            let c1 = pe
                .narrow(1, 1, 1)?
                .broadcast_add(&self.point_embeddings[3])?;
            parts.push(Tensor::cat(&[c0, c1], 1)?);
        }
        if parts.is_empty() {
            candle_core::bail!("prompt encoder: no points and no box")
        }
        Tensor::cat(&parts, 1)
    }

    /// Dense embeddings `B×dim×E×E`: the encoded mask prompt (`B×1×4E×4E` logits;
    /// SAM's downscaler divides by 4, so with more than two decoder upscalings
    /// this is smaller than the low-res logits) or the learned `no_mask_embed`
    /// broadcast to the grid.
    pub fn dense(&self, mask: Option<&Tensor>, batch: usize) -> Result<Tensor> {
        match mask {
            Some(m) => {
                let (c1, n1, c2, n2, c3) = &self.mask_down;
                let x = n1.forward(&c1.forward(m)?)?.gelu_erf()?;
                let x = n2.forward(&c2.forward(&x)?)?.gelu_erf()?;
                c3.forward(&x)
            }
            None => self.no_mask.reshape((1, self.dim, 1, 1))?.broadcast_as((
                batch,
                self.dim,
                self.emb_size,
                self.emb_size,
            )),
        }
    }
}
