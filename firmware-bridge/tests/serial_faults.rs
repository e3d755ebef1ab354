//! Serial-link fault tests: the host upload over an in-process link with bit
//! errors, drops, duplicates, truncation, reordering, disconnects at every
//! chunk boundary, host restarts and device reboots. No corrupted model may
//! ever be committed, and interrupted uploads must resume.

mod common;

use common::{image, pinned_key, DEFAULT_GEOMETRY};
use edgeseg_bridge::device::Flash;
use edgeseg_bridge::host::{
    device_info, flash_image, ClientOptions, FlashReport, HostError, SignedImage,
};
use edgeseg_bridge::sim::{
    reboot, sim_device, LinkFaults, MemFlash, SimDevice, SimLink, SimSelfTest,
};

type Dev = SimDevice<MemFlash>;

fn fresh_device() -> Dev {
    let g = DEFAULT_GEOMETRY;
    sim_device(
        g.flash(),
        g.slot_sectors,
        pinned_key(),
        SimSelfTest::default(),
    )
    .unwrap()
}

fn options() -> ClientOptions {
    ClientOptions {
        retries: 6,
        ..ClientOptions::default()
    }
}

/// Checks that whatever the device runs or has pending is a complete, intended image.
fn assert_no_corrupt_model(dev: &Dev, allowed: &[&SignedImage]) {
    let state = *dev.store().state();
    for image in [state.active, state.pending, state.trial]
        .into_iter()
        .flatten()
    {
        assert!(
            allowed.iter().any(|a| a.manifest == image.manifest),
            "unexpected model {:?} committed",
            image.manifest
        );
    }
}

/// Reads the bytes of the running slot.
fn running_bytes(dev: Dev, len: usize) -> (Dev, Vec<u8>) {
    let slot = dev.last_boot().running.expect("model runs").slot;
    let (mut store, self_test) = dev.power_off();
    let base = store.layout().slot_base[usize::from(slot)];
    let mut buf = vec![0u8; len];
    store.flash_mut().read(base, &mut buf).unwrap();
    let dev = edgeseg_bridge::device::Device::power_on(
        store,
        self_test,
        edgeseg_bridge::sim::SIM_DEVICE_INFO,
    )
    .unwrap();
    (dev, buf)
}

/// Runs upload sessions (each a fresh host client on a fresh link) until one succeeds.
fn flash_until_done(
    mut dev: Dev,
    image: &SignedImage,
    faults: LinkFaults,
    seed: u64,
    max_sessions: u32,
    allowed: &[&SignedImage],
    opts: ClientOptions,
) -> (Dev, FlashReport, u32) {
    for session in 0..max_sessions {
        let mut link = SimLink::new(
            dev,
            faults,
            seed.wrapping_mul(1000).wrapping_add(u64::from(session)),
        );
        let result = flash_image(&mut link, image, opts, |_| {});
        dev = link.into_device();
        assert_no_corrupt_model(&dev, allowed);
        match result {
            Ok(report) => return (dev, report, session + 1),
            Err(HostError::Timeout { .. } | HostError::Transport(_)) => continue,
            Err(e) => panic!("session {session}: unexpected error {e}"),
        }
    }
    panic!("no successful session in {max_sessions}");
}

fn small_chunks() -> ClientOptions {
    ClientOptions {
        chunk_len: 256,
        ..options()
    }
}

