//! Architecture hyper-parameters of LiteMedSAM, of the distilled students that
//! share its code (`edge_s`, `edge_m`), and of scaled-down variants used in
//! tests.
//!
//! One [`LiteMedSamConfig`] drives the candle modules (inference and
//! training), the ONNX exporter and therefore the bundles and the runtime: a
//! student is the same architecture with a strided stem (`stem_stride`),
//! smaller widths and depths, and more upscalings in the mask decoder
//! (`decoder_upscales`) so that its low-res logits keep the `img_size` side.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a LiteMedSAM-style model. Teacher values in
/// parentheses. Call [`LiteMedSamConfig::validate`] before building from a
/// hand-written configuration (the model constructor and the exporter do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiteMedSamConfig {
    /// Square encoder input side (256).
    pub img_size: usize,
    /// Downsampling of the patch-embedding stem (1): 1 = two 1×1 Conv2d_BN
    /// (the teacher), 2 = 3×3 stride 2 then 3×3 stride 1, 4 = two 3×3 stride 2
    /// (MobileSAM / TinyViT).
    pub stem_stride: usize,
    /// TinyViT stage widths (64, 128, 160, 320).
    pub embed_dims: [usize; 4],
    /// Blocks per stage (2, 2, 6, 2).
    pub depths: [usize; 4],
    /// Attention heads of stages 1–3 (index 0 unused: stage 0 is MBConv) (2, 4, 5, 10).
    pub num_heads: [usize; 4],
    /// Attention windows of stages 1–3 (index 0 unused) (7, 7, 14, 7).
    pub window_sizes: [usize; 4],
    /// MLP hidden = dim × this (4).
    pub mlp_ratio: usize,
    /// MBConv expansion (4).
    pub mbconv_expand_ratio: usize,
    /// Depthwise `local_conv` kernel (3).
    pub local_conv_size: usize,
    /// Strides of the three patch merges (2, 2, 1).
    pub merge_strides: [usize; 3],
    /// Prompt / image embedding width (256).
    pub prompt_embed_dim: usize,
    /// Heads of the two-way transformer (8).
    pub decoder_heads: usize,
    /// MLP width of the two-way transformer (2048).
    pub decoder_mlp_dim: usize,
    /// Two-way transformer depth (2).
    pub decoder_depth: usize,
    /// Multimask outputs (3; plus one single-mask token).
    pub num_multimask_outputs: usize,
    /// IoU head hidden width (256).
    pub iou_head_hidden_dim: usize,
    /// IoU head depth (3).
    pub iou_head_depth: usize,
    /// Hidden channels of the mask-prompt downscaler (16).
    pub mask_in_chans: usize,
    /// 2× transposed-conv upscalings of the mask decoder (2): D→D/4, D/4→D/8,
    /// then D/8→D/8 for each one beyond two. The low-res logits side is
    /// `embedding_size() × 2^decoder_upscales` and must equal `img_size`.
    pub decoder_upscales: usize,
    /// Adds the box prior ([`crate::litemedsam::box_prior`]: an ellipse
    /// inscribed in the prompt box, ±[`BOX_PRIOR_LOGIT`]) to every mask logit
    /// map when the prompt has a box, so that the decoder learns a residual
    /// (false for the teacher; configurations stored without it read false).
    #[serde(default)]
    pub box_prior: bool,
}

/// Height of the box prior in logits: +this at the ellipse's centre, −this
/// from the ellipse's "radius" √2 outwards (the box's corners and beyond).
pub const BOX_PRIOR_LOGIT: f32 = 4.0;

/// Names accepted by [`LiteMedSamConfig::preset`].
pub const PRESETS: [&str; 5] = ["litemedsam", "edge-s", "edge-m", "tiny", "tiny-student"];

impl LiteMedSamConfig {
    /// The configuration of the released LiteMedSAM checkpoint (the teacher).
    pub fn litemedsam() -> Self {
        Self {
            img_size: 256,
            stem_stride: 1,
            embed_dims: [64, 128, 160, 320],
            depths: [2, 2, 6, 2],
            num_heads: [2, 4, 5, 10],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            local_conv_size: 3,
            merge_strides: [2, 2, 1],
            prompt_embed_dim: 256,
            decoder_heads: 8,
            decoder_mlp_dim: 2048,
            decoder_depth: 2,
            num_multimask_outputs: 3,
            iou_head_hidden_dim: 256,
            iou_head_depth: 3,
            mask_in_chans: 16,
            decoder_upscales: 2,
            box_prior: false,
        }
    }

