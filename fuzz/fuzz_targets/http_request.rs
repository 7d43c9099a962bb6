//! The server's HTTP/1.1 parser: any bytes, split anywhere, never panic; what a split stream
//! produces is what the whole stream produces (the whole one may add a final error response
//! that a split stream is still waiting to decide); and it only ever holds a bounded amount.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpoll_proto::http::Http1;
use ringpoll_proto::{Ctx, Protocol};

const CTX: Ctx<'static> = Ctx::new(b"Sun, 06 Nov 1994 08:49:37 GMT");

fuzz_target!(|data: &[u8]| {
    let (cut, bytes) = match data.split_first() {
        Some((c, rest)) => (*c as usize, rest),
        None => return,
    };
    let mut whole = Http1::default();
    let mut out_whole = Vec::new();
    whole.on_data(bytes, &mut out_whole, &CTX);

    let mut split = Http1::default();
    let mut out_split = Vec::new();
    let step = cut % 17 + 1;
    for chunk in bytes.chunks(step) {
        if split.on_data(chunk, &mut out_split, &CTX).close {
            break;
        }
    }
    assert!(out_whole.starts_with(&out_split), "output depends on the split");
    assert!(split.buffered() <= 64 * 1024, "unbounded buffering: {}", split.buffered());
});
