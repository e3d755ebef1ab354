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
            "attention_f16_d8",
            "attention_f16_d12",
            "attention_f16_d24",
            "attention_f16_d48",
            "window_partition_f16",
            "window_reverse_f16",
            "window_partition_f32",
            "window_reverse_f32",
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
    src!(
        "tensor.cu",
        [
            "add_act_f32",
            "add_broadcast_f32",
            "transpose_f32",
            "gather_heads_f16",
            "f16_to_f32",
            "conv_transpose2x2_f32",
            "box_prior_add_f32",
        ]
    ),
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

/// The C type of a kernel parameter, as far as a launch needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Any pointer (a device buffer).
    Ptr,
    /// `int`.
    I32,
    /// `unsigned int`.
    U32,
    /// `long long`.
    I64,
    /// `float`.
    F32,
}

fn param_kind(decl: &str) -> Option<ParamKind> {
    let decl = decl.trim();
    if decl.contains('*') {
        return Some(ParamKind::Ptr);
    }
    // drop the parameter name (the last identifier), normalize the spaces of the type
    let (ty, _name) = decl.rsplit_once(char::is_whitespace)?;
    let ty: Vec<&str> = ty.split_whitespace().filter(|w| *w != "const").collect();
    match ty.join(" ").as_str() {
        "int" => Some(ParamKind::I32),
        "unsigned int" | "unsigned" => Some(ParamKind::U32),
        "long long" => Some(ParamKind::I64),
        "float" => Some(ParamKind::F32),
        _ => None,
    }
}

/// The parameter list of kernel `kernel` of `src`, parsed from its declaration
/// (for the attention kernels, from the `ATT_ENTRY` macro that stamps them out).
/// The GPU launchers check the arguments they push against it before launching,
/// so a launcher that disagrees with its kernel fails with an error instead of
/// corrupting memory. `None` if the kernel or a parameter type is not understood.
pub fn kernel_params(src: &KernelSource, kernel: &str) -> Option<Vec<ParamKind>> {
    let code = src.code;
    let needle = if kernel.starts_with("attention_f16_d") {
        "attention_f16_d##D(".to_string()
    } else {
        format!("{kernel}(")
    };
    let start = code.match_indices(&needle).find_map(|(i, _)| {
        let before = code[..i].chars().next_back();
        let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        // the definition: an `extern "C"` entry, not a call
        (boundary
            && code[..i]
                .rfind("extern \"C\"")
                .is_some_and(|e| !code[e..i].contains(';')))
        .then_some(i + needle.len())
    })?;
    let end = start + code[start..].find(')')?;
    let list = code[start..end].replace('\\', " ");
    list.split(',').map(param_kind).collect()
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
    fn every_kernel_signature_parses() {
        use ParamKind::*;
        for s in SOURCES {
            for k in s.kernels {
                let p = kernel_params(s, k).unwrap_or_else(|| panic!("{k}: signature"));
                assert!(!p.is_empty(), "{k}");
            }
        }
        let pre = source("preprocess.cu").unwrap();
        assert_eq!(
            kernel_params(pre, "pre_normalize_f16"),
            Some(vec![Ptr, Ptr, I32, I32, I32, Ptr])
        );
        let post = source("postprocess.cu").unwrap();
        let p = kernel_params(post, "post_mask_overlay").unwrap();
        assert_eq!(p.len(), 15);
        assert_eq!((p[11], p[12], p[14]), (U32, F32, U32));
        let att = kernel_params(source("attention.cu").unwrap(), "attention_f16_d64").unwrap();
        assert_eq!(att.len(), 20);
        assert_eq!(&att[5..8], &[I32, I32, F32]);
        assert!(att[8..].iter().all(|&k| k == I64));
        let gemm = source("gemm.cu").unwrap();
        assert_eq!(
            kernel_params(gemm, "gemm_bias_act_f32"),
            Some(vec![Ptr, Ptr, Ptr, Ptr, I32, I32, I32, I32])
        );
        assert_eq!(kernel_params(gemm, "no_such_kernel"), None);
    }

    #[test]
    fn hash_is_stable_and_covers_prelude() {
        let s = &SOURCES[0];
        assert_eq!(source_hash(s), source_hash(s));
        assert_eq!(source_hash(s).len(), 64);
        assert_ne!(source_hash(&SOURCES[0]), source_hash(&SOURCES[1]));
    }
}
