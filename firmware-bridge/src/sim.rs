//! Device simulation (`std`): memory- and file-backed flash with fault
//! injection, an in-process serial link with line faults, and a loop that
//! serves a device over any `Read + Write` port (e.g. a pty).

use crate::device::{
    Device, DeviceInfo, Flash, FlashLayout, ImageReader, ModelStore, PinnedKey, SlotImage,
    StoreError, ERASED_BYTE,
};
use crate::host::{Transport, TransportError};
use crate::protocol::{FirmwareVersion, Sha256Digest};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

/// Errors of the simulated flashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimFlashError {
    /// Power was lost; every operation fails until [`MemFlash::power_cycle`].
    #[error("power lost")]
    PowerLost,
    /// A write/erase failed (power stays on).
    #[error("flash operation failed")]
    OperationFailed,
    /// Address or length outside the flash or misaligned.
    #[error("address out of range or misaligned")]
    BadAddress,
    /// File I/O failed (file-backed flash).
    #[error("file I/O failed")]
    Io,
}

/// What an injected fault does to the flash operation it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashFaultKind {
    /// Power is cut before the operation changes anything.
    PowerLoss,
    /// Power is cut in the middle: only the first `keep_per_256`/256 of the bytes are programmed/erased.
    TornPowerLoss {
        /// Fraction of the operation that completed, in 1/256.
        keep_per_256: u8,
    },
    /// The operation fails half-done but power stays on (e.g. a failing status write).
    FailedOperation {
        /// Fraction of the operation that completed, in 1/256.
        keep_per_256: u8,
    },
}

/// Kind of a recorded flash operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashOpKind {
    /// Sector erase.
    Erase,
    /// Program.
    Write,
}

/// One erase/write recorded by [`MemFlash`] (index = position in the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashOp {
    /// Operation kind.
    pub kind: FlashOpKind,
    /// Start address.
    pub addr: u32,
    /// Length in bytes.
    pub len: u32,
}

/// RAM-backed NOR flash with an operation counter and fault injection.
/// Writes AND into existing bytes (NOR semantics); erase sets 0xFF.
#[derive(Debug, Clone)]
pub struct MemFlash {
    data: Vec<u8>,
    sector_size: u32,
    write_align: u32,
    ops: u64,
    faults: Vec<(u64, FlashFaultKind)>,
    powered: bool,
    trace: Vec<FlashOp>,
}

impl MemFlash {
    /// An erased flash of `sectors` sectors.
    pub fn new(sector_size: u32, write_align: u32, sectors: u32) -> Self {
        let len = sector_size as usize * sectors as usize;
        MemFlash {
            data: vec![ERASED_BYTE; len],
            sector_size,
            write_align,
            ops: 0,
            faults: Vec::new(),
            powered: true,
            trace: Vec::new(),
        }
    }

    /// Number of erase/write operations performed (or attempted) so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Schedules `kind` at the erase/write operation with index `op` (counted by [`Self::ops`]).
    pub fn inject_fault(&mut self, op: u64, kind: FlashFaultKind) {
        self.faults.push((op, kind));
    }

    /// Removes scheduled faults.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Every erase/write attempted so far, in order (index = operation index).
    pub fn trace(&self) -> &[FlashOp] {
        &self.trace
    }

    /// Restores power (RAM state of the device is lost; flash contents stay).
    pub fn power_cycle(&mut self) {
        self.powered = true;
    }

    /// True while powered.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Raw contents.
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    fn range(&self, addr: u32, len: usize) -> Result<std::ops::Range<usize>, SimFlashError> {
        let start = addr as usize;
        let end = start.checked_add(len).ok_or(SimFlashError::BadAddress)?;
        if end > self.data.len() {
            return Err(SimFlashError::BadAddress);
        }
        Ok(start..end)
    }

    /// Counts the operation and returns the fault hitting it, if any.
    fn begin_op(&mut self, op: FlashOp) -> Result<Option<FlashFaultKind>, SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        let index = self.ops;
        self.ops += 1;
        self.trace.push(op);
        Ok(self
            .faults
            .iter()
            .find(|(at, _)| *at == index)
            .map(|(_, kind)| *kind))
    }

    fn apply(
        &mut self,
        range: std::ops::Range<usize>,
        fault: Option<FlashFaultKind>,
        op: impl Fn(&mut u8, usize),
    ) -> Result<(), SimFlashError> {
        let len = range.len();
        let (done, result) = match fault {
            None => (len, Ok(())),
            Some(FlashFaultKind::PowerLoss) => (0, Err(SimFlashError::PowerLost)),
            Some(FlashFaultKind::TornPowerLoss { keep_per_256 }) => (
                len * usize::from(keep_per_256) / 256,
                Err(SimFlashError::PowerLost),
            ),
            Some(FlashFaultKind::FailedOperation { keep_per_256 }) => (
                len * usize::from(keep_per_256) / 256,
                Err(SimFlashError::OperationFailed),
            ),
        };
        for (i, byte) in self.data[range.start..range.start + done]
            .iter_mut()
            .enumerate()
        {
            op(byte, i);
        }
        if result == Err(SimFlashError::PowerLost) {
            self.powered = false;
        }
        result
    }
}

