//! Few-shot prototype head: teaching, prediction, auto-prompts, bad input and the
//! prototype file format, on synthetic embeddings (no model needed).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use edgeseg_runtime::bundle::VerifyPolicy;
use edgeseg_runtime::fewshot::{
    self, auto_prompts, file, segment_frame, AutoPromptConfig, ClassPrompt, EmbeddingId,
    FewShotError, FormatError, HeadConfig, LabelMask, Modality, PrototypeKind, PrototypeSet,
    Refinement, SupportShot,
};
use edgeseg_runtime::{BackendError, Embedding, PromptableSegmenter, RgbFrame, Segmentation};

const C: usize = 16;
const G: usize = 16;

fn id() -> EmbeddingId {
    EmbeddingId {
        family: "test".into(),
        name: "synthetic".into(),
        version: "1".into(),
        weights_sha256: None,
        encoder_sha256: None,
        channels: C as u32,
        grid_height: G as u32,
        grid_width: G as u32,
    }
}

/// A deterministic pseudo-random value in [-1, 1).
fn noise(i: usize) -> f32 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A synthetic frame `h × w` whose label map has `labels` inside the given boxes
/// (`[y0, x0, y1, x1)` in frame pixels), and its embedding: every grid cell's
/// feature points along channel `label` (background: channel 0, with a left/right
/// texture difference on channel 8), plus noise.
struct Synthetic {
    h: usize,
    w: usize,
    labels: Vec<u8>,
    data: Vec<f32>,
    valid_h: usize,
    valid_w: usize,
}

fn synthetic(h: usize, w: usize, boxes: &[(u8, [usize; 4])], seed: usize) -> Synthetic {
    let mut labels = vec![0u8; h * w];
    for &(l, [y0, x0, y1, x1]) in boxes {
        for y in y0..y1 {
            for x in x0..x1 {
                labels[y * w + x] = l;
            }
        }
    }
    let r = G as f64 / h.max(w) as f64;
    let valid_h = (h as f64 * r).ceil() as usize;
    let valid_w = (w as f64 * r).ceil() as usize;
    let mut data = vec![0.0f32; C * G * G];
    for gy in 0..valid_h {
        for gx in 0..valid_w {
            // label at the cell centre
            let y = (((gy as f64 + 0.5) / r) as usize).min(h - 1);
            let x = (((gx as f64 + 0.5) / r) as usize).min(w - 1);
            let l = labels[y * w + x] as usize;
            let p = gy * G + gx;
            for c in 0..C {
                data[c * G * G + p] = 0.15 * noise(seed * 1_000_003 + c * 4099 + p);
            }
            data[l * G * G + p] += 1.0;
            if l == 0 && gx < valid_w / 2 {
                data[8 * G * G + p] += 0.8;
            }
        }
    }
    Synthetic {
        h,
        w,
        labels,
        data,
        valid_h,
        valid_w,
    }
}

impl Synthetic {
    fn embedding(&self) -> Embedding<'_> {
        Embedding {
            channels: C,
            height: G,
            width: G,
            valid_height: self.valid_h,
            valid_width: self.valid_w,
            frame_height: self.h,
            frame_width: self.w,
            data: &self.data,
        }
    }
    fn shot(&self) -> SupportShot<'_> {
        SupportShot {
            embedding: self.embedding(),
            mask: LabelMask {
                width: self.w,
                height: self.h,
                labels: &self.labels,
            },
        }
    }
}

fn dice(a: &[u8], b: &[u8]) -> f64 {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count();
    let s = a.iter().filter(|v| **v != 0).count() + b.iter().filter(|v| **v != 0).count();
    2.0 * inter as f64 / s.max(1) as f64
}

