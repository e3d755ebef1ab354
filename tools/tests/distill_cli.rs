//! The distillation pipeline end to end on the committed fixtures, as a smoke run
//! (seconds, not hours): a small random "teacher" is exported and bundled with
//! the CLI, `distill cache` runs it over the fixture images, `distill train`
//! trains a tiny student through both stages — the loss must go down in each —
//! and the student is exported, bundled and run by the runtime's tract backend.
//!
//! The teacher here is random, so nothing is said about accuracy: this checks
//! that the machinery works and learns. Real runs: docs/distillation.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::{LiteMedSam, LiteMedSamConfig, Mode};
use edgeseg_runtime::backend::{BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter};
use edgeseg_runtime::bundle::{Bundle, VerifyPolicy};
use edgeseg_runtime::{BoxPrompt, Prompt};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "edgeseg-tools {args:?} failed:\n{text}"
    );
    text
}

fn tools_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "edgeseg-tools {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(path: &Path, cfg: &LiteMedSamConfig) {
    std::fs::write(path, serde_json::to_string(cfg).unwrap()).unwrap();
}

/// The committed 2D fixtures as a `train` split (they are `test` in the fixture
/// manifest, and the cache refuses test splits).
fn train_fixture(dir: &Path) {
    let src = repo().join("fixtures/sample2d");
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
        }
    }
    let m = std::fs::read_to_string(src.join("manifest.csv"))
        .unwrap()
        .replace(",test,", ",train,");
    std::fs::write(dir.join("manifest.csv"), m).unwrap();
}

