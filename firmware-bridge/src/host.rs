//! Host side (`std`): byte transports, a request/response client, and the
//! resumable model upload ([`flash_image`]).

use crate::framing::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use crate::protocol::{
    Capabilities, ErrorCode, Hello, ImageManifest, Message, ModelInfo, SignatureBytes, UploadBegin,
    UploadChunk, UploadCommit, UploadPhase, UploadStatus, MAX_CHUNK_DATA,
};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Errors of a byte transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The link is gone (cable pulled, port closed, simulated disconnect).
    #[error("link disconnected")]
    Disconnected,
    /// Other I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bidirectional byte link to a device.
pub trait Transport {
    /// Sends bytes (one or more complete frames).
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError>;
    /// Receives up to `buf.len()` bytes, waiting at most `timeout`; `Ok(0)` means timeout.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        (**self).send(bytes)
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        (**self).recv(buf, timeout)
    }
}

/// A serial port transport on the `serialport` crate.
pub struct SerialTransport {
    port: Box<dyn serialport::SerialPort>,
}

impl SerialTransport {
    /// Opens `path` (e.g. `/dev/ttyUSB0`) at `baud`, 8N1, no flow control.
    pub fn open(path: &str, baud: u32) -> Result<Self, TransportError> {
        let port = serialport::new(path, baud)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        Ok(SerialTransport { port })
    }

    /// Wraps an already opened port (e.g. one end of `TTYPort::pair()`).
    pub fn from_port(port: Box<dyn serialport::SerialPort>) -> Self {
        SerialTransport { port }
    }
}

impl Transport for SerialTransport {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        use std::io::Write;
        self.port.write_all(bytes).map_err(io_to_transport)?;
        self.port.flush().map_err(io_to_transport)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        use std::io::Read;
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        match self.port.read(buf) {
            Ok(0) => Err(TransportError::Disconnected),
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(0)
            }
            Err(e) => Err(io_to_transport(e)),
        }
    }
}

fn io_to_transport(e: std::io::Error) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::NotConnected
        | std::io::ErrorKind::UnexpectedEof => TransportError::Disconnected,
        _ => TransportError::Io(e),
    }
}

/// Errors of host operations.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No reply after all retries.
    #[error("no reply to {what} after {attempts} attempts")]
    Timeout {
        /// The request.
        what: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// The device refused a request.
    #[error("device refused: {code:?}: {detail}")]
    Refused {
        /// Reason code.
        code: ErrorCode,
        /// Device's detail text.
        detail: String,
    },
    /// The device answered something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The image does not fit in a device slot.
    #[error("image of {len} bytes does not fit a {slot_size}-byte slot")]
    ImageTooLarge {
        /// Image length.
        len: usize,
        /// Slot size.
        slot_size: u32,
    },
    /// The device rebooted into another model (self-test failed; it reverted).
    #[error("device reverted to {running:?}: the new model failed its self-test")]
    Reverted {
        /// What runs now.
        running: Option<ModelInfo>,
    },
}

/// Smallest chunk the adaptive chunk sizing goes down to (before write alignment).
pub const MIN_ADAPTIVE_CHUNK: usize = 64;

/// Timeouts, retries and chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Upload chunk length (capped at the device's limit and aligned to its write unit).
    pub chunk_len: usize,
    /// Time to wait for a reply to one request.
    pub timeout: Duration,
    /// Resends of one request before giving up.
    pub retries: u32,
    /// Upload chunks in flight (capped by the device's `rx_window`); 1 = stop-and-wait.
    pub window: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            chunk_len: MAX_CHUNK_DATA,
            timeout: Duration::from_millis(500),
            retries: 8,
            window: 4,
        }
    }
}

/// Counters kept by a [`Client`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Requests re-sent after a timeout.
    pub resends: u64,
    /// Frames received that failed to decode.
    pub bad_frames: u64,
}

/// Request/response client over a [`Transport`].
pub struct Client<T: Transport> {
    transport: T,
    decoder: FrameDecoder,
    options: ClientOptions,
    inbox: VecDeque<Message>,
    capabilities: Option<Capabilities>,
    /// Counters.
    pub stats: ClientStats,
}

