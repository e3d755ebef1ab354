//! Power-loss and flash-fault tests in the style of MCUboot's simulator:
//! interrupt a complete update at every flash operation, with torn and failed
//! operations, and at random points over many seeds. After every fault the
//! device must boot a verified, complete old or new model.

mod common;

use common::{image, Geometry, Harness, DEFAULT_GEOMETRY};
use edgeseg_bridge::device::BootEvent;
use edgeseg_bridge::sim::{FlashFaultKind, FlashOpKind, MemFlash, SplitMix64};

struct Scenario {
    geometry: Geometry,
    snapshot: MemFlash,
    old: edgeseg_bridge::host::SignedImage,
    new: edgeseg_bridge::host::SignedImage,
    /// Operation index at which the update starts, and how many operations a clean update takes.
    base_op: u64,
    update_ops: u64,
}

/// Provisions `old`, then measures a clean update to `new`.
fn scenario(geometry: Geometry, old_len: usize, new_len: usize, seed: u64) -> Scenario {
    let old = image(old_len, 1, seed);
    let new = image(new_len, 2, seed ^ 0xABCD);
    let mut h = Harness::new(geometry.flash(), geometry);
    h.provision(&old);
    let snapshot = h.into_flash();
    let base_op = snapshot.ops();
    let mut h = Harness::new(snapshot.clone(), geometry);
    h.candidates = vec![old.clone(), new.clone()];
    let report = h.update_until_done(&new, 1);
    assert_eq!(report.event, BootEvent::Upgraded);
    let update_ops = h.into_flash().ops() - base_op;
    Scenario {
        geometry,
        snapshot,
        old,
        new,
        base_op,
        update_ops,
    }
}

impl Scenario {
    fn harness(&self) -> Harness {
        let mut h = Harness::new(self.snapshot.clone(), self.geometry);
        h.candidates = vec![self.old.clone(), self.new.clone()];
        h
    }

    /// Runs the update with `faults` (relative operation indices) and checks every recovery;
    /// returns the final boot report and the number of faults that hit.
    fn run(&self, faults: &[(u64, FlashFaultKind)]) -> (edgeseg_bridge::device::BootReport, u64) {
        let mut h = self.harness();
        for &(op, kind) in faults {
            h.flash_mut().inject_fault(self.base_op + op, kind);
        }
        let report = h.update_until_done(&self.new, 32);
        (report, h.faults_seen)
    }
}

const KINDS: [FlashFaultKind; 5] = [
    FlashFaultKind::PowerLoss,
    FlashFaultKind::TornPowerLoss { keep_per_256: 1 },
    FlashFaultKind::TornPowerLoss { keep_per_256: 128 },
    FlashFaultKind::TornPowerLoss { keep_per_256: 255 },
    FlashFaultKind::FailedOperation { keep_per_256: 128 },
];

#[test]
fn interrupt_at_every_flash_operation() {
    let mut cases = 0;
    for (geometry, old_len, new_len) in [
        (DEFAULT_GEOMETRY, 5000, 7003),
        // Two records per status sector: the status log ping-pongs constantly.
        (
            Geometry {
                sector: 512,
                align: 4,
                slot_sectors: 12,
            },
            6000,
            3001,
        ),
        (
            Geometry {
                sector: 4096,
                align: 256,
                slot_sectors: 3,
            },
            12_288,
            9000,
        ),
    ] {
        let s = scenario(geometry, old_len, new_len, 7);
        assert!(
            s.update_ops > 10,
            "update should take many operations, took {}",
            s.update_ops
        );
        for op in 0..s.update_ops {
            for kind in KINDS {
                let (report, hits) = s.run(&[(op, kind)]);
                assert_eq!(
                    hits, 1,
                    "fault at op {op} ({kind:?}) should hit exactly once"
                );
                assert_eq!(
                    report.running.map(|r| r.manifest),
                    Some(s.new.manifest),
                    "update must complete after recovery"
                );
                cases += 1;
            }
        }
    }
    println!(
        "interrupted a complete update at every flash operation: {cases} cases, all recovered"
    );
    assert!(cases > 300);
}

#[test]
fn failing_status_writes() {
    let s = scenario(DEFAULT_GEOMETRY, 4000, 6000, 11);
    // Which operations of a clean update write status records?
    let mut h = s.harness();
    h.update_until_done(&s.new, 1);
    let flash = h.into_flash();
    let status_end = 2 * s.geometry.sector;
    let status_writes: Vec<u64> = flash.trace()[s.base_op as usize..]
        .iter()
        .enumerate()
        .filter(|(_, op)| op.kind == FlashOpKind::Write && op.addr < status_end)
        .map(|(i, _)| i as u64)
        .collect();
    assert!(
        status_writes.len() >= 8,
        "expected begin, checkpoints, commit, trial and confirm records"
    );
    for &op in &status_writes {
        for keep in [0u8, 100, 255] {
            let (report, hits) =
                s.run(&[(op, FlashFaultKind::FailedOperation { keep_per_256: keep })]);
            assert_eq!(hits, 1);
            assert_eq!(report.running.map(|r| r.manifest), Some(s.new.manifest));
        }
        // Every later status write failing too: the device must still boot a candidate each time.
        let all_later: Vec<_> = status_writes
            .iter()
            .filter(|&&o| o >= op)
            .map(|&o| (o, FlashFaultKind::FailedOperation { keep_per_256: 50 }))
            .collect();
        let (report, _) = s.run(&all_later);
        assert!(report.running.is_some());
    }
    println!(
        "failed {} status writes individually and in runs",
        status_writes.len()
    );
}