fn teach1(shots: &[SupportShot<'_>]) -> PrototypeSet {
    fewshot::teach(
        shots,
        &[1],
        &[],
        id(),
        Modality::Grey,
        HeadConfig::default(),
    )
    .unwrap()
}

#[test]
fn one_shot_segments_a_moved_structure() {
    let support = synthetic(96, 128, &[(1, [20, 30, 60, 70])], 1);
    let set = teach1(&[support.shot()]);
    assert_eq!(set.class_count(), 2);
    assert!(set
        .prototypes
        .iter()
        .any(|p| p.kind == PrototypeKind::Local));
    let query = synthetic(96, 128, &[(1, [40, 60, 80, 120])], 2);
    let map = set.predict(&query.embedding()).unwrap();
    assert_eq!((map.height, map.width), (query.valid_h, query.valid_w));
    let mask = map.class_mask(1);
    let gt: Vec<u8> = query.labels.iter().map(|&l| u8::from(l == 1)).collect();
    let d = dice(&mask, &gt);
    assert!(d > 0.85, "Dice {d}");
    let prompts = auto_prompts(&map, &AutoPromptConfig::default()).unwrap();
    let ClassPrompt::Found(f) = &prompts[0] else {
        panic!("not found: {prompts:?}")
    };
    let b = f.prompt.boxes.unwrap();
    // the box is within a grid cell (8 px) of the true box [60, 40, 119, 79]
    for (got, want) in [(b.x0, 60.0), (b.y0, 40.0), (b.x1, 119.0), (b.y1, 79.0)] {
        assert!((got - want).abs() <= 8.0, "box {b:?}");
    }
    assert!(f.prompt.points.is_empty());
    assert!(f.peak_probability >= f.mean_probability);
}

#[test]
fn five_shots_and_two_classes() {
    let supports: Vec<Synthetic> = (0..5)
        .map(|i| {
            synthetic(
                80,
                80,
                &[(1, [5 + i, 5, 30 + i, 35]), (2, [45, 40 + i, 75, 75])],
                10 + i,
            )
        })
        .collect();
    let shots: Vec<SupportShot<'_>> = supports.iter().map(Synthetic::shot).collect();
    let set = fewshot::teach(
        &shots,
        &[1, 2],
        &["a".into(), "b".into()],
        id(),
        Modality::Colour,
        HeadConfig::default(),
    )
    .unwrap();
    assert_eq!(set.shots, 5);
    let query = synthetic(80, 80, &[(2, [5, 5, 30, 35]), (1, [45, 40, 75, 75])], 99);
    let map = set.predict(&query.embedding()).unwrap();
    let labels = map.label_mask();
    for l in [1u8, 2] {
        let gt: Vec<u8> = query.labels.iter().map(|&v| u8::from(v == l)).collect();
        let m: Vec<u8> = labels.iter().map(|&v| u8::from(v == l)).collect();
        assert!(dice(&m, &gt) > 0.85, "label {l}: {}", dice(&m, &gt));
    }
    let prompts = auto_prompts(&map, &AutoPromptConfig::default()).unwrap();
    assert!(prompts.iter().all(|p| matches!(p, ClassPrompt::Found(_))));
}

#[test]
fn all_background_query_finds_nothing() {
    let support = synthetic(64, 64, &[(1, [10, 10, 40, 40])], 3);
    let set = teach1(&[support.shot()]);
    let query = synthetic(64, 64, &[], 4);
    let map = set.predict(&query.embedding()).unwrap();
    assert!(map.probs.iter().all(|p| p.is_finite()));
    assert_eq!(
        auto_prompts(&map, &AutoPromptConfig::default()).unwrap(),
        vec![ClassPrompt::NotFound { label: 1 }]
    );
    // an all-zero embedding (no direction anywhere): finite, nothing found
    let zeros = vec![0.0f32; C * G * G];
    let e = Embedding {
        data: &zeros,
        ..query.embedding()
    };
    let map = set.predict(&e).unwrap();
    assert!(map.probs.iter().all(|p| p.is_finite()));
    assert!(map.label_mask().iter().all(|&l| l == 0));
    assert!(matches!(
        auto_prompts(&map, &AutoPromptConfig::default()).unwrap()[0],
        ClassPrompt::NotFound { label: 1 }
    ));
}

#[test]
fn empty_and_full_support_masks_are_refused() {
    let empty = synthetic(64, 64, &[], 5);
    assert!(matches!(
        fewshot::teach(
            &[empty.shot()],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::EmptySupport { label: 1 })
    ));
    // label 2 is absent although label 1 is present
    let one = synthetic(64, 64, &[(1, [0, 0, 20, 20])], 6);
    assert!(matches!(
        fewshot::teach(
            &[one.shot()],
            &[1, 2],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::EmptySupport { label: 2 })
    ));
    let full = synthetic(64, 64, &[(1, [0, 0, 64, 64])], 7);
    assert!(matches!(
        fewshot::teach(
            &[full.shot()],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::EmptyBackground)
    ));
    assert!(matches!(
        fewshot::teach(&[], &[1], &[], id(), Modality::Grey, HeadConfig::default()),
        Err(FewShotError::ShotCount { got: 0, .. })
    ));
    assert!(matches!(
        fewshot::teach(
            &[one.shot()],
            &[0],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::BackgroundLabel)
    ));
    assert!(matches!(
        fewshot::teach(
            &[one.shot()],
            &[1, 1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::DuplicateLabel(1))
    ));
}

#[test]
fn zero_and_non_finite_features_are_refused() {
    let mut s = synthetic(64, 64, &[(1, [10, 10, 40, 40])], 8);
    // zero features in every cell the structure touches (rows/cols 10..40 of 64
    // px = cells 2..10 at 4 px per cell): its prototype has no direction
    for gy in 2..10 {
        for gx in 2..10 {
            for c in 0..C {
                s.data[c * G * G + gy * G + gx] = 0.0;
            }
        }
    }
    assert!(matches!(
        fewshot::teach(
            &[s.shot()],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::ZeroNormPrototype { class: 1 })
    ));
    let mut s = synthetic(64, 64, &[(1, [10, 10, 40, 40])], 9);
    s.data[3 * G * G + 5 * G + 5] = f32::NAN;
    assert!(matches!(
        fewshot::teach(
            &[s.shot()],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::Primitive(_))
    ));
    let good = synthetic(64, 64, &[(1, [10, 10, 40, 40])], 10);
    let set = teach1(&[good.shot()]);
    assert!(matches!(
        set.predict(&s.embedding()),
        Err(FewShotError::Primitive(_))
    ));
}

#[test]
fn mismatched_sizes_models_and_modalities_are_refused() {
    let s = synthetic(64, 80, &[(1, [10, 10, 40, 40])], 11);
    // mask of another size than its frame
    let small = vec![0u8; 32 * 40];
    let shot = SupportShot {
        embedding: s.embedding(),
        mask: LabelMask {
            width: 40,
            height: 32,
            labels: &small,
        },
    };
    assert!(matches!(
        fewshot::teach(
            &[shot],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::MaskSizeMismatch { shot: 0, .. })
    ));
    // mask whose buffer does not match its declared size
    let shot = SupportShot {
        embedding: s.embedding(),
        mask: LabelMask {
            width: 80,
            height: 64,
            labels: &small,
        },
    };
    assert!(matches!(
        fewshot::teach(
            &[shot],
            &[1],
            &[],
            id(),
            Modality::Grey,
            HeadConfig::default()
        ),
        Err(FewShotError::MaskSizeMismatch { .. })
    ));
    let set = teach1(&[s.shot()]);
    // an embedding of another model size
    let other = vec![0.5f32; 8 * G * G];
    let e = Embedding {
        channels: 8,
        data: &other,
        ..s.embedding()
    };
    assert!(matches!(
        set.predict(&e),
        Err(FewShotError::EmbeddingMismatch { .. })
    ));
    // inconsistent embedding geometry
    let e = Embedding {
        valid_height: 3,
        ..s.embedding()
    };
    assert!(matches!(
        set.predict(&e),
        Err(FewShotError::InvalidEmbedding(_))
    ));
    let e = Embedding {
        data: &s.data[1..],
        ..s.embedding()
    };
    assert!(matches!(
        set.predict(&e),
        Err(FewShotError::InvalidEmbedding(_))
    ));
    // another model
    let mut student = id();
    student.family = "student".into();
    assert!(matches!(
        set.embedding.check_model(&student),
        Err(FewShotError::EmbeddingMismatch { .. })
    ));
    let mut w = id();
    w.weights_sha256 = Some("ab".into());
    let mut set2 = set.clone();
    set2.embedding.weights_sha256 = Some("cd".into());
    assert!(set2.embedding.check_model(&w).is_err());
    assert!(
        set.embedding.check_model(&w).is_ok(),
        "unknown hash on one side is not a mismatch"
    );
    // modality
    assert!(set.check_modality(Modality::Grey).is_ok());
    assert!(matches!(
        set.check_modality(Modality::Colour),
        Err(FewShotError::ModalityMismatch { .. })
    ));
    assert_eq!(Modality::of_rgb(&[5, 5, 5, 7, 7, 7]), Modality::Grey);
    assert_eq!(Modality::of_rgb(&[5, 5, 5, 7, 8, 7]), Modality::Colour);
}

#[test]
fn format_1_0_files_are_read_and_may_not_carry_an_encoder_digest() {
    let set = sample_set();
    let policy = VerifyPolicy::default();
    let mut old = set.to_bytes(&BTreeMap::new(), None).unwrap();
    assert_eq!(&old[10..12], &[1, 0], "writers write 1.1");
    old[10] = 0;
    rehash(&mut old);
    let (read, info) = PrototypeSet::from_bytes(&old, &policy).unwrap();
    assert_eq!(info.version, (1, 0));
    assert_eq!(read, set);
    let mut with_digest = set.clone();
    with_digest.embedding.encoder_sha256 = Some("ab".repeat(32));
    let mut b = with_digest.to_bytes(&BTreeMap::new(), None).unwrap();
    assert_eq!(
        PrototypeSet::from_bytes(&b, &policy)
            .unwrap()
            .0
            .embedding
            .encoder_sha256,
        with_digest.embedding.encoder_sha256
    );
    b[10] = 0;
    rehash(&mut b);
    let e = PrototypeSet::from_bytes(&b, &policy).unwrap_err();
    assert!(e.to_string().contains("1.0"), "{e}");
}

#[test]
fn the_encoder_digest_decides_when_both_sides_have_one() {
    let mut a = id();
    a.encoder_sha256 = Some("11".repeat(32));
    let mut renamed = a.clone();
    renamed.name = "other-name".into();
    renamed.version = "9".into();
    assert!(a.check_model(&renamed).is_ok(), "same encoder, other names");
    let mut other = a.clone();
    other.encoder_sha256 = Some("22".repeat(32));
    assert!(matches!(
        a.check_model(&other),
        Err(FewShotError::EmbeddingMismatch { .. })
    ));
    let mut grid = a.clone();
    grid.grid_width += 1;
    assert!(a.check_model(&grid).is_err(), "geometry always counts");
    // one side without a digest: names decide
    let mut no_digest = renamed.clone();
    no_digest.encoder_sha256 = None;
    assert!(a.check_model(&no_digest).is_err());
}

#[test]
fn bundle_manifest_check() {
    let m = edgeseg_runtime::bundle::Manifest::minimal("test", "synthetic", "1");
    assert!(id().check_bundle(&m).is_ok());
    let m2 = edgeseg_runtime::bundle::Manifest::minimal("test", "synthetic", "2");
    assert!(id().check_bundle(&m2).is_err());
    let mut m3 = m.clone();
    m3.architecture
        .details
        .insert("embedding_channels".into(), serde_json::json!(256));
    assert!(id().check_bundle(&m3).is_err());
    // the geometry as `edgeseg-tools export` records it
    let mut m4 = m.clone();
    m4.architecture
        .details
        .insert("embedding".into(), serde_json::json!([C, G, G]));
    assert!(id().check_bundle(&m4).is_ok());
    m4.architecture
        .details
        .insert("embedding".into(), serde_json::json!([C, G / 2, G / 2]));
    assert!(id().check_bundle(&m4).is_err());
}

// ------------------------------------------------------------ file format

fn sample_set() -> PrototypeSet {
    let s = synthetic(64, 64, &[(1, [10, 10, 40, 40]), (2, [45, 45, 60, 60])], 12);
    fewshot::teach(
        &[s.shot()],
        &[1, 2],
        &["nodule".into(), "vessel".into()],
        id(),
        Modality::Grey,
        HeadConfig::default(),
    )
    .unwrap()
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[test]
fn file_round_trip_unsigned_and_signed() {
    let set = sample_set();
    let mut prov = BTreeMap::new();
    prov.insert("command".into(), serde_json::json!("test"));
    let bytes = set.to_bytes(&prov, None).unwrap();
    let (back, info) = PrototypeSet::from_bytes(&bytes, &VerifyPolicy::default()).unwrap();
    assert_eq!(back, set);
    assert_eq!(info.version, (1, 1));
    assert!(info.signer.is_none());
    assert_eq!(info.provenance, prov);
    // small: a few kB
    assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
    // pinned key: unsigned refused
    let k = key(7);
    let pinned = VerifyPolicy::require_signature(k.verifying_key());
    assert!(matches!(
        PrototypeSet::from_bytes(&bytes, &pinned),
        Err(FormatError::SignatureRequired)
    ));
    let signed = set.to_bytes(&prov, Some(&k)).unwrap();
    let (back, info) = PrototypeSet::from_bytes(&signed, &pinned).unwrap();
    assert_eq!(back, set);
    assert_eq!(info.signer, Some(k.verifying_key()));
    // signed by another key
    let other = set.to_bytes(&prov, Some(&key(8))).unwrap();
    assert!(matches!(
        PrototypeSet::from_bytes(&other, &pinned),
        Err(FormatError::SignerMismatch { .. })
    ));
    // a signed file still opens without a pinned key (signature verified anyway)
    assert!(PrototypeSet::from_bytes(&other, &VerifyPolicy::default()).is_ok());
    // through the file system
    let dir = std::env::temp_dir().join(format!("edgeseg-fewshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("prototypes.bin");
    set.write_to(&p, &prov, Some(&k)).unwrap();
    assert_eq!(PrototypeSet::open(&p, &pinned).unwrap().0, set);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Recomputes the trailer hash (as an attacker without the key could).
fn rehash(b: &mut [u8]) {
    let n = b.len();
    let d = edgeseg_runtime::bundle::sha256(&b[..n - 64]);
    b[n - 32..].copy_from_slice(&d);
}

#[test]
fn every_bit_flip_and_truncation_is_refused() {
    let set = sample_set();
    let prov = BTreeMap::new();
    let k = key(9);
    let pinned = VerifyPolicy::require_signature(k.verifying_key());
    for signed in [false, true] {
        let bytes = set.to_bytes(&prov, signed.then_some(&k)).unwrap();
        for i in 0..bytes.len() {
            for bit in [0u8, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    PrototypeSet::from_bytes(&b, &VerifyPolicy::default()).is_err(),
                    "flip at {i} accepted"
                );
                if signed && i < bytes.len() - 64 {
                    // with the trailer hash recomputed, the signature catches it
                    rehash(&mut b);
                    assert!(
                        PrototypeSet::from_bytes(&b, &pinned).is_err(),
                        "rehashed flip at {i} accepted"
                    );
                }
            }
        }
        for n in 0..bytes.len() {
            assert!(PrototypeSet::from_bytes(&bytes[..n], &VerifyPolicy::default()).is_err());
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0u8; 8]);
        assert!(PrototypeSet::from_bytes(&longer, &VerifyPolicy::default()).is_err());
    }
}

#[test]
fn unknown_versions_flags_and_bad_content_are_refused() {
    let set = sample_set();
    let bytes = set.to_bytes(&BTreeMap::new(), None).unwrap();
    let policy = VerifyPolicy::default();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        rehash(&mut b);
        PrototypeSet::from_bytes(&b, &policy)
    };
    assert!(matches!(
        edit(&|b| b[8] = 2),
        Err(FormatError::UnsupportedVersion { major: 2, minor: 1 })
    ));
    assert!(matches!(
        edit(&|b| b[10] = 2),
        Err(FormatError::UnsupportedVersion { major: 1, minor: 2 })
    ));
    assert!(matches!(
        edit(&|b| b[16] = 2),
        Err(FormatError::Malformed(_))
    ));
    assert!(matches!(edit(&|b| b[0] = b'X'), Err(FormatError::BadMagic)));
    // huge counts never allocate
    assert!(matches!(
        edit(&|b| b[24..28].copy_from_slice(&u32::MAX.to_le_bytes())),
        Err(FormatError::Malformed(_))
    ));
    assert!(matches!(
        edit(&|b| b[20..24].copy_from_slice(&u32::MAX.to_le_bytes())),
        Err(FormatError::Malformed(_))
    ));
    assert!(matches!(
        edit(&|b| b[28..32].copy_from_slice(&u32::MAX.to_le_bytes())),
        Err(FormatError::Malformed(_))
    ));
    // a prototype scaled to zero: refused as content, never used
    let meta_len = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]) as usize;
    let table = (64 + meta_len).div_ceil(8) * 8;
    let data = table + 8 * set.prototypes.len();
    let r = edit(&|b| {
        for v in &mut b[data..data + 4 * C] {
            *v = 0;
        }
    });
    assert!(matches!(r, Err(FormatError::Content(_))), "{r:?}");
    // NaN in a prototype
    let r = edit(&|b| b[data..data + 4].copy_from_slice(&f32::NAN.to_le_bytes()));
    assert!(matches!(r, Err(FormatError::Content(_))), "{r:?}");
    // unknown prototype kind, class out of range
    assert!(matches!(
        edit(&|b| b[table + 2] = 9),
        Err(FormatError::Content(_))
    ));
    assert!(matches!(
        edit(&|b| b[table] = 7),
        Err(FormatError::Content(_))
    ));
    // unknown metadata field
    let r = edit(&|b| {
        let i = (64..64 + meta_len)
            .find(|&i| b[i..].starts_with(b"\"shots\""))
            .unwrap();
        b[i + 1] = b'S';
    });
    assert!(matches!(r, Err(FormatError::Metadata(_))), "{r:?}");
    let _ = file::FORMAT_MAJOR;
}

// ------------------------------------------------------------ with a backend

/// A backend that "encodes" a synthetic frame into a prepared embedding and
/// "decodes" a box prompt into the filled box.
struct MockBackend {
    embedding: Option<Synthetic>,
    expose: bool,
    frame: Option<(usize, usize)>,
}

impl PromptableSegmenter for MockBackend {
    fn name(&self) -> &str {
        "mock"
    }
    fn set_frame(&mut self, frame: RgbFrame<'_>) -> Result<(), BackendError> {
        self.frame = Some((frame.width, frame.height));
        Ok(())
    }
    fn segment(&mut self, prompt: &edgeseg_runtime::Prompt) -> Result<Segmentation, BackendError> {
        let (w, h) = self.frame.ok_or(BackendError::NoFrame)?;
        let b = prompt
            .boxes
            .ok_or_else(|| BackendError::InvalidPrompt("no box".into()))?;
        let mask = (0..w * h)
            .map(|p| {
                let (y, x) = ((p / w) as f32, (p % w) as f32);
                u8::from(x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1)
            })
            .collect();
        Ok(Segmentation {
            width: w,
            height: h,
            mask,
            iou_prediction: None,
        })
    }
    fn embedding(&self) -> Option<Embedding<'_>> {
        self.embedding
            .as_ref()
            .filter(|_| self.expose)
            .map(Synthetic::embedding)
    }
}

