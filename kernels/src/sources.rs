//! The CUDA C sources of the kernels, embedded at build time with `include_str!`.
//!
//! Every source in `kernels/cu/*.cu` is listed in [`SOURCES`] with the names of the
//! `extern "C"` kernels it defines; [`full_source`] prepends the common prelude
//! (`cu/prelude.cuh`: f16 conversions, activations, warp/block reductions), so no
//! source needs an include path. A unit test checks that the list and the folder
//! agree, so a new `.cu` file cannot be left out of the compile check.

use sha2::{Digest, Sha256};

/// The prelude prepended to every source.
pub const PRELUDE: &str = include_str!("../cu/prelude.cuh");

/// One CUDA C source file and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name inside `kernels/cu/` (also the NVRTC program name).
    pub name: &'static str,
    /// The source text, without the prelude.
    pub code: &'static str,
    /// The `extern "C" __global__` functions it defines.
    pub kernels: &'static [&'static str],
}

macro_rules! src {
    ($file:literal, [$($k:literal),* $(,)?]) => {
        KernelSource {
            name: $file,
            code: include_str!(concat!("../cu/", $file)),
            kernels: &[$($k),*],
        }
    };
}

/// Every kernel source, in a fixed order.
pub const SOURCES: &[KernelSource] = &[
    src!(
        "preprocess.cu",
        ["pre_resize", "pre_normalize_f32", "pre_normalize_f16"]
    ),
    src!("postprocess.cu", ["post_mask_overlay"]),
    src!("layernorm.cu", ["layernorm_f32", "layernorm2d_f32"]),
    src!("elementwise.cu", ["gelu_f32", "gelu_f16"]),
    src!("softmax.cu", ["softmax_rows_f32"]),
    src!(
        "attention.cu",
        [
            "attention_f16_d16",
            "attention_f16_d32",
            "attention_f16_d64",
            "window_partition_f16",
            "window_reverse_f16",
        ]
    ),
    src!("conv.cu", ["conv3x3_bn_act_f32", "dwconv3x3_bn_act_f32"]),
    src!(
        "gemm.cu",
        [
            "gemm_bias_act_f32",
            "gemm_bias_act_f16",
            "conv1x1_bn_act_f32"
        ]
    ),
    src!("gemm_i8.cu", ["gemm_i8_dequant_f32"]),
    src!("fewshot.cu", ["masked_avg_pool_f32", "cosine_sim_f32"]),
];

/// Looks a source up by file name.
pub fn source(name: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The text handed to NVRTC: the prelude, a `#line` directive so that compiler
/// messages point into the right file, then the source.
pub fn full_source(src: &KernelSource) -> String {
    format!("{PRELUDE}\n#line 1 \"{}\"\n{}", src.name, src.code)
}

/// SHA-256 (hex) of [`full_source`]: part of the module-cache key.
pub fn source_hash(src: &KernelSource) -> String {
    let d = Sha256::digest(full_source(src).as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cu_file_is_listed_and_names_its_kernels() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cu");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SOURCES.iter().map(|s| s.name.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "kernels/cu/*.cu and SOURCES differ");
        // (the exact set of entry points is checked against the PTX by the compile
        // check, examples/compile_check.rs)
        for s in SOURCES {
            for k in s.kernels {
                let by_macro = k
                    .strip_prefix("attention_f16_d")
                    .is_some_and(|d| s.code.contains(&format!("ATT_ENTRY({d},")));
                assert!(
                    s.code.contains(&format!("{k}(")) || by_macro,
                    "{}: listed kernel {k} not found",
                    s.name
                );
            }
        }
    }

    #[test]
    fn hash_is_stable_and_covers_prelude() {
        let s = &SOURCES[0];
        assert_eq!(source_hash(s), source_hash(s));
        assert_eq!(source_hash(s).len(), 64);
        assert_ne!(source_hash(&SOURCES[0]), source_hash(&SOURCES[1]));
    }
}
