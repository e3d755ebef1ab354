//! Bundle format: round trips, policies, and rejection of every truncation,
//! every single-bit flip and hand-crafted malformed layouts.

use ed25519_dalek::{SigningKey, VerifyingKey};
use edgeseg_runtime::bundle::{
    self, Bundle, BundleError, BundleWriter, DType, Manifest, Quantization, VerifyPolicy,
    HEADER_LEN, SECTION_ENTRY_LEN, TRAILER_LEN,
};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn manifest() -> Manifest {
    let mut m = Manifest::minimal("litemedsam", "tiny-test", "0.1.0");
    m.architecture.summary = "test encoder + decoder".into();
    m.architecture.parameters = 42;
    m.provenance.teacher = Some("litemedsam".into());
    m.provenance.commands = vec!["edgeseg-tools bundle ...".into()];
    m.provenance.metrics.insert("dice_mean".into(), 0.9);
    m.quantization.insert(
        "decoder.w".into(),
        Quantization::PerTensor {
            scale: 0.5,
            zero_point: 0,
        },
    );
    m.extra
        .insert("note".into(), serde_json::json!({"a": [1, 2]}));
    m
}

fn writer() -> BundleWriter {
    let w: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    BundleWriter::new(manifest())
        .graph("encoder.onnx", b"fake encoder graph bytes".to_vec())
        .graph("decoder.onnx", vec![7u8; 100])
        .tensor("encoder.w", DType::F32, &[2, 3, 4], w)
        .tensor("decoder.w", DType::I8, &[5], vec![1, 2, 3, 4, 5])
        .tensor("empty", DType::F16, &[0, 3], Vec::new())
        .tensor("scalar", DType::I64, &[], 9i64.to_le_bytes().to_vec())
}

fn unsigned() -> Vec<u8> {
    writer().to_bytes().unwrap()
}

fn signed() -> Vec<u8> {
    writer().sign_with(key(1)).to_bytes().unwrap()
}

fn pinned(seed: u8) -> VerifyPolicy {
    VerifyPolicy::require_signature(key(seed).verifying_key())
}

/// Recompute the whole-file SHA-256 in the trailer after an edit, so the
/// deeper checks are what rejects the edit.
fn fix_trailer(b: &mut [u8]) {
    let n = b.len() - 32;
    let d = bundle::sha256(&b[..b.len() - TRAILER_LEN]);
    b[n..].copy_from_slice(&d);
}

fn entry(i: usize) -> usize {
    HEADER_LEN + i * SECTION_ENTRY_LEN
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn round_trip_unsigned() {
    let bytes = unsigned();
    assert!(
        bytes.len() < 4096,
        "test bundle should stay small: {}",
        bytes.len()
    );
    let b = Bundle::from_bytes(&bytes, &VerifyPolicy::default()).unwrap();
    let m = b.manifest();
    assert_eq!(m.model.name, "tiny-test");
    assert_eq!(m.sections.len(), 4);
    let mut expect = manifest();
    expect.sections = m.sections.clone();
    assert_eq!(m, &expect);
    assert_eq!(
        b.graph("encoder.onnx").unwrap(),
        b"fake encoder graph bytes"
    );
    assert_eq!(b.graph("decoder.onnx").unwrap(), &[7u8; 100][..]);
    assert!(b.graph("nope").is_none());
    assert_eq!(
        b.graph_names().collect::<Vec<_>>(),
        ["encoder.onnx", "decoder.onnx"]
    );
    let t = b.tensor("encoder.w").unwrap();
    assert_eq!((t.dtype, t.shape), (DType::F32, &[2u64, 3, 4][..]));
    assert_eq!(&t.bytes[4..8], &1f32.to_le_bytes());
    assert_eq!(b.tensor("decoder.w").unwrap().bytes, &[1, 2, 3, 4, 5]);
    assert_eq!(b.tensor("empty").unwrap().bytes.len(), 0);
    assert_eq!(b.tensor("scalar").unwrap().bytes, &9i64.to_le_bytes());
    for t in b.tensors() {
        assert_eq!(
            t.bytes.as_ptr() as usize % 64,
            0,
            "{} not 64-byte aligned",
            t.name
        );
    }
    assert!(b.signer().is_none());
    assert_eq!(b.as_bytes(), &bytes[..]);
    assert_eq!(b.file_sha256()[..], bytes[bytes.len() - 32..]);
}

#[test]
fn open_from_file() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("round_trip.edgeseg");
    writer().sign_with(key(1)).write_to(&path).unwrap();
    let b = Bundle::open(&path, &pinned(1)).unwrap();
    assert_eq!(b.signer(), Some(&key(1).verifying_key()));
    assert_eq!(b.tensor("decoder.w").unwrap().bytes, &[1, 2, 3, 4, 5]);
    let empty = dir.join("empty.edgeseg");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Bundle::open(&empty, &VerifyPolicy::default()),
        Err(BundleError::TooShort { len: 0, .. })
    ));
    let missing = Bundle::open(dir.join("missing.edgeseg"), &VerifyPolicy::default());
    let err = missing.unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }));
    assert!(err.to_string().contains("missing.edgeseg"), "{err}");
}

