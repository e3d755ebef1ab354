//! A/B model slots with write-once status records.
//!
//! Every state change appends one complete [`PersistentState`] snapshot as a
//! new record (sequence number + CRC) in a ping-pong pair of status sectors.
//! A record location is written once between erases; the valid record with
//! the highest sequence number is the state. A torn or failed record write
//! leaves an invalid record that is skipped, so the previous state stays in
//! force: every step either happened completely or not at all.

use super::flash::{Flash, FlashLayout, ERASED_BYTE};
use super::verify::{PinnedKey, VerifyError};
use crate::framing::FRAME_CRC;
use crate::protocol::{
    ImageManifest, ModelInfo, Sha256Digest, SignatureBytes, UploadPhase, UploadStatus,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const RECORD_MAGIC: u32 = 0x4553_5231; // "ESR1"
const RECORD_HEADER: usize = 6; // magic u32 + body length u16
const MAX_RECORD_LEN: usize = 512;
const READ_CHUNK: usize = 256;

/// An image stored in a slot, described by its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotImage {
    /// Slot index (0 = A, 1 = B).
    pub slot: u8,
    /// Signed manifest of the image.
    pub manifest: ImageManifest,
}

impl SlotImage {
    /// The protocol view of this image.
    pub fn model_info(&self) -> ModelInfo {
        ModelInfo {
            slot: self.slot,
            version: self.manifest.version,
            sha256: self.manifest.sha256,
        }
    }
}

/// An upload in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// Target slot (never the active one).
    pub slot: u8,
    /// Signed manifest from `UploadBegin`.
    pub manifest: ImageManifest,
    /// Signature from `UploadBegin`.
    pub signature: SignatureBytes,
    /// Bytes known durable: everything before this offset is written (sector-aligned or the image end).
    pub checkpoint: u32,
}

/// The persistent device state; each record holds one complete copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersistentState {
    /// Lowest model version accepted.
    pub security_counter: u32,
    /// The confirmed model.
    pub active: Option<SlotImage>,
    /// Upload in progress.
    pub upload: Option<UploadProgress>,
    /// Verified image awaiting its trial boot.
    pub pending: Option<SlotImage>,
    /// Image whose trial boot started but was not confirmed yet.
    pub trial: Option<SlotImage>,
}

#[derive(Serialize, Deserialize)]
struct StateRecord {
    seq: u32,
    state: PersistentState,
}

/// Errors of the model store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError<E> {
    /// A flash operation failed (the step did not take effect).
    Flash(E),
    /// Image length is zero or larger than a slot.
    ImageTooLarge,
    /// Version lower than the security counter.
    VersionRollback,
    /// Signature or key check failed.
    Signature(VerifyError),
    /// Slot contents do not hash to the manifest's SHA-256.
    HashMismatch,
    /// No upload in progress, or it is for another image.
    NoUpload,
    /// Chunk beyond the image end, empty, or misaligned.
    BadChunk,
    /// Commit before all bytes arrived.
    Incomplete,
    /// A state record did not fit its slot (layout too small).
    RecordTooLarge,
}

impl<E: core::fmt::Debug> core::fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::Flash(e) => write!(f, "flash error: {e:?}"),
            StoreError::ImageTooLarge => f.write_str("image empty or larger than a slot"),
            StoreError::VersionRollback => f.write_str("version lower than security counter"),
            StoreError::Signature(e) => write!(f, "signature rejected: {e}"),
            StoreError::HashMismatch => f.write_str("image SHA-256 does not match manifest"),
            StoreError::NoUpload => f.write_str("no matching upload in progress"),
            StoreError::BadChunk => f.write_str("chunk empty, misaligned or beyond image end"),
            StoreError::Incomplete => f.write_str("upload incomplete"),
            StoreError::RecordTooLarge => f.write_str("status record does not fit"),
        }
    }
}

/// What happened during [`ModelStore::boot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEvent {
    /// Booted the confirmed model; nothing pending.
    Normal,
    /// The pending model passed verification and self-test and is now confirmed.
    Upgraded,
    /// The pending model failed verification or self-test; previous model kept.
    RevertedSelfTest,
    /// A trial boot was interrupted (crash/power loss); previous model kept.
    RevertedInterruptedTrial,
}

