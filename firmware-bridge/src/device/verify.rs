//! Signature checks against the pinned Ed25519 key.

use crate::protocol::{ImageManifest, SignatureBytes};
use ed25519_dalek::{Signature, VerifyingKey};

/// Why a key or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The key bytes are not a valid curve point.
    InvalidKey,
    /// The key has small order (a "weak" key that any signature may verify against).
    WeakKey,
    /// The signature does not verify (wrong key, modified manifest, malformed or non-canonical signature).
    BadSignature,
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VerifyError::InvalidKey => f.write_str("invalid public key"),
            VerifyError::WeakKey => f.write_str("weak (small-order) public key"),
            VerifyError::BadSignature => {
                f.write_str("signature does not verify against the pinned key")
            }
        }
    }
}

/// The Ed25519 public key pinned in firmware; only images it signed are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedKey(VerifyingKey);

impl PinnedKey {
    /// Accepts a 32-byte public key; refuses invalid and weak keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, VerifyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| VerifyError::InvalidKey)?;
        if key.is_weak() {
            return Err(VerifyError::WeakKey);
        }
        Ok(PinnedKey(key))
    }

    /// The key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies `signature` over the manifest's signed bytes with `verify_strict`.
    pub fn verify(
        &self,
        manifest: &ImageManifest,
        signature: &SignatureBytes,
    ) -> Result<(), VerifyError> {
        let signature = Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(&manifest.signed_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)
    }
}
