//! Grid and block shapes of every kernel launch, in one place for the GPU
//! launchers (`gpu::ops`) and the CPU emulation tests (`tests/cpu_emulated.rs`),
//! so that the emulated launches are the product's. Plain Rust, no CUDA.

/// A launch geometry: blocks per grid, threads per block, dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Grid size in blocks (x, y, z).
    pub grid: (u32, u32, u32),
    /// Block size in threads (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, bytes.
    pub smem: u32,
}

/// A size that does not fit a launch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} = {value} is too large for the launch (limit {limit})")]
pub struct TooLarge {
    /// Which size.
    pub what: &'static str,
    /// Its value.
    pub value: usize,
    /// The limit.
    pub limit: usize,
}

type R = Result<Shape, TooLarge>;

/// `ceil(n / per)` blocks (at least 1).
pub fn blocks(n: usize, per: usize) -> Result<u32, TooLarge> {
    u32::try_from(n.div_ceil(per.max(1)).max(1)).map_err(|_| TooLarge {
        what: "grid size",
        value: n,
        limit: u32::MAX as usize,
    })
}

fn dim(what: &'static str, v: usize, limit: usize) -> Result<u32, TooLarge> {
    if v <= limit {
        Ok(v.max(1) as u32)
    } else {
        Err(TooLarge {
            what,
            value: v,
            limit,
        })
    }
}

fn s(grid: (u32, u32, u32), block: (u32, u32, u32), smem: u32) -> Shape {
    Shape { grid, block, smem }
}

/// Grid-stride elementwise kernels (GELU, window partition/reverse): 256
/// threads, at most 65535 blocks.
pub fn elementwise(n: usize) -> R {
    // grid-stride loops: more blocks than this only add scheduling
    let b = n.div_ceil(256).clamp(1, 65535) as u32;
    Ok(s((b, 1, 1), (256, 1, 1), 0))
}

/// `transpose_f32`: 32 × 32 tiles of `x` (`rows × cols`), 32 × 8 threads.
pub fn transpose(rows: usize, cols: usize) -> R {
    Ok(s(
        (
            blocks(cols, 32)?,
            dim("transpose rows / 32", rows.div_ceil(32), 65535)?,
            1,
        ),
        (32, 8, 1),
        0,
    ))
}

/// `pre_resize`: one thread per resized pixel.
pub fn pre_resize(new_h: usize, new_w: usize) -> R {
    Ok(s((blocks(new_h * new_w, 256)?, 1, 1), (256, 1, 1), 0))
}

/// `pre_normalize_*`: one thread per output element of `3 × size × size`.
pub fn pre_normalize(size: usize) -> R {
    Ok(s((blocks(3 * size * size, 256)?, 1, 1), (256, 1, 1), 0))
}

/// `post_mask_overlay`: 32 × 8 tiles of output pixels.
pub fn post_mask_overlay(out_h: usize, out_w: usize) -> R {
    Ok(s((blocks(out_w, 32)?, blocks(out_h, 8)?, 1), (32, 8, 1), 0))
}

/// `layernorm_f32`: one block per row (256 threads from 1024 channels, else 128).
pub fn layernorm(rows: usize, c: usize) -> R {
    let t = if c >= 1024 { 256 } else { 128 };
    Ok(s(
        (dim("rows", rows, u32::MAX as usize)?, 1, 1),
        (t, 1, 1),
        0,
    ))
}

/// `layernorm2d_f32`: one thread per (image, pixel).
pub fn layernorm2d(n: usize, hw: usize) -> R {
    Ok(s((blocks(n * hw, 128)?, 1, 1), (128, 1, 1), 0))
}

/// `softmax_rows_f32`: one block of 256 per row.
pub fn softmax_rows(rows: usize) -> R {
    Ok(s(
        (dim("rows", rows, u32::MAX as usize)?, 1, 1),
        (256, 1, 1),
        0,
    ))
}

/// `attention_f16_d*`: 64 query rows per block; heads and batch on y and z.
pub fn attention(nq: usize, heads: usize, batch: usize) -> R {
    Ok(s(
        (
            blocks(nq, 64)?,
            dim("heads", heads, 65535)?,
            dim("batch", batch, 65535)?,
        ),
        (64, 1, 1),
        0,
    ))
}

/// `conv1x1_bn_act_f32`: 64 × 64 tiles of (pixels, output channels), batch on z.
pub fn conv1x1(n: usize, cout: usize, hw: usize) -> R {
    Ok(s(
        (blocks(hw, 64)?, blocks(cout, 64)?, dim("batch", n, 65535)?),
        (256, 1, 1),
        0,
    ))
}

/// `conv3x3_bn_act_f32`: 16 × 16 output pixels, 4 output channels per thread.
pub fn conv3x3(n: usize, cout: usize, ho: usize, wo: usize) -> R {
    let z = dim("batch x channel groups", n * cout.div_ceil(4), 65535)?;
    Ok(s((blocks(wo, 16)?, blocks(ho, 16)?, z), (16, 16, 1), 0))
}

/// `dwconv3x3_bn_act_f32`: 16 × 16 output pixels, (image, channel) on z.
pub fn dwconv3x3(n: usize, c: usize, ho: usize, wo: usize) -> R {
    let z = dim("batch x channels", n * c, 65535)?;
    Ok(s((blocks(wo, 16)?, blocks(ho, 16)?, z), (16, 16, 1), 0))
}

/// `gemm_bias_act_*`, `gemm_i8_dequant_f32`: 64 × 64 output tiles.
pub fn gemm(m: usize, n: usize) -> R {
    Ok(s((blocks(n, 64)?, blocks(m, 64)?, 1), (256, 1, 1), 0))
}

/// `masked_avg_pool_f32`: one block of 256 per channel.
pub fn masked_avg_pool(c: usize) -> R {
    Ok(s((blocks(c, 1)?, 1, 1), (256, 1, 1), 0))
}

/// `cosine_sim_f32`: 128 pixels per block, the (up to 8) prototypes of the
/// launch in dynamic shared memory (`8 · c` floats, at most 48 KiB).
pub fn cosine_sim(c: usize, hw: usize) -> R {
    let smem = 8 * c * 4;
    if smem > 48 * 1024 {
        return Err(TooLarge {
            what: "cosine_sim channels",
            value: c,
            limit: 48 * 1024 / 32,
        });
    }
    Ok(s((blocks(hw, 128)?, 1, 1), (128, 1, 1), smem as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_their_outputs_and_reject_oversize() {
        assert_eq!(blocks(0, 64).unwrap(), 1);
        assert_eq!(blocks(65, 64).unwrap(), 2);
        let g = gemm(100, 130).unwrap();
        assert_eq!((g.grid, g.block), ((3, 2, 1), (256, 1, 1)));
        assert_eq!(conv3x3(2, 5, 17, 33).unwrap().grid, (3, 2, 4));
        assert_eq!(elementwise(usize::MAX / 2).unwrap().grid.0, 65535);
        assert!(attention(10, 70_000, 1).is_err());
        assert!(cosine_sim(2000, 10).is_err());
        assert_eq!(cosine_sim(256, 300).unwrap().smem, 8192);
    }
}
