//! Authenticity: images that are not signed by the pinned key, modified
//! manifests, hash mismatches, rollbacks and oversized images are all refused,
//! and the running model is left untouched.

mod common;

use common::{image, other_signing_key, pinned_key, signing_key, DEFAULT_GEOMETRY};
use ed25519_dalek::{Signer, VerifyingKey};
use edgeseg_bridge::device::{PinnedKey, VerifyError};
use edgeseg_bridge::host::SignedImage;
use edgeseg_bridge::protocol::*;
use edgeseg_bridge::sim::{reboot, sim_device, MemFlash, SimDevice, SimSelfTest};

type Dev = SimDevice<MemFlash>;

fn handle(dev: &mut Dev, m: Message) -> Message {
    dev.handle(Ok(m)).expect("device replies")
}

/// Uploads an image through the message handler; returns the first refusal, or the final status.
fn upload(
    dev: &mut Dev,
    img: &SignedImage,
    tamper_byte: Option<usize>,
) -> Result<UploadStatus, ErrorReport> {
    let reply = handle(
        dev,
        Message::UploadBegin(UploadBegin {
            manifest: img.manifest,
            signature: img.signature,
        }),
    );
    let mut status = match reply {
        Message::UploadStatus(s) => s,
        Message::Error(e) => return Err(e),
        other => panic!("unexpected {other:?}"),
    };
    while status.phase == UploadPhase::Receiving {
        let next = status.next_offset as usize;
        let reply = if next >= img.bytes.len() {
            handle(
                dev,
                Message::UploadCommit(UploadCommit {
                    sha256: img.manifest.sha256,
                }),
            )
        } else {
            let end = (next + 512).min(img.bytes.len());
            let mut data = heapless::Vec::from_slice(&img.bytes[next..end]).unwrap();
            if let Some(t) = tamper_byte.filter(|t| (next..end).contains(t)) {
                data[t - next] ^= 0x20;
            }
            handle(
                dev,
                Message::UploadChunk(UploadChunk {
                    offset: status.next_offset,
                    data,
                }),
            )
        };
        status = match reply {
            Message::UploadStatus(s) => s,
            Message::Error(e) => return Err(e),
            other => panic!("unexpected {other:?}"),
        };
    }
    Ok(status)
}

/// A device running `installed`, negotiated.
fn device_running(installed: &SignedImage) -> Dev {
    let g = DEFAULT_GEOMETRY;
    let mut dev = sim_device(
        g.flash(),
        g.slot_sectors,
        pinned_key(),
        SimSelfTest::default(),
    )
    .unwrap();
    assert!(matches!(
        handle(&mut dev, Message::Hello(Hello::current())),
        Message::Capabilities(_)
    ));
    assert_eq!(
        upload(&mut dev, installed, None).unwrap().phase,
        UploadPhase::Pending
    );
    let Message::Capabilities(caps) = handle(&mut dev, Message::Reset) else {
        panic!("reset reply")
    };
    assert_eq!(
        caps.model.map(|m| m.sha256),
        Some(installed.manifest.sha256)
    );
    dev
}

/// Asserts the refusal code, then that the device still runs `installed` unchanged after a reboot.
fn assert_refused_and_untouched(
    mut dev: Dev,
    result: Result<UploadStatus, ErrorReport>,
    code: ErrorCode,
    installed: &SignedImage,
) {
    let err = result.expect_err("must be refused");
    assert_eq!(err.code, code, "detail: {}", err.detail);
    assert!(!err.detail.is_empty());
    let status = handle(&mut dev, Message::UploadStatusQuery);
    assert!(matches!(
        status,
        Message::UploadStatus(UploadStatus {
            phase: UploadPhase::Idle,
            ..
        }) | Message::UploadStatus(UploadStatus {
            phase: UploadPhase::Receiving,
            ..
        })
    ));
    // Reset (trial boot of anything pending) and a full power cycle both keep the old model.
    let Message::Capabilities(caps) = handle(&mut dev, Message::Reset) else {
        panic!("reset reply")
    };
    assert_eq!(
        caps.model.map(|m| m.sha256),
        Some(installed.manifest.sha256)
    );
    let dev = reboot(dev).unwrap();
    let running = dev.last_boot().running.expect("old model runs");
    assert_eq!(running.manifest, installed.manifest);
    let (store, _) = dev.power_off();
    let layout = *store.layout();
    let flash = store.into_flash();
    let base = layout.slot_base[usize::from(running.slot)] as usize;
    assert_eq!(
        &flash.contents()[base..base + installed.bytes.len()],
        &installed.bytes[..],
        "running slot modified"
    );
}

fn sign_with(key: &ed25519_dalek::SigningKey, manifest: ImageManifest) -> SignatureBytes {
    SignatureBytes(key.sign(&manifest.signed_bytes()).to_bytes())
}

