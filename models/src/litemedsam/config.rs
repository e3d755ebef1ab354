//! Architecture hyper-parameters of LiteMedSAM (and of scaled-down variants
//! used in tests).

/// Hyper-parameters of a LiteMedSAM-style model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteMedSamConfig {
    /// Square encoder input side (256).
    pub img_size: usize,
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
}

impl LiteMedSamConfig {
    /// The configuration of the released LiteMedSAM checkpoint.
    pub fn litemedsam() -> Self {
        Self {
            img_size: 256,
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
        }
    }

    /// A tiny configuration with the same structure (window padding, single
    /// window, stride-1 merge), for fast tests.
    pub fn tiny() -> Self {
        Self {
            img_size: 16,
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
        }
    }

    /// Side of the image embedding (`img_size / Π merge_strides`, 64).
    pub fn embedding_size(&self) -> usize {
        self.img_size / self.merge_strides.iter().product::<usize>()
    }
}

impl Default for LiteMedSamConfig {
    fn default() -> Self {
        Self::litemedsam()
    }
}
