//! Fuzzes the device endpoint with arbitrary bytes on its serial input:
//! it must never panic, and the model it runs must stay the provisioned one
//! (nothing is signed by the pinned key except the provisioned image).
#![no_main]

use ed25519_dalek::SigningKey;
use edgeseg_bridge::device::PinnedKey;
use edgeseg_bridge::framing::encode_frame_vec;
use edgeseg_bridge::host::SignedImage;
use edgeseg_bridge::protocol::{Hello, Message, UploadBegin, UploadChunk, UploadCommit};
use edgeseg_bridge::sim::{reboot, sim_device, MemFlash, SimSelfTest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let pinned = PinnedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap();
    let mut dev = sim_device(MemFlash::new(1024, 8, 18), 8, pinned, SimSelfTest::default()).unwrap();
    let img = SignedImage::sign((0..2000u32).map(|i| i as u8).collect(), 1, &key).unwrap();
    // Provision a signed image through the protocol.
    let mut sink = |_: &[u8]| {};
    let mut send = |dev: &mut edgeseg_bridge::sim::SimDevice<MemFlash>, m: Message| dev.receive_bytes(&encode_frame_vec(&m).unwrap(), &mut sink);
    send(&mut dev, Message::Hello(Hello::current()));
    send(&mut dev, Message::UploadBegin(UploadBegin { manifest: img.manifest, signature: img.signature }));
    for (i, part) in img.bytes.chunks(1000).enumerate() {
        send(&mut dev, Message::UploadChunk(UploadChunk { offset: (i * 1000) as u32, data: heapless::Vec::from_slice(part).unwrap() }));
    }
    send(&mut dev, Message::UploadCommit(UploadCommit { sha256: img.manifest.sha256 }));
    send(&mut dev, Message::Reset);
    assert_eq!(dev.last_boot().running.map(|r| r.manifest), Some(img.manifest));
    // Arbitrary input, then a reboot: the provisioned model still runs.
    dev.receive_bytes(data, |_| {});
    let dev = reboot(dev).unwrap();
    assert_eq!(dev.last_boot().running.map(|r| r.manifest), Some(img.manifest));
});
