//! Fuzzes the streaming frame decoder: it must never panic, must give the
//! same results for whole, byte-by-byte and chunked input, and every message
//! it accepts must re-encode and decode to itself.
#![no_main]

use edgeseg_bridge::framing::{encode_frame_vec, FrameDecoder, FrameError};
use edgeseg_bridge::protocol::Message;
use libfuzzer_sys::fuzz_target;

fn decode(input: &[u8], chunk_sizes: &[u8]) -> Vec<Result<Message, FrameError>> {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if chunk_sizes.is_empty() { rest.len() } else { usize::from(chunk_sizes[i % chunk_sizes.len()]).clamp(1, rest.len()) };
        decoder.feed(&rest[..n], |r| out.push(r));
        rest = &rest[n..];
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many chunk sizes follow; the rest is the stream.
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 8).min(rest.len());
    let (chunks, stream) = rest.split_at(count);
    let whole = decode(stream, &[]);
    assert_eq!(whole, decode(stream, &[1]));
    assert_eq!(whole, decode(stream, chunks));
    for message in whole.into_iter().flatten() {
        let frame = encode_frame_vec(&message).expect("accepted message re-encodes");
        assert_eq!(decode(&frame, &[]), vec![Ok(message)]);
    }
});