#[test]
fn random_interruptions_over_1000_seeds() {
    let geometries = [
        (DEFAULT_GEOMETRY, 5000usize, 7003usize),
        (
            Geometry {
                sector: 512,
                align: 1,
                slot_sectors: 16,
            },
            8000,
            2500,
        ),
        (
            Geometry {
                sector: 2048,
                align: 16,
                slot_sectors: 4,
            },
            1,
            8192,
        ),
    ];
    let scenarios: Vec<Scenario> = geometries
        .iter()
        .enumerate()
        .map(|(i, &(g, a, b))| scenario(g, a, b, 100 + i as u64))
        .collect();
    let mut total_faults = 0u64;
    let mut reverted = 0;
    for seed in 0..1000u64 {
        let mut rng = SplitMix64::new(seed);
        let s = &scenarios[(seed % 3) as usize];
        // Five interruptions anywhere in the (possibly repeated) update, some past the first attempt.
        let faults: Vec<(u64, FlashFaultKind)> = (0..5)
            .map(|_| {
                let op = rng.below(s.update_ops * 3);
                let keep_per_256 = rng.below(256) as u8;
                let kind = match rng.below(3) {
                    0 => FlashFaultKind::PowerLoss,
                    1 => FlashFaultKind::TornPowerLoss { keep_per_256 },
                    _ => FlashFaultKind::FailedOperation { keep_per_256 },
                };
                (op, kind)
            })
            .collect();
        let mut h = s.harness();
        let self_test_fails = seed % 10 == 9;
        if self_test_fails {
            h.self_test.failing.push(s.new.manifest.sha256);
        }
        for &(op, kind) in &faults {
            h.flash_mut().inject_fault(s.base_op + op, kind);
        }
        // With a failing self-test every attempt reverts; stop after the first complete attempt.
        let report = h.update_until_done(&s.new, 32);
        let running = report.running.expect("model runs").manifest;
        if self_test_fails {
            assert_eq!(
                running, s.old.manifest,
                "seed {seed}: failing self-test must revert to the old model"
            );
            assert_eq!(
                h.store().state().security_counter,
                1,
                "seed {seed}: counter must not move on revert"
            );
            reverted += 1;
        } else {
            assert_eq!(running, s.new.manifest, "seed {seed}");
            assert_eq!(h.store().state().security_counter, 2);
        }
        total_faults += h.faults_seen;
    }
    println!("1000 seeds x 5 random interruptions: {total_faults} faults hit, every boot verified; {reverted} self-test reverts");
    assert!(
        total_faults > 1000,
        "random faults should mostly hit: {total_faults}"
    );
}

#[test]
fn self_test_failure_reverts_and_interrupted_trial_reverts() {
    let s = scenario(DEFAULT_GEOMETRY, 3000, 3000, 21);
    let mut h = s.harness();
    h.self_test.failing.push(s.new.manifest.sha256);
    let report = h.update_attempt(&s.new).expect("no faults");
    assert_eq!(report.event, BootEvent::RevertedSelfTest);
    assert_eq!(report.running.map(|r| r.manifest), Some(s.old.manifest));
    assert!(h.store().state().pending.is_none() && h.store().state().trial.is_none());

    // Power lost right after the trial record: next boot reverts.
    let mut h = s.harness();
    let mut clean = s.harness();
    clean.update_until_done(&s.new, 1);
    let flash = clean.into_flash();
    let trace = &flash.trace()[s.base_op as usize..];
    // The trial record is the third-last status write (trial, confirm); cut power at the confirm write.
    let status_writes: Vec<usize> = trace
        .iter()
        .enumerate()
        .filter(|(_, op)| op.kind == FlashOpKind::Write && op.addr < 2 * 1024)
        .map(|(i, _)| i)
        .collect();
    let confirm = *status_writes.last().unwrap() as u64;
    h.flash_mut()
        .inject_fault(s.base_op + confirm, FlashFaultKind::PowerLoss);
    assert!(h.update_attempt(&s.new).is_err());
    let report = h.recover();
    assert_eq!(report.event, BootEvent::RevertedInterruptedTrial);
    assert_eq!(report.running.map(|r| r.manifest), Some(s.old.manifest));
}
