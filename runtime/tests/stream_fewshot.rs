//! `edgeseg run` in prototype mode, end to end through the binary with the mock
//! backend (which exposes a small image embedding, see `stream::mock`):
//! `--teach-from` + `--save-support`, then `--support` with the saved set, on a
//! synthetic Y4M clip (a bright disc that leaves the frame) and on the committed
//! CVC-ClinicDB sequence; and the bad input: an empty support mask, a teach frame
//! the stream never has, a set taught with another model, `--prompt` together
//! with `--support`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeseg_runtime::bundle::VerifyPolicy;
use edgeseg_runtime::fewshot::{self, HeadConfig, LabelMask, Modality, PrototypeSet, SupportShot};
use edgeseg_runtime::stream::mock::MockSegmenter;
use edgeseg_runtime::stream::y4m::Y4mWriter;
use edgeseg_runtime::Embedding;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeseg"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "edgeseg-stream-fewshot-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (Output, String) {
    let out = bin().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const W: usize = 64;
const H: usize = 48;
const FRAMES: usize = 28;
/// Frames from this one on show no disc.
const EMPTY_FROM: usize = 20;

/// A bright disc (radius 8) moving right on a dark background; from frame
/// `EMPTY_FROM` on, background only.
fn disc_clip(dir: &Path) -> PathBuf {
    let input = dir.join("in.y4m");
    let mut w = Y4mWriter::new(std::fs::File::create(&input).unwrap(), 50, 1);
    for i in 0..FRAMES {
        let rgb: Vec<u8> = (0..W * H)
            .flat_map(|p| {
                let (x, y) = ((p % W) as i64, (p / W) as i64);
                let d = (x - 20 - i as i64).pow(2) + (y - 24).pow(2);
                if i < EMPTY_FROM && d < 64 {
                    [240, 240, 240]
                } else {
                    [60, 60, 60]
                }
            })
            .collect();
        w.write_rgb(W, H, &rgb).unwrap();
    }
    w.finish().unwrap();
    input
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn teach_from_the_stream_then_reuse_the_saved_set() {
    let dir = tmp("teach");
    let input = disc_clip(&dir);
    let support = dir.join("disc.bin");
    let out1 = dir.join("out1");
    // frame 5: the disc is centred at (25, 24)
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=2",
        "--input",
        s(&input),
        "--teach-from",
        "5",
        "--box",
        "14,13,36,35",
        "--save-support",
        s(&support),
        "--label",
        "disc",
        "--out",
        s(&out1),
    ]);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("taught `disc` on frame 5"), "{text}");
    assert!(
        text.contains(&format!("frames: in {FRAMES} out {FRAMES} errors 0")),
        "{text}"
    );
    let recs = records(&out1);
    assert_eq!(recs.len(), FRAMES);
    // before the teach frame: passed through un-annotated
    for r in &recs[..5] {
        assert_eq!(r["overlay"], "none", "{r}");
        assert!(r["annotation_frame"].is_null(), "{r}");
    }
    // after it: the disc is segmented from the prototypes, labelled by name
    let drawn: Vec<_> = recs.iter().filter(|r| r["overlay"] == "drawn").collect();
    assert!(!drawn.is_empty(), "{text}");
    for r in &drawn {
        assert!(r["frame"].as_u64().unwrap() >= 5, "{r}");
        assert_eq!(r["structure"], "disc", "{r}");
        assert!(r["mask_area"].as_u64().unwrap() > 0, "{r}");
    }
    // the set was written, records the mock's embedding space and the name
    let (set, info) = PrototypeSet::open(&support, &VerifyPolicy::default()).unwrap();
    assert_eq!(set.names, ["disc"]);
    assert_eq!(set.shots, 1);
    assert_eq!(set.embedding, MockSegmenter::mock_embedding_id());
    assert_eq!(info.version, (1, 1));
    assert!(info.provenance.contains_key("taught_from"));

    // --support with the saved set: every frame prompt-free
    let out2 = dir.join("out2");
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=2",
        "--input",
        s(&input),
        "--support",
        s(&support),
        "--out",
        s(&out2),
        "--fps",
        "25",
    ]);
    assert!(o.status.success(), "{text}");
    let recs = records(&out2);
    assert_eq!(recs.len(), FRAMES);
    let mut found = 0;
    let mut not_found = 0;
    for r in &recs {
        let shown = r["annotation_frame"].as_u64();
        match r["overlay"].as_str().unwrap() {
            "drawn" => {
                found += 1;
                assert!((shown.unwrap() as usize) < EMPTY_FROM, "{r}");
                assert_eq!(r["structure"], "disc");
                assert_eq!(r["structure_found"], true);
                assert!(r["mask_area"].as_u64().unwrap() > 0);
                assert!(r["head_ms"].as_f64().unwrap() > 0.0, "{r}");
                let c = r["prototype_confidence"].as_f64().unwrap();
                assert!((0.5..=1.0).contains(&c), "{r}");
            }
            "not_found" => {
                not_found += 1;
                // never a mask where there is no disc, and only there
                assert!((shown.unwrap() as usize) >= EMPTY_FROM, "{r}");
                assert_eq!(r["structure_found"], false);
                assert_eq!(r["mask_area"], 0);
                assert!(r["mask_box"].is_null());
            }
            "late" | "none" => {}
            other => panic!("overlay {other}: {r}"),
        }
    }
    assert!(found >= 5, "{found} frames drawn:\n{text}");
    assert!(not_found >= 2, "{not_found} frames not found:\n{text}");
    assert!(text.contains("no structure found on"), "{text}");
}