#[test]
fn clean_upload_and_device_info() {
    let img = image(20_000 % DEFAULT_GEOMETRY.slot_size() as usize, 3, 1);
    let mut link = SimLink::new(fresh_device(), LinkFaults::default(), 0);
    let caps = device_info(&mut link, options()).unwrap();
    assert_eq!(caps.model, None);
    assert_eq!(caps.slot_size, DEFAULT_GEOMETRY.slot_size());
    let mut progress = Vec::new();
    let report = flash_image(&mut link, &img, options(), |p| {
        progress.push(p.acknowledged)
    })
    .unwrap();
    assert_eq!(report.running.sha256, img.manifest.sha256);
    assert_eq!(report.resumed_from, 0);
    assert!(!report.already_installed);
    assert_eq!(report.payload_bytes_sent, img.bytes.len() as u64);
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1])
            && progress.last() == Some(&img.manifest.image_len)
    );
    // Wire efficiency of the upload direction (payload bytes / bytes on the wire).
    let efficiency = report.payload_bytes_sent as f64 / link.stats.host_bytes as f64;
    let round_trip =
        report.payload_bytes_sent as f64 / (link.stats.host_bytes + link.stats.device_bytes) as f64;
    println!("clean upload: {} payload bytes, {} host wire bytes ({:.1}% efficient); payload / all wire bytes both ways {:.1}%", report.payload_bytes_sent, link.stats.host_bytes, efficiency * 100.0, round_trip * 100.0);
    assert!(efficiency > 0.9);
    // Flashing the same image again sends nothing.
    let again = flash_image(&mut link, &img, options(), |_| {}).unwrap();
    assert!(again.already_installed);
    let dev = link.into_device();
    let (_, bytes) = running_bytes(dev, img.bytes.len());
    assert_eq!(bytes, img.bytes);
}