#[test]
fn segment_frame_with_a_backend() {
    let support = synthetic(64, 96, &[(1, [10, 10, 40, 40])], 13);
    let set = teach1(&[support.shot()]);
    let query = synthetic(64, 96, &[(1, [20, 40, 50, 80])], 14);
    let gt: Vec<u8> = query.labels.iter().map(|&l| u8::from(l == 1)).collect();
    let grey = vec![100u8; 64 * 96 * 3];
    let frame = RgbFrame::new(96, 64, &grey).unwrap();
    let mut be = MockBackend {
        embedding: Some(query),
        expose: true,
        frame: None,
    };
    for r in [Refinement::PrototypeOnly, Refinement::Decoder] {
        let out = segment_frame(&mut be, &set, frame, r, &AutoPromptConfig::default()).unwrap();
        assert_eq!(out.len(), 1);
        let m = out[0].mask.as_ref().unwrap();
        assert!(dice(m, &gt) > 0.85, "{r:?}: {}", dice(m, &gt));
    }
    // colour frame, grey supports
    let mut colour = grey.clone();
    colour[0] = 0;
    let cf = RgbFrame::new(96, 64, &colour).unwrap();
    assert!(matches!(
        segment_frame(
            &mut be,
            &set,
            cf,
            Refinement::Decoder,
            &AutoPromptConfig::default()
        ),
        Err(FewShotError::ModalityMismatch { .. })
    ));
    be.expose = false;
    assert!(matches!(
        segment_frame(
            &mut be,
            &set,
            frame,
            Refinement::Decoder,
            &AutoPromptConfig::default()
        ),
        Err(FewShotError::NoEmbedding(_))
    ));
    // an all-background frame: explicit "not found", no mask
    be.expose = true;
    be.embedding = Some(synthetic(64, 96, &[], 15));
    let out = segment_frame(
        &mut be,
        &set,
        frame,
        Refinement::Decoder,
        &AutoPromptConfig::default(),
    )
    .unwrap();
    assert!(out[0].found.is_none() && out[0].mask.is_none());
}