impl Flash for MemFlash {
    type Error = SimFlashError;
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn write_align(&self) -> u32 {
        self.write_align
    }
    fn capacity(&self) -> u32 {
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }
    fn erase_sector(&mut self, addr: u32) -> Result<(), SimFlashError> {
        if !addr.is_multiple_of(self.sector_size) {
            return Err(SimFlashError::BadAddress);
        }
        let range = self.range(addr, self.sector_size as usize)?;
        let fault = self.begin_op(FlashOp {
            kind: FlashOpKind::Erase,
            addr,
            len: self.sector_size,
        })?;
        self.apply(range, fault, |b, _| *b = ERASED_BYTE)
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), SimFlashError> {
        if !addr.is_multiple_of(self.write_align)
            || !data.len().is_multiple_of(self.write_align as usize)
        {
            return Err(SimFlashError::BadAddress);
        }
        let range = self.range(addr, data.len())?;
        let fault = self.begin_op(FlashOp {
            kind: FlashOpKind::Write,
            addr,
            len: data.len() as u32,
        })?;
        self.apply(range, fault, |b, i| *b &= data[i])
    }
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        let range = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }
}

/// File-backed flash for the simulator (contents survive restarts).
#[derive(Debug)]
pub struct FileFlash {
    file: std::fs::File,
    sector_size: u32,
    write_align: u32,
    capacity: u32,
}

impl FileFlash {
    /// Opens `path`, creating an erased flash of `sectors` sectors if it does not exist.
    pub fn open(
        path: &std::path::Path,
        sector_size: u32,
        write_align: u32,
        sectors: u32,
    ) -> std::io::Result<Self> {
        let capacity = sector_size
            .checked_mul(sectors)
            .ok_or_else(|| std::io::Error::other("flash too large"))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let existing = file.metadata()?.len();
        if existing < u64::from(capacity) {
            file.seek(SeekFrom::Start(existing))?;
            let fill = vec![ERASED_BYTE; (u64::from(capacity) - existing) as usize];
            file.write_all(&fill)?;
            file.flush()?;
        }
        Ok(FileFlash {
            file,
            sector_size,
            write_align,
            capacity,
        })
    }

    fn check(&self, addr: u32, len: usize) -> Result<(), SimFlashError> {
        let end = u64::from(addr) + len as u64;
        if end > u64::from(self.capacity) {
            return Err(SimFlashError::BadAddress);
        }
        Ok(())
    }
}

impl Flash for FileFlash {
    type Error = SimFlashError;
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn write_align(&self) -> u32 {
        self.write_align
    }
    fn capacity(&self) -> u32 {
        self.capacity
    }
    fn erase_sector(&mut self, addr: u32) -> Result<(), SimFlashError> {
        if !addr.is_multiple_of(self.sector_size) {
            return Err(SimFlashError::BadAddress);
        }
        self.check(addr, self.sector_size as usize)?;
        let erased = vec![ERASED_BYTE; self.sector_size as usize];
        self.file
            .seek(SeekFrom::Start(u64::from(addr)))
            .map_err(|_| SimFlashError::Io)?;
        self.file.write_all(&erased).map_err(|_| SimFlashError::Io)
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), SimFlashError> {
        if !addr.is_multiple_of(self.write_align)
            || !data.len().is_multiple_of(self.write_align as usize)
        {
            return Err(SimFlashError::BadAddress);
        }
        let mut current = vec![0u8; data.len()];
        self.read(addr, &mut current)?;
        for (c, d) in current.iter_mut().zip(data) {
            *c &= d;
        }
        self.file
            .seek(SeekFrom::Start(u64::from(addr)))
            .map_err(|_| SimFlashError::Io)?;
        self.file.write_all(&current).map_err(|_| SimFlashError::Io)
    }
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), SimFlashError> {
        self.check(addr, buf.len())?;
        self.file
            .seek(SeekFrom::Start(u64::from(addr)))
            .map_err(|_| SimFlashError::Io)?;
        self.file.read_exact(buf).map_err(|_| SimFlashError::Io)
    }
}

