//! `edgeseg-tools teach` and `eval --support`: bad input is refused before any model
//! runs (default tests, committed fixtures only), and an end-to-end teach → eval on
//! two CVC-ClinicDB fixture frames when the teacher weights are present (skipped with
//! a printed reason otherwise).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weights() -> Option<PathBuf> {
    let p = std::env::var_os("EDGESEG_TEACHER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/teacher/lite_medsam.pth"));
    p.is_file().then_some(p)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgeseg-fewshot-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tools(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
        .args(args)
        .current_dir(repo())
        .env("EDGESEG_CACHE", cache)
        // never find a teacher by accident in the refusal tests
        .env("EDGESEG_TEACHER", cache.join("no-such-teacher.pth"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fx(p: &str) -> String {
    format!("fixtures/sample2d/{p}")
}

#[test]
fn teach_refuses_bad_supports_before_loading_a_model() {
    let d = tmp("refuse");
    let out = d.join("p.bin");
    let out = out.to_str().unwrap();
    // counts differ
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_375.png"),
            &fx("images/cvc_490.png"),
            "--masks",
            &fx("masks/cvc_375.png"),
            "--out",
            out,
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("2 images but 1 masks"),
        "{}",
        stderr(&o)
    );
    // mask of another image (another size)
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_375.png"),
            "--masks",
            &fx("masks/ddti_329_1.png"),
            "--out",
            out,
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("but image"), "{}", stderr(&o));
    // grey and colour supports mixed
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_375.png"),
            &fx("images/ddti_329_1.png"),
            "--masks",
            &fx("masks/cvc_375.png"),
            &fx("masks/ddti_329_1.png"),
            "--out",
            out,
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("one modality"), "{}", stderr(&o));
    // an empty support mask
    let empty = d.join("empty.png");
    image::GrayImage::new(384, 288).save(&empty).unwrap();
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_375.png"),
            "--masks",
            empty.to_str().unwrap(),
            "--out",
            out,
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no pixel of label 1"), "{}", stderr(&o));
    // a label absent from the masks
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_375.png"),
            "--masks",
            &fx("masks/cvc_375.png"),
            "--label",
            "7",
            "--out",
            out,
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no pixel of label 7"), "{}", stderr(&o));
    assert!(!Path::new(out).exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn eval_support_refuses_a_bad_prototype_file() {
    let d = tmp("badfile");
    let bad = d.join("bad.bin");
    std::fs::write(&bad, b"EDGEPROT not really").unwrap();
    let o = tools(
        &[
            "eval",
            "--support",
            bad.to_str().unwrap(),
            "--dataset",
            "fixtures/sample2d",
            "--out",
            d.join("r.json").to_str().unwrap(),
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("reading the prototype set"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn teach_then_eval_support_end_to_end() {
    let Some(w) = weights() else {
        eprintln!("skipped: LiteMedSAM weights not found (../shared/teacher/lite_medsam.pth or $EDGESEG_TEACHER)");
        return;
    };
    let w = w.to_str().unwrap().to_string();
    let d = tmp("e2e");
    let key = d.join("k");
    let o = tools(&["keygen", "--out", key.to_str().unwrap()], &d);
    assert!(o.status.success(), "{}", stderr(&o));
    let set = d.join("polyp.bin");
    let o = tools(
        &[
            "teach",
            "--images",
            &fx("images/cvc_490.png"),
            "--masks",
            &fx("masks/cvc_490.png"),
            "--name",
            "polyp",
            "--label",
            "1",
            "--out",
            set.to_str().unwrap(),
            "--weights",
            &w,
            "--key",
            d.join("k.key").to_str().unwrap(),
        ],
        &d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&set).unwrap();
    assert!(bytes.len() < 64 * 1024);
    // both CVC frames (colour) as queries, signature required
    for mode in ["decoder", "prototype-only"] {
        let report = d.join(format!("r-{mode}.json"));
        let o = tools(
            &[
                "eval",
                "--support",
                set.to_str().unwrap(),
                "--support-pubkey",
                d.join("k.pub").to_str().unwrap(),
                "--auto-prompt",
                mode,
                "--dataset",
                "fixtures/sample2d",
                "--limit",
                "2",
                "--weights",
                &w,
                "--out",
                report.to_str().unwrap(),
            ],
            &d,
        );
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(r["dataset"]["evaluated"], 2);
        // the support frame itself must be segmented well
        let own = r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "cvc_490")
            .unwrap();
        let dice = own["metrics"]["dice"].as_f64().unwrap();
        assert!(dice > 0.7, "{mode}: Dice on the support frame {dice}");
    }
    // a grey frame against colour supports: refused, not segmented
    let o = tools(
        &[
            "eval",
            "--support",
            set.to_str().unwrap(),
            "--dataset",
            "fixtures/sample2d",
            "--limit",
            "3",
            "--weights",
            &w,
            "--out",
            d.join("r3.json").to_str().unwrap(),
        ],
        &d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("modality mismatch"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}
