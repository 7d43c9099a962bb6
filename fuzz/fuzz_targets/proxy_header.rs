//! The PROXY protocol header parser (v1 and v2): any bytes, split anywhere, never panic; a
//! split stream reaches the same verdict as the whole one (a header and the same bytes after
//! it, or invalid), and it never holds more than one header's worth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpoll_proto::proxy_protocol::{HeaderReader, Read, MAX_V2_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let (cut, bytes) = match data.split_first() {
        Some((c, rest)) => (*c as usize % (rest.len() + 1), rest),
        None => return,
    };
    let whole = HeaderReader::default().feed(bytes);
    let mut r = HeaderReader::default();
    let split = match r.feed(&bytes[..cut]) {
        Read::More => r.feed(&bytes[cut..]),
        Read::Done(h, mut rest) => {
            rest.extend_from_slice(&bytes[cut..]);
            Read::Done(h, rest)
        }
        other => other,
    };
    match (&whole, &split) {
        (Read::Invalid(_), Read::Invalid(_)) | (Read::More, Read::More) => {}
        (a, b) => assert_eq!(a, b, "verdict depends on the split"),
    }
    if let Read::Done(_, rest) = &whole {
        assert!(bytes.len() - rest.len() <= 16 + MAX_V2_PAYLOAD, "header longer than the bound");
    }
});