impl<T: Transport> Client<T> {
    /// A client with no session yet.
    pub fn new(transport: T, options: ClientOptions) -> Self {
        Client {
            transport,
            decoder: FrameDecoder::new(),
            options,
            inbox: VecDeque::new(),
            capabilities: None,
            stats: ClientStats::default(),
        }
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Capabilities from the last Hello/Reset.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// Sends one message without waiting for a reply.
    pub fn send(&mut self, message: &Message) -> Result<(), HostError> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = encode_frame(message, &mut buf)
            .map_err(|e| HostError::Protocol(format!("cannot encode: {e}")))?;
        self.stats.frames_sent += 1;
        self.transport.send(&buf[..len])?;
        Ok(())
    }

    /// Waits up to `timeout` for the next message from the device.
    pub fn recv_message(&mut self, timeout: Duration) -> Result<Option<Message>, HostError> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(Some(m));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let n = self.transport.recv(&mut buf, remaining)?;
            if n == 0 {
                return Ok(None);
            }
            let (inbox, stats) = (&mut self.inbox, &mut self.stats);
            self.decoder.feed(&buf[..n], |frame| match frame {
                Ok(m) => inbox.push_back(m),
                Err(_) => stats.bad_frames += 1,
            });
            if let Some(m) = self.inbox.pop_front() {
                return Ok(Some(m));
            }
            if remaining.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Sends `request` and waits for a reply accepted by `is_reply`, resending
    /// on timeout up to the configured retries. Device events in between are skipped.
    fn request(
        &mut self,
        what: &'static str,
        request: &Message,
        is_reply: impl Fn(&Message) -> bool,
    ) -> Result<Message, HostError> {
        let attempts = self.options.retries.saturating_add(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.resends += 1;
            }
            if let Some(reply) = self.exchange_once(request, &is_reply)? {
                return Ok(reply);
            }
        }
        Err(HostError::Timeout { what, attempts })
    }

    /// Sends `request` once and waits one timeout for an error or a reply accepted by `is_reply`.
    fn exchange_once(
        &mut self,
        request: &Message,
        is_reply: &impl Fn(&Message) -> bool,
    ) -> Result<Option<Message>, HostError> {
        self.inbox.clear();
        self.send(request)?;
        self.recv_reply(is_reply)
    }

    /// Waits one timeout for an error or a message accepted by `is_reply`, skipping others.
    fn recv_reply(
        &mut self,
        is_reply: &impl Fn(&Message) -> bool,
    ) -> Result<Option<Message>, HostError> {
        while let Some(reply) = self.recv_message(self.options.timeout)? {
            if matches!(reply, Message::Error(_)) || is_reply(&reply) {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    /// Opens a session: negotiates the protocol version and reads capabilities.
    pub fn hello(&mut self) -> Result<Capabilities, HostError> {
        let reply = self.request("Hello", &Message::Hello(Hello::current()), |m| {
            matches!(m, Message::Capabilities(_))
        })?;
        match reply {
            Message::Capabilities(caps) => {
                self.capabilities = Some(caps.clone());
                Ok(caps)
            }
            other => Err(refusal_or_protocol(other)),
        }
    }

    /// Sends an upload request; re-opens the session once if the device lost it (reboot).
    fn upload_request(
        &mut self,
        what: &'static str,
        request: &Message,
        is_reply: impl Fn(&Message) -> bool,
    ) -> Result<Message, HostError> {
        let reply = self.request(what, request, &is_reply)?;
        if is_not_negotiated(&reply) {
            self.hello()?;
            return self.request(what, request, is_reply);
        }
        Ok(reply)
    }

    /// Asks the device for its upload status.
    pub fn upload_status(&mut self) -> Result<UploadStatus, HostError> {
        expect_status(self.upload_request(
            "UploadStatusQuery",
            &Message::UploadStatusQuery,
            is_status,
        )?)
    }

    /// Reboots the device (a pending model gets its trial boot) and returns its capabilities.
    pub fn reset(&mut self) -> Result<Capabilities, HostError> {
        match self.upload_request("Reset", &Message::Reset, is_capabilities)? {
            Message::Capabilities(caps) => {
                self.capabilities = Some(caps.clone());
                Ok(caps)
            }
            other => Err(refusal_or_protocol(other)),
        }
    }
}

fn is_not_negotiated(message: &Message) -> bool {
    matches!(message, Message::Error(report) if report.code == ErrorCode::NotNegotiated)
}

fn is_status(message: &Message) -> bool {
    matches!(message, Message::UploadStatus(_))
}

fn is_capabilities(message: &Message) -> bool {
    matches!(message, Message::Capabilities(_))
}

fn refusal_or_protocol(message: Message) -> HostError {
    match message {
        Message::Error(report) => HostError::Refused {
            code: report.code,
            detail: report.detail.as_str().to_owned(),
        },
        other => HostError::Protocol(format!("unexpected reply {other:?}")),
    }
}

fn expect_status(message: Message) -> Result<UploadStatus, HostError> {
    match message {
        Message::UploadStatus(status) => Ok(status),
        other => Err(refusal_or_protocol(other)),
    }
}

/// A model image with its signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedImage {
    /// Manifest (version, length, SHA-256).
    pub manifest: ImageManifest,
    /// Ed25519 signature over the manifest's signed bytes.
    pub signature: SignatureBytes,
    /// Image bytes.
    pub bytes: Vec<u8>,
}

impl SignedImage {
    /// Hashes `bytes` and signs the manifest with `key`.
    pub fn sign(
        bytes: Vec<u8>,
        version: u32,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<Self, HostError> {
        use ed25519_dalek::Signer;
        let manifest = Self::manifest_for(&bytes, version)?;
        let signature = SignatureBytes(key.sign(&manifest.signed_bytes()).to_bytes());
        Ok(SignedImage {
            manifest,
            signature,
            bytes,
        })
    }

    /// Assembles an image from bytes, version and a detached signature made
    /// elsewhere (e.g. by `edgeseg-tools sign`) over [`ImageManifest::signed_bytes`].
    pub fn from_parts(
        bytes: Vec<u8>,
        version: u32,
        signature: [u8; 64],
    ) -> Result<Self, HostError> {
        let manifest = Self::manifest_for(&bytes, version)?;
        Ok(SignedImage {
            manifest,
            signature: SignatureBytes(signature),
            bytes,
        })
    }

    /// Checks the signature on the host before uploading (the device checks again).
    pub fn verify(&self, key: &crate::device::PinnedKey) -> Result<(), crate::device::VerifyError> {
        key.verify(&self.manifest, &self.signature)
    }

    /// Builds the manifest that must be signed for `bytes` at `version`.
    pub fn manifest_for(bytes: &[u8], version: u32) -> Result<ImageManifest, HostError> {
        let image_len = u32::try_from(bytes.len()).map_err(|_| HostError::ImageTooLarge {
            len: bytes.len(),
            slot_size: u32::MAX,
        })?;
        Ok(ImageManifest {
            version,
            image_len,
            sha256: Sha256::digest(bytes).into(),
        })
    }
}

/// Chunk size control: halves after a timeout (noisy line), doubles back after clean progress.
struct ChunkSizer {
    max: usize,
    min: usize,
    align: usize,
    current: usize,
    clean: u32,
}

impl ChunkSizer {
    fn on_timeout(&mut self) {
        self.current = (self.current / 2 / self.align * self.align).max(self.min);
        self.clean = 0;
    }

    fn on_progress(&mut self) {
        self.clean += 1;
        if self.clean >= 8 {
            self.current = (self.current * 2).min(self.max);
            self.clean = 0;
        }
    }
}

/// Sends chunks from `status.next_offset` with up to `window` chunks in flight
/// (go-back-N). The device writes only the chunk at its expected offset and
/// answers every chunk with that offset; on a gap the host rewinds to it, and
/// on a timeout it asks for the status and resumes there. Returns once every
/// byte is acknowledged, or when the device's upload changed (phase or image).
fn stream_chunks<T: Transport>(
    client: &mut Client<T>,
    image: &SignedImage,
    status: UploadStatus,
    sizer: &mut ChunkSizer,
    window: usize,
    payload_bytes_sent: &mut u64,
    progress: &mut impl FnMut(Progress),
) -> Result<UploadStatus, HostError> {
    let total = image.manifest.image_len;
    let sha256 = image.manifest.sha256;
    let ours = |s: &UploadStatus| s.phase == UploadPhase::Receiving && s.sha256 == sha256;
    let mut acked = status.next_offset;
    let mut send_at = acked;
    // End offsets of chunks sent but not yet acknowledged.
    let mut in_flight: VecDeque<u32> = VecDeque::new();
    // Non-advancing replies still expected from chunks sent before a rewind.
    let mut stale_replies = 0usize;
    let mut timeouts = 0u32;
    client.inbox.clear();
    while acked < total {
        while in_flight.len() < window && send_at < total {
            let start = send_at as usize;
            let end = start.saturating_add(sizer.current).min(image.bytes.len());
            let data = heapless::Vec::from_slice(&image.bytes[start..end])
                .map_err(|_| HostError::Protocol("chunk larger than protocol limit".into()))?;
            client.send(&Message::UploadChunk(UploadChunk {
                offset: send_at,
                data,
            }))?;
            *payload_bytes_sent += (end - start) as u64;
            send_at =
                u32::try_from(end).map_err(|_| HostError::Protocol("offset overflow".into()))?;
            in_flight.push_back(send_at);
        }
        let resync = match client.recv_reply(&is_status)? {
            None => {
                timeouts += 1;
                if timeouts > client.options.retries {
                    return Err(HostError::Timeout {
                        what: "UploadChunk",
                        attempts: timeouts,
                    });
                }
                client.stats.resends += 1;
                sizer.on_timeout();
                true
            }
            Some(Message::UploadStatus(s)) if ours(&s) => {
                if s.next_offset > acked {
                    acked = s.next_offset;
                    timeouts = 0;
                    while in_flight.front().is_some_and(|&end| end <= acked) {
                        in_flight.pop_front();
                    }
                    if send_at < acked {
                        send_at = acked;
                        in_flight.clear();
                    }
                    sizer.on_progress();
                    progress(Progress {
                        acknowledged: acked,
                        total,
                    });
                } else if s.next_offset == acked && !in_flight.is_empty() {
                    if stale_replies > 0 {
                        stale_replies -= 1;
                    } else {
                        // The chunk at `acked` was lost: go back to it. Rewinds
                        // without progress count like timeouts, so a device that
                        // never advances cannot keep the host looping.
                        timeouts += 1;
                        if timeouts > client.options.retries {
                            return Err(HostError::Timeout {
                                what: "UploadChunk",
                                attempts: timeouts,
                            });
                        }
                        stale_replies = in_flight.len().saturating_sub(2);
                        in_flight.clear();
                        send_at = acked;
                    }
                }
                // Lower offsets are stale or duplicated replies.
                false
            }
            Some(Message::UploadStatus(s)) => return Ok(s),
            Some(reply) if is_not_negotiated(&reply) => {
                client.hello()?;
                true
            }
            Some(Message::Error(report))
                if matches!(
                    report.code,
                    ErrorCode::BadChunk | ErrorCode::NoUpload | ErrorCode::Flash
                ) =>
            {
                true
            }
            Some(other) => return Err(refusal_or_protocol(other)),
        };
        if resync {
            // Ask where the device really is (it may have rebooted or rolled back).
            let s = client.upload_status()?;
            if !ours(&s) {
                return Ok(s);
            }
            acked = s.next_offset;
            send_at = acked;
            stale_replies = in_flight.len();
            in_flight.clear();
        }
    }
    Ok(UploadStatus {
        phase: UploadPhase::Receiving,
        sha256,
        next_offset: acked,
        image_len: total,
    })
}

/// Upload progress passed to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the device has acknowledged.
    pub acknowledged: u32,
    /// Image length.
    pub total: u32,
}

/// Outcome of a successful [`flash_image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashReport {
    /// The model the device now runs (the new one).
    pub running: ModelInfo,
    /// Offset the device reported at the start (0 = fresh upload, > 0 = resumed).
    pub resumed_from: u32,
    /// True if the image was already running and nothing was sent.
    pub already_installed: bool,
    /// Payload bytes sent in chunks (including resends).
    pub payload_bytes_sent: u64,
    /// Client counters.
    pub stats: ClientStats,
}