/// Simulated self-test: reads the whole image (as a model load would) and
/// fails for images whose SHA-256 is listed in `failing`.
#[derive(Debug, Clone, Default)]
pub struct SimSelfTest {
    /// Images that fail their self-test.
    pub failing: Vec<Sha256Digest>,
}

impl<F: Flash> crate::device::SelfTest<F> for SimSelfTest {
    fn run(&mut self, image: &SlotImage, reader: &mut ImageReader<'_, F>) -> bool {
        let mut buf = [0u8; 256];
        let mut offset = 0u32;
        while offset < reader.len() {
            let n = (reader.len() - offset).min(256);
            if reader.read_at(offset, &mut buf[..n as usize]).is_err() {
                return false;
            }
            offset += n;
        }
        !self.failing.contains(&image.manifest.sha256)
    }
}

/// Device facts the simulator reports.
pub const SIM_DEVICE_INFO: DeviceInfo = DeviceInfo {
    device_id: *b"edgeseg-sim-0001",
    board: "edgeseg-sim",
    runtime_abi: 1,
    firmware_version: FirmwareVersion {
        major: 0,
        minor: 1,
        patch: 0,
    },
    rx_window: 4,
};

/// A simulated device.
pub type SimDevice<F> = Device<F, SimSelfTest>;

/// Flash geometry of a simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimGeometry {
    /// Erase unit in bytes.
    pub sector_size: u32,
    /// Write unit in bytes.
    pub write_align: u32,
    /// Sectors per model slot.
    pub slot_sectors: u32,
}

impl Default for SimGeometry {
    /// 4 KiB sectors, 8-byte writes, 4 MiB slots.
    fn default() -> Self {
        SimGeometry {
            sector_size: 4096,
            write_align: 8,
            slot_sectors: 1024,
        }
    }
}

impl SimGeometry {
    /// Sectors of the whole flash (two status sectors + two slots).
    pub fn total_sectors(&self) -> u32 {
        2 + 2 * self.slot_sectors
    }
}

/// Opens (or creates) a file-backed simulated device at `path`: what
/// `edgeseg-tools device-sim` runs. The model survives restarts.
pub fn open_file_device(
    path: &std::path::Path,
    geometry: SimGeometry,
    key: PinnedKey,
) -> Result<SimDevice<FileFlash>, SimError> {
    let flash = FileFlash::open(
        path,
        geometry.sector_size,
        geometry.write_align,
        geometry.total_sectors(),
    )
    .map_err(|e| SimError(format!("{}: {e}", path.display())))?;
    sim_device(flash, geometry.slot_sectors, key, SimSelfTest::default())
}

/// Powers on a simulated device on `flash` with the standard layout.
pub fn sim_device<F: Flash>(
    flash: F,
    slot_sectors: u32,
    key: PinnedKey,
    self_test: SimSelfTest,
) -> Result<SimDevice<F>, SimError> {
    let layout = FlashLayout::new(
        flash.sector_size(),
        flash.write_align(),
        0,
        slot_sectors,
        flash.capacity(),
    )
    .map_err(|e| SimError(e.to_string()))?;
    let store = ModelStore::open(flash, layout, key).map_err(|e| SimError(e.to_string()))?;
    Device::power_on(store, self_test, SIM_DEVICE_INFO).map_err(|e| SimError(e.to_string()))
}

/// Reboots a simulated device: RAM state is lost, flash is kept.
pub fn reboot<F: Flash>(device: SimDevice<F>) -> Result<SimDevice<F>, SimError> {
    let (store, self_test) = device.power_off();
    let layout = *store.layout();
    let key = *store.key();
    let flash = store.into_flash();
    let store = ModelStore::open(flash, layout, key)
        .map_err(|e: StoreError<F::Error>| SimError(e.to_string()))?;
    Device::power_on(store, self_test, SIM_DEVICE_INFO).map_err(|e| SimError(e.to_string()))
}

/// Simulator setup error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulator: {0}")]
pub struct SimError(pub String);

/// Serves `device` over `port` until `stop` is set or the port closes.
/// `port` reads should time out (e.g. 10–100 ms) so that `stop` is polled.
pub fn run_device<F: Flash, P: Read + Write>(
    device: &mut SimDevice<F>,
    port: &mut P,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let n = match port.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        device.receive_bytes(&buf[..n], |frame| out.extend_from_slice(frame));
        if !out.is_empty() {
            port.write_all(&out)?;
            port.flush()?;
            out.clear();
        }
    }
    Ok(())
}