    /// The small distilled student: stride-4 stem, 32×32×96 embedding, three
    /// decoder upscalings (32·8 = 256 low-res side).
    pub fn edge_s() -> Self {
        Self {
            img_size: 256,
            stem_stride: 4,
            embed_dims: [32, 64, 96, 96],
            depths: [1, 2, 1, 1],
            num_heads: [1, 2, 3, 3],
            window_sizes: [8, 8, 8, 8],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            local_conv_size: 3,
            merge_strides: [2, 1, 1],
            prompt_embed_dim: 96,
            decoder_heads: 4,
            decoder_mlp_dim: 384,
            decoder_depth: 2,
            num_multimask_outputs: 3,
            iou_head_hidden_dim: 96,
            iou_head_depth: 3,
            mask_in_chans: 8,
            decoder_upscales: 3,
            box_prior: true,
        }
    }

    /// The medium distilled student: [`Self::edge_s`] with wider stages, a
    /// deeper stage 2 and a 128-wide embedding (32×32×128).
    pub fn edge_m() -> Self {
        Self {
            embed_dims: [48, 96, 128, 160],
            depths: [1, 2, 2, 1],
            num_heads: [1, 3, 4, 5],
            prompt_embed_dim: 128,
            decoder_mlp_dim: 512,
            iou_head_hidden_dim: 128,
            ..Self::edge_s()
        }
    }

    /// A tiny configuration with the teacher's structure (window padding,
    /// single window, stride-1 merge), for fast tests.
    pub fn tiny() -> Self {
        Self {
            img_size: 16,
            stem_stride: 1,
            embed_dims: [8, 16, 16, 24],
            depths: [1, 1, 2, 1],
            num_heads: [1, 2, 2, 3],
            window_sizes: [3, 3, 4, 3],
            mlp_ratio: 2,
            mbconv_expand_ratio: 2,
            local_conv_size: 3,
            merge_strides: [2, 2, 1],
            prompt_embed_dim: 32,
            decoder_heads: 2,
            decoder_mlp_dim: 48,
            decoder_depth: 2,
            num_multimask_outputs: 3,
            iou_head_hidden_dim: 16,
            iou_head_depth: 3,
            mask_in_chans: 8,
            decoder_upscales: 2,
            box_prior: false,
        }
    }

    /// A tiny configuration with the students' structure (stride-4 stem,
    /// three decoder upscalings: 32 → 8 → 4×4 embedding → 32 low-res), for
    /// fast tests.
    pub fn tiny_student() -> Self {
        Self {
            img_size: 32,
            stem_stride: 4,
            merge_strides: [2, 1, 1],
            decoder_upscales: 3,
            box_prior: true,
            ..Self::tiny()
        }
    }