/// Result of a boot: the verified model that runs (if any) and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootReport {
    /// The model running now; `None` if no verified model exists.
    pub running: Option<SlotImage>,
    /// Event.
    pub event: BootEvent,
}

/// Read access to one slot's image bytes, handed to the self-test.
pub struct ImageReader<'a, F: Flash> {
    flash: &'a mut F,
    base: u32,
    len: u32,
}

impl<F: Flash> ImageReader<'_, F> {
    /// Image length.
    pub fn len(&self) -> u32 {
        self.len
    }
    /// True if the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Reads image bytes at `offset`; fails if the range leaves the image.
    pub fn read_at(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ReadOutOfRange> {
        let len = u32::try_from(buf.len()).map_err(|_| ReadOutOfRange)?;
        let end = offset.checked_add(len).ok_or(ReadOutOfRange)?;
        if end > self.len {
            return Err(ReadOutOfRange);
        }
        self.flash
            .read(self.base + offset, buf)
            .map_err(|_| ReadOutOfRange)
    }
}

/// A read outside the image or a failed flash read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutOfRange;

/// First-boot self-test: runs the model on a golden input and checks the output.
pub trait SelfTest<F: Flash> {
    /// Returns true if the image works.
    fn run(&mut self, image: &SlotImage, reader: &mut ImageReader<'_, F>) -> bool;
}

impl<F: Flash, T: FnMut(&SlotImage, &mut ImageReader<'_, F>) -> bool> SelfTest<F> for T {
    fn run(&mut self, image: &SlotImage, reader: &mut ImageReader<'_, F>) -> bool {
        self(image, reader)
    }
}

/// The device's model store: A/B slots, status log, upload and boot logic.
pub struct ModelStore<F: Flash> {
    flash: F,
    layout: FlashLayout,
    key: PinnedKey,
    state: PersistentState,
    seq: u32,
    /// Status sector and record index where the next record goes.
    next_record: (u32, u32),
    /// Next upload offset in RAM (>= the durable checkpoint).
    upload_next: u32,
}

impl<F: Flash> ModelStore<F> {
    /// Opens the store: scans the status sectors and restores the newest valid state.
    pub fn open(
        mut flash: F,
        layout: FlashLayout,
        key: PinnedKey,
    ) -> Result<Self, StoreError<F::Error>> {
        if usize::try_from(layout.record_len).map_or(true, |l| l > MAX_RECORD_LEN) {
            return Err(StoreError::RecordTooLarge);
        }
        let mut best: Option<(u32, u32, PersistentState)> = None; // (seq, sector, state)
        let mut last_used = [None::<u32>; 2];
        let mut buf = [0u8; MAX_RECORD_LEN];
        let record_len = layout.record_len as usize;
        for sector in 0..2u32 {
            for index in 0..layout.records_per_sector() {
                let rec = &mut buf[..record_len];
                flash
                    .read(layout.record_addr(sector, index), rec)
                    .map_err(StoreError::Flash)?;
                if rec.iter().all(|&b| b == ERASED_BYTE) {
                    continue;
                }
                last_used[sector as usize] = Some(index);
                if let Some(record) = parse_record(rec) {
                    if best.as_ref().is_none_or(|(seq, _, _)| record.seq > *seq) {
                        best = Some((record.seq, sector, record.state));
                    }
                }
            }
        }
        let (seq, sector, state) = best.unwrap_or((0, 0, PersistentState::default()));
        let next_index = last_used[sector as usize].map_or(0, |i| i + 1);
        let upload_next = state.upload.map_or(0, |u| u.checkpoint);
        Ok(ModelStore {
            flash,
            layout,
            key,
            state,
            seq,
            next_record: (sector, next_index),
            upload_next,
        })
    }

    /// The current persistent state.
    pub fn state(&self) -> &PersistentState {
        &self.state
    }

    /// The flash layout.
    pub fn layout(&self) -> &FlashLayout {
        &self.layout
    }

    /// The pinned signing key.
    pub fn key(&self) -> &PinnedKey {
        &self.key
    }

