//! Echo: every byte received is sent back, in order, whatever the chunking.

use crate::{Ctx, Limits, Progress, Protocol, RequestState};

/// Stateless apart from the EOF flag: the output buffer is the only state an echo needs.
#[derive(Debug, Default)]
pub struct Echo {
    eof: bool,
}

impl Protocol for Echo {
    const NAME: &'static str = "echo";

    fn new(_limits: &Limits) -> Self {
        Self::default()
    }

    fn on_data(&mut self, input: &[u8], out: &mut Vec<u8>, _ctx: &Ctx<'_>) -> Progress {
        if self.eof || input.is_empty() {
            return Progress { requests: 0, close: self.eof };
        }
        out.extend_from_slice(input);
        Progress { requests: 1, close: false }
    }

    fn on_eof(&mut self, _out: &mut Vec<u8>, _ctx: &Ctx<'_>) -> Progress {
        // Flush what was echoed, then close: the peer sees every byte, then EOF.
        self.eof = true;
        Progress { requests: 0, close: true }
    }

    /// Echo has no requests: it is always between them.
    fn request_state(&self) -> RequestState {
        RequestState::Idle
    }

    fn on_read_timeout(&mut self, _out: &mut Vec<u8>, _ctx: &Ctx<'_>) -> Progress {
        self.eof = true;
        Progress { requests: 0, close: true }
    }

    fn passes_through(&self) -> bool {
        !self.eof
    }

    /// As `on_data` counts: one message per non-empty delivery.
    fn on_passed_through(&mut self, n: usize) -> Progress {
        Progress { requests: u32::from(n > 0 && !self.eof), close: self.eof }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CTX: Ctx<'static> = Ctx::new(b"Thu, 01 Jan 1970 00:00:00 GMT");

    proptest! {
        #[test]
        fn any_chunking_echoes_the_same_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                              cuts in proptest::collection::vec(1usize..512, 0..32)) {
            let mut e = Echo::default();
            let mut out = Vec::new();
            let mut rest = &data[..];
            for c in cuts {
                let n = c.min(rest.len());
                let (head, tail) = rest.split_at(n);
                e.on_data(head, &mut out, &CTX);
                rest = tail;
            }
            e.on_data(rest, &mut out, &CTX);
            prop_assert_eq!(out, data);
        }
    }

    #[test]
    fn eof_closes_after_flush_and_ignores_more_input() {
        let mut e = Echo::default();
        let mut out = Vec::new();
        assert_eq!(e.on_data(b"ab", &mut out, &CTX).requests, 1);
        assert!(e.on_eof(&mut out, &CTX).close);
        assert!(e.on_data(b"cd", &mut out, &CTX).close);
        assert_eq!(out, b"ab");
    }
}
