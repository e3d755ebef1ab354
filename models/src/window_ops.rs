//! Inference-only CPU kernels for TinyViT's token-layout blocks: each replaces
//! a chain of single-threaded candle copies (padding, window partition,
//! transposes, head split) with one parallel pass. No backward pass: the
//! training forms in `litemedsam::tiny_vit` use plain tensor ops instead.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else {
        candle_core::bail!("{what}: only f32 is supported")
    };
    let Some((o1, o2)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous")
    };
    Ok(&d[o1..o2])
}

/// Tokens `B×(H·W)×C` → zero-padded windows `(B·nH·nW)×(ws·ws)×C`
/// (TinyViT's `F.pad` + window partition).
#[derive(Debug, Clone, Copy)]
pub struct WindowPartition {
    /// Grid height.
    pub h: usize,
    /// Grid width.
    pub w: usize,
    /// Window side.
    pub ws: usize,
}

impl WindowPartition {
    fn grid(&self) -> (usize, usize) {
        (self.h.div_ceil(self.ws), self.w.div_ceil(self.ws))
    }
}

impl CustomOp1 for WindowPartition {
    fn name(&self) -> &'static str {
        "edgeseg-window-partition"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, "window partition")?;
        let &[b, n, c] = l.dims() else {
            candle_core::bail!("window partition: expected B×L×C, got {:?}", l.dims())
        };
        let (h, w, ws) = (self.h, self.w, self.ws);
        if n != h * w {
            candle_core::bail!("window partition: {n} tokens is not {h}x{w}")
        }
        let (nh, nw) = self.grid();
        let nwin = b * nh * nw;
        let mut dst = vec![0f32; nwin * ws * ws * c];
        dst.par_chunks_mut(ws * ws * c)
            .enumerate()
            .for_each(|(win, out)| {
                let bi = win / (nh * nw);
                let wy = (win / nw) % nh;
                let wx = win % nw;
                for iy in 0..ws {
                    let y = wy * ws + iy;
                    if y >= h {
                        break;
                    }
                    let x0 = wx * ws;
                    let cols = ws.min(w.saturating_sub(x0));
                    let s0 = ((bi * h + y) * w + x0) * c;
                    out[iy * ws * c..(iy * ws + cols) * c].copy_from_slice(&src[s0..s0 + cols * c]);
                }
            });
        Ok((CpuStorage::F32(dst), Shape::from_dims(&[nwin, ws * ws, c])))
    }
}

/// `residual + reverse(windows)`: windows `(B·nH·nW)×(ws·ws)×C` back to tokens
/// `B×(H·W)×C` (padding cropped) added to the residual (op's first input).
#[derive(Debug, Clone, Copy)]
pub struct WindowReverseAdd(pub WindowPartition);