/// Reads the device's capabilities (Hello).
pub fn device_info<T: Transport>(
    transport: T,
    options: ClientOptions,
) -> Result<Capabilities, HostError> {
    Client::new(transport, options).hello()
}

/// Uploads `image`, resuming from the offset the device reports for the same
/// SHA-256, commits it, reboots the device into its trial and checks that it
/// confirmed the new model.
pub fn flash_image<T: Transport>(
    transport: T,
    image: &SignedImage,
    options: ClientOptions,
    mut progress: impl FnMut(Progress),
) -> Result<FlashReport, HostError> {
    let mut client = Client::new(transport, options);
    let caps = client.hello()?;
    let total = image.manifest.image_len;
    if u32::try_from(image.bytes.len()).ok() != Some(total) {
        return Err(HostError::Protocol(
            "manifest length does not match the image".into(),
        ));
    }
    if total > caps.slot_size {
        return Err(HostError::ImageTooLarge {
            len: image.bytes.len(),
            slot_size: caps.slot_size,
        });
    }
    if let Some(model) = caps.model.filter(|m| m.sha256 == image.manifest.sha256) {
        return Ok(FlashReport {
            running: model,
            resumed_from: total,
            already_installed: true,
            payload_bytes_sent: 0,
            stats: client.stats,
        });
    }
    let align = caps.write_align.max(1) as usize;
    let limit = options
        .chunk_len
        .min(caps.max_chunk_len as usize)
        .min(MAX_CHUNK_DATA);
    let chunk_len = (limit / align) * align;
    if chunk_len == 0 {
        return Err(HostError::Protocol(format!(
            "device write unit {align} exceeds chunk limit {limit}"
        )));
    }
    let begin = Message::UploadBegin(UploadBegin {
        manifest: image.manifest,
        signature: image.signature,
    });
    let mut status = expect_status(client.upload_request("UploadBegin", &begin, is_status)?)?;
    let ours = |s: &UploadStatus| s.sha256 == image.manifest.sha256;
    let resumed_from = if ours(&status) { status.next_offset } else { 0 };
    let mut payload_bytes_sent = 0u64;
    let min_chunk = (MIN_ADAPTIVE_CHUNK.div_ceil(align) * align).min(chunk_len);
    let mut sizer = ChunkSizer {
        max: chunk_len,
        min: min_chunk,
        align,
        current: chunk_len,
        clean: 0,
    };
    let window = options.window.clamp(1, usize::from(caps.rx_window.max(1)));
    let chunk_count = u64::from(total).div_ceil(min_chunk as u64);
    let mut steps_left = (chunk_count + 8) * (u64::from(options.retries) + 2) * 4;
    while !(status.phase == UploadPhase::Pending && ours(&status)) {
        steps_left = steps_left
            .checked_sub(1)
            .ok_or_else(|| HostError::Protocol("upload makes no progress".into()))?;
        if status.phase != UploadPhase::Receiving || !ours(&status) {
            // The device lost or replaced our upload: begin again (it resumes if it can).
            status = expect_status(client.upload_request("UploadBegin", &begin, is_status)?)?;
            continue;
        }
        progress(Progress {
            acknowledged: status.next_offset,
            total,
        });
        if status.next_offset < total {
            status = stream_chunks(
                &mut client,
                image,
                status,
                &mut sizer,
                window,
                &mut payload_bytes_sent,
                &mut progress,
            )?;
            continue;
        }
        let commit = Message::UploadCommit(UploadCommit {
            sha256: image.manifest.sha256,
        });
        let reply = client.upload_request("UploadCommit", &commit, is_status)?;
        status = match reply {
            Message::UploadStatus(s) => s,
            Message::Error(report)
                if matches!(
                    report.code,
                    ErrorCode::BadChunk | ErrorCode::NoUpload | ErrorCode::Flash
                ) =>
            {
                client.upload_status()?
            }
            other => return Err(refusal_or_protocol(other)),
        };
    }
    progress(Progress {
        acknowledged: total,
        total,
    });
    let caps = client.reset()?;
    match caps.model {
        Some(model) if model.sha256 == image.manifest.sha256 => Ok(FlashReport {
            running: model,
            resumed_from,
            already_installed: false,
            payload_bytes_sent,
            stats: client.stats,
        }),
        running => Err(HostError::Reverted { running }),
    }
}