    /// Gives the flash back (e.g. to simulate a power cycle).
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Mutable access to the flash (simulation and tests).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Appends a record with `new_state`; on success it becomes the state.
    fn commit_state(&mut self, new_state: PersistentState) -> Result<(), StoreError<F::Error>> {
        let seq = self.seq.wrapping_add(1);
        let mut buf = [ERASED_BYTE; MAX_RECORD_LEN];
        let record_len = self.layout.record_len as usize;
        let body_len = postcard::to_slice(
            &StateRecord {
                seq,
                state: new_state,
            },
            &mut buf[RECORD_HEADER..record_len - 4],
        )
        .map_err(|_| StoreError::RecordTooLarge)?
        .len();
        let body_len_u16 = u16::try_from(body_len).map_err(|_| StoreError::RecordTooLarge)?;
        buf[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf[4..6].copy_from_slice(&body_len_u16.to_le_bytes());
        let crc_at = RECORD_HEADER + body_len;
        let crc = FRAME_CRC.checksum(&buf[..crc_at]);
        buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());

        let (mut sector, mut index) = self.next_record;
        if index >= self.layout.records_per_sector() {
            sector = 1 - sector;
            index = 0;
            self.flash
                .erase_sector(self.layout.record_addr(sector, 0))
                .map_err(StoreError::Flash)?;
        }
        // Whatever happens to this write, the location is used: never rewrite it.
        self.next_record = (sector, index + 1);
        self.flash
            .write(self.layout.record_addr(sector, index), &buf[..record_len])
            .map_err(StoreError::Flash)?;
        self.seq = seq;
        self.state = new_state;
        Ok(())
    }

    fn other_slot(&self) -> u8 {
        match self.state.active {
            Some(active) => 1 - active.slot,
            None => 0,
        }
    }

    /// Checks a manifest + signature before any flash write: size, version, signature.
    pub fn check_manifest(
        &self,
        manifest: &ImageManifest,
        signature: &SignatureBytes,
    ) -> Result<(), StoreError<F::Error>> {
        if manifest.image_len == 0 || manifest.image_len > self.layout.slot_size {
            return Err(StoreError::ImageTooLarge);
        }
        if manifest.version < self.state.security_counter {
            return Err(StoreError::VersionRollback);
        }
        self.key
            .verify(manifest, signature)
            .map_err(StoreError::Signature)
    }

    /// Starts an upload, or resumes the one in progress if the manifest matches.
    pub fn begin_upload(
        &mut self,
        manifest: &ImageManifest,
        signature: &SignatureBytes,
    ) -> Result<UploadStatus, StoreError<F::Error>> {
        self.check_manifest(manifest, signature)?;
        if let Some(upload) = self.state.upload {
            if upload.manifest == *manifest && upload.signature == *signature {
                bridge_log!(info, "upload resumed at {}", self.upload_next);
                return Ok(self.upload_status());
            }
        }
        if self.state.pending.is_some_and(|p| p.manifest == *manifest) {
            return Ok(self.upload_status());
        }
        let slot = self.other_slot();
        let mut next = self.state;
        next.upload = Some(UploadProgress {
            slot,
            manifest: *manifest,
            signature: *signature,
            checkpoint: 0,
        });
        next.pending = None;
        self.commit_state(next)?;
        self.upload_next = 0;
        bridge_log!(info, "upload started into slot {}", slot);
        Ok(self.upload_status())
    }

    /// Writes a chunk if `offset` is the next expected offset; otherwise ignores it.
    /// Always returns the resulting status so the host can follow `next_offset`.
    pub fn write_chunk(
        &mut self,
        offset: u32,
        data: &[u8],
    ) -> Result<UploadStatus, StoreError<F::Error>> {
        let upload = self.state.upload.ok_or(StoreError::NoUpload)?;
        if offset != self.upload_next {
            return Ok(self.upload_status());
        }
        let len = u32::try_from(data.len()).map_err(|_| StoreError::BadChunk)?;
        let end = offset.checked_add(len).ok_or(StoreError::BadChunk)?;
        let align = self.layout.write_align;
        if len == 0
            || end > upload.manifest.image_len
            || (end != upload.manifest.image_len && len % align != 0)
        {
            return Err(StoreError::BadChunk);
        }
        let base = self.layout.slot_base[usize::from(upload.slot)];
        let sector = self.layout.sector_size;
        if let Err(e) = self.program_chunk(base, offset, data) {
            // Partially programmed: resume from the durable checkpoint, whose sector gets erased again.
            self.upload_next = upload.checkpoint;
            return Err(StoreError::Flash(e));
        }
        self.upload_next = end;
        let checkpoint = if end == upload.manifest.image_len {
            end
        } else {
            (end / sector) * sector
        };
        if checkpoint > upload.checkpoint {
            let mut next = self.state;
            next.upload = Some(UploadProgress {
                checkpoint,
                ..upload
            });
            if let Err(e) = self.commit_state(next) {
                // Not durable: resume from the old checkpoint (its sector gets erased again).
                self.upload_next = upload.checkpoint;
                return Err(e);
            }
        }
        Ok(self.upload_status())
    }

