//! End-to-end over a real pseudo-terminal pair: the simulator serves a
//! file-backed device on one end, the host flashes through `SerialTransport`
//! on the other. Timeouts are generous and only matter on failure.
#![cfg(unix)]

mod common;

use common::{image, pinned_key};
use edgeseg_bridge::host::{device_info, flash_image, ClientOptions, SerialTransport};
use edgeseg_bridge::sim::{
    open_file_device, run_device, sim_device, FileFlash, SimGeometry, SimSelfTest,
};
use serialport::SerialPort;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECTOR: u32 = 4096;
const ALIGN: u32 = 8;
const SLOT_SECTORS: u32 = 16;

#[test]
fn flash_over_pty_with_file_backed_flash() {
    let path =
        std::env::temp_dir().join(format!("edgeseg-bridge-pty-{}.flash", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let flash = FileFlash::open(&path, SECTOR, ALIGN, 2 + 2 * SLOT_SECTORS).unwrap();
    let mut device = sim_device(flash, SLOT_SECTORS, pinned_key(), SimSelfTest::default()).unwrap();

    let (host_end, mut device_end) = serialport::TTYPort::pair().expect("pty pair");
    device_end.set_timeout(Duration::from_millis(20)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_device = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        run_device(&mut device, &mut device_end, &stop_device).expect("device loop");
        device
    });

    let options = ClientOptions {
        timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let mut transport = SerialTransport::from_port(Box::new(host_end));
    let caps = device_info(&mut transport, options).unwrap();
    assert_eq!(caps.board.as_str(), "edgeseg-sim");
    assert_eq!(caps.model, None);

    let img = image(40_000, 1, 77);
    assert!(img.verify(&pinned_key()).is_ok(), "host-side pre-check");
    let started = std::time::Instant::now();
    let report = flash_image(&mut transport, &img, options, |_| {}).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.running.sha256, img.manifest.sha256);
    println!(
        "pty upload: {} bytes in {:.3} s ({:.0} kB/s; a pty has no baud limit, so this is not a line-rate figure)",
        img.bytes.len(),
        elapsed.as_secs_f64(),
        img.bytes.len() as f64 / elapsed.as_secs_f64() / 1000.0
    );

    stop.store(true, Ordering::Relaxed);
    let device = server.join().unwrap();
    drop(device);

    // The model survives a restart of the simulator (file-backed flash).
    let geometry = SimGeometry {
        sector_size: SECTOR,
        write_align: ALIGN,
        slot_sectors: SLOT_SECTORS,
    };
    let device = open_file_device(&path, geometry, pinned_key()).unwrap();
    assert_eq!(
        device.last_boot().running.map(|r| r.manifest),
        Some(img.manifest)
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn serve_on_pty_by_path_like_the_cli() {
    let g = common::DEFAULT_GEOMETRY;
    let device = sim_device(
        g.flash(),
        g.slot_sectors,
        pinned_key(),
        SimSelfTest::default(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_device = Arc::clone(&stop);
    let (path_tx, path_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut device = device;
        edgeseg_bridge::sim::serve_on_pty(&mut device, &stop_device, |path| {
            path_tx.send(path.to_owned()).unwrap()
        })
        .expect("serve");
        device
    });
    let path = path_rx.recv().unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let img = image(5000, 2, 5);
    // Two separate connections, as two CLI invocations would make.
    {
        let mut transport = SerialTransport::open(&path, 921_600).expect("open pty by path");
        assert_eq!(device_info(&mut transport, options).unwrap().model, None);
    }
    {
        let mut transport = SerialTransport::open(&path, 921_600).expect("reopen pty by path");
        let report = flash_image(&mut transport, &img, options, |_| {}).unwrap();
        assert_eq!(report.running.sha256, img.manifest.sha256);
    }
    stop.store(true, Ordering::Relaxed);
    let device = server.join().unwrap();
    assert_eq!(
        device.last_boot().running.map(|r| r.manifest),
        Some(img.manifest)
    );
}

#[test]
fn signed_image_from_detached_signature() {
    let signed = image(100, 1, 1);
    let rebuilt =
        edgeseg_bridge::host::SignedImage::from_parts(signed.bytes.clone(), 1, signed.signature.0)
            .unwrap();
    assert_eq!(rebuilt, signed);
    assert!(rebuilt.verify(&pinned_key()).is_ok());
    let wrong_version =
        edgeseg_bridge::host::SignedImage::from_parts(signed.bytes.clone(), 2, signed.signature.0)
            .unwrap();
    assert!(wrong_version.verify(&pinned_key()).is_err());
}
