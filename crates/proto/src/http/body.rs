//! Streaming body skipping: bodies are framed and discarded, never buffered.
//!
//! The plaintext endpoint has no use for request bodies, but it must find where each one ends
//! to answer the request (405 for POST and friends) and to parse the next pipelined request.

use super::limits::{MAX_CHUNK_LINE, MAX_HEADER_BYTES};

/// The body still to be skipped for the current request.
#[derive(Debug)]
pub(super) enum Body {
    /// Bytes left of a `Content-Length` body (never zero while stored).
    Length(u64),
    Chunked(Chunked),
}

/// Result of feeding bytes to a [`Body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Every byte was consumed and the body is not over yet.
    More,
    /// The body ended; bytes after the returned count belong to the next request.
    Done,
    /// Bad framing: answer with this status and close.
    Error(u16),
}

impl Body {
    /// Consumes a prefix of `input`; returns its length (never more than `input.len()`, and
    /// all of it unless the step is `Done` or `Error`).
    pub(super) fn consume(&mut self, input: &[u8]) -> (usize, Step) {
        match self {
            Body::Length(left) => {
                let n = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                // n <= *left by construction, so this cannot underflow.
                *left -= n as u64;
                (n, if *left == 0 { Step::Done } else { Step::More })
            }
            Body::Chunked(c) => c.consume(input),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size (`digits` says whether one was seen).
    Size {
        digits: bool,
    },
    /// Whitespace after the size, before `;` or CR (RFC 9112 `BWS`).
    SizeWs,
    /// Chunk extensions: skipped up to CR.
    Ext,
    /// CR seen at the end of the size line.
    SizeLf,
    /// Chunk data (`size` bytes left).
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    Trailer,
    TrailerLf,
    /// CR of the final empty line seen.
    FinalLf,
}

/// Chunked transfer-coding decoder (RFC 9112 section 7.1) that only finds the end.
///
/// Framing uses strict CRLF (a bare LF is an error, which leaves no room for disagreement with
/// another parser on the path). The size line is bounded by [`MAX_CHUNK_LINE`] and the
/// trailer section, together with the request head, by [`MAX_HEADER_BYTES`].
#[derive(Debug)]
pub(super) struct Chunked {
    state: State,
    /// Chunk size being parsed, then data bytes left in the current chunk.
    size: u64,
    /// Bytes of the current size line so far.
    line: usize,
    /// Trailer bytes still allowed.
    trailer_budget: usize,
    /// Data bytes still allowed ([`crate::Limits::max_body`]); beyond them 413.
    body_budget: u64,
}

impl Chunked {
    /// A decoder for a body whose request head was `head_len` bytes long and whose data may
    /// add up to `max_body` bytes.
    pub(super) fn new(head_len: usize, max_body: u64) -> Self {
        Chunked {
            state: State::Size { digits: false },
            size: 0,
            line: 0,
            trailer_budget: MAX_HEADER_BYTES.saturating_sub(head_len),
            body_budget: max_body,
        }
    }

    fn consume(&mut self, input: &[u8]) -> (usize, Step) {
        let mut i = 0;
        while let Some(rest) = input.get(i..).filter(|r| !r.is_empty()) {
            if self.state == State::Data {
                let n = usize::try_from(self.size).map_or(rest.len(), |s| s.min(rest.len()));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let Some(&b) = rest.first() else { break };
            i += 1;
            match self.byte(b) {
                Ok(false) => {}
                Ok(true) => return (i, Step::Done),
                Err(status) => return (i, Step::Error(status)),
            }
        }
        (i, Step::More)
    }

    /// Advances over one framing byte; `Ok(true)` when the body is complete.
    fn byte(&mut self, b: u8) -> Result<bool, u16> {
        match self.state {
            State::Size { .. } | State::SizeWs | State::Ext => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(400);
                }
            }
            State::TrailerStart if b != b'\r' => self.charge_trailer()?,
            State::Trailer | State::TrailerLf => self.charge_trailer()?,
            _ => {}
        }
        self.state = match (self.state, b) {
            (State::Size { .. }, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = (b as char).to_digit(16).map_or(0, u64::from);
                self.size = self.size.checked_mul(16).and_then(|s| s.checked_add(digit)).ok_or(400u16)?;
                State::Size { digits: true }
            }
            (State::Size { digits: true } | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size { digits: true } | State::SizeWs, b';') => State::Ext,
            (State::Size { digits: true } | State::SizeWs | State::Ext, b'\r') => State::SizeLf,
            (State::Ext, b) if b != b'\n' => State::Ext,
            (State::SizeLf, b'\n') => {
                self.line = 0;
                // A chunk that would take the body past the limit is refused before its data.
                self.body_budget = self.body_budget.checked_sub(self.size).ok_or(413u16)?;
                if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { digits: false },
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, b) if b != b'\n' => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::FinalLf, b'\n') => return Ok(true),
            _ => return Err(400),
        };
        Ok(false)
    }