#[test]
fn bit_errors_drops_duplicates_truncation_reordering() {
    let old = image(3000, 1, 10);
    let new = image(7000, 2, 11);
    let mut sessions_total = 0;
    let mut runs = 0;
    let mut bits = 0;
    let mut frames_damaged = 0;
    for (label, faults, seeds) in [
        (
            "BER 1e-6",
            LinkFaults {
                bit_error_rate: 1e-6,
                ..LinkFaults::default()
            },
            10u64,
        ),
        (
            "BER 1e-5",
            LinkFaults {
                bit_error_rate: 1e-5,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "BER 1e-4",
            LinkFaults {
                bit_error_rate: 1e-4,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "BER 1e-3",
            LinkFaults {
                bit_error_rate: 1e-3,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "drop 10%",
            LinkFaults {
                drop: 0.1,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "duplicate 20%",
            LinkFaults {
                duplicate: 0.2,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "truncate 10%",
            LinkFaults {
                truncate: 0.1,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "reorder 20%",
            LinkFaults {
                reorder: 0.2,
                ..LinkFaults::default()
            },
            10,
        ),
        (
            "all at once",
            LinkFaults {
                bit_error_rate: 1e-4,
                drop: 0.05,
                duplicate: 0.05,
                truncate: 0.05,
                reorder: 0.05,
                disconnect_after_frames: None,
            },
            10,
        ),
    ] {
        for seed in 0..seeds {
            let window = if seed % 2 == 0 { 1 } else { 4 };
            let (dev, report, _) = flash_until_done(
                fresh_device(),
                &old,
                LinkFaults::default(),
                seed,
                1,
                &[&old],
                options(),
            );
            assert_eq!(report.running.sha256, old.manifest.sha256);
            let (dev, report, sessions) = flash_until_done(
                dev,
                &new,
                faults,
                seed,
                50,
                &[&old, &new],
                ClientOptions {
                    window,
                    ..options()
                },
            );
            assert_eq!(
                report.running.sha256, new.manifest.sha256,
                "{label} seed {seed}"
            );
            let (_, bytes) = running_bytes(dev, new.bytes.len());
            assert_eq!(
                bytes, new.bytes,
                "{label} seed {seed}: running model corrupted"
            );
            sessions_total += sessions;
            runs += 1;
            bits += report.stats.bad_frames;
            frames_damaged += report.stats.resends;
        }
        println!("{label}: ok");
    }
    println!("line faults: {runs} uploads, all complete and intact; {sessions_total} sessions; last-session counters: {bits} bad frames, {frames_damaged} resends; 0 corrupted models committed");
    assert!(frames_damaged > 100, "faults must actually have hit");
}

fn disconnect_at_every_chunk_boundary_resumes(window: usize) {
    let old = image(3000, 1, 20);
    let new = image(7000, 2, 21);
    // Measure a clean run's frame count.
    let (dev, _, _) = flash_until_done(
        fresh_device(),
        &old,
        LinkFaults::default(),
        0,
        1,
        &[&old],
        options(),
    );
    let mut link = SimLink::new(dev, LinkFaults::default(), 0);
    flash_image(
        &mut link,
        &new,
        ClientOptions {
            window,
            ..small_chunks()
        },
        |_| {},
    )
    .unwrap();
    let frames = link.stats.host_frames;
    assert!(frames > 8);

    let mut interrupted = 0;
    let mut resumed = 0;
    let mut restarted_with_progress = 0;
    for reboot_device in [false, true] {
        for cut in 1..frames {
            let (dev, _, _) = flash_until_done(
                fresh_device(),
                &old,
                LinkFaults::default(),
                cut,
                1,
                &[&old],
                options(),
            );
            let mut link = SimLink::new(
                dev,
                LinkFaults {
                    disconnect_after_frames: Some(cut),
                    ..LinkFaults::default()
                },
                cut,
            );
            let mut acked = 0;
            let first = flash_image(
                &mut link,
                &new,
                ClientOptions {
                    window,
                    ..small_chunks()
                },
                |p| acked = p.acknowledged,
            );
            let mut dev = link.into_device();
            assert!(
                matches!(first, Err(HostError::Transport(_))),
                "cut after {cut} frames: {first:?}"
            );
            assert_no_corrupt_model(&dev, &[&old, &new]);
            if reboot_device {
                dev = reboot(dev).unwrap();
                assert!(dev.last_boot().running.is_some());
            }
            // The host process restarts: a new client on a new link.
            let mut link = SimLink::new(dev, LinkFaults::default(), cut);
            let report = flash_image(
                &mut link,
                &new,
                ClientOptions {
                    window,
                    ..small_chunks()
                },
                |_| {},
            )
            .unwrap();
            assert_eq!(report.running.sha256, new.manifest.sha256);
            let sector = DEFAULT_GEOMETRY.sector;
            // Progress the device had made durable (reboot) or held in RAM (no reboot).
            let expected_resume = if reboot_device {
                acked / sector * sector
            } else {
                acked
            };
            if acked > 0 && acked < new.manifest.image_len {
                interrupted += 1;
                if expected_resume > 0 {
                    if report.resumed_from >= expected_resume {
                        resumed += 1;
                    } else {
                        restarted_with_progress += 1;
                    }
                }
            }
            let (_, bytes) = running_bytes(link.into_device(), new.bytes.len());
            assert_eq!(bytes, new.bytes);
        }
    }
    println!("window {window}: disconnects at {} boundaries x (link only, device reboot): {interrupted} interrupted uploads, {resumed} resumed, {restarted_with_progress} restarted despite progress", frames - 1);
    assert!(interrupted > 10);
    assert_eq!(restarted_with_progress, 0);
}

#[test]
fn disconnect_at_every_chunk_boundary_resumes_stop_and_wait() {
    disconnect_at_every_chunk_boundary_resumes(1);
}

#[test]
fn disconnect_at_every_chunk_boundary_resumes_windowed() {
    disconnect_at_every_chunk_boundary_resumes(4);
}

/// Upload throughput at 921600 baud under a full-duplex UART timing model
/// (virtual time): payload bytes per second relative to the line rate baud/10.
#[test]
fn throughput_model_at_921600_baud() {
    use edgeseg_bridge::sim::LineModel;
    use std::time::Duration;
    let geometry = common::Geometry {
        sector: 4096,
        align: 8,
        slot_sectors: 16,
    };
    let img = image(60_000, 1, 3);
    let baud = 921_600;
    let ratio = |window: usize, processing_us: u64, delay_us: u64| {
        let device = sim_device(
            geometry.flash(),
            geometry.slot_sectors,
            pinned_key(),
            SimSelfTest::default(),
        )
        .unwrap();
        let line = LineModel {
            baud,
            device_processing: Duration::from_micros(processing_us),
            reply_delay: Duration::from_micros(delay_us),
        };
        let mut link = SimLink::new(device, LinkFaults::default(), 1).with_line_model(line);
        let report = flash_image(
            &mut link,
            &img,
            ClientOptions {
                window,
                ..options()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(report.running.sha256, img.manifest.sha256);
        let rate = img.bytes.len() as f64 / link.line_time().as_secs_f64();
        let ratio = rate / (f64::from(baud) / 10.0);
        println!(
            "model 921600 baud, window {window}, device processing {processing_us:>4} us, reply delay {delay_us:>5} us: {:.1} kB/s = {:.1}% of line rate (whole session)",
            rate / 1000.0,
            ratio * 100.0
        );
        ratio
    };
    let cases = [(0, 0), (1000, 0), (1000, 1000), (1000, 16_000)];
    let stop_and_wait: Vec<f64> = cases.iter().map(|&(p, d)| ratio(1, p, d)).collect();
    let windowed: Vec<f64> = cases.iter().map(|&(p, d)| ratio(4, p, d)).collect();
    assert!(
        stop_and_wait[0] >= 0.85 && stop_and_wait[0] < 1.0,
        "wire-limited stop-and-wait {:.3}",
        stop_and_wait[0]
    );
    assert!(
        stop_and_wait[3] < 0.5,
        "16 ms reply delay must cripple stop-and-wait: {:.3}",
        stop_and_wait[3]
    );
    for (i, w) in windowed.iter().enumerate().take(3) {
        assert!(*w >= 0.85 && *w < 1.0, "window 4, case {i}: {w:.3}");
    }
    assert!(
        windowed[3] > 1.5 * stop_and_wait[3],
        "window 4 must beat stop-and-wait at 16 ms reply delay"
    );
}

/// The fault injector really injects: bit flips match the requested BER and
/// drops/duplicates match their probabilities (so the tests above are not vacuous).
#[test]
fn link_fault_injector_hits_requested_rates() {
    use edgeseg_bridge::host::Transport;
    let faults = LinkFaults {
        bit_error_rate: 1e-3,
        drop: 0.1,
        duplicate: 0.1,
        ..LinkFaults::default()
    };
    let mut link = SimLink::new(fresh_device(), faults, 42);
    let frame = vec![0x55u8; 1000];
    let frames = 2000u64;
    for _ in 0..frames {
        link.send(&frame).unwrap();
    }
    let stats = link.stats;
    // Every frame not dropped is corrupted once (a duplicate repeats the same corrupted copy).
    let delivered = (frames - stats.dropped) as f64;
    let expected_flips = delivered * 8000.0 * 1e-3;
    let flips = stats.bits_flipped as f64;
    assert!(
        (flips - expected_flips).abs() < 5.0 * expected_flips.sqrt() + 50.0,
        "flips {flips} vs {expected_flips}"
    );
    for (count, p) in [(stats.dropped, 0.1), (stats.duplicated, 0.1 * 0.9)] {
        let expected = frames as f64 * p;
        assert!(
            (count as f64 - expected).abs() < 5.0 * expected.sqrt(),
            "{count} vs {expected}"
        );
    }
}

#[test]
fn flash_layout_rejects_bad_geometry() {
    use edgeseg_bridge::device::{FlashLayout, LayoutError};
    assert_eq!(
        FlashLayout::new(1000, 8, 0, 4, 1 << 20),
        Err(LayoutError::BadGeometry)
    );
    assert_eq!(
        FlashLayout::new(1024, 3, 0, 4, 1 << 20),
        Err(LayoutError::BadGeometry)
    );
    assert_eq!(
        FlashLayout::new(1024, 2048, 0, 4, 1 << 20),
        Err(LayoutError::BadGeometry)
    );
    assert_eq!(
        FlashLayout::new(1024, 8, 512, 4, 1 << 20),
        Err(LayoutError::BadGeometry)
    );
    assert_eq!(
        FlashLayout::new(256, 8, 0, 4, 1 << 20),
        Err(LayoutError::SectorTooSmall)
    );
    assert_eq!(
        FlashLayout::new(1024, 8, 0, 4, 9 * 1024),
        Err(LayoutError::TooLarge)
    );
    assert_eq!(
        FlashLayout::new(1 << 30, 8, 0, 4, u32::MAX),
        Err(LayoutError::TooLarge)
    );
    let layout = FlashLayout::new(1024, 8, 0, 4, 10 * 1024).unwrap();
    assert_eq!(layout.slot_base, [2048, 6144]);
    assert_eq!(layout.records_per_sector(), 4);
    assert_eq!(layout.total_len(), 10 * 1024);
}