/// Regenerates the fuzz seed corpus: `cargo test -p edgeseg-runtime --test fewshot -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/prototypes_parse");
    std::fs::create_dir_all(&dir).unwrap();
    let set = sample_set();
    let unsigned = set.to_bytes(&BTreeMap::new(), None).unwrap();
    let signed = set.to_bytes(&BTreeMap::new(), Some(&key(1))).unwrap();
    let one = synthetic(32, 32, &[(1, [4, 4, 20, 20])], 16);
    let cfg = HeadConfig {
        max_local_foreground: 0,
        max_local_background: 0,
        ..HeadConfig::default()
    };
    let minimal = fewshot::teach(&[one.shot()], &[1], &[], id(), Modality::Grey, cfg)
        .unwrap()
        .to_bytes(&BTreeMap::new(), None)
        .unwrap();
    let mut v2 = unsigned.clone();
    v2[8] = 2;
    rehash(&mut v2);
    let mut v1_0 = unsigned.clone();
    v1_0[10] = 0;
    rehash(&mut v1_0);
    let mut flipped = unsigned.clone();
    flipped[100] ^= 0x10;
    let mut huge = unsigned.clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    rehash(&mut huge);
    for (name, b) in [
        ("valid_unsigned.bin", &unsigned[..]),
        ("valid_signed.bin", &signed[..]),
        ("valid_minimal.bin", &minimal[..]),
        ("version_2.bin", &v2[..]),
        ("valid_v1_0.bin", &v1_0[..]),
        ("bit_flip.bin", &flipped[..]),
        ("huge_count.bin", &huge[..]),
        ("truncated_half.bin", &unsigned[..unsigned.len() / 2]),
        ("header_only.bin", &unsigned[..64]),
    ] {
        std::fs::write(dir.join(name), b).unwrap();
    }
}