/// `(step, total, embedding, teacher, ground_truth)` rows of a loss.csv.
fn losses(csv: &Path) -> Vec<[f64; 5]> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|v| v.parse().unwrap()).collect();
            [f[0], f[3], f[4], f[5], f[6]]
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn distill_pipeline_learns_on_fixtures() {
    let tmp = std::env::temp_dir().join(format!("edgeseg-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // a random teacher with the LiteMedSAM structure at the real input size
    let teacher_cfg = LiteMedSamConfig {
        img_size: 256,
        ..LiteMedSamConfig::tiny()
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    LiteMedSam::new(vb, &teacher_cfg, Mode::Training).unwrap();
    let tw = tmp.join("teacher.safetensors");
    vm.save(&tw).unwrap();
    let tc = tmp.join("teacher.json");
    write_config(&tc, &teacher_cfg);
    let tg = tmp.join("teacher-graphs");
    tools(&[
        "export",
        "--config",
        &s(&tc),
        "--weights",
        &s(&tw),
        "--out",
        &s(&tg),
    ]);
    let tb = tmp.join("teacher.esb");
    tools(&["bundle", "--graphs", &s(&tg), "--out", &s(&tb)]);

    // cache: refuses the test split, then caches the fixtures as train
    let data = tmp.join("data");
    train_fixture(&data);
    let cache = tmp.join("cache");
    let err = tools_fails(&[
        "distill",
        "cache",
        "--teacher",
        &s(&tb),
        "--dataset",
        &s(&data),
        "--split",
        "test",
        "--out",
        &s(&cache),
    ]);
    assert!(err.contains("test split"), "{err}");
    let out = tools(&[
        "distill",
        "cache",
        "--teacher",
        &s(&tb),
        "--dataset",
        &s(&data),
        "--out",
        &s(&cache),
        "--threads",
        "2",
    ]);
    assert!(out.contains("6 records"), "{out}");
    // a rerun resumes: nothing left to do, same records
    let out = tools(&[
        "distill",
        "cache",
        "--teacher",
        &s(&tb),
        "--dataset",
        &s(&data),
        "--out",
        &s(&cache),
    ]);
    assert!(out.contains("6 records"), "{out}");

    // a tiny student at the real input size: 8×8 grid, five upscalings to 256
    let student = LiteMedSamConfig {
        img_size: 256,
        merge_strides: [2, 2, 2],
        decoder_upscales: 5,
        window_sizes: [4, 4, 4, 4],
        ..LiteMedSamConfig::tiny_student()
    };
    student.validate().unwrap();
    let sc = tmp.join("student.json");
    write_config(&sc, &student);
    let run = tmp.join("run");
    let common = |stage: &str, steps: &str| -> Vec<String> {
        [
            "distill",
            "train",
            "--cache",
            &s(&cache),
            "--student",
            &s(&sc),
            "--out",
            &s(&run),
            "--stage",
            stage,
            "--max-steps",
            steps,
            "--batch",
            "3",
            "--warmup",
            "2",
            "--checkpoint-every",
            "7",
            "--no-augment",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let a1 = common("1", "30");
    let mut a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    a1.extend(["--lr", "3e-3"]);
    tools(&a1);
    let l1 = losses(&run.join("stage1/loss.csv"));
    assert_eq!(l1.len(), 30);
    let first: Vec<f64> = l1[..4].iter().map(|r| r[1]).collect();
    let last: Vec<f64> = l1[l1.len() - 4..].iter().map(|r| r[1]).collect();
    assert!(
        mean(&last) < 0.8 * mean(&first),
        "stage 1 loss did not decrease: {first:?} → {last:?}"
    );
    assert!(run.join("stage1/loss.png").is_file());
    // finished runs are not redone
    let again = tools(&a1);
    assert!(again.contains("30 steps"), "{again}");

    let cache_arg = s(&cache);
    let a2 = common("2", "30");
    let mut a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    a2.extend(["--lr", "2e-3", "--val-cache", &cache_arg]);
    let out = tools(&a2);
    assert!(out.contains("validation (6 images)"), "{out}");
    let l2 = losses(&run.join("stage2/loss.csv"));
    // the total: the random tiny teacher's masks disagree with the ground truth, and the
    // student's box prior already fits the fixture masks, so the ground-truth term alone
    // need not fall in 30 steps
    let first: Vec<f64> = l2[..4].iter().map(|r| r[1]).collect();
    let last: Vec<f64> = l2[l2.len() - 4..].iter().map(|r| r[1]).collect();
    assert!(
        mean(&last) < 0.9 * mean(&first),
        "stage 2 loss did not decrease: {first:?} → {last:?}"
    );
    assert!(run.join("stage2/validation.json").is_file());

    // weights distilled from another teacher bundle start a run only when asked to, and
    // the change is written into the new run's provenance
    let other = tmp.join("other-teacher");
    std::fs::create_dir_all(&other).unwrap();
    let ow = other.join("weights.safetensors");
    std::fs::copy(run.join("stage1/weights.safetensors"), &ow).unwrap();
    std::fs::write(
        other.join("provenance.json"),
        r#"{"teacher":"litemedsam-teacher (bundle sha256 00ff)","training_data":[],"commands":["distill train (elsewhere)"]}"#,
    )
    .unwrap();
    let run_b = tmp.join("run-b");
    let with_init = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = common("2", "1");
        let i = v.iter().position(|x| x == "--out").unwrap();
        v[i + 1] = s(&run_b);
        v.extend(["--init".to_string(), s(&ow)]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let refused = with_init(&[]);
    let err = tools_fails(&refused.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--accept-teacher-change"), "{err}");
    let accepted = with_init(&["--accept-teacher-change"]);
    tools(&accepted.iter().map(String::as_str).collect::<Vec<_>>());
    let prov = std::fs::read_to_string(run_b.join("stage2/provenance.json")).unwrap();
    assert!(
        prov.contains("teacher changed from litemedsam-teacher (bundle sha256 00ff)"),
        "{prov}"
    );

    // the student leaves as a bundle and runs on the device runtime
    let sg = tmp.join("student-graphs");
    let sw = run.join("stage2/weights.safetensors");
    tools(&[
        "export",
        "--config",
        &s(&sc),
        "--weights",
        &s(&sw),
        "--out",
        &s(&sg),
    ]);
    let sb = tmp.join("student.esb");
    tools(&["bundle", "--graphs", &s(&sg), "--out", &s(&sb)]);
    // its manifest says where it came from: teacher, training data, every command
    let bundle = Bundle::open(&sb, &VerifyPolicy::default()).unwrap();
    let prov = &bundle.manifest().provenance;
    assert!(
        prov.teacher
            .as_deref()
            .is_some_and(|t| t.contains("sha256")),
        "{prov:?}"
    );
    assert!(
        prov.training_data.iter().any(|d| d.contains("train: ")),
        "{prov:?}"
    );
    let stages: Vec<_> = prov
        .commands
        .iter()
        .filter(|c| c.contains("distill train"))
        .collect();
    assert_eq!(stages.len(), 2, "{prov:?}");
    assert!(stages[0].contains("--stage 1") && stages[1].contains("--stage 2"));
    assert!(prov.commands.iter().any(|c| c.contains(" export ")));
    assert!(prov.commands.iter().any(|c| c.contains(" bundle ")));
    drop(bundle);
    let mut seg = TractSegmenter::open(&sb, &BackendOptions::default()).unwrap();
    let img = image::open(repo().join("fixtures/sample2d/images/cvc_375.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    seg.set_frame(RgbFrame::new(w, h, img.as_raw()).unwrap())
        .unwrap();
    let m = seg
        .segment(&Prompt {
            boxes: Some(BoxPrompt {
                x0: 40.0,
                y0: 40.0,
                x1: 200.0,
                y1: 180.0,
            }),
            points: vec![],
        })
        .unwrap();
    assert_eq!((m.width, m.height), (w, h));

    // and is evaluated through that same runtime path by `eval --bundle`
    let report = tmp.join("student-eval.json");
    tools(&[
        "eval",
        "--bundle",
        &s(&sb),
        "--name",
        "smoke-student",
        "--threads",
        "1",
        "--dataset",
        &s(&repo().join("fixtures/sample2d")),
        "--split",
        "test",
        "--out",
        &s(&report),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["segmenter"], "smoke-student");
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        let d = c["metrics"]["dice"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&d), "{c}");
    }
    assert!(tmp.join("student-eval.md").is_file());

    let _ = std::fs::remove_dir_all(&tmp);
}
