//! The L4 relay between a client and its upstream, as a sans-IO state machine.
//!
//! The backend tells the relay what happened (bytes read from a side, EOF from a side, bytes
//! written to a side, a reset) and asks it what to do next (read this side? write what to that
//! side? shut down its write half? is the pair finished?). Every backend drives the same
//! object, so half-close ordering and backpressure are decided once, here.
//!
//! Rules:
//! - bytes from one side are delivered to the other byte-exact and in order;
//! - a side stops being read while the bytes it sent are above the high watermark, and
//!   resumes once they drained to the low watermark (backpressure both ways);
//! - EOF from one side becomes `shutdown(SHUT_WR)` on the other only after everything
//!   buffered for it has been written; the other direction keeps flowing;
//! - the pair is finished when both directions are shut, or at once on a reset.
//!
//! Bytes in flight either sit in the relay's own buffers (the copying relay: `received`,
//! `outgoing`, `sent`) or outside it, in a kernel pipe the backend splices through (the
//! zero-copy relay: `received_piped`, `sent_piped`, `pipe_blocked`); the relay then only counts
//! them. A pair uses one way or the other, never both.

use crate::buf::{OutBuf, Watermarks};

/// One end of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client = 0,
    Upstream = 1,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Client, Side::Upstream];

    #[must_use]
    pub const fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    const fn idx(self) -> usize {
        self as usize
    }
}

/// Bytes travelling from one side (the source) to the other (the destination).
#[derive(Debug, Default)]
struct Flow {
    buf: OutBuf,
    /// Bytes the backend spliced into a pipe and has not spliced out yet.
    piped: usize,
    /// The source sent FIN: nothing more will be added.
    src_eof: bool,
    /// We shut down the destination's write half (FIN sent).
    dst_shut: bool,
    /// Reading the source is paused by the high watermark.
    paused: bool,
}

/// What a side wants from the poller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub read: bool,
    pub write: bool,
}

/// The state of one client/upstream pair.
#[derive(Debug)]
pub struct Relay {
    /// Indexed by the source side.
    flows: [Flow; 2],
    wm: Watermarks,
    connected: bool,
    reset: bool,
}

impl Relay {
    /// A pair whose upstream connection is still being established.
    #[must_use]
    pub fn new(wm: Watermarks) -> Self {
        Self { flows: Default::default(), wm, connected: false, reset: false }
    }

    /// The upstream connection completed: relaying may start.
    pub fn connected(&mut self) {
        self.connected = true;
    }

    #[must_use]
    pub const fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the backend should read from `side` now.
    #[must_use]
    pub fn wants_read(&self, side: Side) -> bool {
        let f = &self.flows[side.idx()];
        self.connected && !self.reset && !f.src_eof && !f.paused
    }

    /// Whether there are bytes to write to `side`.
    #[must_use]
    pub fn wants_write(&self, side: Side) -> bool {
        self.connected && !self.reset && self.outgoing_len(side) > 0
    }

    /// Interest for `side`.
    #[must_use]
    pub fn want(&self, side: Side) -> Want {
        Want { read: self.wants_read(side), write: self.wants_write(side) }
    }

    /// Bytes were read from `side`. Returns false (and keeps nothing) if `side` already sent
    /// EOF or the pair was reset: the caller has a bug or the peer misbehaves.
    pub fn received(&mut self, side: Side, data: &[u8]) -> bool {
        let f = &mut self.flows[side.idx()];
        if f.src_eof || self.reset {
            return false;
        }
        f.buf.extend_from_slice(data);
        if !self.wm.may_read(f.buf.len(), f.paused) {
            f.paused = true;
        }
        true
    }

    /// `n` bytes from `side` were spliced into the pipe towards the other side.
    pub fn received_piped(&mut self, side: Side, n: usize) -> bool {
        let f = &mut self.flows[side.idx()];
        if f.src_eof || self.reset {
            return false;
        }
        f.piped += n;
        if !self.wm.may_read(f.buf.len() + f.piped, f.paused) {
            f.paused = true;
        }
        true
    }

