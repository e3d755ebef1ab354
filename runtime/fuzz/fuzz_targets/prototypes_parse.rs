//! Fuzz the prototype-file parser: `cargo +nightly fuzz run prototypes_parse`.
//!
//! cargo-fuzz builds with `--cfg fuzzing`, under which the parser skips its
//! whole-file hash comparison (see `CHECK_HASHES` in `runtime/src/fewshot/file.rs`),
//! so mutated inputs reach the header, metadata, table and prototype checks. Each
//! input is also parsed with its header file length and trailer hash rewritten to
//! match. Whatever parses must be usable: predicting on a matching all-ones
//! embedding gives finite probabilities, and writing it back parses again.
#![no_main]

use std::collections::BTreeMap;

use edgeseg_runtime::bundle::{self, VerifyPolicy};
use edgeseg_runtime::fewshot::PrototypeSet;
use edgeseg_runtime::Embedding;
use libfuzzer_sys::fuzz_target;

fn exercise(set: &PrototypeSet) {
    let (c, h, w) = (
        set.embedding.channels as usize,
        set.embedding.grid_height as usize,
        set.embedding.grid_width as usize,
    );
    if c * h * w > 1 << 20 {
        return;
    }
    let data = vec![1.0f32; c * h * w];
    let e = Embedding {
        channels: c,
        height: h,
        width: w,
        valid_height: h,
        valid_width: w,
        frame_height: h,
        frame_width: w,
        data: &data,
    };
    if let Ok(map) = set.predict(&e) {
        assert!(map.probs.iter().all(|p| p.is_finite()));
    }
    // (re-serialized metadata may exceed the limit by a few bytes: not an error here)
    if let Ok(bytes) = set.to_bytes(&BTreeMap::new(), None) {
        assert!(PrototypeSet::from_bytes(&bytes, &VerifyPolicy::default()).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    let policy = VerifyPolicy::default();
    if let Ok((set, _)) = PrototypeSet::from_bytes(data, &policy) {
        exercise(&set);
    }
    if data.len() >= 128 {
        let mut b = data.to_vec();
        let len = b.len();
        b[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        let digest = bundle::sha256(&b[..len - 64]);
        b[len - 32..].copy_from_slice(&digest);
        if let Ok((set, _)) = PrototypeSet::from_bytes(&b, &policy) {
            exercise(&set);
        }
    }
});
