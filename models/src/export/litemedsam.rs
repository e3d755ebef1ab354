//! ONNX export of LiteMedSAM (and any model with its architecture and another
//! [`LiteMedSamConfig`], such as the distilled students with a strided 3×3
//! stem and extra decoder upscalings): the image encoder as one graph and the
//! prompt encoder + mask decoder as another, written from the checkpoint
//! tensors. The configuration is validated first.
//!
//! The graphs compute exactly what the candle modules compute (see
//! `litemedsam::{tiny_vit, prompt_encoder, mask_decoder}`), with everything
//! that depends only on weights folded at export time:
//! BatchNorm into the convolutions, the attention scale into the query
//! projections, TinyViT's relative attention biases into one constant table per
//! block, and the dense positional encoding and "no mask" embedding of the
//! prompt encoder into constants. All shapes are static except the number of
//! prompt points.
//!
//! Encoder graph: `image` `1×3×S×S` (preprocessed, see
//! `edgeseg_kernels::prepost::preprocess_rgb`) → `image_embeddings` `1×D×E×E`.
//!
//! Decoder graph: `image_embeddings` `1×D×E×E`, `point_coords` `1×N×2` and
//! `point_labels` `1×N` in model-input coordinates (the S×S space) →
//! `low_res_logits` `1×4×L×L` (L = E·2^`decoder_upscales` = S) and
//! `iou_predictions` `1×4`. Labels follow
//! SAM's ONNX convention: 1 foreground point, 0 background point, 2 box
//! top-left corner, 3 box bottom-right corner, −1 padding point (needed when
//! there is no box, exactly as SAM's prompt encoder appends it). Output 0 is
//! the single-mask output LiteMedSAM uses; 1–3 are the multimask outputs.

use std::collections::HashMap;

use tract_onnx::pb;

use super::onnx::{Attr, GraphBuilder};
use crate::litemedsam::{LiteMedSamConfig, BOX_PRIOR_LOGIT};
use crate::weights::TensorMap;
use crate::ModelError;

/// Names of the graphs' inputs and outputs.
pub mod names {
    /// Encoder input.
    pub const IMAGE: &str = "image";
    /// Encoder output and decoder input.
    pub const IMAGE_EMBEDDINGS: &str = "image_embeddings";
    /// Decoder input: point coordinates in model-input space.
    pub const POINT_COORDS: &str = "point_coords";
    /// Decoder input: point labels (SAM convention).
    pub const POINT_LABELS: &str = "point_labels";
    /// Decoder output: mask logits at the input resolution
    /// (2^`decoder_upscales` × the embedding's).
    pub const LOW_RES_LOGITS: &str = "low_res_logits";
    /// Decoder output: predicted IoU per mask.
    pub const IOU_PREDICTIONS: &str = "iou_predictions";
}

/// Label values of `point_labels`.
pub mod labels {
    /// Padding point (ignored; appended when there is no box).
    pub const PADDING: f32 = -1.0;
    /// Background point.
    pub const BACKGROUND: f32 = 0.0;
    /// Foreground point.
    pub const FOREGROUND: f32 = 1.0;
    /// Box top-left corner.
    pub const BOX_TOP_LEFT: f32 = 2.0;
    /// Box bottom-right corner.
    pub const BOX_BOTTOM_RIGHT: f32 = 3.0;
}

/// Checkpoint tensors as flat f32 vectors, fetched by name with a shape check.
struct Weights<'a> {
    map: &'a TensorMap,
    source: String,
    cache: HashMap<String, Vec<f32>>,
}

