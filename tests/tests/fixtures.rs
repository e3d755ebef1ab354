//! The committed fixtures load through the dataset layer and evaluate end to end.

use edgeseg_e2e::fixtures_dir;
use edgeseg_tools::dataset::{CaseImage, Dataset, Dimensionality, Split};
use edgeseg_tools::eval::{run_eval, EvalConfig};
use edgeseg_tools::segmenter::{BoxFill, OtsuBox};

#[test]
fn sample2d_fixture_loads_grey_and_rgb() {
    let ds = Dataset::open(fixtures_dir().join("sample2d")).unwrap();
    assert_eq!(ds.dimensionality, Dimensionality::TwoD);
    assert_eq!(ds.split(Split::Test).count(), 6);
    let channels: Vec<usize> = ds
        .cases
        .iter()
        .map(|c| match ds.load(c).unwrap().image {
            CaseImage::TwoD(im) => im.channels,
            CaseImage::ThreeD(_) => 0,
        })
        .collect();
    assert_eq!(channels, [3, 3, 1, 1, 1, 1]);
}

#[test]
fn sample3d_fixture_has_two_labels_and_spacing() {
    let ds = Dataset::open(fixtures_dir().join("sample3d")).unwrap();
    assert_eq!(ds.dimensionality, Dimensionality::ThreeD);
    let loaded = ds.load(&ds.cases[0]).unwrap();
    assert_eq!(loaded.labels.labels(), [1, 2]);
    assert_eq!(loaded.spacing_mm, Some(vec![1.0, 1.0, 1.0]));
    let one = EvalConfig {
        label: Some(1),
        ..EvalConfig::default()
    };
    let r = run_eval(&ds, &mut BoxFill, &one, "test".into(), |_, _, _| {}).unwrap();
    assert_eq!(
        r.cases[0].gt_px, 1725,
        "label 1 of hippocampus_008 (golden case 3d_01 pred)"
    );
}

#[test]
fn both_baselines_evaluate_every_fixture_case() {
    let ds = Dataset::open(fixtures_dir().join("sample2d")).unwrap();
    for seg in [
        &mut BoxFill as &mut dyn edgeseg_tools::segmenter::Segmenter,
        &mut OtsuBox::default(),
    ] {
        let r = run_eval(
            &ds,
            seg,
            &EvalConfig::default(),
            "test".into(),
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(r.dataset.evaluated, 6);
        let dice = r.aggregate.dice.mean.unwrap();
        assert!(dice > 0.5 && dice < 1.0, "{}: {dice}", r.segmenter);
    }
}
