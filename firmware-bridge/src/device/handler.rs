//! Message handler: turns decoded frames into store operations and replies.

use super::flash::Flash;
use super::store::{BootReport, ModelStore, SelfTest, StoreError};
use crate::framing::{encode_frame, FrameDecoder, FrameError, MAX_ENCODED_LEN, MAX_FRAME_LEN};
use crate::protocol::{
    negotiate_version, truncated, Capabilities, ErrorCode, ErrorReport, FirmwareVersion,
    MaskResult, Message, MAX_CHUNK_DATA,
};
use core::fmt::Write as _;

/// Static facts about the device reported in [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Unique device id.
    pub device_id: [u8; 16],
    /// Board name.
    pub board: &'static str,
    /// Runtime ABI version.
    pub runtime_abi: u32,
    /// Firmware version.
    pub firmware_version: FirmwareVersion,
    /// Frames the UART receive path can buffer while the device writes flash (≥ 1).
    pub rx_window: u8,
}

/// The device endpoint: decoder, session state and model store.
pub struct Device<F: Flash, S: SelfTest<F>> {
    store: ModelStore<F>,
    self_test: S,
    info: DeviceInfo,
    negotiated: Option<u16>,
    decoder: FrameDecoder,
    last_boot: BootReport,
    latest_mask: Option<MaskResult>,
}

impl<F: Flash, S: SelfTest<F>> Device<F, S> {
    /// Powers the device on: boots the store (trial/confirm/revert) and waits for Hello.
    pub fn power_on(
        mut store: ModelStore<F>,
        mut self_test: S,
        info: DeviceInfo,
    ) -> Result<Self, StoreError<F::Error>> {
        let last_boot = store.boot(&mut self_test)?;
        Ok(Device {
            store,
            self_test,
            info,
            negotiated: None,
            decoder: FrameDecoder::new(),
            last_boot,
            latest_mask: None,
        })
    }

    /// The model store.
    pub fn store(&self) -> &ModelStore<F> {
        &self.store
    }

    /// Powers off, returning the store (and thus the flash).
    pub fn power_off(self) -> (ModelStore<F>, S) {
        (self.store, self.self_test)
    }

    /// Takes the newest mask result received from the host (for the display task).
    pub fn take_latest_mask(&mut self) -> Option<MaskResult> {
        self.latest_mask.take()
    }

    /// Report of the last boot.
    pub fn last_boot(&self) -> &BootReport {
        &self.last_boot
    }

    /// Capabilities with the given negotiated version.
    pub fn capabilities(&self, protocol_version: u16) -> Capabilities {
        let layout = self.store.layout();
        Capabilities {
            protocol_version,
            device_id: self.info.device_id,
            board: truncated(self.info.board),
            runtime_abi: self.info.runtime_abi,
            slot_count: 2,
            slot_size: layout.slot_size,
            max_frame_len: MAX_FRAME_LEN as u32,
            max_chunk_len: MAX_CHUNK_DATA as u32,
            write_align: layout.write_align,
            rx_window: self.info.rx_window.max(1),
            firmware_version: self.info.firmware_version,
            model: self.last_boot.running.map(|image| image.model_info()),
            security_counter: self.store.state().security_counter,
        }
    }

