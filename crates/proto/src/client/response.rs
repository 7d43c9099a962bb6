//! Streaming HTTP/1.1 response framing for the load generator.
//!
//! [`ResponseFramer`] is fed whatever `recv` returned, split anywhere, and reports each
//! complete response (status and whether the server will close) as soon as its last byte has
//! been consumed. Pipelined responses back to back are separated exactly; bodies are framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or the end of the connection, and skipped
//! without being buffered.
//!
//! # Hot path
//! While no partial head is held, heads are parsed by httparse straight from the caller's
//! input; only an unfinished head is copied into the framer's buffer (a `Vec` that keeps its
//! capacity), and it is parsed again only once a blank line has arrived, so a head trickling in
//! byte by byte costs a bounded amount of work.

use std::mem::MaybeUninit;

use super::chunked::{ChunkStep, Chunked};
use super::error::FrameError;

/// Largest response head (status line, header fields, blank line) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one response head.
pub const MAX_HEADERS: usize = 64;

/// One complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code (100..=999 as httparse accepts it; 1xx interim responses are never reported).
    pub status: u16,
    /// The server closes the connection after this response (`Connection: close`, HTTP/1.0
    /// without keep-alive, or a body delimited by the end of the connection).
    pub close: bool,
}

#[derive(Clone, Copy, Debug, Default)]
enum Body {
    /// Waiting for (or inside) a response head.
    #[default]
    Head,
    /// Bytes of a `Content-Length` body left (never zero while stored).
    Length(u64),
    Chunked(Chunked),
    /// The body runs until the server closes the connection.
    UntilClose,
    /// A framing error happened: every later call reports it again.
    Failed(FrameError),
}

/// Client-side framer for one connection's response stream.
#[derive(Debug, Default)]
pub struct ResponseFramer {
    /// Partial response head carried over between calls (empty on the hot path).
    head: Vec<u8>,
    /// Bytes of `head` already searched for the blank line.
    scanned: usize,
    body: Body,
    /// The response whose body is being read.
    current: Option<Response>,
}

/// What parsing one head decided.
enum Head {
    /// `len` bytes of head; `body` frames what follows (`None` for an interim 1xx response).
    Complete {
        len: usize,
        resp: Response,
        body: Option<Body>,
    },
    Partial,
}

