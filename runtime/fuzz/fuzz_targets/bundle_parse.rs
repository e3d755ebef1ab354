//! Fuzz the bundle parser: `cargo +nightly fuzz run bundle_parse`.
//!
//! cargo-fuzz builds with `--cfg fuzzing`, under which the parser skips its two
//! hash comparisons (see `CHECK_HASHES`), so mutated inputs reach the section
//! table, manifest and tensor-table checks. Each input is also parsed with its
//! header file length and trailer hash rewritten to match, and fed to the
//! tensor-table and manifest parsers directly. Every tensor of a bundle that
//! opens is dequantized by its manifest scheme (`quant::tensor_f32`), the path
//! the runtime takes when it attaches weights to a graph.
#![no_main]

use edgeseg_runtime::bundle::{self, Bundle, VerifyPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = VerifyPolicy::default();
    let _ = Bundle::from_bytes(data, &policy);
    if data.len() >= 128 && data.len().is_multiple_of(64) {
        let mut b = data.to_vec();
        let len = b.len();
        b[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        let digest = bundle::sha256(&b[..len - 64]);
        b[len - 32..].copy_from_slice(&digest);
        if let Ok(bundle) = Bundle::from_bytes(&b, &policy) {
            // Touch everything a backend would use.
            for t in bundle.tensors() {
                assert_eq!(t.bytes.len() as u64 % t.dtype.size(), 0);
                if let Some(Ok(v)) = edgeseg_runtime::quant::tensor_f32(&bundle, t.name) {
                    let n: u64 = t.shape.iter().product();
                    assert_eq!(v.len() as u64, n);
                }
            }
            for name in bundle.graph_names() {
                assert!(bundle.graph(name).is_some());
            }
        }
    }
    let _ = bundle::fuzz_tensor_table(data, 1 << 20);
    let _ = bundle::fuzz_manifest(data);
});