#[test]
fn every_unauthentic_or_unacceptable_image_is_rejected() {
    let installed = image(3000, 5, 1);
    let good = image(4000, 6, 2);
    let mut rejected = 0;
    let mut cases = 0;

    // Bad signatures: flipped bit, zeros, random bytes, non-canonical s (s + L).
    let mut flipped = good.clone();
    flipped.signature.0[10] ^= 1;
    let mut zeros = good.clone();
    zeros.signature = SignatureBytes([0; 64]);
    let mut random = good.clone();
    random.signature = SignatureBytes(core::array::from_fn(|i| (i * 37 + 11) as u8));
    let mut non_canonical = good.clone();
    non_canonical.signature.0[32..].copy_from_slice(&add_group_order(&good.signature.0[32..]));
    for bad in [flipped, zeros, random, non_canonical] {
        let mut dev = device_running(&installed);
        let r = upload(&mut dev, &bad, None);
        assert_refused_and_untouched(dev, r, ErrorCode::BadSignature, &installed);
        rejected += 1;
        cases += 1;
    }

    // Unknown key: correctly signed, but not by the pinned key.
    let mut foreign = good.clone();
    foreign.signature = sign_with(&other_signing_key(), good.manifest);
    let mut dev = device_running(&installed);
    let r = upload(&mut dev, &foreign, None);
    assert_refused_and_untouched(dev, r, ErrorCode::BadSignature, &installed);
    rejected += 1;
    cases += 1;

    // Weak key forgery: R = identity, s = 0 (verifies under a small-order key with plain `verify`).
    let mut forged = good.clone();
    forged.signature = SignatureBytes(IDENTITY_R_ZERO_S);
    let mut dev = device_running(&installed);
    let r = upload(&mut dev, &forged, None);
    assert_refused_and_untouched(dev, r, ErrorCode::BadSignature, &installed);
    rejected += 1;
    cases += 1;

    // Modified manifest: version, length or hash changed after signing.
    let mut bumped = good.clone();
    bumped.manifest.version = 99;
    let mut shorter = good.clone();
    shorter.manifest.image_len -= 1;
    shorter.bytes.pop();
    let mut other_hash = good.clone();
    other_hash.manifest.sha256[0] ^= 1;
    for bad in [bumped, shorter, other_hash] {
        let mut dev = device_running(&installed);
        let r = upload(&mut dev, &bad, None);
        assert_refused_and_untouched(dev, r, ErrorCode::BadSignature, &installed);
        rejected += 1;
        cases += 1;
    }

    // Hash mismatch: valid manifest and signature, one byte changed in transit (CRC-valid frame).
    for tamper in [0, 1999, 3999] {
        let mut dev = device_running(&installed);
        let r = upload(&mut dev, &good, Some(tamper));
        assert_refused_and_untouched(dev, r, ErrorCode::HashMismatch, &installed);
        rejected += 1;
        cases += 1;
    }

    // Lower version than the security counter (installed v5 ⇒ counter 5).
    let older = image(2000, 4, 3);
    let mut dev = device_running(&installed);
    let r = upload(&mut dev, &older, None);
    assert_refused_and_untouched(dev, r, ErrorCode::VersionRollback, &installed);
    rejected += 1;
    cases += 1;

    // Oversized (one byte more than a slot) and empty images, properly signed.
    let slot = DEFAULT_GEOMETRY.slot_size() as usize;
    for len in [slot + 1, 4 * slot] {
        let mut dev = device_running(&installed);
        let big = image(len, 7, 4);
        let r = upload(&mut dev, &big, None);
        assert_refused_and_untouched(dev, r, ErrorCode::ImageTooLarge, &installed);
        rejected += 1;
        cases += 1;
    }
    let empty = SignedImage::sign(Vec::new(), 7, &signing_key()).unwrap();
    let mut dev = device_running(&installed);
    let r = upload(&mut dev, &empty, None);
    assert_refused_and_untouched(dev, r, ErrorCode::ImageTooLarge, &installed);
    rejected += 1;
    cases += 1;

    println!("authenticity: {rejected}/{cases} bad images rejected, running model untouched");
    assert_eq!(rejected, cases);

    // Control: the good image is accepted (so the rejections above are meaningful).
    let mut dev = device_running(&installed);
    assert_eq!(
        upload(&mut dev, &good, None).unwrap().phase,
        UploadPhase::Pending
    );
    let Message::Capabilities(caps) = handle(&mut dev, Message::Reset) else {
        panic!()
    };
    assert_eq!(caps.model.map(|m| m.sha256), Some(good.manifest.sha256));
    assert_eq!(caps.security_counter, 6);
    // Same version as the counter is allowed (re-flash); lower is not.
    let same = image(1000, 6, 9);
    assert_eq!(
        upload(&mut dev, &same, None).unwrap().phase,
        UploadPhase::Pending
    );
}