impl<'a> Weights<'a> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        if let Some(v) = self.cache.get(name) {
            return Ok(v.clone());
        }
        let err = |msg: String| ModelError::Checkpoint {
            path: self.source.clone(),
            msg,
        };
        let t = self
            .map
            .get(name)
            .ok_or_else(|| err(format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        self.cache.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

const BN_EPS: f64 = 1e-5;

/// `Conv2d_BN` with the BatchNorm folded into the convolution, plus GELU.
#[allow(clippy::too_many_arguments)] // mirrors Conv2d_BN(a, b, ks, stride, groups) + gelu
fn conv_bn(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    gelu: bool,
) -> Result<String, ModelError> {
    let cig = c_in / groups;
    let cw = w.get(&format!("{prefix}.c.weight"), &[c_out, cig, k, k])?;
    let gamma = w.get(&format!("{prefix}.bn.weight"), &[c_out])?;
    let beta = w.get(&format!("{prefix}.bn.bias"), &[c_out])?;
    let mean = w.get(&format!("{prefix}.bn.running_mean"), &[c_out])?;
    let var = w.get(&format!("{prefix}.bn.running_var"), &[c_out])?;
    let per_out = cig * k * k;
    let mut fw = vec![0f32; cw.len()];
    let mut fb = vec![0f32; c_out];
    for o in 0..c_out {
        let s = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
        for i in 0..per_out {
            fw[o * per_out + i] = (cw[o * per_out + i] as f64 * s) as f32;
        }
        fb[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
    }
    let y = g.scoped(prefix, |g| {
        g.conv(x, &fw, &fb, c_out, cig, k, stride, k / 2, groups)
    });
    Ok(if gelu { g.gelu(&y) } else { y })
}

fn linear(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    d_in: usize,
    d_out: usize,
) -> Result<String, ModelError> {
    let wt = w.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
    let b = w.get(&format!("{prefix}.bias"), &[d_out])?;
    Ok(g.scoped(prefix, |g| g.linear(x, &wt, &b, d_in, d_out)))
}

fn layer_norm(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    dim: usize,
    eps: f32,
) -> Result<String, ModelError> {
    let gamma = w.get(&format!("{prefix}.weight"), &[dim])?;
    let beta = w.get(&format!("{prefix}.bias"), &[dim])?;
    Ok(g.scoped(prefix, |g| g.layer_norm(x, &gamma, &beta, eps)))
}

/// SAM's `LayerNorm2d` (normalization over channels of an NCHW tensor), in the
/// ReduceMean form SAM's own ONNX export uses.
fn layer_norm_2d(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    c: usize,
    eps: f32,
) -> Result<String, ModelError> {
    let gamma = w.get(&format!("{prefix}.weight"), &[c])?;
    let beta = w.get(&format!("{prefix}.bias"), &[c])?;
    Ok(g.scoped(prefix, |g| {
        let axes = || [("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))];
        let u = g.op("ReduceMean", &[x], &axes());
        let d = g.op("Sub", &[x, &u], &[]);
        let d2 = g.mul(&d, &d);
        let s = g.op("ReduceMean", &[&d2], &axes());
        let e = g.scalar_f32("eps", eps);
        let se = g.add(&s, &e);
        let r = g.op("Sqrt", &[&se], &[]);
        let n = g.op("Div", &[&d, &r], &[]);
        let gm = g.const_f32("weight", &[1, c, 1, 1], &gamma);
        let bt = g.const_f32("bias", &[1, c, 1, 1], &beta);
        let y = g.mul(&n, &gm);
        g.add(&y, &bt)
    }))
}

/// Tokens `1×(h·w)×C` → `1×C×h×w`.
fn tokens_to_nchw(g: &mut GraphBuilder, x: &str, h: usize, w: usize, c: usize) -> String {
    let t = g.reshape(x, &[1, h as i64, w as i64, c as i64]);
    g.transpose(&t, &[0, 3, 1, 2])
}

/// `1×C×h×w` → tokens `1×(h·w)×C`.
fn nchw_to_tokens(g: &mut GraphBuilder, x: &str, h: usize, w: usize, c: usize) -> String {
    let t = g.transpose(x, &[0, 2, 3, 1]);
    g.reshape(&t, &[1, (h * w) as i64, c as i64])
}

/// TinyViT's windowed attention on `B×N×C` windows.
fn tinyvit_attention(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    dim: usize,
    heads: usize,
    window: usize,
) -> Result<String, ModelError> {
    let kd = dim / heads;
    let n = window * window;
    // relative-position bias table, as the candle Attention builds it
    let points: Vec<(usize, usize)> = (0..window)
        .flat_map(|i| (0..window).map(move |j| (i, j)))
        .collect();
    let mut offsets: Vec<(usize, usize)> = Vec::new();
    let mut idxs = Vec::with_capacity(n * n);
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
            idxs.push(i);
        }
    }
    let biases = w.get(
        &format!("{prefix}.attention_biases"),
        &[heads, offsets.len()],
    )?;
    let mut table = Vec::with_capacity(heads * n * n);
    for h in 0..heads {
        for &i in &idxs {
            table.push(biases[h * offsets.len() + i]);
        }
    }
    let xn = layer_norm(g, w, &format!("{prefix}.norm"), x, dim, 1e-5)?;
    // qkv rows are per head [q(kd) k(kd) v(kd)]; regroup into [q | k | v]
    // (all heads each) and fold the softmax scale into q.
    let qkv_w = w.get(&format!("{prefix}.qkv.weight"), &[3 * dim, dim])?;
    let qkv_b = w.get(&format!("{prefix}.qkv.bias"), &[3 * dim])?;
    let scale = (kd as f64).powf(-0.5);
    let mut rw = vec![0f32; 3 * dim * dim];
    let mut rb = vec![0f32; 3 * dim];
    for part in 0..3 {
        for h in 0..heads {
            for j in 0..kd {
                let src = h * 3 * kd + part * kd + j;
                let dst = part * dim + h * kd + j;
                let s = if part == 0 { scale } else { 1.0 };
                for c in 0..dim {
                    rw[dst * dim + c] = (qkv_w[src * dim + c] as f64 * s) as f32;
                }
                rb[dst] = (qkv_b[src] as f64 * s) as f32;
            }
        }
    }
    let y = g.scoped(prefix, |g| {
        let qkv = g.scoped("qkv", |g| g.linear(&xn, &rw, &rb, dim, 3 * dim));
        let split = g.const_i64("split", &[dim as i64; 3]);
        let parts = g.op_n("Split", &[&qkv, &split], &[("axis", Attr::Int(-1))], 3);
        let hs = |g: &mut GraphBuilder, t: &str, perm: &[i64]| {
            let r = g.reshape(t, &[-1, n as i64, heads as i64, kd as i64]);
            g.transpose(&r, perm)
        };
        let q = hs(g, &parts[0], &[0, 2, 1, 3]);
        let k = hs(g, &parts[1], &[0, 2, 3, 1]);
        let v = hs(g, &parts[2], &[0, 2, 1, 3]);
        let s = g.op("MatMul", &[&q, &k], &[]);
        let bias = g.const_f32("attention_bias_table", &[1, heads, n, n], &table);
        let s = g.add(&s, &bias);
        let a = g.op("Softmax", &[&s], &[("axis", Attr::Int(-1))]);
        let o = g.op("MatMul", &[&a, &v], &[]);
        let o = g.transpose(&o, &[0, 2, 1, 3]);
        g.reshape(&o, &[-1, n as i64, dim as i64])
    });
    linear(g, w, &format!("{prefix}.proj"), &y, dim, dim)
}

/// One TinyViT block on tokens `1×(res²)×dim`.
#[allow(clippy::too_many_arguments)]
fn tinyvit_block(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    dim: usize,
    res: usize,
    heads: usize,
    ws: usize,
    cfg: &LiteMedSamConfig,
) -> Result<String, ModelError> {
    let attn = format!("{prefix}.attn");
    let y = if res == ws {
        tinyvit_attention(g, w, &attn, x, dim, heads, ws)?
    } else {
        let pad = (ws - res % ws) % ws;
        let p = res + pad;
        let nw = p / ws;
        let (r, c) = (res as i64, dim as i64);
        let t = g.reshape(x, &[1, r, r, c]);
        let t = if pad > 0 {
            let pads = g.const_i64("pads", &[0, 0, 0, 0, 0, pad as i64, pad as i64, 0]);
            g.op("Pad", &[&t, &pads], &[])
        } else {
            t
        };
        let (nw_, ws_, p_) = (nw as i64, ws as i64, p as i64);
        let t = g.reshape(&t, &[1, nw_, ws_, nw_, ws_, c]);
        let t = g.transpose(&t, &[0, 1, 3, 2, 4, 5]);
        let t = g.reshape(&t, &[nw_ * nw_, ws_ * ws_, c]);
        let t = tinyvit_attention(g, w, &attn, &t, dim, heads, ws)?;
        let t = g.reshape(&t, &[1, nw_, nw_, ws_, ws_, c]);
        let t = g.transpose(&t, &[0, 1, 3, 2, 4, 5]);
        let t = g.reshape(&t, &[1, p_, p_, c]);
        let t = if pad > 0 {
            let starts = g.const_i64("starts", &[0, 0]);
            let ends = g.const_i64("ends", &[r, r]);
            let axes = g.const_i64("axes", &[1, 2]);
            g.op("Slice", &[&t, &starts, &ends, &axes], &[])
        } else {
            t
        };
        g.reshape(&t, &[1, r * r, c])
    };
    let x = g.add(x, &y);
    let t = tokens_to_nchw(g, &x, res, res, dim);
    let k = cfg.local_conv_size;
    let t = conv_bn(
        g,
        w,
        &format!("{prefix}.local_conv"),
        &t,
        dim,
        dim,
        k,
        1,
        dim,
        false,
    )?;
    let x = nchw_to_tokens(g, &t, res, res, dim);
    let hidden = dim * cfg.mlp_ratio;
    let m = layer_norm(g, w, &format!("{prefix}.mlp.norm"), &x, dim, 1e-5)?;
    let m = linear(g, w, &format!("{prefix}.mlp.fc1"), &m, dim, hidden)?;
    let m = g.gelu(&m);
    let m = linear(g, w, &format!("{prefix}.mlp.fc2"), &m, hidden, dim)?;
    Ok(g.add(&x, &m))
}

/// `PatchMerging` from NCHW input `1×dim×res×res`; returns NCHW output.
#[allow(clippy::too_many_arguments)]
fn patch_merging(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    dim: usize,
    out: usize,
    stride: usize,
) -> Result<String, ModelError> {
    let y = conv_bn(g, w, &format!("{prefix}.conv1"), x, dim, out, 1, 1, 1, true)?;
    let y = conv_bn(
        g,
        w,
        &format!("{prefix}.conv2"),
        &y,
        out,
        out,
        3,
        stride,
        out,
        true,
    )?;
    conv_bn(
        g,
        w,
        &format!("{prefix}.conv3"),
        &y,
        out,
        out,
        1,
        1,
        1,
        false,
    )
}

fn check_config(cfg: &LiteMedSamConfig, source: &str) -> Result<(), ModelError> {
    cfg.validate().map_err(|msg| ModelError::Checkpoint {
        path: source.to_string(),
        msg,
    })
}

fn weights<'a>(map: &'a TensorMap, source: &str) -> Weights<'a> {
    Weights {
        map,
        source: source.to_string(),
        cache: HashMap::new(),
    }
}

/// Exports the image encoder (`image_encoder.*` tensors of `map`).
pub fn export_encoder(
    map: &TensorMap,
    cfg: &LiteMedSamConfig,
    source: &str,
) -> Result<pb::ModelProto, ModelError> {
    check_config(cfg, source)?;
    let mut w = weights(map, source);
    let w = &mut w;
    let mut g = GraphBuilder::new();
    let g = &mut g;
    let d = cfg.embed_dims;
    let s = cfg.img_size;
    let x = g.input_f32(names::IMAGE, &[1.into(), 3.into(), s.into(), s.into()]);
    let p = "image_encoder";
    let [(k1, s1), (k2, s2)] = cfg.stem_convs();
    let x = conv_bn(
        g,
        w,
        &format!("{p}.patch_embed.seq.0"),
        &x,
        3,
        d[0] / 2,
        k1,
        s1,
        1,
        true,
    )?;
    let mut x = conv_bn(
        g,
        w,
        &format!("{p}.patch_embed.seq.2"),
        &x,
        d[0] / 2,
        d[0],
        k2,
        s2,
        1,
        false,
    )?;
    let hid = d[0] * cfg.mbconv_expand_ratio;
    for i in 0..cfg.depths[0] {
        let b = format!("{p}.layers.0.blocks.{i}");
        let y = conv_bn(g, w, &format!("{b}.conv1"), &x, d[0], hid, 1, 1, 1, true)?;
        let y = conv_bn(g, w, &format!("{b}.conv2"), &y, hid, hid, 3, 1, hid, true)?;
        let y = conv_bn(g, w, &format!("{b}.conv3"), &y, hid, d[0], 1, 1, 1, false)?;
        let y = g.add(&y, &x);
        x = g.gelu(&y);
    }
    let mut res = s / cfg.stem_stride;
    let y = patch_merging(
        g,
        w,
        &format!("{p}.layers.0.downsample"),
        &x,
        d[0],
        d[1],
        cfg.merge_strides[0],
    )?;
    res /= cfg.merge_strides[0];
    let mut tokens = nchw_to_tokens(g, &y, res, res, d[1]);
    for st in 1..4 {
        for i in 0..cfg.depths[st] {
            tokens = tinyvit_block(
                g,
                w,
                &format!("{p}.layers.{st}.blocks.{i}"),
                &tokens,
                d[st],
                res,
                cfg.num_heads[st],
                cfg.window_sizes[st],
                cfg,
            )?;
        }
        if st < 3 {
            let t = tokens_to_nchw(g, &tokens, res, res, d[st]);
            let y = patch_merging(
                g,
                w,
                &format!("{p}.layers.{st}.downsample"),
                &t,
                d[st],
                d[st + 1],
                cfg.merge_strides[st],
            )?;
            res /= cfg.merge_strides[st];
            tokens = nchw_to_tokens(g, &y, res, res, d[st + 1]);
        }
    }
    let nd = cfg.prompt_embed_dim;
    let x = tokens_to_nchw(g, &tokens, res, res, d[3]);
    let zeros = vec![0f32; nd];
    let n0 = w.get(&format!("{p}.neck.0.weight"), &[nd, d[3], 1, 1])?;
    let x = g.scoped("neck.0", |g| g.conv(&x, &n0, &zeros, nd, d[3], 1, 1, 0, 1));
    let x = layer_norm_2d(g, w, &format!("{p}.neck.1"), &x, nd, 1e-6)?;
    let n2 = w.get(&format!("{p}.neck.2.weight"), &[nd, nd, 3, 3])?;
    let x = g.scoped("neck.2", |g| g.conv(&x, &n2, &zeros, nd, nd, 3, 1, 1, 1));
    let x = layer_norm_2d(g, w, &format!("{p}.neck.3"), &x, nd, 1e-6)?;
    let e = cfg.embedding_size();
    g.output_f32(
        &x,
        names::IMAGE_EMBEDDINGS,
        &[1.into(), nd.into(), e.into(), e.into()],
    );
    let g = std::mem::take(g);
    Ok(g.finish(
        "litemedsam_image_encoder",
        "LiteMedSAM TinyViT image encoder exported by edgeseg",
    ))
}

/// SAM attention with `downsample` and head split, scale folded into q.
#[allow(clippy::too_many_arguments)]
fn sam_attention(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    q: &str,
    k: &str,
    v: &str,
    dim: usize,
    heads: usize,
    downsample: usize,
) -> Result<String, ModelError> {
    let inner = dim / downsample;
    let c = inner / heads;
    let scale = 1.0 / (c as f64).sqrt();
    let qw: Vec<f32> = w
        .get(&format!("{prefix}.q_proj.weight"), &[inner, dim])?
        .iter()
        .map(|&v| (v as f64 * scale) as f32)
        .collect();
    let qb: Vec<f32> = w
        .get(&format!("{prefix}.q_proj.bias"), &[inner])?
        .iter()
        .map(|&v| (v as f64 * scale) as f32)
        .collect();
    let qp = g.scoped(prefix, |g| {
        g.scoped("q_proj", |g| g.linear(q, &qw, &qb, dim, inner))
    });
    let kp = linear(g, w, &format!("{prefix}.k_proj"), k, dim, inner)?;
    let vp = linear(g, w, &format!("{prefix}.v_proj"), v, dim, inner)?;
    let o = g.scoped(prefix, |g| {
        let hs = |g: &mut GraphBuilder, t: &str, perm: &[i64]| {
            let r = g.reshape(t, &[1, -1, heads as i64, c as i64]);
            g.transpose(&r, perm)
        };
        let q = hs(g, &qp, &[0, 2, 1, 3]);
        let k = hs(g, &kp, &[0, 2, 3, 1]);
        let v = hs(g, &vp, &[0, 2, 1, 3]);
        let s = g.op("MatMul", &[&q, &k], &[]);
        let a = g.op("Softmax", &[&s], &[("axis", Attr::Int(-1))]);
        let o = g.op("MatMul", &[&a, &v], &[]);
        let o = g.transpose(&o, &[0, 2, 1, 3]);
        g.reshape(&o, &[1, -1, inner as i64])
    });
    linear(g, w, &format!("{prefix}.out_proj"), &o, inner, dim)
}

fn sam_mlp(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: &str,
    dims: &[usize],
) -> Result<String, ModelError> {
    let mut x = x.to_string();
    let n = dims.len() - 1;
    for i in 0..n {
        x = linear(
            g,
            w,
            &format!("{prefix}.layers.{i}"),
            &x,
            dims[i],
            dims[i + 1],
        )?;
        if i + 1 < n {
            x = g.op("Relu", &[&x], &[]);
        }
    }
    Ok(x)
}

/// The dense positional encoding of the `e×e` embedding grid, `e²×D`
/// (row-major over the grid), as `PromptEncoder::dense_pe` computes it.
fn dense_pe_tokens(gauss: &[f32], d: usize, e: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; e * e * d];
    for y in 0..e {
        for x in 0..e {
            let cx = ((x as f32 + 1.0 - 0.5) / e as f32) * 2.0 - 1.0;
            let cy = ((y as f32 + 1.0 - 0.5) / e as f32) * 2.0 - 1.0;
            let o = (y * e + x) * d;
            for j in 0..half {
                let v = (cx * gauss[j] + cy * gauss[half + j]) * (2.0 * std::f32::consts::PI);
                out[o + j] = v.sin();
                out[o + half + j] = v.cos();
            }
        }
    }
    out
}

