//! The proxy relay state machine under arbitrary event sequences: never panics, never
//! delivers bytes out of order, and buffered bytes stay bounded by the watermarks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpoll_proto::buf::Watermarks;
use ringpoll_proto::relay::{Relay, Side};

fuzz_target!(|data: &[u8]| {
    let wm = Watermarks { high: 256, low: 64 };
    let mut r = Relay::new(wm);
    r.connected();
    let mut sent: [Vec<u8>; 2] = Default::default();
    let mut got: [Vec<u8>; 2] = Default::default();
    let mut next = 0u8;
    for op in data.chunks(2) {
        let side = if op[0] & 1 == 0 { Side::Client } else { Side::Upstream };
        let arg = op.get(1).copied().unwrap_or(0) as usize;
        match op[0] >> 1 & 3 {
            0 if r.wants_read(side) => {
                let bytes: Vec<u8> = (0..arg % 100 + 1).map(|_| { next = next.wrapping_add(1); next }).collect();
                r.received(side, &bytes);
                sent[side as usize].extend_from_slice(&bytes);
            }
            1 if r.wants_read(side) => r.received_eof(side),
            2 if r.wants_write(side) => {
                let n = arg.min(r.outgoing_len(side));
                got[side as usize].extend_from_slice(&r.outgoing(side)[..n]);
                r.sent(side, n);
            }
            3 if arg == 255 => r.reset(),
            _ => {}
        }
        for s in Side::BOTH {
            if r.should_shutdown(s) {
                r.shut_down(s);
            }
            assert!(r.outgoing_len(s) <= wm.high + 100);
        }
    }
    for s in Side::BOTH {
        let src = &sent[s.other() as usize];
        assert!(src.starts_with(&got[s as usize]) || r.is_reset(), "delivered bytes are not a prefix of the sent ones");
    }
});