#[test]
fn signature_policies() {
    let s = signed();
    let u = unsigned();
    let open = |b: &[u8], p: &VerifyPolicy| Bundle::from_bytes(b, p);
    // Signed: fine without a pin (signature still verified) and with the right pin.
    assert!(open(&s, &VerifyPolicy::default())
        .unwrap()
        .signer()
        .is_some());
    open(&s, &pinned(1)).unwrap();
    // Wrong pinned key.
    assert!(matches!(
        open(&s, &pinned(2)),
        Err(BundleError::SignerMismatch { .. })
    ));
    // Unsigned with a pinned key.
    assert!(matches!(
        open(&u, &pinned(1)),
        Err(BundleError::SignatureRequired)
    ));
    open(&u, &VerifyPolicy::default()).unwrap();
}

/// Offset and length of the last section (the signature in a signed bundle).
fn last_section(b: &[u8]) -> (usize, usize) {
    let count = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let e = entry(count - 1);
    (get_u64(b, e + 8) as usize, get_u64(b, e + 16) as usize)
}

#[test]
fn weak_key_refused_by_verify_strict() {
    // Identity point as public key, R = identity and s = 0: this "signature"
    // satisfies the cofactorless equation for every message; verify_strict
    // must refuse the small-order key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut b = signed();
    let (off, len) = last_section(&b);
    assert_eq!(len, 96);
    b[off..off + 32].copy_from_slice(&identity);
    b[off + 32..off + 64].copy_from_slice(&identity);
    b[off + 64..off + 96].fill(0);
    fix_trailer(&mut b);
    let err = Bundle::from_bytes(&b, &VerifyPolicy::default()).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    let weak = VerifyingKey::from_bytes(&identity).unwrap();
    let err = Bundle::from_bytes(&b, &VerifyPolicy::require_signature(weak)).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
}

#[test]
fn manifest_edit_breaks_signature_but_not_integrity_only() {
    for (bytes, signed) in [(signed(), true), (unsigned(), false)] {
        let mut b = bytes;
        let pos = b.windows(9).position(|w| w == b"tiny-test").unwrap();
        b[pos] = b'T';
        fix_trailer(&mut b);
        let r = Bundle::from_bytes(&b, &VerifyPolicy::default());
        if signed {
            assert!(matches!(r, Err(BundleError::BadSignature { .. })));
        } else {
            // Without a signature, a rewritten trailer is accepted: only a
            // signature protects against deliberate edits.
            assert_eq!(r.unwrap().manifest().model.name, "Tiny-test");
        }
    }
}

#[test]
fn every_truncation_and_extension_rejected() {
    for bytes in [unsigned(), signed()] {
        for n in 0..bytes.len() {
            assert!(
                Bundle::from_bytes(&bytes[..n], &VerifyPolicy::default()).is_err(),
                "truncation to {n} bytes accepted"
            );
        }
        let mut ext = bytes.clone();
        ext.extend_from_slice(&[0u8; 64]);
        assert!(Bundle::from_bytes(&ext, &VerifyPolicy::default()).is_err());
    }
}