#[test]
fn the_committed_sequence_teach_then_support() {
    let seq = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stream/cvc_seq12");
    let dir = tmp("cvc");
    let support = dir.join("polyp.bin");
    // the ground-truth box of the first frame (fixtures/stream/cvc_seq12_mask228.png)
    let mask = image::open(seq.join("../cvc_seq12_mask228.png"))
        .unwrap()
        .into_luma8();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 127 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let bbox = format!("{x0},{y0},{x1},{y1}");
    let first = std::fs::read_dir(&seq).unwrap().count();
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=1",
        "--input",
        s(&seq),
        "--teach-from",
        "0",
        "--box",
        &bbox,
        "--save-support",
        s(&support),
        "--label",
        "polyp",
        "--out",
        s(&dir.join("out1")),
        "--fps",
        "0",
    ]);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains(&format!("frames: in {first} out {first} errors 0")),
        "{text}"
    );
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=1",
        "--input",
        s(&seq),
        "--support",
        s(&support),
        "--out",
        s(&dir.join("out2")),
        "--fps",
        "25",
    ]);
    assert!(o.status.success(), "{text}");
    let recs = records(&dir.join("out2"));
    assert_eq!(recs.len(), first);
    for r in &recs {
        let ov = r["overlay"].as_str().unwrap();
        assert!(["drawn", "not_found", "late", "none"].contains(&ov), "{r}");
        if ov == "drawn" || ov == "not_found" {
            assert_eq!(r["structure"], "polyp", "{r}");
        }
    }
    assert!(recs.iter().any(|r| r["overlay"] == "drawn"), "{text}");
}

#[test]
fn an_empty_support_mask_is_reported_and_the_stream_goes_on() {
    let dir = tmp("empty");
    let input = disc_clip(&dir);
    let support = dir.join("never.bin");
    let out = dir.join("out");
    // a box on the dark background: the mock's mask is empty
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=2",
        "--input",
        s(&input),
        "--teach-from",
        "5",
        "--box",
        "50,2,62,10",
        "--save-support",
        s(&support),
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("gave an empty mask"), "{text}");
    assert!(text.contains("nothing to learn"), "{text}");
    assert!(
        text.contains(&format!("frames: in {FRAMES} out {FRAMES} errors 0")),
        "{text}"
    );
    let recs = records(&out);
    assert_eq!(recs.len(), FRAMES);
    // un-annotated: "AI late" at most while the teach frame was being worked on
    for r in &recs {
        let ov = r["overlay"].as_str().unwrap();
        let f = r["frame"].as_u64().unwrap();
        assert!(ov == "none" || (ov == "late" && f >= 5), "{r}");
    }
    assert_eq!(recs[FRAMES - 1]["overlay"], "none", "{text}");
    assert!(!support.exists());
}