/// Deterministic pseudo-random numbers (SplitMix64) for fault injection.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n) (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// Line faults of a [`SimLink`], applied per frame in both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFaults {
    /// Bit error rate (probability of each bit flipping).
    pub bit_error_rate: f64,
    /// Probability a frame is dropped.
    pub drop: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is cut short.
    pub truncate: f64,
    /// Probability a device reply is held back and delivered after the next one.
    pub reorder: f64,
    /// Host frames after which the link disconnects (`None` = never).
    pub disconnect_after_frames: Option<u64>,
}

/// Counters of a [`SimLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames sent by the host.
    pub host_frames: u64,
    /// Frames dropped (both directions).
    pub dropped: u64,
    /// Bits flipped (both directions).
    pub bits_flipped: u64,
    /// Frames duplicated.
    pub duplicated: u64,
    /// Frames truncated.
    pub truncated: u64,
    /// Replies reordered.
    pub reordered: u64,
    /// Bytes the host sent (before faults).
    pub host_bytes: u64,
    /// Bytes the device sent (before faults).
    pub device_bytes: u64,
}

/// In-process link between a host [`Transport`] and a simulated device,
/// with seeded line faults. No threads and no real waiting: `recv` returns 0
/// (timeout) at once when nothing is queued, so tests are deterministic.
pub struct SimLink<F: Flash> {
    device: SimDevice<F>,
    /// Bytes on their way to the host, with their virtual arrival time.
    to_host: VecDeque<(Duration, u8)>,
    held_reply: Option<Vec<u8>>,
    faults: LinkFaults,
    rng: SplitMix64,
    disconnected: bool,
    line: Option<LineModel>,
    clock: LineClock,
    /// Counters.
    pub stats: LinkStats,
}

/// Virtual clocks of a full-duplex line (see [`LineModel`]).
#[derive(Debug, Clone, Copy, Default)]
struct LineClock {
    /// The host's current time (advances when it waits for bytes).
    host_now: Duration,
    /// When the host→device direction is free again.
    host_line_free: Duration,
    /// When the device has finished processing its last frame.
    device_free: Duration,
    /// When the device→host direction is free again.
    device_line_free: Duration,
}

/// Timing model of a full-duplex UART line for [`SimLink`] (virtual time,
/// nothing sleeps): each byte costs 10 bit times (8N1) in its direction; the
/// device handles frames in arrival order, spending `device_processing` on
/// each frame it answers, and each reply is delayed by `reply_delay`; the host's clock
/// advances when it waits for a reply, by the full timeout if none comes.
/// Host writes do not block, so a windowed host overlaps sending and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineModel {
    /// Baud rate.
    pub baud: u32,
    /// Device processing per answered frame (serialized: e.g. a flash write).
    pub device_processing: Duration,
    /// Extra delay before each reply reaches the host (pipelined: e.g. a USB
    /// adapter's latency timer).
    pub reply_delay: Duration,
}

impl LineModel {
    fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 10.0 / f64::from(self.baud.max(1)))
    }
}

impl<F: Flash> SimLink<F> {
    /// Connects to `device` with `faults` seeded by `seed`.
    pub fn new(device: SimDevice<F>, faults: LinkFaults, seed: u64) -> Self {
        SimLink {
            device,
            to_host: VecDeque::new(),
            held_reply: None,
            faults,
            rng: SplitMix64::new(seed),
            disconnected: false,
            line: None,
            clock: LineClock::default(),
            stats: LinkStats::default(),
        }
    }

    /// Adds a UART timing model; [`Self::line_time`] then reports virtual time.
    pub fn with_line_model(mut self, line: LineModel) -> Self {
        self.line = Some(line);
        self
    }

    /// Virtual time spent on the line under the [`LineModel`] (zero without one).
    pub fn line_time(&self) -> Duration {
        self.clock.host_now.max(self.clock.host_line_free)
    }

    /// Disconnects and returns the device.
    pub fn into_device(self) -> SimDevice<F> {
        self.device
    }

    /// The device.
    pub fn device(&self) -> &SimDevice<F> {
        &self.device
    }

