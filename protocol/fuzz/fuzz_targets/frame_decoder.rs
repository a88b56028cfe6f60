//! Arbitrary bytes, fed in arbitrary chunks: the decoder never panics, never yields a frame
//! over the limit, and yields the same frames however the bytes are cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mphub_protocol::frame;

fn frames(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match frame::decode(&mut buf, 4096) {
                Ok(Some(f)) => {
                    assert!(f.body().len() <= 4096);
                    out.push(f.body().to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let whole = frames(rest, rest.len());
    let cut = frames(rest, cut as usize);
    assert_eq!(whole, cut);
});