    /// The configuration named `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "litemedsam" => Self::litemedsam(),
            "edge-s" => Self::edge_s(),
            "edge-m" => Self::edge_m(),
            "tiny" => Self::tiny(),
            "tiny-student" => Self::tiny_student(),
            _ => return None,
        })
    }

    /// Side of the image embedding,
    /// `img_size / (stem_stride × Π merge_strides)` (64 for the teacher).
    pub fn embedding_size(&self) -> usize {
        let div = self.stem_stride.max(1) * self.merge_strides.iter().product::<usize>().max(1);
        self.img_size / div
    }

    /// Kernel and stride of the stem's two Conv2d_BN (`patch_embed.seq.0` and
    /// `.seq.2`) for `stem_stride` 1, 2 or 4 (padding is kernel / 2).
    pub fn stem_convs(&self) -> [(usize, usize); 2] {
        match self.stem_stride {
            1 => [(1, 1), (1, 1)],
            2 => [(3, 2), (3, 1)],
            _ => [(3, 2), (3, 2)],
        }
    }

    /// Side of the decoder's low-res logits,
    /// `embedding_size() × 2^decoder_upscales` (256).
    pub fn low_res_size(&self) -> usize {
        u32::try_from(self.decoder_upscales)
            .ok()
            .and_then(|u| 2usize.checked_pow(u))
            .and_then(|p| self.embedding_size().checked_mul(p))
            .unwrap_or(usize::MAX)
    }

    /// Checks every constraint the modules and the exporter rely on; the
    /// error names the first violated one.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid LiteMedSAM configuration: {msg}"));
        if self.img_size == 0 {
            return fail("img_size is 0".into());
        }
        if !matches!(self.stem_stride, 1 | 2 | 4) {
            return fail(format!("stem_stride {} is not 1, 2 or 4", self.stem_stride));
        }
        if !self.img_size.is_multiple_of(self.stem_stride) {
            return fail(format!(
                "img_size {} is not divisible by stem_stride {}",
                self.img_size, self.stem_stride
            ));
        }
        let mut res = self.img_size / self.stem_stride;
        for (i, &s) in self.merge_strides.iter().enumerate() {
            if s == 0 || !res.is_multiple_of(s) {
                return fail(format!(
                    "merge_strides[{i}] = {s} does not divide the resolution {res}"
                ));
            }
            res /= s;
        }
        if let Some(i) = self.embed_dims.iter().position(|&d| d == 0) {
            return fail(format!("embed_dims[{i}] is 0"));
        }
        if !self.embed_dims[0].is_multiple_of(2) {
            return fail(format!(
                "embed_dims[0] = {} is odd (the stem's first conv has half of it)",
                self.embed_dims[0]
            ));
        }
        if let Some(i) = self.depths.iter().position(|&d| d == 0) {
            return fail(format!("depths[{i}] is 0"));
        }
        for s in 1..4 {
            let (d, h, w) = (self.embed_dims[s], self.num_heads[s], self.window_sizes[s]);
            if h == 0 || !d.is_multiple_of(h) {
                return fail(format!(
                    "embed_dims[{s}] = {d} is not divisible by num_heads[{s}] = {h}"
                ));
            }
            if w == 0 {
                return fail(format!("window_sizes[{s}] is 0"));
            }
        }
        if self.mlp_ratio == 0 || self.mbconv_expand_ratio == 0 {
            return fail("mlp_ratio and mbconv_expand_ratio must be ≥ 1".into());
        }
        if self.local_conv_size.is_multiple_of(2) {
            return fail(format!(
                "local_conv_size {} is not odd",
                self.local_conv_size
            ));
        }
        let d = self.prompt_embed_dim;
        if d == 0 || !d.is_multiple_of(8) {
            return fail(format!(
                "prompt_embed_dim {d} is not a positive multiple of 8 (D/4 and D/8 upscaling channels)"
            ));
        }
        let h = self.decoder_heads;
        if h == 0 || !d.is_multiple_of(h) || !(d / 2).is_multiple_of(h) {
            return fail(format!(
                "prompt_embed_dim {d} and its half are not divisible by decoder_heads {h}"
            ));
        }
        if self.decoder_depth == 0 || self.decoder_mlp_dim == 0 {
            return fail("decoder_depth and decoder_mlp_dim must be ≥ 1".into());
        }
        if self.iou_head_depth == 0 || self.iou_head_hidden_dim == 0 {
            return fail("iou_head_depth and iou_head_hidden_dim must be ≥ 1".into());
        }
        if self.mask_in_chans == 0 || !self.mask_in_chans.is_multiple_of(4) {
            return fail(format!(
                "mask_in_chans {} is not a positive multiple of 4",
                self.mask_in_chans
            ));
        }
        if self.decoder_upscales < 2 {
            return fail(format!("decoder_upscales {} < 2", self.decoder_upscales));
        }
        if self.low_res_size() != self.img_size {
            return fail(format!(
                "low-res logits side {} × 2^{} = {} differs from img_size {}",
                res,
                self.decoder_upscales,
                self.low_res_size(),
                self.img_size
            ));
        }
        Ok(())
    }
}

impl Default for LiteMedSamConfig {
    fn default() -> Self {
        Self::litemedsam()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in PRESETS {
            let cfg = LiteMedSamConfig::preset(name).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.low_res_size(), cfg.img_size, "{name}");
        }
        assert_eq!(LiteMedSamConfig::preset("edge-xl"), None);
        assert_eq!(LiteMedSamConfig::litemedsam().embedding_size(), 64);
        assert_eq!(LiteMedSamConfig::edge_s().embedding_size(), 32);
        assert_eq!(LiteMedSamConfig::edge_m().embedding_size(), 32);
        assert_eq!(LiteMedSamConfig::tiny_student().embedding_size(), 4);
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        let bad = |f: fn(&mut LiteMedSamConfig), what: &str| {
            let mut c = LiteMedSamConfig::edge_s();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        bad(|c| c.stem_stride = 3, "stem_stride 3");
        bad(|c| c.stem_stride = 8, "stem_stride 8");
        bad(|c| c.img_size = 250, "not divisible by stem_stride 4");
        bad(
            |c| c.img_size = 252,
            "merge_strides[0] = 2 does not divide the resolution 63",
        );
        bad(|c| c.num_heads[2] = 5, "num_heads[2]");
        bad(|c| c.decoder_heads = 5, "decoder_heads");
        bad(|c| c.prompt_embed_dim = 100, "multiple of 8");
        bad(|c| c.decoder_upscales = 2, "differs from img_size");
        bad(|c| c.depths[1] = 0, "depths[1]");
        bad(|c| c.iou_head_depth = 0, "iou_head_depth");
        bad(|c| c.embed_dims[0] = 33, "odd");
    }

    #[test]
    fn serde_round_trip() {
        let c = LiteMedSamConfig::edge_m();
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.contains("\"stem_stride\":4"), "{s}");
        let back: LiteMedSamConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }
}