/// Small-order public keys are refused as pinned keys.
#[test]
fn weak_pinned_keys_are_refused() {
    let identity = IDENTITY_POINT;
    let order_two: [u8; 32] = core::array::from_fn(|i| match i {
        0 => 0xEC,
        31 => 0x7F,
        _ => 0xFF,
    });
    for weak in [identity, order_two] {
        assert_eq!(PinnedKey::from_bytes(&weak), Err(VerifyError::WeakKey));
    }
    // The forgery the check prevents: plain `verify` accepts it under the identity key.
    let weak_key = VerifyingKey::from_bytes(&identity).unwrap();
    let manifest = image(100, 1, 5).manifest;
    let forged = ed25519_dalek::Signature::from_bytes(&IDENTITY_R_ZERO_S);
    use ed25519_dalek::Verifier;
    assert!(
        weak_key.verify(&manifest.signed_bytes(), &forged).is_ok(),
        "plain verify accepts the weak-key forgery"
    );
    assert!(weak_key
        .verify_strict(&manifest.signed_bytes(), &forged)
        .is_err());
    // A good key is accepted and round-trips.
    let good = pinned_key();
    assert_eq!(PinnedKey::from_bytes(&good.to_bytes()), Ok(good));
}

#[test]
fn device_refuses_uploads_before_hello_and_unknown_messages() {
    let g = DEFAULT_GEOMETRY;
    let mut dev = sim_device(
        g.flash(),
        g.slot_sectors,
        pinned_key(),
        SimSelfTest::default(),
    )
    .unwrap();
    let img = image(100, 1, 1);
    let reply = handle(
        &mut dev,
        Message::UploadBegin(UploadBegin {
            manifest: img.manifest,
            signature: img.signature,
        }),
    );
    assert!(
        matches!(
            reply,
            Message::Error(ErrorReport {
                code: ErrorCode::NotNegotiated,
                ..
            })
        ),
        "{reply:?}"
    );
    let reply = handle(
        &mut dev,
        Message::Hello(Hello {
            version_min: 9,
            version_max: 12,
        }),
    );
    match reply {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion);
            assert!(e.detail.contains("1..=1"), "{}", e.detail);
        }
        other => panic!("{other:?}"),
    }
    let reply = dev
        .handle(Err(edgeseg_bridge::FrameError::UnknownMessageType(42)))
        .unwrap();
    match reply {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnknownMessage);
            assert_eq!(e.detail.as_str(), "unknown message type 42");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        dev.handle(Err(edgeseg_bridge::FrameError::Crc)),
        None,
        "line noise is dropped silently"
    );
    let reply = handle(
        &mut dev,
        Message::Prompt(Prompt {
            frame_id: 1,
            kind: PromptKind::Clear,
        }),
    );
    assert!(matches!(
        reply,
        Message::Error(ErrorReport {
            code: ErrorCode::Unsupported,
            ..
        })
    ));
    let beat = Heartbeat {
        seq: 3,
        uptime_ms: 4,
    };
    assert_eq!(
        handle(&mut dev, Message::Heartbeat(beat)),
        Message::Heartbeat(beat)
    );
}

/// Compressed Edwards identity point (y = 1).
const IDENTITY_POINT: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

/// Signature with R = identity and s = 0.
const IDENTITY_R_ZERO_S: [u8; 64] = {
    let mut s = [0u8; 64];
    s[0] = 1;
    s
};

/// s + L (little-endian 32-byte scalars), a non-canonical encoding of the same scalar.
fn add_group_order(s: &[u8]) -> [u8; 32] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(s[i]) + u16::from(L[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

#[test]
fn mask_results_go_to_the_latest_result_mailbox() {
    let g = DEFAULT_GEOMETRY;
    let mut dev = sim_device(
        g.flash(),
        g.slot_sectors,
        pinned_key(),
        SimSelfTest::default(),
    )
    .unwrap();
    assert_eq!(dev.take_latest_mask(), None);
    let mask = |frame_id| MaskResult {
        frame_id,
        score: 0.9,
        bbox: PixelBox {
            x0: 0,
            y0: 0,
            x1: 2,
            y1: 1,
        },
        mask: RleMask::encode(2, 1, &[1, 1]).unwrap(),
    };
    // Through the byte interface, as the UART task would feed it; no reply is sent.
    let mut replies = 0;
    for id in [1, 2] {
        let frame =
            edgeseg_bridge::framing::encode_frame_vec(&Message::MaskResult(mask(id))).unwrap();
        dev.receive_bytes(&frame, |_| replies += 1);
    }
    assert_eq!(replies, 0);
    assert_eq!(dev.take_latest_mask(), Some(mask(2)), "newest result wins");
    assert_eq!(dev.take_latest_mask(), None);
}
