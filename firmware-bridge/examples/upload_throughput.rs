//! Model-upload throughput at 921600 baud (issue 7, part 7), two ways:
//!
//! 1. **Virtual-time UART model** (`sim::LineModel` over `sim::SimLink`):
//!    window 1 and 4, with and without device processing and adapter latency.
//! 2. **Wall clock over a real pty pair**, paced to 92,160 bytes/s in each
//!    direction (the byte rate of a 921600-baud 8N1 line) by [`Pacer`]: the
//!    host's `SerialTransport` is wrapped in [`PacedTransport`], the device
//!    end of the pty in [`PacedPort`], and the simulator serves it with
//!    `sim::run_device` on its own thread. Each run flashes a fresh device;
//!    the figure is image bytes / wall-clock time of the whole `flash_image`
//!    session (Hello, Begin, chunks, Commit, Reset and the new model's
//!    self-test included), relative to baud/10.
//!
//! This is an example, not a test: wall-clock timing depends on the machine
//! and must not gate CI. Run it with
//!
//! ```sh
//! cargo run --release -p edgeseg-bridge --features std --example upload_throughput -- --runs 3
//! ```
//!
//! Options: `--runs N` (default 3), `--bytes N` (image size, default
//! 1 MiB), `--model-only`, `--pty-only`.

use ed25519_dalek::SigningKey;
use edgeseg_bridge::device::PinnedKey;
use edgeseg_bridge::host::{
    flash_image, ClientOptions, SerialTransport, SignedImage, Transport, TransportError,
};
use edgeseg_bridge::sim::{
    run_device, sim_device, LineModel, LinkFaults, MemFlash, SimLink, SimSelfTest, SplitMix64,
};
use serialport::SerialPort;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BAUD: u32 = 921_600;
/// Bytes per second of an 8N1 line at [`BAUD`]: 10 bit times per byte.
const LINE_RATE: f64 = BAUD as f64 / 10.0;
const SECTOR: u32 = 4096;
const ALIGN: u32 = 8;

/// Paces writes to a fixed byte rate, like a UART shifting bytes out: a
/// write of `n` bytes is handed on in slices of [`Pacer::SLICE`] bytes, each
/// no earlier than the moment its last byte would have left the line. The
/// line never banks idle time: a write that starts after the line went idle
/// starts its schedule at "now". Sleep overshoot inside one write does not
/// accumulate (slices follow the schedule, not the clock); overshoot between
/// writes is lost line time, so the measurement errs on the slow side.
struct Pacer {
    bytes_per_sec: f64,
    next_free: Option<Instant>,
}

impl Pacer {
    /// Bytes handed on per step (about 0.35 ms at 92,160 B/s).
    const SLICE: usize = 32;

    fn new(bytes_per_sec: f64) -> Self {
        Pacer {
            bytes_per_sec,
            next_free: None,
        }
    }

    fn write<E>(
        &mut self,
        bytes: &[u8],
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        let base = match self.next_free {
            Some(free) if free > now => free,
            _ => now,
        };
        let mut done = 0usize;
        let mut end = base;
        for slice in bytes.chunks(Self::SLICE) {
            done += slice.len();
            end = base + Duration::from_secs_f64(done as f64 / self.bytes_per_sec);
            let wait = end.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            write(slice)?;
        }
        self.next_free = Some(end);
        Ok(())
    }
}

/// A host [`Transport`] whose sends are paced (receives pass through).
struct PacedTransport<T> {
    inner: T,
    pacer: Pacer,
    /// Bytes sent, to check the pacing: wire bytes / time must stay ≤ the line rate.
    sent: u64,
}

impl<T: Transport> Transport for PacedTransport<T> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let inner = &mut self.inner;
        self.pacer.write(bytes, |s| inner.send(s))?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        self.inner.recv(buf, timeout)
    }
}

/// The device end of the pty with paced writes (reads pass through).
struct PacedPort<P> {
    inner: P,
    pacer: Pacer,
}

impl<P: Read> Read for PacedPort<P> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<P: Write> Write for PacedPort<P> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let inner = &mut self.inner;
        self.pacer.write(buf, |s| inner.write_all(s))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn pinned_key() -> PinnedKey {
    PinnedKey::from_bytes(&signing_key().verifying_key().to_bytes()).expect("valid key")
}

fn image(len: usize, seed: u64) -> SignedImage {
    let mut rng = SplitMix64::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    SignedImage::sign(bytes, 1, &signing_key()).expect("sign")
}