    /// Erases every sector whose first byte the chunk writes, then programs the
    /// chunk (the last partial write unit padded with erased bytes).
    fn program_chunk(&mut self, base: u32, offset: u32, data: &[u8]) -> Result<(), F::Error> {
        let sector = self.layout.sector_size;
        let align = self.layout.write_align as usize;
        let end = offset + data.len() as u32; // checked by the caller
        let mut sector_start = offset.div_ceil(sector) * sector;
        while sector_start < end {
            self.flash.erase_sector(base + sector_start)?;
            sector_start += sector;
        }
        let aligned_len = data.len() / align * align;
        if aligned_len > 0 {
            self.flash.write(base + offset, &data[..aligned_len])?;
        }
        if aligned_len < data.len() {
            // align <= record_len <= MAX_RECORD_LEN, checked in `open`.
            let mut tail = [ERASED_BYTE; MAX_RECORD_LEN];
            let rest = &data[aligned_len..];
            tail[..rest.len()].copy_from_slice(rest);
            self.flash
                .write(base + offset + aligned_len as u32, &tail[..align])?;
        }
        Ok(())
    }

    /// Verifies the complete upload (SHA-256 over the slot, signature, version) and marks it pending.
    pub fn commit_upload(
        &mut self,
        sha256: &Sha256Digest,
    ) -> Result<UploadStatus, StoreError<F::Error>> {
        let upload = match self.state.upload {
            Some(u) if u.manifest.sha256 == *sha256 => u,
            _ => {
                // Committing again after a lost reply: report the pending image.
                if self
                    .state
                    .pending
                    .is_some_and(|p| p.manifest.sha256 == *sha256)
                {
                    return Ok(self.upload_status());
                }
                return Err(StoreError::NoUpload);
            }
        };
        if upload.checkpoint != upload.manifest.image_len {
            return Err(StoreError::Incomplete);
        }
        let image = SlotImage {
            slot: upload.slot,
            manifest: upload.manifest,
        };
        let verdict = self
            .check_manifest(&upload.manifest, &upload.signature)
            .and_then(|()| self.verify_slot(&image));
        let mut next = self.state;
        next.upload = None;
        match verdict {
            Ok(()) => {
                next.pending = Some(image);
                self.commit_state(next)?;
                bridge_log!(info, "image verified, pending in slot {}", image.slot);
                Ok(self.upload_status())
            }
            Err(e) => {
                bridge_log!(warn, "upload rejected at commit");
                self.commit_state(next)?;
                Err(e)
            }
        }
    }

    /// Drops the upload in progress (and any pending image).
    pub fn abort_upload(&mut self) -> Result<UploadStatus, StoreError<F::Error>> {
        if self.state.upload.is_some() || self.state.pending.is_some() {
            let mut next = self.state;
            next.upload = None;
            next.pending = None;
            self.commit_state(next)?;
        }
        Ok(self.upload_status())
    }

    /// Upload status as reported to the host.
    pub fn upload_status(&self) -> UploadStatus {
        if let Some(u) = self.state.upload {
            UploadStatus {
                phase: UploadPhase::Receiving,
                sha256: u.manifest.sha256,
                next_offset: self.upload_next,
                image_len: u.manifest.image_len,
            }
        } else if let Some(p) = self.state.pending {
            UploadStatus {
                phase: UploadPhase::Pending,
                sha256: p.manifest.sha256,
                next_offset: p.manifest.image_len,
                image_len: p.manifest.image_len,
            }
        } else {
            UploadStatus {
                phase: UploadPhase::Idle,
                sha256: [0; 32],
                next_offset: 0,
                image_len: 0,
            }
        }
    }