/// The box prior ([`crate::litemedsam::box_prior`]) as graph nodes: `1×1×L×L`
/// logits from the box corners among the prompt points (labels 2 and 3), zero
/// when the prompt has no box. Corners are averaged if a prompt repeats them.
fn box_prior_graph(
    g: &mut GraphBuilder,
    coords: &str,
    point_labels: &str,
    img_size: usize,
    side: usize,
) -> String {
    g.scoped("mask_decoder.box_prior", |g| {
        let one = g.scalar_f32("one", 1.0);
        let half = g.scalar_f32("half", 0.5);
        let neg_one = g.scalar_f32("neg_one", -1.0);
        let height = g.scalar_f32("height", BOX_PRIOR_LOGIT);
        let ax1 = g.const_i64("axes", &[1]);
        let ax_last = g.const_i64("axes", &[-1]);
        // mean corner with label `lab` (1×1×2) and whether there is one (1×1×1)
        let corner = |g: &mut GraphBuilder, lab: f32| {
            let l = g.scalar_f32("label", lab);
            let d = g.op("Sub", &[point_labels, &l], &[]);
            let d = g.op("Abs", &[&d], &[]);
            let d = g.op("Sub", &[&one, &d], &[]);
            let sel = g.op("Relu", &[&d], &[]); // 1×N: 1 where label == lab
            let row = g.op("Unsqueeze", &[&sel, &ax1], &[]); // 1×1×N
            let col = g.op("Unsqueeze", &[&sel, &ax_last], &[]); // 1×N×1
            let sum = g.op("MatMul", &[&row, coords], &[]); // 1×1×2
            let count = g.op("MatMul", &[&row, &col], &[]); // 1×1×1
            let denom = g.op("Max", &[&count, &one], &[]);
            let mean = g.op("Div", &[&sum, &denom], &[]);
            let present = g.op("Min", &[&count, &one], &[]);
            (mean, present)
        };
        let (tl, has_tl) = corner(g, labels::BOX_TOP_LEFT);
        let (br, has_br) = corner(g, labels::BOX_BOTTOM_RIGHT);
        let centre = g.add(&tl, &br);
        let centre = g.mul(&centre, &half);
        let radius = g.op("Sub", &[&br, &tl], &[]);
        let radius = g.mul(&radius, &half);
        let radius = g.op("Max", &[&radius, &one], &[]);
        let i0 = g.const_i64("index", &[0]);
        let i1 = g.const_i64("index", &[1]);
        let pick = |g: &mut GraphBuilder, t: &str, i: &str| {
            g.op("Gather", &[t, i], &[("axis", Attr::Int(2))]) // 1×1×1
        };
        let (cx, cy) = (pick(g, &centre, &i0), pick(g, &centre, &i1));
        let (rx, ry) = (pick(g, &radius, &i0), pick(g, &radius, &i1));
        let scale = img_size as f32 / side.max(1) as f32;
        let grid: Vec<f32> = (0..side).map(|j| (j as f32 + 0.5) * scale).collect();
        let xs = g.const_f32("x", &[1, 1, 1, side], &grid);
        let ys = g.const_f32("y", &[1, 1, side, 1], &grid);
        let u = g.op("Sub", &[&xs, &cx], &[]);
        let u = g.op("Div", &[&u, &rx], &[]);
        let v = g.op("Sub", &[&ys, &cy], &[]);
        let v = g.op("Div", &[&v, &ry], &[]);
        let u2 = g.mul(&u, &u);
        let v2 = g.mul(&v, &v);
        let r2 = g.add(&u2, &v2); // 1×1×L×L
        let p = g.op("Sub", &[&one, &r2], &[]);
        let p = g.op("Clip", &[&p, &neg_one, &one], &[]);
        let p = g.mul(&p, &height);
        let has_box = g.mul(&has_tl, &has_br); // 1×1×1
        g.mul(&p, &has_box)
    })
}