    /// Applies faults to one frame; returns the copies to deliver.
    fn corrupt(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        if self.rng.chance(self.faults.drop) {
            self.stats.dropped += 1;
            return Vec::new();
        }
        let mut bytes = frame.to_vec();
        if self.rng.chance(self.faults.truncate) && bytes.len() > 1 {
            let keep = self.rng.below(bytes.len() as u64) as usize;
            bytes.truncate(keep);
            self.stats.truncated += 1;
        }
        if self.faults.bit_error_rate > 0.0 {
            let bits = bytes.len() as u64 * 8;
            // Geometric skipping: distance to the next flipped bit.
            let mut pos = 0u64;
            loop {
                let u = self.rng.next_f64().max(f64::MIN_POSITIVE);
                let skip = (u.ln() / (1.0 - self.faults.bit_error_rate).ln()).floor();
                if !skip.is_finite() || skip >= (bits - pos.min(bits)) as f64 {
                    break;
                }
                pos += skip as u64;
                if pos >= bits {
                    break;
                }
                bytes[(pos / 8) as usize] ^= 1 << (pos % 8);
                self.stats.bits_flipped += 1;
                pos += 1;
            }
        }
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            return vec![bytes.clone(), bytes];
        }
        vec![bytes]
    }
}

impl<F: Flash> Transport for SimLink<F> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        if self.disconnected {
            return Err(TransportError::Disconnected);
        }
        if let Some(limit) = self.faults.disconnect_after_frames {
            if self.stats.host_frames >= limit {
                self.disconnected = true;
                return Err(TransportError::Disconnected);
            }
        }
        self.stats.host_frames += 1;
        self.stats.host_bytes += bytes.len() as u64;
        let mut arrival = Duration::ZERO;
        if let Some(line) = self.line {
            let c = &mut self.clock;
            let start = c.host_now.max(c.host_line_free);
            c.host_line_free = start + line.wire_time(bytes.len());
            arrival = c.host_line_free;
        }
        let mut replies = Vec::new();
        for copy in self.corrupt(bytes) {
            self.device
                .receive_bytes(&copy, |frame| replies.push(frame.to_vec()));
        }
        for reply in replies {
            self.stats.device_bytes += reply.len() as u64;
            let mut reply_arrival = Duration::ZERO;
            if let Some(line) = self.line {
                let c = &mut self.clock;
                c.device_free = arrival.max(c.device_free) + line.device_processing;
                let start = c.device_free.max(c.device_line_free);
                c.device_line_free = start + line.wire_time(reply.len());
                reply_arrival = c.device_line_free + line.reply_delay;
            }
            for copy in self.corrupt(&reply) {
                if self.held_reply.is_none() && self.rng.chance(self.faults.reorder) {
                    self.stats.reordered += 1;
                    self.held_reply = Some(copy);
                    continue;
                }
                self.to_host
                    .extend(copy.iter().map(|&b| (reply_arrival, b)));
                if let Some(held) = self.held_reply.take() {
                    self.to_host
                        .extend(held.iter().map(|&b| (reply_arrival, b)));
                }
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if self.disconnected {
            return Err(TransportError::Disconnected);
        }
        if self.line.is_some() {
            let c = &mut self.clock;
            match self.to_host.front() {
                Some(&(arrival, _)) if arrival <= c.host_now + timeout => {
                    c.host_now = c.host_now.max(arrival)
                }
                _ => {
                    c.host_now += timeout;
                    return Ok(0);
                }
            }
        }
        let now = self.clock.host_now;
        let mut n = 0;
        while n < buf.len() {
            match self.to_host.front() {
                Some(&(arrival, byte)) if self.line.is_none() || arrival <= now => {
                    buf[n] = byte;
                    n += 1;
                    self.to_host.pop_front();
                }
                _ => break,
            }
        }
        Ok(n)
    }
}

/// Creates a pseudo-terminal pair, calls `on_ready` with the path a host
/// opens as its serial port (e.g. `/dev/pts/7`), then serves `device` on the
/// other end until `stop` is set. This is what `edgeseg-tools device-sim` runs.
#[cfg(unix)]
pub fn serve_on_pty<F: Flash>(
    device: &mut SimDevice<F>,
    stop: &std::sync::atomic::AtomicBool,
    on_ready: impl FnOnce(&str),
) -> std::io::Result<()> {
    use serialport::SerialPort;
    let (mut device_end, host_end) = serialport::TTYPort::pair().map_err(std::io::Error::other)?;
    device_end
        .set_timeout(Duration::from_millis(20))
        .map_err(std::io::Error::other)?;
    let path = host_end
        .name()
        .ok_or_else(|| std::io::Error::other("pty has no name"))?;
    on_ready(&path);
    // Keep our handle on the host end open so the device end does not see EIO
    // between host connections.
    let result = run_device(device, &mut device_end, stop);
    drop(host_end);
    result
}
