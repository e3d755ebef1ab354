//! End-to-end checks on the real datasets in `../shared/data` (skipped, with a printed reason,
//! when that folder is absent).
//!
//! The strongest check of the whole harness (manifest, image/mask decoding, prompt derivation,
//! metrics, aggregation): the `box-fill` baseline's mean Dice on each 2D test split must equal
//! the figure in `../shared/baselines.md`, which was computed independently with MONAI.

use edgeseg_e2e::shared_dir;
use edgeseg_tools::dataset::{Dataset, Dimensionality, Split};
use edgeseg_tools::eval::{run_eval, EvalConfig};
use edgeseg_tools::segmenter::BoxFill;

/// (dataset, cases evaluated, cases skipped, box-fill mean Dice % from baselines.md)
const BOX_FILL_REFERENCE: &[(&str, usize, usize, f64)] = &[
    ("cvc_clinicdb", 93, 0, 82.71),
    ("ddti_thyroid_us", 153, 3, 84.53),
    ("hc18_fetal_us", 106, 0, 87.84),
];

#[test]
fn box_fill_dice_equals_the_reference_figures() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipped: ../shared/data not present (set EDGESEG_SHARED to point at it)");
        return;
    };
    for &(name, evaluated, skipped, dice_pct) in BOX_FILL_REFERENCE {
        let ds = Dataset::open(shared.join("data").join(name)).unwrap();
        let report = run_eval(
            &ds,
            &mut BoxFill,
            &EvalConfig::default(),
            "test".into(),
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(report.dataset.evaluated, evaluated, "{name}");
        assert_eq!(report.dataset.skipped, skipped, "{name}");
        let ours = 100.0 * report.aggregate.dice.mean.unwrap();
        assert!(
            (ours - dice_pct).abs() < 0.006,
            "{name}: box-fill Dice {ours:.3}% vs reference {dice_pct}%"
        );
    }
}

#[test]
fn shared_manifests_parse_with_disjoint_groups() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipped: ../shared/data not present");
        return;
    };
    // (name, dimensionality, train, val, test)
    let expected = [
        ("cvc_clinicdb", Dimensionality::TwoD, 416, 103, 93),
        ("ddti_thyroid_us", Dimensionality::TwoD, 424, 75, 156),
        ("hc18_fetal_us", Dimensionality::TwoD, 254, 47, 106),
        ("msd_hippocampus_3d", Dimensionality::ThreeD, 181, 29, 50),
        ("brats_demo_3d", Dimensionality::ThreeD, 0, 0, 1),
    ];
    for (name, dim, train, val, test) in expected {
        let ds = Dataset::open(shared.join("data").join(name)).unwrap();
        assert_eq!(ds.dimensionality, dim, "{name}");
        assert_eq!(
            (
                ds.split(Split::Train).count(),
                ds.split(Split::Val).count(),
                ds.split(Split::Test).count()
            ),
            (train, val, test),
            "{name}"
        );
        // Dataset::open refuses a group in two splits; check it independently here too
        let mut by_group = std::collections::HashMap::new();
        for c in &ds.cases {
            assert_eq!(
                *by_group.entry(c.group.clone()).or_insert(c.split),
                c.split,
                "{name} {}",
                c.group
            );
        }
    }
    // frame order of CVC-ClinicDB sequences comes from the manifest
    let cvc = Dataset::open(shared.join("data/cvc_clinicdb")).unwrap();
    assert!(cvc.cases.iter().all(|c| c.frame.is_some()));
    let hc = Dataset::open(shared.join("data/hc18_fetal_us")).unwrap();
    assert!(hc
        .cases
        .iter()
        .all(|c| c.spacing_mm.is_some() && c.extra.contains_key("hc_mm")));
}

#[test]
fn brats_volume_loads_with_header_spacing() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipped: ../shared/data not present");
        return;
    };
    let ds = Dataset::open(shared.join("data/brats_demo_3d")).unwrap();
    let loaded = ds.load(&ds.cases[0]).unwrap();
    assert_eq!(loaded.labels.shape.dims(), &[160, 160, 104]);
    assert_eq!(loaded.spacing_mm, Some(vec![1.5, 1.5, 1.5]));
    // SOURCE.md: 17,618 edema voxels
    assert_eq!(loaded.labels.foreground(None).count(), 17_618);
}
