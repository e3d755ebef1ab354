//! The `edgeseg-tools` command line on the committed fixtures: outputs, contracts and errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
        .args(args)
        .output()
        .expect("run edgeseg-tools")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgeseg-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn eval_writes_report_and_summary() {
    let dir = tmpdir("eval");
    let out = dir.join("report.json");
    let ds = repo().join("fixtures/sample2d");
    let o = tools(&[
        "eval",
        "--dataset",
        ds.to_str().unwrap(),
        "--split",
        "test",
        "--segmenter",
        "box-fill",
        "--out",
        out.to_str().unwrap(),
        "--save-masks",
        dir.join("masks").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    assert_eq!(r["segmenter"], "box-fill");
    assert_eq!(r["dataset"]["evaluated"], 6);
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let d = c["metrics"]["dice"].as_f64().unwrap();
        assert!(d > 0.5 && d <= 1.0, "{c}");
        assert_eq!(c["prompts"].as_array().unwrap().len(), 1);
        assert!(c["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    // HC18 rows carry a spacing, so mm metrics exist for them only
    assert!(cases[4]["metrics"]["hd95_mm"].is_number());
    assert!(cases[0]["metrics"].get("hd95_mm").is_none());
    assert_eq!(r["aggregate"]["hd95_mm"]["n"], 2);
    for k in ["p50", "p90", "p99", "max"] {
        assert!(r["latency_ms"][k].is_number(), "{k}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| Dice % | 6 |"), "{md}");
    let mask = image::open(dir.join("masks/cvc_375.png"))
        .unwrap()
        .to_luma8();
    assert_eq!((mask.width(), mask.height()), (384, 288));
    // the box of the ground truth, filled: 43 x 29 px (golden README: box 166,139,208,167)
    assert_eq!(mask.pixels().filter(|p| p.0[0] == 255).count(), 43 * 29);
}

#[test]
fn limit_takes_the_first_cases_in_manifest_order() {
    let dir = tmpdir("limit");
    let out = dir.join("r.json");
    let ds = repo().join("fixtures/sample2d");
    let o = tools(&[
        "eval",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    let ids: Vec<&str> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cvc_375", "cvc_490"]);
    assert_eq!(
        r["segmenter"], "otsu-box",
        "otsu-box is the default segmenter"
    );
}

#[test]
fn eval_runs_on_3d_volumes() {
    let dir = tmpdir("3d");
    let out = dir.join("r.json");
    let ds = repo().join("fixtures/sample3d");
    let o = tools(&[
        "eval",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    let c = &r["cases"][0];
    assert_eq!(
        c["gt_px"], 3248,
        "hippocampus_008 labels 1+2 (golden case 3d_01 gt)"
    );
    assert!(c["metrics"]["hd95_mm"].is_number());
}

#[test]
fn empty_ground_truth_is_skipped_with_a_reason_and_undefined_is_null() {
    let dir = tmpdir("empty");
    std::fs::create_dir_all(dir.join("ds")).unwrap();
    let gt = repo().join("fixtures/metrics-golden/pairs2d");
    std::fs::copy(gt.join("03_pred_empty_gt.png"), dir.join("ds/full.png")).unwrap();
    std::fs::copy(gt.join("04_gt_empty_gt.png"), dir.join("ds/empty.png")).unwrap();
    std::fs::write(
        dir.join("ds/manifest.csv"),
        "image,mask,split,group\nfull.png,full.png,test,a\nempty.png,empty.png,test,b\n",
    )
    .unwrap();
    let out = dir.join("r.json");
    let o = tools(&[
        "eval",
        "--dataset",
        dir.join("ds").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--segmenter",
        "box-fill",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    assert_eq!(r["dataset"]["skipped"], 1);
    assert_eq!(r["cases"][1]["status"], "skipped");
    assert!(r["cases"][1]["skip_reason"]
        .as_str()
        .unwrap()
        .contains("empty ground truth"));
    // one case only: the std of HD95 exists, the mm aggregate is undefined -> null, not a number
    assert!(r["aggregate"]["hd95_mm"]["mean"].is_null());
}

#[test]
fn errors_name_the_file_and_line() {
    let dir = tmpdir("errors");
    // malformed manifest: bad split on line 3
    std::fs::write(
        dir.join("manifest.csv"),
        "image,mask,split,group\na.png,a.png,test,g\nb.png,b.png,testing,h\n",
    )
    .unwrap();
    let o = tools(&[
        "eval",
        "--dataset",
        dir.to_str().unwrap(),
        "--out",
        dir.join("r.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("manifest.csv:3") && err.contains("testing"),
        "{err}"
    );

    // missing file on line 2
    std::fs::write(
        dir.join("manifest.csv"),
        "image,mask,split,group\nmissing.png,a.png,test,g\n",
    )
    .unwrap();
    let o = tools(&[
        "eval",
        "--dataset",
        dir.to_str().unwrap(),
        "--out",
        dir.join("r.json").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("missing.png") && err.contains("manifest.csv:2"),
        "{err}"
    );

    // a file that is not an image
    std::fs::write(dir.join("a.png"), b"not a png").unwrap();
    std::fs::write(
        dir.join("manifest.csv"),
        "image,mask,split,group\na.png,a.png,test,g\n",
    )
    .unwrap();
    let o = tools(&[
        "eval",
        "--dataset",
        dir.to_str().unwrap(),
        "--out",
        dir.join("r.json").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("a.png") && err.contains("manifest.csv:2") && err.contains("decode"),
        "{err}"
    );

    // no manifest at all
    let o = tools(&[
        "eval",
        "--dataset",
        "/nonexistent/ds",
        "--out",
        dir.join("r.json").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/ds/manifest.csv"));

    // unknown segmenter, a bundle that does not exist
    let ds = repo().join("fixtures/sample2d");
    let o = tools(&[
        "eval",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        "x.json",
        "--segmenter",
        "magic",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("box-fill, ellipse-box, otsu-box"));
    let o = tools(&[
        "eval",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        "x.json",
        "--bundle",
        "m.bundle",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("m.bundle"), "{err}");
}

#[test]
fn check_dataset_decodes_every_file() {
    let ds = repo().join("fixtures/sample2d");
    let o = tools(&["check-dataset", "--dataset", ds.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("6 cases, all files decode"), "{s}");
}