/// A fresh RAM-flash device whose slots hold `image_len` bytes.
fn device(image_len: usize) -> edgeseg_bridge::sim::SimDevice<MemFlash> {
    let slot_sectors = u32::try_from(image_len.div_ceil(SECTOR as usize)).expect("size") + 1;
    let flash = MemFlash::new(SECTOR, ALIGN, 2 + 2 * slot_sectors);
    sim_device(flash, slot_sectors, pinned_key(), SimSelfTest::default()).expect("device")
}

fn model(img: &SignedImage) {
    println!(
        "## virtual-time UART model, {BAUD} baud, {} B image",
        img.bytes.len()
    );
    println!("| window | device processing / frame | reply delay | payload B/s | % of line rate |");
    println!("|---|---|---|---|---|");
    for window in [1usize, 4] {
        for (processing_us, delay_us) in [(0u64, 0u64), (1000, 0), (1000, 1000), (1000, 16_000)] {
            let line = LineModel {
                baud: BAUD,
                device_processing: Duration::from_micros(processing_us),
                reply_delay: Duration::from_micros(delay_us),
            };
            let mut link = SimLink::new(device(img.bytes.len()), LinkFaults::default(), 1)
                .with_line_model(line);
            let options = ClientOptions {
                window,
                ..ClientOptions::default()
            };
            let report = flash_image(&mut link, img, options, |_| {}).expect("model upload");
            assert_eq!(report.running.sha256, img.manifest.sha256);
            let rate = img.bytes.len() as f64 / link.line_time().as_secs_f64();
            println!(
                "| {window} | {} ms | {} ms | {:.0} | {:.1} % |",
                processing_us as f64 / 1000.0,
                delay_us as f64 / 1000.0,
                rate,
                rate / LINE_RATE * 100.0
            );
        }
    }
}

/// One paced upload over a fresh pty pair; returns the wall-clock seconds.
fn pty_run(img: &SignedImage, window: usize) -> f64 {
    let mut dev = device(img.bytes.len());
    let (host_end, mut device_end) = serialport::TTYPort::pair().expect("pty pair");
    device_end
        .set_timeout(Duration::from_millis(20))
        .expect("timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_device = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        let mut port = PacedPort {
            inner: device_end,
            pacer: Pacer::new(LINE_RATE),
        };
        run_device(&mut dev, &mut port, &stop_device).expect("device loop");
    });
    let mut transport = PacedTransport {
        inner: SerialTransport::from_port(Box::new(host_end)),
        pacer: Pacer::new(LINE_RATE),
        sent: 0,
    };
    let options = ClientOptions {
        window,
        timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let report = flash_image(&mut transport, img, options, |_| {}).expect("pty upload");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.running.sha256, img.manifest.sha256);
    assert_eq!(report.resumed_from, 0);
    stop.store(true, Ordering::Relaxed);
    server.join().expect("device thread");
    let wire_rate = transport.sent as f64 / elapsed;
    assert!(
        wire_rate <= LINE_RATE,
        "pacing failed: {wire_rate:.0} B/s on the wire"
    );
    eprintln!(
        "  window {window}: {elapsed:.3} s; host->device {} B on the wire ({:.1} % of line rate), {} B payload; {:?}",
        transport.sent,
        wire_rate / LINE_RATE * 100.0,
        report.payload_bytes_sent,
        report.stats
    );
    elapsed
}

fn pty(img: &SignedImage, runs: usize) {
    println!(
        "\n## wall clock over a pty pair paced to {LINE_RATE:.0} B/s per direction, {} B image, {runs} runs",
        img.bytes.len()
    );
    println!("| window | runs (s) | median (s) | payload B/s | % of line rate |");
    println!("|---|---|---|---|---|");
    for window in [4usize, 1] {
        let mut times: Vec<f64> = (0..runs).map(|_| pty_run(img, window)).collect();
        let list = times
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let rate = img.bytes.len() as f64 / median;
        println!(
            "| {window} | {list} | {median:.3} | {rate:.0} | {:.1} % |",
            rate / LINE_RATE * 100.0
        );
    }
}

fn main() {
    let mut runs = 3usize;
    let mut bytes = 1usize << 20;
    let (mut do_model, mut do_pty) = (true, true);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--bytes" => bytes = args.next().and_then(|v| v.parse().ok()).expect("--bytes N"),
            "--model-only" => do_pty = false,
            "--pty-only" => do_model = false,
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(runs >= 1 && bytes >= 1);
    let img = image(bytes, 7);
    if do_model {
        model(&img);
    }
    if do_pty {
        pty(&img, runs);
    }
}