    fn charge_trailer(&mut self) -> Result<(), u16> {
        self.trailer_budget = self.trailer_budget.checked_sub(1).ok_or(431u16)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` whole, then byte by byte; both must agree. Returns (consumed, step).
    fn run(body: &[u8]) -> (usize, Step) {
        let mut c = Body::Chunked(Chunked::new(100, u64::MAX));
        let whole = c.consume(body);
        let mut c = Body::Chunked(Chunked::new(100, u64::MAX));
        let mut used = 0;
        let mut step = Step::More;
        for b in body {
            let (n, s) = c.consume(std::slice::from_ref(b));
            used += n;
            step = s;
            if s != Step::More {
                break;
            }
        }
        assert_eq!(whole, (used, step), "whole vs byte-at-a-time for {body:?}");
        whole
    }

    #[test]
    fn content_length_counts_down() {
        let mut b = Body::Length(5);
        assert_eq!(b.consume(b"abc"), (3, Step::More));
        assert_eq!(b.consume(b"deXYZ"), (2, Step::Done));
        let mut huge = Body::Length(u64::MAX);
        assert_eq!(huge.consume(&[0; 64]), (64, Step::More));
    }

    #[test]
    fn chunked_valid_bodies() {
        let cases: &[&[u8]] = &[
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value;x=\"q\"\r\nhello\r\nA \t; e\r\n0123456789\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: two\r\n\r\n",
            b"000F\r\n0123456789\r\n\r\n\r\r\n0\r\n\r\n",
        ];
        for body in cases {
            assert_eq!(run(body), (body.len(), Step::Done), "{:?}", String::from_utf8_lossy(body));
        }
        // What follows the body is left for the next request.
        let mut with_next = b"1\r\nx\r\n0\r\n\r\n".to_vec();
        let len = with_next.len();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(run(&with_next), (len, Step::Done));
    }

    #[test]
    fn chunked_bad_syntax_is_400() {
        let cases: &[&[u8]] = &[
            b"\r\n",
            b"z\r\n",
            b";ext\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nTrailer\n",
            b"0\r\n\rX",
            b"5 x\r\n",
            b"10000000000000000\r\n",
        ];
        for body in cases {
            assert_eq!(run(body).1, Step::Error(400), "{:?}", String::from_utf8_lossy(body));
        }
        let long_ext = [b"1;".as_slice(), &[b'e'; MAX_CHUNK_LINE]].concat();
        assert_eq!(run(&long_ext).1, Step::Error(400));
    }

    #[test]
    fn chunk_size_at_the_limit_does_not_overflow() {
        let mut c = Body::Chunked(Chunked::new(0, u64::MAX));
        assert_eq!(c.consume(b"FFFFFFFFFFFFFFFF\r\n"), (18, Step::More));
        assert_eq!(c.consume(&[7; 1000]), (1000, Step::More));
    }

    #[test]
    fn chunks_past_the_body_limit_are_413_before_their_data() {
        let mut c = Body::Chunked(Chunked::new(0, 10));
        assert_eq!(c.consume(b"6\r\nabcdef\r\n4\r\nabcd\r\n"), (20, Step::More), "exactly at the limit");
        assert_eq!(c.consume(b"1\r\n"), (3, Step::Error(413)));
        let mut huge = Body::Chunked(Chunked::new(0, 1 << 20));
        assert_eq!(huge.consume(b"FFFFFFFFFFFFFFFF\r\n").1, Step::Error(413), "2^64-1 bytes declared");
    }

    #[test]
    fn trailers_count_toward_the_head_limit() {
        let mut c = Body::Chunked(Chunked::new(MAX_HEADER_BYTES - 10, u64::MAX));
        let (_, step) = c.consume(b"0\r\nX-Long-Trailer: 1234567890\r\n\r\n");
        assert_eq!(step, Step::Error(431));
        let mut c = Body::Chunked(Chunked::new(MAX_HEADER_BYTES - 10, u64::MAX));
        assert_eq!(c.consume(b"0\r\nX: 12\r\n\r\n"), (12, Step::Done));
    }
}