#[test]
fn a_teach_frame_the_stream_never_has_is_an_error_at_the_end() {
    let dir = tmp("unseen");
    let input = disc_clip(&dir);
    let out = dir.join("out");
    let (o, text) = run(&[
        "run",
        "--mock",
        "delay=2",
        "--input",
        s(&input),
        "--teach-from",
        "999",
        "--box",
        "14,13,36,35",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("--teach-from 999"), "{text}");
    assert!(text.contains("never reached the AI"), "{text}");
    let recs = records(&out);
    assert_eq!(recs.len(), FRAMES);
    assert!(recs.iter().all(|r| r["overlay"] == "none"));
}

/// A valid set in another embedding space than the mock's.
fn foreign_set(family: &str, grid: usize) -> PrototypeSet {
    let c = MockSegmenter::EMBEDDING_CHANNELS;
    let (fh, fw) = (32usize, 32usize);
    let mut data = vec![0f32; c * grid * grid];
    let mut labels = vec![0u8; fh * fw];
    for y in 0..fh {
        for x in 0..fw {
            labels[y * fw + x] = u8::from(x < 12 && y < 12);
        }
    }
    let r = grid as f64 / fh as f64;
    for gy in 0..grid {
        for gx in 0..grid {
            let inside = ((gx as f64 + 0.5) / r) < 12.0 && ((gy as f64 + 0.5) / r) < 12.0;
            data[gy * grid + gx] = if inside { 1.0 } else { -1.0 };
            data[3 * grid * grid + gy * grid + gx] = 0.25;
        }
    }
    let mut id = MockSegmenter::mock_embedding_id();
    id.family = family.into();
    id.grid_height = grid as u32;
    id.grid_width = grid as u32;
    fewshot::teach(
        &[SupportShot {
            embedding: Embedding {
                channels: c,
                height: grid,
                width: grid,
                valid_height: grid,
                valid_width: grid,
                frame_height: fh,
                frame_width: fw,
                data: &data,
            },
            mask: LabelMask {
                width: fw,
                height: fh,
                labels: &labels,
            },
        }],
        &[1],
        &["thing".to_string()],
        id,
        Modality::Grey,
        HeadConfig::default(),
    )
    .unwrap()
}

#[test]
fn a_set_taught_with_another_model_is_refused_before_streaming() {
    let dir = tmp("mismatch");
    let input = disc_clip(&dir);
    for (what, set) in [
        (
            "family",
            foreign_set("litemedsam", MockSegmenter::EMBEDDING_GRID),
        ),
        ("grid", foreign_set("mock", 8)),
    ] {
        let path = dir.join(format!("{what}.bin"));
        set.write_to(&path, &BTreeMap::new(), None).unwrap();
        let out = dir.join(format!("out-{what}"));
        let (o, text) = run(&[
            "run",
            "--mock",
            "",
            "--input",
            s(&input),
            "--support",
            s(&path),
            "--out",
            s(&out),
        ]);
        assert!(!o.status.success(), "{what}: {text}");
        assert!(text.contains("taught with another model"), "{what}: {text}");
        assert!(text.contains("embedding mismatch"), "{what}: {text}");
        assert!(!out.join("log.jsonl").exists(), "{what}: streamed anyway");
    }
    // a file that is not a prototype set at all
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"not a prototype file").unwrap();
    let (o, text) = run(&[
        "run",
        "--mock",
        "",
        "--input",
        s(&input),
        "--support",
        s(&junk),
        "--out",
        s(&dir.join("out-junk")),
    ]);
    assert!(!o.status.success());
    assert!(text.contains("--support"), "{text}");
}