#[test]
fn every_bit_flip_rejected() {
    // Plain flips: the whole-file hash (or an earlier header check) rejects them.
    for (bytes, policy) in [(unsigned(), VerifyPolicy::default()), (signed(), pinned(1))] {
        let mut b = bytes.clone();
        for bit in 0..b.len() * 8 {
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Bundle::from_bytes(&b, &policy).is_err(),
                "flip of bit {bit} accepted"
            );
            b[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

#[test]
fn every_bit_flip_rejected_even_with_recomputed_trailer() {
    // An attacker can recompute the trailer hash; with a pinned key the
    // section digests, the signature and the structural checks still reject
    // every single-bit edit of the content.
    let bytes = signed();
    let content = bytes.len() - TRAILER_LEN;
    let policy = pinned(1);
    let mut b = bytes.clone();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for bit in 0..content * 8 {
        b[bit / 8] ^= 1 << (bit % 8);
        fix_trailer(&mut b);
        match Bundle::from_bytes(&b, &policy) {
            Ok(_) => panic!("flip of bit {bit} (byte {}) accepted", bit / 8),
            Err(e) => {
                let name = format!("{e:?}");
                let variant = name.split([' ', '{', '(']).next().unwrap_or("").to_string();
                *kinds.entry(variant).or_default() += 1;
            }
        }
        b[bit / 8] ^= 1 << (bit % 8);
    }
    // The checks that caught them, for the curious (`--nocapture`).
    println!("{} flips rejected by: {kinds:?}", content * 8);
}

fn crafted(edit: impl FnOnce(&mut Vec<u8>)) -> BundleError {
    let mut b = unsigned();
    edit(&mut b);
    fix_trailer(&mut b);
    Bundle::from_bytes(&b, &VerifyPolicy::default()).unwrap_err()
}

#[test]
fn crafted_section_tables_rejected() {
    // Section 0 is the manifest, 1 encoder.onnx, 2 decoder.onnx, 3 table, 4 data.
    let e = crafted(|b| {
        let off0 = get_u64(b, entry(0) + 8);
        set_u64(b, entry(1) + 8, off0);
    });
    assert!(matches!(e, BundleError::Overlap { .. }), "{e}");
    let e = crafted(|b| {
        let off = get_u64(b, entry(2) + 8);
        set_u64(b, entry(2) + 8, off + 8);
    });
    assert!(matches!(e, BundleError::Misaligned { .. }), "{e}");
    let e = crafted(|b| set_u64(b, entry(2) + 16, u64::MAX));
    assert!(matches!(e, BundleError::OutOfBounds { .. }), "{e}");
    let e = crafted(|b| set_u64(b, entry(2) + 8, u64::MAX - 63));
    assert!(matches!(e, BundleError::OutOfBounds { .. }), "{e}");
    let e = crafted(|b| {
        let len = b.len() as u64;
        set_u64(b, entry(4) + 8, len - 64);
        set_u64(b, entry(4) + 16, 64);
    });
    assert!(matches!(e, BundleError::OutOfBounds { .. }), "{e}");
    let e = crafted(|b| b[16..20].copy_from_slice(&1000u32.to_le_bytes()));
    assert!(matches!(e, BundleError::Limit { .. }), "{e}");
    let e = crafted(|b| b[16..20].copy_from_slice(&0u32.to_le_bytes()));
    assert!(matches!(e, BundleError::Limit { .. }), "{e}");
    let e = crafted(|b| b[entry(1)..entry(1) + 4].copy_from_slice(&99u32.to_le_bytes()));
    assert!(matches!(e, BundleError::Section { .. }), "{e}");
    // Same name twice.
    let e = crafted(|b| {
        let name: Vec<u8> = b[entry(1) + 24..entry(1) + 64].to_vec();
        b[entry(2) + 24..entry(2) + 64].copy_from_slice(&name);
    });
    assert!(matches!(e, BundleError::DuplicateName { .. }), "{e}");
    // Invalid UTF-8 name.
    let e = crafted(|b| b[entry(1) + 24] = 0xff);
    assert!(matches!(e, BundleError::InvalidName { .. }), "{e}");
    // Non-zero padding between sections.
    let e = crafted(|b| {
        let end = (get_u64(b, entry(1) + 8) + get_u64(b, entry(1) + 16)) as usize;
        b[end] = 1;
    });
    assert!(matches!(e, BundleError::NonZeroPadding { .. }), "{e}");
    // Versions.
    let e = crafted(|b| b[8..10].copy_from_slice(&2u16.to_le_bytes()));
    assert!(
        matches!(e, BundleError::UnsupportedVersion { major: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("2.0"), "{e}");
    let e = crafted(|b| b[10..12].copy_from_slice(&1u16.to_le_bytes()));
    assert!(
        matches!(e, BundleError::UnsupportedVersion { minor: 1, .. }),
        "{e}"
    );
    let e = crafted(|b| b[0] = b'X');
    assert!(matches!(e, BundleError::BadMagic { .. }), "{e}");
    // Whole-file hash without fix-up.
    let mut b = unsigned();
    let n = b.len() / 2;
    b[n] ^= 1;
    let e = Bundle::from_bytes(&b, &VerifyPolicy::default()).unwrap_err();
    assert!(matches!(e, BundleError::FileHashMismatch { .. }), "{e}");
    // Graph content change caught by the manifest digest.
    let e = crafted(|b| {
        let off = get_u64(b, entry(2) + 8) as usize;
        b[off] ^= 1;
    });
    assert!(
        matches!(e, BundleError::SectionHashMismatch { ref name, .. } if name == "decoder.onnx"),
        "{e}"
    );
}

/// A tensor table with one entry, for the table parser tests.
fn table(name: &str, dtype: u8, dims: &[u64], offset: u64, length: u64) -> Vec<u8> {
    let mut t = vec![1, 0, 0, 0, 0, 0, 0, 0];
    t.extend_from_slice(&(name.len() as u16).to_le_bytes());
    t.push(dtype);
    t.push(dims.len() as u8);
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(&offset.to_le_bytes());
    t.extend_from_slice(&length.to_le_bytes());
    for d in dims {
        t.extend_from_slice(&d.to_le_bytes());
    }
    t.extend_from_slice(name.as_bytes());
    t.resize(t.len().div_ceil(8) * 8, 0);
    t
}

#[test]
fn crafted_tensor_tables_rejected() {
    let ok = table("w", 1, &[2, 3], 0, 24);
    assert_eq!(bundle::fuzz_tensor_table(&ok, 64).unwrap(), 1);
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "byte length != dtype x shape",
            table("w", 1, &[2, 3], 0, 20),
            64,
        ),
        (
            "shape product overflow",
            table("w", 1, &[u64::MAX, 2], 0, 0),
            64,
        ),
        (
            "byte size overflow",
            table("w", 1, &[u64::MAX / 2], 0, 0),
            64,
        ),
        ("unknown dtype", table("w", 9, &[2], 0, 2), 64),
        ("misaligned", table("w", 5, &[2], 8, 2), 64),
        ("out of data section", table("w", 1, &[32], 0, 128), 64),
        ("offset overflow", table("w", 5, &[2], u64::MAX - 63, 2), 64),
        ("rank too high", table("w", 5, &[1; 9], 0, 1), 64),
        ("empty name", table("", 5, &[1], 0, 1), 64),
        (
            "over limit",
            table("w", 5, &[1 << 33], 0, 1 << 33),
            u64::MAX,
        ),
    ];
    for (what, t, data_len) in cases {
        assert!(
            bundle::fuzz_tensor_table(&t, data_len).is_err(),
            "{what} accepted"
        );
    }
    // Count larger than the table can hold is rejected before allocating.
    let mut big = ok.clone();
    big[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        bundle::fuzz_tensor_table(&big, 64),
        Err(BundleError::Limit { .. })
    ));
    big[0..4].copy_from_slice(&60000u32.to_le_bytes());
    assert!(bundle::fuzz_tensor_table(&big, 64).is_err());
    // Two entries: overlap and duplicates.
    let two = |a: Vec<u8>, b: Vec<u8>| {
        let mut t = a;
        t[0] = 2;
        t.extend_from_slice(&b[8..]);
        t
    };
    let e = bundle::fuzz_tensor_table(
        &two(table("a", 5, &[64], 0, 64), table("b", 5, &[64], 0, 64)),
        256,
    );
    assert!(matches!(e, Err(BundleError::Overlap { .. })), "{e:?}");
    let e = bundle::fuzz_tensor_table(
        &two(table("a", 5, &[64], 0, 64), table("a", 5, &[64], 64, 64)),
        256,
    );
    assert!(matches!(e, Err(BundleError::DuplicateName { .. })), "{e:?}");
    assert_eq!(
        bundle::fuzz_tensor_table(
            &two(table("a", 5, &[64], 0, 64), table("b", 5, &[64], 64, 64)),
            256
        )
        .unwrap(),
        2
    );
    // Trailing garbage.
    let mut t = ok.clone();
    t.extend_from_slice(&[0; 8]);
    assert!(bundle::fuzz_tensor_table(&t, 64).is_err());
}

#[test]
fn writer_refuses_inconsistent_input() {
    let w = || BundleWriter::new(manifest()).tensor("decoder.w", DType::I8, &[5], vec![0; 5]);
    // Byte length does not match the shape.
    assert!(matches!(
        w().tensor("x", DType::F32, &[2], vec![0; 7]).to_bytes(),
        Err(BundleError::Build { .. })
    ));
    // Duplicate graph names, over-long section names, duplicate tensors.
    assert!(w()
        .graph("g", vec![1])
        .graph("g", vec![2])
        .to_bytes()
        .is_err());
    assert!(w().graph("g".repeat(41), vec![1]).to_bytes().is_err());
    assert!(w()
        .tensor("decoder.w", DType::I8, &[5], vec![0; 5])
        .to_bytes()
        .is_err());
    // Quantization of a tensor that does not exist.
    assert!(BundleWriter::new(manifest()).to_bytes().is_err());
    // A NaN metric cannot round-trip through JSON.
    let mut m = manifest();
    m.provenance.metrics.insert("bad".into(), f64::NAN);
    let e = BundleWriter::new(m)
        .tensor("decoder.w", DType::I8, &[5], vec![0; 5])
        .to_bytes();
    assert!(matches!(e, Err(BundleError::Build { .. })), "{e:?}");
}

#[test]
fn manifest_rejects_unknown_fields() {
    let mut b = unsigned();
    let pos = b.windows(8).position(|w| w == b"\"prompts").unwrap();
    b[pos + 1..pos + 8].copy_from_slice(b"promptz");
    fix_trailer(&mut b);
    let e = Bundle::from_bytes(&b, &VerifyPolicy::default()).unwrap_err();
    assert!(matches!(e, BundleError::Manifest { .. }), "{e}");
    assert!(e.to_string().contains("line"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_mutations_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut b = signed();
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if fix {
            fix_trailer(&mut b);
        }
        if do_cut {
            b.truncate(cut.index(b.len()));
        }
        let _ = Bundle::from_bytes(&b, &VerifyPolicy::default());
        let _ = Bundle::from_bytes(&b, &pinned(1));
    }

    #[test]
    fn random_tables_never_panic(t in proptest::collection::vec(any::<u8>(), 0..256), data_len in any::<u64>()) {
        let _ = bundle::fuzz_tensor_table(&t, data_len);
    }
}

/// Regenerate the committed fuzz seed corpus:
/// `cargo test -p edgeseg-runtime --test bundle -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bundle_parse");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, b: &[u8]| std::fs::write(dir.join(name), b).unwrap();
    let u = unsigned();
    let s = signed();
    write("valid_unsigned.bin", &u);
    write("valid_signed.bin", &s);
    write(
        "valid_minimal.bin",
        &BundleWriter::new(Manifest::minimal("m", "n", "0"))
            .to_bytes()
            .unwrap(),
    );
    write("truncated_half.bin", &u[..u.len() / 2]);
    write("header_only.bin", &u[..HEADER_LEN]);
    let mut flipped = s.clone();
    flipped[200] ^= 0x10;
    write("bit_flip.bin", &flipped);
    let mut overlap = u.clone();
    let off0 = get_u64(&overlap, entry(0) + 8);
    set_u64(&mut overlap, entry(1) + 8, off0);
    fix_trailer(&mut overlap);
    write("overlap.bin", &overlap);
    let mut huge = u.clone();
    set_u64(&mut huge, entry(2) + 16, u64::MAX);
    fix_trailer(&mut huge);
    write("huge_length.bin", &huge);
    let mut v2 = u.clone();
    v2[8] = 2;
    fix_trailer(&mut v2);
    write("version_2.bin", &v2);
    write("tensor_table.bin", &table("w", 1, &[2, 3], 0, 24));
    write("quantized.bin", &quantized_bundle());
}

/// A bundle with weight-only quantized tensors (int8 per channel + scales, f16 cast),
/// as `edgeseg-tools quantize` writes them: a fuzz seed for `quant::tensor_f32`.
fn quantized_bundle() -> Vec<u8> {
    let mut m = Manifest::minimal("m", "q", "0");
    m.quantization.insert(
        "g/w".into(),
        Quantization::PerChannel {
            axis: 0,
            scales: "g/w.scale".into(),
            zero_points: None,
        },
    );
    m.quantization.insert("g/b".into(), Quantization::Cast);
    let scales: Vec<u8> = [0.5f32, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16_one = 0x3c00u16.to_le_bytes();
    BundleWriter::new(m)
        .tensor("g/w", DType::I8, &[2, 3], vec![1, 2, 3, 0xff, 0xfe, 0x81])
        .tensor("g/w.scale", DType::F32, &[2], scales)
        .tensor("g/b", DType::F16, &[2], [f16_one, f16_one].concat())
        .to_bytes()
        .unwrap()
}

#[test]
fn quantized_tensors_dequantize_by_their_manifest_scheme() {
    let bytes = quantized_bundle();
    let b = Bundle::from_bytes(&bytes, &VerifyPolicy::default()).unwrap();
    let w = edgeseg_runtime::quant::tensor_f32(&b, "g/w")
        .unwrap()
        .unwrap();
    assert_eq!(w, vec![0.5, 1.0, 1.5, -0.25, -0.5, -127.0 * 0.25]);
    let bias = edgeseg_runtime::quant::tensor_f32(&b, "g/b")
        .unwrap()
        .unwrap();
    assert_eq!(bias, vec![1.0, 1.0]);
    assert_eq!(
        edgeseg_runtime::quant::tensor_f32(&b, "g/w.scale")
            .unwrap()
            .unwrap(),
        vec![0.5, 0.25]
    );
    assert!(edgeseg_runtime::quant::tensor_f32(&b, "missing").is_none());
}

/// `onnx_weights::attach`: float initializers get dequantized values, `INT8` ones the
/// stored int8 values unchanged, and an `INT8` initializer over a float tensor is an
/// error naming it.
#[test]
fn int8_initializers_get_the_stored_values() {
    use edgeseg_runtime::onnx_weights::{attach, LOCATION};
    use tract_onnx::pb;
    let bytes = writer().to_bytes().unwrap();
    let b = Bundle::from_bytes(&bytes, &VerifyPolicy::default()).unwrap();
    let ext =
        |name: &str, tensor: &str, dims: &[i64], dt: pb::tensor_proto::DataType| pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt as i32,
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: vec![
                pb::StringStringEntryProto {
                    key: "location".into(),
                    value: LOCATION.into(),
                },
                pb::StringStringEntryProto {
                    key: "tensor".into(),
                    value: tensor.into(),
                },
            ],
            ..Default::default()
        };
    let model = |inits: Vec<pb::TensorProto>| pb::ModelProto {
        graph: Some(pb::GraphProto {
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    };
    use pb::tensor_proto::DataType::{Float, Int8};
    let mut m = model(vec![
        ext("as_int8", "decoder.w", &[5], Int8),
        ext("as_float", "decoder.w", &[5], Float),
    ]);
    attach(&mut m, &b, "g").unwrap();
    let inits = &m.graph.as_ref().unwrap().initializer;
    assert_eq!(inits[0].raw_data, vec![1, 2, 3, 4, 5]);
    let floats: Vec<f32> = inits[1]
        .raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, vec![0.5, 1.0, 1.5, 2.0, 2.5]); // scale 0.5, zero point 0
    let mut bad = model(vec![ext("w", "encoder.w", &[2, 3, 4], Int8)]);
    let e = attach(&mut bad, &b, "g").unwrap_err().to_string();
    assert!(e.contains("int8 initializer needs an int8 tensor"), "{e}");
}