    /// Handles one decoded frame (or decode error); returns the reply, if any.
    pub fn handle(&mut self, frame: Result<Message, FrameError>) -> Option<Message> {
        let message = match frame {
            Ok(message) => message,
            Err(FrameError::UnknownMessageType(tag)) => {
                let mut detail = heapless::String::new();
                let _ = write!(detail, "unknown message type {tag}");
                return Some(Message::Error(ErrorReport {
                    code: ErrorCode::UnknownMessage,
                    detail,
                }));
            }
            Err(FrameError::Malformed) => {
                return Some(error(ErrorCode::UnknownMessage, "malformed message body"));
            }
            // Line noise: drop silently; the host retries on timeout.
            Err(_) => return None,
        };
        match message {
            Message::Hello(hello) => Some(match negotiate_version(&hello) {
                Some(version) => {
                    self.negotiated = Some(version);
                    Message::Capabilities(self.capabilities(version))
                }
                None => {
                    self.negotiated = None;
                    let mut detail = heapless::String::new();
                    let _ = write!(
                        detail,
                        "device speaks protocol {}..={}",
                        crate::protocol::PROTOCOL_VERSION_MIN,
                        crate::protocol::PROTOCOL_VERSION_MAX
                    );
                    Message::Error(ErrorReport {
                        code: ErrorCode::UnsupportedVersion,
                        detail,
                    })
                }
            }),
            Message::Heartbeat(beat) => Some(Message::Heartbeat(beat)),
            Message::MaskResult(mask) => {
                // Latest-result mailbox: a newer mask replaces an undrawn older one.
                self.latest_mask = Some(mask);
                None
            }
            Message::UploadBegin(_)
            | Message::UploadChunk(_)
            | Message::UploadCommit(_)
            | Message::UploadAbort
            | Message::UploadStatusQuery
            | Message::Reset
                if self.negotiated.is_none() =>
            {
                Some(error(ErrorCode::NotNegotiated, "send Hello first"))
            }
            Message::UploadBegin(begin) => {
                Some(self.reply(|s| s.begin_upload(&begin.manifest, &begin.signature)))
            }
            Message::UploadChunk(chunk) => {
                Some(self.reply(|s| s.write_chunk(chunk.offset, &chunk.data)))
            }
            Message::UploadCommit(commit) => Some(self.reply(|s| s.commit_upload(&commit.sha256))),
            Message::UploadAbort => Some(self.reply(|s| s.abort_upload())),
            Message::UploadStatusQuery => Some(Message::UploadStatus(self.store.upload_status())),
            Message::Reset => Some(match self.store.boot(&mut self.self_test) {
                Ok(report) => {
                    self.last_boot = report;
                    Message::Capabilities(
                        self.capabilities(
                            self.negotiated
                                .unwrap_or(crate::protocol::PROTOCOL_VERSION_MIN),
                        ),
                    )
                }
                Err(e) => store_error(&e),
            }),
            Message::Capabilities(_)
            | Message::FrameChunk(_)
            | Message::Prompt(_)
            | Message::Log(_)
            | Message::UploadStatus(_)
            | Message::Error(_) => Some(error(
                ErrorCode::Unsupported,
                "device does not accept this message",
            )),
        }
    }

    fn reply(
        &mut self,
        op: impl FnOnce(
            &mut ModelStore<F>,
        ) -> Result<crate::protocol::UploadStatus, StoreError<F::Error>>,
    ) -> Message {
        match op(&mut self.store) {
            Ok(status) => Message::UploadStatus(status),
            Err(e) => store_error(&e),
        }
    }

    /// Feeds received bytes; every reply frame is passed to `send`.
    pub fn receive_bytes(&mut self, bytes: &[u8], mut send: impl FnMut(&[u8])) {
        for &byte in bytes {
            if let Some(frame) = self.decoder.push_byte(byte) {
                if let Some(reply) = self.handle(frame) {
                    let mut out = [0u8; MAX_FRAME_LEN];
                    match encode_frame(&reply, &mut out) {
                        Ok(len) => send(&out[..len]),
                        Err(_) => bridge_log!(
                            error,
                            "reply does not fit a frame ({} bytes max)",
                            MAX_ENCODED_LEN
                        ),
                    }
                }
            }
        }
    }
}

fn error(code: ErrorCode, detail: &str) -> Message {
    Message::Error(ErrorReport::new(code, detail))
}

fn store_error<E: core::fmt::Debug>(e: &StoreError<E>) -> Message {
    let code = match e {
        StoreError::Flash(_) | StoreError::RecordTooLarge => ErrorCode::Flash,
        StoreError::ImageTooLarge => ErrorCode::ImageTooLarge,
        StoreError::VersionRollback => ErrorCode::VersionRollback,
        StoreError::Signature(_) => ErrorCode::BadSignature,
        StoreError::HashMismatch => ErrorCode::HashMismatch,
        StoreError::NoUpload => ErrorCode::NoUpload,
        StoreError::BadChunk | StoreError::Incomplete => ErrorCode::BadChunk,
    };
    let mut detail = heapless::String::new();
    let _ = write!(detail, "{e}");
    Message::Error(ErrorReport { code, detail })
}
