//! The load generator's response framer: any bytes, split anywhere, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpoll_proto::client::ResponseFramer;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let mut f = ResponseFramer::default();
    let step = cut as usize % 23 + 1;
    for chunk in bytes.chunks(step) {
        if f.feed_all(chunk, |_response| {}).is_err() {
            break;
        }
    }
});