impl CustomOp2 for WindowReverseAdd {
    fn name(&self) -> &'static str {
        "edgeseg-window-reverse-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let res = f32_slice(s1, l1, "window reverse")?;
        let win = f32_slice(s2, l2, "window reverse")?;
        let &[b, n, c] = l1.dims() else {
            candle_core::bail!("window reverse: expected B×L×C, got {:?}", l1.dims())
        };
        let p = self.0;
        let (h, w, ws) = (p.h, p.w, p.ws);
        let (nh, nw) = p.grid();
        if n != h * w || l2.dims() != [b * nh * nw, ws * ws, c] {
            candle_core::bail!("window reverse: shapes {:?} {:?}", l1.dims(), l2.dims())
        }
        let mut dst = vec![0f32; res.len()];
        // one task per token row (b, y)
        dst.par_chunks_mut(w * c)
            .zip(res.par_chunks(w * c))
            .enumerate()
            .for_each(|(row, (out, r))| {
                let bi = row / h;
                let y = row % h;
                let (wy, iy) = (y / ws, y % ws);
                for wx in 0..nw {
                    let x0 = wx * ws;
                    let cols = ws.min(w - x0);
                    let wi = (bi * nh + wy) * nw + wx;
                    let s0 = (wi * ws * ws + iy * ws) * c;
                    let o = &mut out[x0 * c..(x0 + cols) * c];
                    for ((o, &a), &v) in o
                        .iter_mut()
                        .zip(&r[x0 * c..(x0 + cols) * c])
                        .zip(&win[s0..s0 + cols * c])
                    {
                        *o = a + v;
                    }
                }
            });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `qkv` `B×N×(heads·3·kd)` (per head: q, k, v) → `3×B×heads×N×kd`.
#[derive(Debug, Clone, Copy)]
pub struct SplitQkv {
    /// Heads.
    pub heads: usize,
    /// Per-head key (= value) width.
    pub kd: usize,
}

impl CustomOp1 for SplitQkv {
    fn name(&self) -> &'static str {
        "edgeseg-split-qkv"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, "split qkv")?;
        let &[b, n, c3] = l.dims() else {
            candle_core::bail!("split qkv: expected B×N×3C, got {:?}", l.dims())
        };
        let (hh, kd) = (self.heads, self.kd);
        if c3 != hh * 3 * kd {
            candle_core::bail!("split qkv: last dim {c3} is not {hh}·3·{kd}")
        }
        let mut dst = vec![0f32; src.len()];
        // one task per (part, batch, head) plane of N×kd
        dst.par_chunks_mut(n * kd)
            .enumerate()
            .for_each(|(plane, out)| {
                let part = plane / (b * hh);
                let bi = (plane / hh) % b;
                let hd = plane % hh;
                for t in 0..n {
                    let s0 = (bi * n + t) * c3 + hd * 3 * kd + part * kd;
                    out[t * kd..(t + 1) * kd].copy_from_slice(&src[s0..s0 + kd]);
                }
            });
        Ok((CpuStorage::F32(dst), Shape::from_dims(&[3, b, hh, n, kd])))
    }
}

/// Depthwise `k×k` convolution (stride 1, same padding) with bias on tokens
/// `B×(H·W)×C` (channels last), parallel over output rows.
#[derive(Debug, Clone)]
pub struct DepthwiseTokens {
    /// Weights `k·k×C` (tap-major).
    pub w: Vec<f32>,
    /// Bias `C`.
    pub b: Vec<f32>,
    /// Kernel side (odd).
    pub k: usize,
    /// Grid height.
    pub h: usize,
    /// Grid width.
    pub wd: usize,
}

impl CustomOp1 for DepthwiseTokens {
    fn name(&self) -> &'static str {
        "edgeseg-depthwise-tokens"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, "depthwise tokens")?;
        let &[_, n, c] = l.dims() else {
            candle_core::bail!("depthwise tokens: expected B×L×C, got {:?}", l.dims())
        };
        let (h, w, k) = (self.h, self.wd, self.k);
        if n != h * w || self.b.len() != c || self.w.len() != k * k * c {
            candle_core::bail!("depthwise tokens: bad shapes {:?}", l.dims())
        }
        let p = k / 2;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(w * c)
            .enumerate()
            .for_each(|(row, out)| {
                let bi = row / h;
                let y = row % h;
                for x in 0..w {
                    out[x * c..(x + 1) * c].copy_from_slice(&self.b);
                }
                for ky in 0..k {
                    let iy = y as isize + ky as isize - p as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let irow =
                        &src[(bi * h + iy as usize) * w * c..(bi * h + iy as usize + 1) * w * c];
                    for kx in 0..k {
                        let wt = &self.w[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                        for x in 0..w {
                            let ix = x as isize + kx as isize - p as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let ix = ix as usize;
                            for ((o, &v), &wv) in out[x * c..(x + 1) * c]
                                .iter_mut()
                                .zip(&irow[ix * c..(ix + 1) * c])
                                .zip(wt)
                            {
                                *o += wv * v;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}