impl ResponseFramer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget everything (a new connection starts).
    pub fn reset(&mut self) {
        self.head.clear();
        self.scanned = 0;
        self.body = Body::Head;
        self.current = None;
    }

    /// True between responses: nothing of a response has been received yet.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.body, Body::Head) && self.head.is_empty()
    }

    /// Feed bytes; consumes a prefix of `input` and returns how long it was, with the response
    /// that ended exactly there (`Ok(Some)`) or `Ok(None)` when all of `input` was consumed
    /// without completing one. Call again with the rest after a completed response.
    ///
    /// After an error the connection's stream cannot be framed any more: every later call
    /// returns the same error.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Result<Option<Response>, FrameError>) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.body {
                Body::Failed(e) => return (used, Err(e)),
                Body::Head => {
                    if rest.is_empty() {
                        return (used, Ok(None));
                    }
                    match self.head_step(rest) {
                        // Either all of `rest` was held, or the head ended and its body (or
                        // the next head, after an interim 1xx) follows: loop on.
                        Ok((n, None)) => used += n,
                        Ok((n, Some(resp))) => return (used + n, Ok(Some(resp))),
                        Err(e) => {
                            self.body = Body::Failed(e);
                            return (used, Err(e));
                        }
                    }
                }
                Body::Length(left) => {
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    used += n;
                    if left == n as u64 {
                        return (used, Ok(self.finish()));
                    }
                    self.body = Body::Length(left - n as u64);
                    return (used, Ok(None));
                }
                Body::Chunked(mut c) => match c.consume(rest) {
                    Ok((n, ChunkStep::Done)) => return (used + n, Ok(self.finish())),
                    Ok((n, ChunkStep::More)) => {
                        self.body = Body::Chunked(c);
                        return (used + n, Ok(None));
                    }
                    Err(e) => {
                        self.body = Body::Failed(e);
                        return (used, Err(e));
                    }
                },
                Body::UntilClose => return (input.len(), Ok(None)),
            }
        }
    }

    /// Feed bytes and call `on_response` for every response they complete, in order.
    /// Returns the number of responses, or the framing error that stopped it (responses
    /// completed before the error have been reported).
    pub fn feed_all(&mut self, mut input: &[u8], mut on_response: impl FnMut(Response)) -> Result<usize, FrameError> {
        let mut count = 0;
        loop {
            let (n, r) = self.feed(input);
            input = &input[n..];
            match r? {
                Some(resp) => {
                    count += 1;
                    on_response(resp);
                    if input.is_empty() {
                        return Ok(count);
                    }
                }
                None => return Ok(count),
            }
        }
    }

    /// The server closed the connection: completes a body delimited by the close. A response
    /// cut short is [`FrameError::Truncated`]; `Ok(None)` when the stream was between
    /// responses.
    pub fn on_eof(&mut self) -> Result<Option<Response>, FrameError> {
        match self.body {
            Body::Failed(e) => Err(e),
            Body::UntilClose => Ok(self.finish()),
            Body::Head if self.head.is_empty() => Ok(None),
            _ => {
                self.body = Body::Failed(FrameError::Truncated);
                Err(FrameError::Truncated)
            }
        }
    }

    fn finish(&mut self) -> Option<Response> {
        self.body = Body::Head;
        self.current.take()
    }

    /// Parse (part of) a head from `rest` (non-empty). Returns the bytes consumed and the
    /// response if it has no body. On return either the head is complete (and `self.body`
    /// set, or an interim response skipped), or all of `rest` was buffered.
    fn head_step(&mut self, rest: &[u8]) -> Result<(usize, Option<Response>), FrameError> {
        let (consumed, parsed) = if self.head.is_empty() {
            match parse_head(rest)? {
                Head::Partial => {
                    if rest.len() > MAX_HEAD {
                        return Err(FrameError::HeadTooLarge);
                    }
                    self.head.extend_from_slice(rest);
                    self.scanned = 0;
                    return Ok((rest.len(), None));
                }
                Head::Complete { len, resp, body } => (len, (resp, body)),
            }
        } else {
            let held = self.head.len();
            let take = rest.len().min(MAX_HEAD + 1 - held.min(MAX_HEAD + 1));
            self.head.extend_from_slice(&rest[..take]);
            let from = self.scanned.saturating_sub(2);
            self.scanned = self.head.len();
            if find_blank_line(&self.head[from..]).is_none() {
                if self.head.len() > MAX_HEAD {
                    return Err(FrameError::HeadTooLarge);
                }
                return Ok((take, None));
            }
            match parse_head(&self.head)? {
                Head::Partial => {
                    if self.head.len() > MAX_HEAD {
                        return Err(FrameError::HeadTooLarge);
                    }
                    return Ok((take, None));
                }
                Head::Complete { len, resp, body } => {
                    // `len > held`: the held bytes had no blank line, so the head ends in `rest`.
                    let consumed = len.saturating_sub(held);
                    self.head.clear();
                    self.scanned = 0;
                    (consumed, (resp, body))
                }
            }
        };
        let (resp, body) = parsed;
        match body {
            None => Ok((consumed, None)),
            Some(Body::Head) => Ok((consumed, Some(resp))),
            Some(b) => {
                self.body = b;
                self.current = Some(resp);
                Ok((consumed, None))
            }
        }
    }
}

/// Index just past the first empty line (`\n\n` or `\n\r\n`) in `data`.
fn find_blank_line(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = data[i..].iter().position(|&b| b == b'\n') {
        let at = i + p;
        match data.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if data.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

fn parse_head(data: &[u8]) -> Result<Head, FrameError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, data, &mut headers)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(FrameError::HeadTooLarge),
        Err(_) => return Err(FrameError::BadHead),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut close = http10;
    let mut length: Option<u64> = None;
    let mut encoding: Option<bool> = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = parse_length(h.value).ok_or(FrameError::BadLength)?;
            if length.is_some_and(|l| l != v) {
                return Err(FrameError::BadLength);
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the final coding matters: chunked or read until close (RFC 9112 §6.3).
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            encoding = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = trim(token);
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && t.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let body = match status {
        101 => return Err(FrameError::Upgrade),
        100..=199 => None,
        204 | 304 => Some(Body::Head),
        _ => Some(match (encoding, length) {
            (Some(true), _) => Body::Chunked(Chunked::new()),
            (Some(false), _) | (None, None) => {
                close = true;
                Body::UntilClose
            }
            (None, Some(0)) => Body::Head,
            (None, Some(n)) => Body::Length(n),
        }),
    };
    Ok(Head::Complete { len, resp: Response { status, close }, body })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}