    /// Recomputes SHA-256 over the image in its slot and compares with the manifest.
    pub fn verify_slot(&mut self, image: &SlotImage) -> Result<(), StoreError<F::Error>> {
        let digest = self.hash_slot(image.slot, image.manifest.image_len)?;
        if digest == image.manifest.sha256 {
            Ok(())
        } else {
            Err(StoreError::HashMismatch)
        }
    }

    /// SHA-256 of the first `len` bytes of `slot`.
    pub fn hash_slot(&mut self, slot: u8, len: u32) -> Result<Sha256Digest, StoreError<F::Error>> {
        if len > self.layout.slot_size || slot > 1 {
            return Err(StoreError::ImageTooLarge);
        }
        let base = self.layout.slot_base[usize::from(slot)];
        let mut hasher = Sha256::new();
        let mut buf = [0u8; READ_CHUNK];
        let mut offset = 0u32;
        while offset < len {
            let n = (len - offset).min(READ_CHUNK as u32);
            let part = &mut buf[..n as usize];
            self.flash
                .read(base + offset, part)
                .map_err(StoreError::Flash)?;
            hasher.update(&*part);
            offset += n;
        }
        Ok(hasher.finalize().into())
    }

    /// Boots: resolves an interrupted trial, gives a pending image its trial
    /// (verify, self-test, confirm or revert), then verifies the active image.
    pub fn boot<S: SelfTest<F>>(
        &mut self,
        self_test: &mut S,
    ) -> Result<BootReport, StoreError<F::Error>> {
        let mut event = BootEvent::Normal;
        if self.state.trial.is_some() {
            let mut next = self.state;
            next.trial = None;
            self.commit_state(next)?;
            bridge_log!(warn, "interrupted trial boot: reverted");
            event = BootEvent::RevertedInterruptedTrial;
        }
        if let Some(pending) = self.state.pending {
            let mut next = self.state;
            next.pending = None;
            next.trial = Some(pending);
            self.commit_state(next)?;
            let ok = self.verify_slot(&pending).is_ok() && {
                let base = self.layout.slot_base[usize::from(pending.slot)];
                let mut reader = ImageReader {
                    flash: &mut self.flash,
                    base,
                    len: pending.manifest.image_len,
                };
                self_test.run(&pending, &mut reader)
            };
            let mut next = self.state;
            next.trial = None;
            if ok {
                next.active = Some(pending);
                next.security_counter = next.security_counter.max(pending.manifest.version);
                self.commit_state(next)?;
                bridge_log!(
                    info,
                    "model confirmed, version {}",
                    pending.manifest.version
                );
                event = BootEvent::Upgraded;
            } else {
                self.commit_state(next)?;
                bridge_log!(
                    warn,
                    "pending model failed verification or self-test: reverted"
                );
                event = BootEvent::RevertedSelfTest;
            }
        }
        let active = self.state.active;
        let running = match active {
            Some(active) if self.verify_slot(&active).is_ok() => Some(active),
            Some(_) => {
                bridge_log!(error, "active model fails verification");
                None
            }
            None => None,
        };
        self.upload_next = self.state.upload.map_or(0, |u| u.checkpoint);
        Ok(BootReport { running, event })
    }
}

fn parse_record(rec: &[u8]) -> Option<StateRecord> {
    let magic = u32::from_le_bytes(rec.get(..4)?.try_into().ok()?);
    if magic != RECORD_MAGIC {
        return None;
    }
    let body_len = usize::from(u16::from_le_bytes(rec.get(4..6)?.try_into().ok()?));
    let crc_at = RECORD_HEADER.checked_add(body_len)?;
    let crc = u32::from_le_bytes(rec.get(crc_at..crc_at.checked_add(4)?)?.try_into().ok()?);
    if FRAME_CRC.checksum(rec.get(..crc_at)?) != crc {
        return None;
    }
    match postcard::take_from_bytes::<StateRecord>(rec.get(RECORD_HEADER..crc_at)?) {
        Ok((record, [])) => Some(record),
        _ => None,
    }
}