/// Exports the prompt encoder + mask decoder (`prompt_encoder.*` and
/// `mask_decoder.*` tensors of `map`).
pub fn export_decoder(
    map: &TensorMap,
    cfg: &LiteMedSamConfig,
    source: &str,
) -> Result<pb::ModelProto, ModelError> {
    check_config(cfg, source)?;
    let mut w = weights(map, source);
    let w = &mut w;
    let mut g = GraphBuilder::new();
    let g = &mut g;
    let d = cfg.prompt_embed_dim;
    let e = cfg.embedding_size();
    let nm = cfg.num_multimask_outputs + 1;
    let emb = g.input_f32(
        names::IMAGE_EMBEDDINGS,
        &[1.into(), d.into(), e.into(), e.into()],
    );
    let coords = g.input_f32(
        names::POINT_COORDS,
        &[1.into(), "num_points".into(), 2.into()],
    );
    let labels = g.input_f32(names::POINT_LABELS, &[1.into(), "num_points".into()]);

    // ---- prompt encoder: sparse embedding of points and box corners ----
    let gauss = w.get(
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        &[2, d / 2],
    )?;
    let mut table = w.get("prompt_encoder.not_a_point_embed.weight", &[1, d])?;
    for i in 0..4 {
        table.extend(w.get(
            &format!("prompt_encoder.point_embeddings.{i}.weight"),
            &[1, d],
        )?);
    }
    let sparse = g.scoped("prompt_encoder", |g| {
        let half = g.scalar_f32("half", 0.5);
        let size = g.scalar_f32("input_size", cfg.img_size as f32);
        let two = g.scalar_f32("two", 2.0);
        let one = g.scalar_f32("one", 1.0);
        let two_pi = g.scalar_f32("two_pi", 2.0 * std::f32::consts::PI);
        let c = g.add(&coords, &half);
        let c = g.op("Div", &[&c, &size], &[]);
        let c = g.mul(&c, &two);
        let c = g.op("Sub", &[&c, &one], &[]);
        let gm = g.const_f32("gaussian_matrix", &[2, d / 2], &gauss);
        let c = g.op("MatMul", &[&c, &gm], &[]);
        let c = g.mul(&c, &two_pi);
        let sin = g.op("Sin", &[&c], &[]);
        let cos = g.op("Cos", &[&c], &[]);
        let pe = g.op("Concat", &[&sin, &cos], &[("axis", Attr::Int(-1))]);
        // label −1 → not_a_point (pe dropped); 0..3 → pe + point_embeddings[label]
        let l1 = g.add(&labels, &one);
        let zero = g.scalar_f32("zero", 0.0);
        let keep = g.op("Clip", &[&l1, &zero, &one], &[]);
        let axes = g.const_i64("axes", &[-1]);
        let keep = g.op("Unsqueeze", &[&keep, &axes], &[]);
        let idx = g.op("Cast", &[&l1], &[("to", Attr::Int(7))]); // INT64
        let tbl = g.const_f32("label_embeddings", &[5, d], &table);
        let lab = g.op("Gather", &[&tbl, &idx], &[("axis", Attr::Int(0))]);
        let pe = g.mul(&pe, &keep);
        g.add(&pe, &lab)
    });

    // ---- mask decoder ----
    let iou_token = w.get("mask_decoder.iou_token.weight", &[1, d])?;
    let mut out_tokens = iou_token;
    out_tokens.extend(w.get("mask_decoder.mask_tokens.weight", &[nm, d])?);
    let no_mask = w.get("prompt_encoder.no_mask_embed.weight", &[1, d])?;
    let kpe_data = dense_pe_tokens(&gauss, d, e);
    let (tokens, keys, kpe) = g.scoped("mask_decoder", |g| {
        let ot = g.const_f32("output_tokens", &[1, nm + 1, d], &out_tokens);
        let tokens = g.op("Concat", &[&ot, &sparse], &[("axis", Attr::Int(1))]);
        let nme = g.const_f32("no_mask_embed", &[1, d, 1, 1], &no_mask);
        let src = g.add(&emb, &nme);
        let keys = g.reshape(&src, &[1, d as i64, (e * e) as i64]);
        let keys = g.transpose(&keys, &[0, 2, 1]);
        let kpe = g.const_f32("image_pe", &[1, e * e, d], &kpe_data);
        (tokens, keys, kpe)
    });
    let h = cfg.decoder_heads;
    let t = "mask_decoder.transformer";
    let mut queries = tokens.clone();
    let mut keys = keys;
    for i in 0..cfg.decoder_depth {
        let l = format!("{t}.layers.{i}");
        queries = if i == 0 {
            sam_attention(
                g,
                w,
                &format!("{l}.self_attn"),
                &queries,
                &queries,
                &queries,
                d,
                h,
                1,
            )?
        } else {
            let q = g.add(&queries, &tokens);
            let a = sam_attention(g, w, &format!("{l}.self_attn"), &q, &q, &queries, d, h, 1)?;
            g.add(&queries, &a)
        };
        queries = layer_norm(g, w, &format!("{l}.norm1"), &queries, d, 1e-5)?;
        let q = g.add(&queries, &tokens);
        let k = g.add(&keys, &kpe);
        let a = sam_attention(
            g,
            w,
            &format!("{l}.cross_attn_token_to_image"),
            &q,
            &k,
            &keys,
            d,
            h,
            2,
        )?;
        queries = g.add(&queries, &a);
        queries = layer_norm(g, w, &format!("{l}.norm2"), &queries, d, 1e-5)?;
        let m = linear(
            g,
            w,
            &format!("{l}.mlp.lin1"),
            &queries,
            d,
            cfg.decoder_mlp_dim,
        )?;
        let m = g.op("Relu", &[&m], &[]);
        let m = linear(g, w, &format!("{l}.mlp.lin2"), &m, cfg.decoder_mlp_dim, d)?;
        queries = g.add(&queries, &m);
        queries = layer_norm(g, w, &format!("{l}.norm3"), &queries, d, 1e-5)?;
        let q = g.add(&queries, &tokens);
        let k = g.add(&keys, &kpe);
        let a = sam_attention(
            g,
            w,
            &format!("{l}.cross_attn_image_to_token"),
            &k,
            &q,
            &queries,
            d,
            h,
            2,
        )?;
        keys = g.add(&keys, &a);
        keys = layer_norm(g, w, &format!("{l}.norm4"), &keys, d, 1e-5)?;
    }
    let q = g.add(&queries, &tokens);
    let k = g.add(&keys, &kpe);
    let a = sam_attention(
        g,
        w,
        &format!("{t}.final_attn_token_to_image"),
        &q,
        &k,
        &keys,
        d,
        h,
        2,
    )?;
    let queries = g.add(&queries, &a);
    let hs = layer_norm(g, w, &format!("{t}.norm_final_attn"), &queries, d, 1e-5)?;

    // upscaling: 2×2 stride-2 transposed convolutions, SAM's two (D → D/4 →
    // D/8) and D/8 → D/8 for each further one (Sequential indices 5, 7, …)
    let up = "mask_decoder.output_upscaling";
    let (d4, d8) = (d / 4, d / 8);
    let w1 = w.get(&format!("{up}.0.weight"), &[d, d4, 2, 2])?;
    let b1 = w.get(&format!("{up}.0.bias"), &[d4])?;
    let w2 = w.get(&format!("{up}.3.weight"), &[d4, d8, 2, 2])?;
    let b2 = w.get(&format!("{up}.3.bias"), &[d8])?;
    let src = g.transpose(&keys, &[0, 2, 1]);
    let src = g.reshape(&src, &[1, d as i64, e as i64, e as i64]);
    let convt = |g: &mut GraphBuilder, x: &str, wt: &[f32], b: &[f32], ci: usize, co: usize| {
        let wn = g.const_f32("weight", &[ci, co, 2, 2], wt);
        let bn = g.const_f32("bias", &[co], b);
        g.op(
            "ConvTranspose",
            &[x, &wn, &bn],
            &[
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
        )
    };
    let u = g.scoped(&format!("{up}.0"), |g| convt(g, &src, &w1, &b1, d, d4));
    let u = layer_norm_2d(g, w, &format!("{up}.1"), &u, d4, 1e-6)?;
    let u = g.gelu(&u);
    let u = g.scoped(&format!("{up}.3"), |g| convt(g, &u, &w2, &b2, d4, d8));
    let mut u = g.gelu(&u);
    for i in 2..cfg.decoder_upscales {
        let name = format!("{up}.{}", 2 * i + 1);
        let wi = w.get(&format!("{name}.weight"), &[d8, d8, 2, 2])?;
        let bi = w.get(&format!("{name}.bias"), &[d8])?;
        let y = g.scoped(&name, |g| convt(g, &u, &wi, &bi, d8, d8));
        u = g.gelu(&y);
    }

    // hypernetwork MLPs, one per mask token
    let mut hyper = Vec::with_capacity(nm);
    for i in 0..nm {
        let idx = g.const_i64("index", &[1 + i as i64]);
        let tok = g.op("Gather", &[&hs, &idx], &[("axis", Attr::Int(1))]); // 1×1×D
        let y = sam_mlp(
            g,
            w,
            &format!("mask_decoder.output_hypernetworks_mlps.{i}"),
            &tok,
            &[d, d, d, d8],
        )?;
        hyper.push(y);
    }
    let hyper_refs: Vec<&str> = hyper.iter().map(|s| s.as_str()).collect();
    let hyper = g.op("Concat", &hyper_refs, &[("axis", Attr::Int(1))]); // 1×nm×D/8
    let e4 = cfg.low_res_size() as i64;
    let uf = g.reshape(&u, &[1, d8 as i64, e4 * e4]);
    let masks = g.op("MatMul", &[&hyper, &uf], &[]);
    let masks = g.reshape(&masks, &[1, nm as i64, e4, e4]);
    let masks = if cfg.box_prior {
        let prior = box_prior_graph(g, &coords, &labels, cfg.img_size, cfg.low_res_size());
        g.add(&masks, &prior)
    } else {
        masks
    };
    let idx0 = g.const_i64("index", &[0]);
    let iou_tok = g.op("Gather", &[&hs, &idx0], &[("axis", Attr::Int(1))]); // 1×1×D
    let mut dims = vec![d];
    dims.extend(std::iter::repeat_n(
        cfg.iou_head_hidden_dim,
        cfg.iou_head_depth - 1,
    ));
    dims.push(nm);
    let iou = sam_mlp(g, w, "mask_decoder.iou_prediction_head", &iou_tok, &dims)?;
    let iou = g.reshape(&iou, &[1, nm as i64]);
    let e4u = cfg.low_res_size();
    g.output_f32(
        &masks,
        names::LOW_RES_LOGITS,
        &[1.into(), nm.into(), e4u.into(), e4u.into()],
    );
    g.output_f32(&iou, names::IOU_PREDICTIONS, &[1.into(), nm.into()]);
    let g = std::mem::take(g);
    Ok(g.finish(
        "litemedsam_prompt_decoder",
        "LiteMedSAM prompt encoder + mask decoder exported by edgeseg",
    ))
}