#[test]
fn prompt_and_prototype_options_exclude_each_other() {
    let dir = tmp("clap");
    let input = disc_clip(&dir);
    let out = dir.join("out");
    for (args, what) in [
        (
            vec!["--prompt", "box:1,1,5,5", "--support", "x.bin"],
            "cannot be used with",
        ),
        (
            vec![
                "--support",
                "x.bin",
                "--teach-from",
                "1",
                "--box",
                "1,1,5,5",
            ],
            "cannot be used with",
        ),
        (vec!["--teach-from", "1"], "--box"),
        (vec!["--box", "1,1,5,5"], "--teach-from"),
        (
            vec!["--teach-from", "1", "--box", "5,5,1,1"],
            "--box 5,5,1,1",
        ),
        (vec![], "--prompt"),
    ] {
        let mut a = vec!["run", "--mock", "", "--input", s(&input), "--out", s(&out)];
        a.extend(args.iter().copied());
        let (o, text) = run(&a);
        assert!(!o.status.success(), "{args:?}: {text}");
        assert!(text.contains(what), "{args:?}: {text}");
    }
}

/// A bundle whose graphs are placeholders: enough for the identity gate, which
/// runs before any backend opens (the backend then fails and the stream goes on
/// with the AI off).
fn placeholder_bundle(name: &str, encoder_weight: u8, decoder_weight: u8) -> Vec<u8> {
    use edgeseg_runtime::bundle::{BundleWriter, DType, Manifest};
    let mut m = Manifest::minimal("litemedsam", name, "1.0.0");
    m.architecture
        .details
        .insert("embedding".into(), serde_json::json!([4, 16, 16]));
    BundleWriter::new(m)
        .graph("encoder.onnx", b"placeholder encoder graph".to_vec())
        .graph("decoder.onnx", b"placeholder decoder graph".to_vec())
        .tensor("encoder.onnx/w", DType::F32, &[2], vec![encoder_weight; 8])
        .tensor("decoder.onnx/w", DType::F32, &[2], vec![decoder_weight; 8])
        .to_bytes()
        .unwrap()
}

#[test]
fn with_a_bundle_the_encoder_digest_decides_before_streaming() {
    use edgeseg_runtime::bundle::Bundle;
    let dir = tmp("bundle");
    let input = disc_clip(&dir);
    let taught_on = dir.join("a.bundle");
    std::fs::write(&taught_on, placeholder_bundle("a", 1, 1)).unwrap();
    let bundle = Bundle::open(&taught_on, &VerifyPolicy::default()).unwrap();
    let id = fewshot::EmbeddingId::of_bundle(&bundle, None).unwrap();
    assert_eq!(id.encoder_sha256, fewshot::encoder_sha256(&bundle));
    assert_eq!((id.channels, id.grid_height, id.grid_width), (4, 16, 16));
    let mut set = foreign_set("litemedsam", 16);
    set.embedding = id;
    let path = dir.join("set.bin");
    set.write_to(&path, &BTreeMap::new(), None).unwrap();
    for (bundle, accepted) in [
        // the same encoder under another name and with another decoder
        (placeholder_bundle("renamed", 1, 9), true),
        // other encoder weights
        (placeholder_bundle("a", 2, 1), false),
    ] {
        let b = dir.join("b.bundle");
        std::fs::write(&b, bundle).unwrap();
        let out = dir.join(format!("out-{accepted}"));
        let (o, text) = run(&[
            "run",
            "--bundle",
            s(&b),
            "--input",
            s(&input),
            "--support",
            s(&path),
            "--out",
            s(&out),
        ]);
        if accepted {
            // past the gate: the placeholder cannot run, so AI off, video on
            assert!(o.status.success(), "{text}");
            assert!(
                text.contains(&format!("frames: in {FRAMES} out {FRAMES}")),
                "{text}"
            );
            let recs = records(&out);
            assert!(recs.iter().all(|r| r["overlay"] != "drawn"));
            assert_eq!(recs[FRAMES - 1]["overlay"], "off", "{text}");
        } else {
            assert!(!o.status.success(), "{text}");
            assert!(text.contains("taught with another model"), "{text}");
            assert!(text.contains("encoder sha256"), "{text}");
            assert!(!out.join("log.jsonl").exists());
        }
    }
}