    /// The pipe from `side` refused more bytes although it holds fewer than its byte capacity
    /// (a pipe also runs out of buffer slots): stop reading `side` until some bytes leave it.
    pub fn pipe_blocked(&mut self, side: Side) {
        let f = &mut self.flows[side.idx()];
        if f.piped > 0 {
            f.paused = true;
        }
    }

    /// Bytes waiting in the pipe towards `side`.
    #[must_use]
    pub fn outgoing_piped(&self, side: Side) -> usize {
        self.flows[side.other().idx()].piped
    }

    /// `n` bytes were spliced out of the pipe into `side`.
    pub fn sent_piped(&mut self, side: Side, n: usize) {
        let f = &mut self.flows[side.other().idx()];
        let n = n.min(f.piped);
        f.piped -= n;
        if f.paused && n > 0 && self.wm.may_read(f.buf.len() + f.piped, true) {
            f.paused = false;
        }
    }

    /// `side` sent FIN.
    pub fn received_eof(&mut self, side: Side) {
        self.flows[side.idx()].src_eof = true;
    }

    /// Bytes waiting to be written to `side`.
    #[must_use]
    pub fn outgoing(&self, side: Side) -> &[u8] {
        self.flows[side.other().idx()].buf.pending()
    }

    /// Number of bytes waiting to be written to `side` (buffered or piped).
    #[must_use]
    pub fn outgoing_len(&self, side: Side) -> usize {
        let f = &self.flows[side.other().idx()];
        f.buf.len() + f.piped
    }

    /// `n` bytes of [`Relay::outgoing`] were written to `side`.
    pub fn sent(&mut self, side: Side, n: usize) {
        let f = &mut self.flows[side.other().idx()];
        let n = n.min(f.buf.len());
        f.buf.advance(n);
        if f.paused && self.wm.may_read(f.buf.len(), true) {
            f.paused = false;
        }
    }

    /// Whether `side`'s write half should be shut down now: its counterpart finished and
    /// everything buffered for it has been written.
    #[must_use]
    pub fn should_shutdown(&self, side: Side) -> bool {
        let f = &self.flows[side.other().idx()];
        self.connected && !self.reset && f.src_eof && f.buf.is_empty() && f.piped == 0 && !f.dst_shut
    }

    /// The backend shut down `side`'s write half.
    pub fn shut_down(&mut self, side: Side) {
        self.flows[side.other().idx()].dst_shut = true;
    }

    /// A side failed (reset, broken pipe): the pair ends now, buffered bytes are dropped.
    pub fn reset(&mut self) {
        self.reset = true;
    }

    #[must_use]
    pub const fn is_reset(&self) -> bool {
        self.reset
    }

