//! Shared helpers for the fault and authenticity tests.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use edgeseg_bridge::device::{
    BootEvent, BootReport, FlashLayout, ModelStore, PinnedKey, StoreError,
};
use edgeseg_bridge::host::SignedImage;
use edgeseg_bridge::protocol::UploadPhase;
use edgeseg_bridge::sim::{MemFlash, SimFlashError, SimSelfTest, SplitMix64};

/// Flash geometry of a test device.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub sector: u32,
    pub align: u32,
    pub slot_sectors: u32,
}

pub const DEFAULT_GEOMETRY: Geometry = Geometry {
    sector: 1024,
    align: 8,
    slot_sectors: 8,
};

impl Geometry {
    pub fn flash(&self) -> MemFlash {
        MemFlash::new(self.sector, self.align, 2 + 2 * self.slot_sectors)
    }
    pub fn layout(&self) -> FlashLayout {
        FlashLayout::new(
            self.sector,
            self.align,
            0,
            self.slot_sectors,
            self.sector * (2 + 2 * self.slot_sectors),
        )
        .expect("valid layout")
    }
    pub fn slot_size(&self) -> u32 {
        self.sector * self.slot_sectors
    }
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

pub fn other_signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x17; 32])
}

pub fn pinned_key() -> PinnedKey {
    PinnedKey::from_bytes(&signing_key().verifying_key().to_bytes()).expect("valid key")
}

/// A signed pseudo-random image.
pub fn image(len: usize, version: u32, seed: u64) -> SignedImage {
    let mut rng = SplitMix64::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    SignedImage::sign(bytes, version, &signing_key()).expect("sign")
}

pub type Store = ModelStore<MemFlash>;
pub type Error = StoreError<SimFlashError>;

/// A device whose store can lose power at any flash operation.
pub struct Harness {
    store: Option<Store>,
    pub geometry: Geometry,
    pub self_test: SimSelfTest,
    /// Images a boot may legitimately run.
    pub candidates: Vec<SignedImage>,
    pub chunk_len: usize,
    /// Faults observed (operations that returned an error).
    pub faults_seen: u64,
    /// Post-fault boots checked.
    pub boots_checked: u64,
}

impl Harness {
    pub fn new(flash: MemFlash, geometry: Geometry) -> Self {
        let store = ModelStore::open(flash, geometry.layout(), pinned_key()).expect("open");
        Harness {
            store: Some(store),
            geometry,
            self_test: SimSelfTest::default(),
            candidates: Vec::new(),
            chunk_len: 512,
            faults_seen: 0,
            boots_checked: 0,
        }
    }

    pub fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("store present")
    }

    pub fn into_flash(mut self) -> MemFlash {
        self.store.take().expect("store").into_flash()
    }

    pub fn flash_mut(&mut self) -> &mut MemFlash {
        self.store().flash_mut()
    }

    /// Power-cycles (RAM lost, flash kept) and boots.
    pub fn reboot(&mut self) -> Result<BootReport, Error> {
        let mut flash = self.store.take().expect("store").into_flash();
        flash.power_cycle();
        let layout = self.geometry.layout();
        let mut store =
            ModelStore::open(flash, layout, pinned_key()).expect("open only reads; power is on");
        let result = store.boot(&mut self.self_test);
        self.store = Some(store);
        result
    }

    /// One attempt of a full update: begin (or resume), chunks, commit, reboot into trial.
    pub fn update_attempt(&mut self, image: &SignedImage) -> Result<BootReport, Error> {
        let chunk_len = self.chunk_len;
        if self.store().state().active.map(|a| a.manifest) == Some(image.manifest) {
            // Already confirmed (a recovery boot finished the trial): nothing to send.
            return self.reboot();
        }
        let store = self.store();
        let mut status = store.begin_upload(&image.manifest, &image.signature)?;
        while status.phase == UploadPhase::Receiving {
            let next = status.next_offset as usize;
            if next >= image.bytes.len() {
                status = store.commit_upload(&image.manifest.sha256)?;
            } else {
                let end = (next + chunk_len).min(image.bytes.len());
                status = store.write_chunk(status.next_offset, &image.bytes[next..end])?;
            }
        }
        assert_eq!(status.phase, UploadPhase::Pending);
        self.reboot()
    }

    /// After a fault: reboot (retrying while boots themselves hit faults) and check the invariant.
    pub fn recover(&mut self) -> BootReport {
        for _ in 0..64 {
            match self.reboot() {
                Ok(report) => {
                    self.check(&report);
                    return report;
                }
                Err(_) => self.faults_seen += 1,
            }
        }
        panic!("device cannot boot after 64 attempts");
    }

    /// The invariant: a verified, complete candidate image runs; its slot holds exactly its bytes.
    pub fn check(&mut self, report: &BootReport) {
        self.boots_checked += 1;
        let running = report
            .running
            .expect("a verified model must run after every fault");
        let candidate = self
            .candidates
            .iter()
            .find(|c| c.manifest == running.manifest)
            .unwrap_or_else(|| panic!("running image {:?} is not a candidate", running.manifest))
            .clone();
        let layout = self.geometry.layout();
        let base = layout.slot_base[usize::from(running.slot)] as usize;
        let mut slot = vec![0u8; candidate.bytes.len()];
        use edgeseg_bridge::device::Flash;
        self.flash_mut().read(base as u32, &mut slot).expect("read");
        assert!(
            slot == candidate.bytes,
            "slot {} does not hold the complete image",
            running.slot
        );
    }

    /// Repeats update attempts, recovering after each fault, until the update completes.
    pub fn update_until_done(&mut self, image: &SignedImage, max_attempts: u32) -> BootReport {
        for _ in 0..max_attempts {
            match self.update_attempt(image) {
                Ok(report) => {
                    self.check(&report);
                    return report;
                }
                Err(_) => {
                    self.faults_seen += 1;
                    self.recover();
                }
            }
        }
        panic!("update did not complete in {max_attempts} attempts");
    }

    /// Installs `image` without faults and checks it runs.
    pub fn provision(&mut self, image: &SignedImage) {
        self.candidates.push(image.clone());
        let report = self.update_until_done(image, 1);
        assert_eq!(report.event, BootEvent::Upgraded);
        assert_eq!(report.running.map(|r| r.manifest), Some(image.manifest));
    }
}
