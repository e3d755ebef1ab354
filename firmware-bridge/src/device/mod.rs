//! Device side (`no_std`): flash abstraction, A/B model store with
//! write-once status records, signature checks, and the message handler that
//! firmware (and the simulator) runs.

pub mod flash;
pub mod handler;
pub mod store;
pub mod verify;

pub use flash::{Flash, FlashLayout, LayoutError, ERASED_BYTE};
pub use handler::{Device, DeviceInfo};
pub use store::{
    BootEvent, BootReport, ImageReader, ModelStore, PersistentState, SelfTest, SlotImage,
    StoreError,
};
pub use verify::{PinnedKey, VerifyError};