    /// Both directions are finished (or the pair was reset): close both sockets.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.reset || self.flows.iter().all(|f| f.src_eof && f.dst_shut)
    }

    /// Put `bytes` in front of everything else bound for `to` (a PROXY protocol header for the
    /// upstream). They are not counted as received from the other side.
    pub fn inject(&mut self, to: Side, bytes: &[u8]) {
        let f = &mut self.flows[to.other().idx()];
        let mut buf = crate::buf::OutBuf::new();
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(f.buf.pending());
        f.buf = buf;
    }

    /// For a transport that holds outgoing bytes itself (counted mode): take the bytes this
    /// relay buffered for `to` (injected ones, or ones received before the transport took over);
    /// from now on they count as held by the transport, to be reported with
    /// [`Relay::sent_piped`].
    pub fn hand_over(&mut self, to: Side) -> Option<Vec<u8>> {
        let f = &mut self.flows[to.other().idx()];
        if f.buf.is_empty() {
            return None;
        }
        let bytes = f.buf.pending().to_vec();
        f.piped += bytes.len();
        f.buf.clear();
        Some(bytes)
    }

    /// Reading `side` is paused by backpressure.
    #[must_use]
    pub fn is_paused(&self, side: Side) -> bool {
        self.flows[side.idx()].paused
    }

    /// The direction from `side` is finished: its FIN arrived and was forwarded.
    #[must_use]
    pub fn is_finished(&self, side: Side) -> bool {
        let f = &self.flows[side.idx()];
        f.src_eof && f.dst_shut
    }

    /// Nothing buffered in either direction.
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.flows.iter().all(|f| f.buf.is_empty() && f.piped == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WM: Watermarks = Watermarks { high: 64, low: 16 };

    fn connected() -> Relay {
        let mut r = Relay::new(WM);
        r.connected();
        r
    }

    #[test]
    fn nothing_is_read_before_the_upstream_connects() {
        let r = Relay::new(WM);
        assert!(!r.wants_read(Side::Client) && !r.wants_read(Side::Upstream));
    }

    #[test]
    fn eof_is_forwarded_only_after_the_buffer_drains() {
        let mut r = connected();
        r.received(Side::Client, b"hello");
        r.received_eof(Side::Client);
        assert!(!r.should_shutdown(Side::Upstream), "bytes still buffered for the upstream");
        assert_eq!(r.outgoing(Side::Upstream), b"hello");
        r.sent(Side::Upstream, 2);
        assert!(!r.should_shutdown(Side::Upstream));
        r.sent(Side::Upstream, 3);
        assert!(r.should_shutdown(Side::Upstream));
        r.shut_down(Side::Upstream);
        assert!(!r.should_shutdown(Side::Upstream));
        // The other direction keeps flowing.
        assert!(r.wants_read(Side::Upstream));
        assert!(!r.wants_read(Side::Client));
        assert!(!r.is_done());
        r.received(Side::Upstream, b"reply");
        r.received_eof(Side::Upstream);
        r.sent(Side::Client, 5);
        assert!(r.should_shutdown(Side::Client));
        r.shut_down(Side::Client);
        assert!(r.is_done());
    }

    #[test]
    fn backpressure_pauses_the_source_with_hysteresis() {
        let mut r = connected();
        r.received(Side::Upstream, &[0; 65]);
        assert!(!r.wants_read(Side::Upstream), "above high: paused");
        assert!(r.wants_read(Side::Client), "the other direction is unaffected");
        r.sent(Side::Client, 40);
        assert!(!r.wants_read(Side::Upstream), "25 left > low");
        r.sent(Side::Client, 9);
        assert!(r.wants_read(Side::Upstream), "16 left = low: resumed");
    }

    #[test]
    fn piped_bytes_are_counted_like_buffered_ones() {
        let mut r = connected();
        assert!(r.received_piped(Side::Client, 40));
        assert_eq!(r.outgoing_len(Side::Upstream), 40);
        assert!(r.outgoing(Side::Upstream).is_empty(), "nothing in the relay's own buffer");
        r.received_eof(Side::Client);
        assert!(!r.should_shutdown(Side::Upstream), "40 bytes still in the pipe");
        r.sent_piped(Side::Upstream, 40);
        assert!(r.should_shutdown(Side::Upstream));
        // A pipe out of slots pauses the source until bytes leave it.
        r.received_piped(Side::Upstream, 10);
        r.pipe_blocked(Side::Upstream);
        assert!(!r.wants_read(Side::Upstream));
        r.sent_piped(Side::Client, 1);
        assert!(r.wants_read(Side::Upstream));
    }

    #[test]
    fn injected_bytes_go_first_and_handed_over_bytes_stay_counted() {
        let mut r = connected();
        r.received(Side::Client, b"data");
        r.inject(Side::Upstream, b"HDR ");
        assert_eq!(r.outgoing(Side::Upstream), b"HDR data");
        r.received_eof(Side::Client);
        assert_eq!(r.hand_over(Side::Upstream).as_deref(), Some(&b"HDR data"[..]));
        assert_eq!(r.outgoing_len(Side::Upstream), 8);
        assert!(!r.should_shutdown(Side::Upstream), "the transport still holds them");
        r.sent_piped(Side::Upstream, 8);
        assert!(r.should_shutdown(Side::Upstream));
        assert!(r.hand_over(Side::Upstream).is_none());
    }

    #[test]
    fn reset_ends_everything() {
        let mut r = connected();
        r.received(Side::Client, b"x");
        r.reset();
        assert!(r.is_done());
        assert!(!r.wants_write(Side::Upstream));
        assert!(!r.received(Side::Client, b"y"));
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Read(Side, Vec<u8>),
        Eof(Side),
        Write(Side, usize),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        let side = prop_oneof![Just(Side::Client), Just(Side::Upstream)];
        prop_oneof![
            4 => (side.clone(), proptest::collection::vec(any::<u8>(), 1..40)).prop_map(|(s, d)| Ev::Read(s, d)),
            1 => side.clone().prop_map(Ev::Eof),
            4 => (side, 0usize..50).prop_map(|(s, n)| Ev::Write(s, n)),
        ]
    }

    proptest! {
        /// Drive the relay the way a backend would, with random readiness; then let both
        /// sockets drain. Bytes out equal bytes in per direction, and the pair ends closed.
        #[test]
        fn random_event_sequences_preserve_bytes_and_end_closed(events in proptest::collection::vec(ev(), 0..200)) {
            let mut r = connected();
            let mut sent_in: [Vec<u8>; 2] = Default::default();   // by source
            let mut delivered: [Vec<u8>; 2] = Default::default(); // by destination
            let mut eof: [bool; 2] = [false; 2];
            let mut shut: [bool; 2] = [false; 2];
            let mut step = |r: &mut Relay, e: Ev, delivered: &mut [Vec<u8>; 2], sent_in: &mut [Vec<u8>; 2], eof: &mut [bool; 2]| {
                match e {
                    Ev::Read(s, d) => {
                        if r.wants_read(s) {
                            prop_assert!(r.received(s, &d));
                            sent_in[s as usize].extend_from_slice(&d);
                        }
                    }
                    Ev::Eof(s) => {
                        // A FIN is only observed by a read, and reads happen only when wanted.
                        if r.wants_read(s) {
                            r.received_eof(s);
                            eof[s as usize] = true;
                        }
                    }
                    Ev::Write(s, n) => {
                        if r.wants_write(s) {
                            let n = n.min(r.outgoing_len(s));
                            delivered[s as usize].extend_from_slice(&r.outgoing(s)[..n]);
                            r.sent(s, n);
                        }
                    }
                }
                for s in Side::BOTH {
                    if r.should_shutdown(s) {
                        r.shut_down(s);
                        shut[s as usize] = true;
                    }
                }
                Ok(())
            };
            for e in events {
                step(&mut r, e, &mut delivered, &mut sent_in, &mut eof)?;
                prop_assert!(r.outgoing_len(Side::Client) <= WM.high + 40);
                prop_assert!(r.outgoing_len(Side::Upstream) <= WM.high + 40);
            }
            // Both peers finish and both sockets drain fully.
            for _ in 0..1000 {
                if r.is_done() { break; }
                for s in Side::BOTH {
                    if r.wants_read(s) { step(&mut r, Ev::Eof(s), &mut delivered, &mut sent_in, &mut eof)?; }
                    step(&mut r, Ev::Write(s, usize::MAX), &mut delivered, &mut sent_in, &mut eof)?;
                }
            }
            prop_assert!(r.is_done(), "the pair must end closed");
            prop_assert_eq!(&delivered[Side::Upstream as usize], &sent_in[Side::Client as usize]);
            prop_assert_eq!(&delivered[Side::Client as usize], &sent_in[Side::Upstream as usize]);
            prop_assert!(shut[0] && shut[1]);
        }
    }
}
