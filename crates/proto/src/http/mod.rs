//! HTTP/1.1 plaintext server protocol (TechEmpower "plaintext" rules).
//!
//! `GET` and `HEAD` of any path get `200 OK` / `Hello, World!`; other methods get `405` once
//! their body has been skipped. Keep-alive, pipelining (every response of one read appended in
//! that one call, so the worker sends them together), HTTP/1.0 and `Connection: close` are
//! handled, and `Expect: 100-continue` is answered with `100 Continue`; malformed or over-limit
//! requests get 400, 414, 417, 431, 501 or 505 and a close.
//!
//! # Hot path
//! While no partial request is held, heads are parsed by httparse straight from the caller's
//! input (header array on the stack) and only an unparsed tail is copied into the connection's
//! buffer, a `Vec` that keeps its capacity. Responses are built from precomputed pieces.
//!
//! # Bounds
//! The held partial head never exceeds [`MAX_HEADER_BYTES`]; bodies are skipped as they
//! stream by (only a counter or a small chunk-decoder state is kept); chunk-size lines are
//! bounded by [`MAX_CHUNK_LINE`] and trailers count toward [`MAX_HEADER_BYTES`]. Re-parsing of
//! a held head happens only when a line ends or a limit is crossed, so a peer trickling a head
//! byte by byte costs a bounded number of parses.

mod body;
#[cfg(test)]
mod limit_tests;
mod limits;
mod parse;
mod response;
#[cfg(test)]
mod tests;

use crate::{Ctx, Limits, Progress, Protocol, RequestState};
use body::{Body, Chunked, Step};
pub use limits::{MAX_CHUNK_LINE, MAX_HEADERS, MAX_HEADER_BYTES, MAX_TARGET};
use parse::{Conn, Framing, Method, Parsed, REQUEST_LINE_LIMIT};
pub use response::HELLO_BODY;

/// One HTTP/1.x server connection.
#[derive(Debug)]
pub struct Http1 {
    limits: Limits,
    /// Responses to complete requests produced so far (for `Limits::keepalive_requests`).
    served: u32,
    /// Partial request head carried over between calls (empty on the hot path).
    buf: Vec<u8>,
    /// Body of the current request still being skipped.
    body: Option<Body>,
    /// Response owed once `body` ends.
    pending: Pending,
    /// Closing: nothing more is read or produced.
    closed: bool,
    /// Status of the error response that closed the connection, if any.
    last_error: Option<u16>,
    /// Responses appended during the current `on_data` call.
    answered: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    method: Method,
    conn: Conn,
}

impl Default for Http1 {
    /// A connection with the server's default [`Limits`].
    fn default() -> Self {
        Self::with_limits(Limits::default())
    }
}

impl Http1 {
    #[must_use]
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            served: 0,
            buf: Vec::new(),
            body: None,
            pending: Pending::default(),
            closed: false,
            last_error: None,
            answered: 0,
        }
    }

    /// Bytes of partial request head held between calls (bounded by [`MAX_HEADER_BYTES`]).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Status of the error response (400, 408, 413, 414, 417, 431, 501, 505) this connection was closed with, so
    /// that the server can count errors by status. `None` while serving or after a normal
    /// close (`Connection: close`, HTTP/1.0, EOF).
    #[must_use]
    pub fn status_of_last_error(&self) -> Option<u16> {
        self.last_error
    }

    /// True once a response that ends the connection was produced, or EOF was seen.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Head parsing while nothing is held: parse straight from the input.
    fn head_direct<'i>(&mut self, input: &'i [u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> &'i [u8] {
        let input = input.get(parse::skip_empty_lines(input)..).unwrap_or_default();
        if input.is_empty() {
            return input;
        }
        let window = input.get(..MAX_HEADER_BYTES + 1).unwrap_or(input);
        match parse::parse_head(window) {
            Parsed::Complete { len, head } => {
                self.start(head, len, out, ctx);
                input.get(len..).unwrap_or_default()
            }
            Parsed::Partial => {
                // Partial implies the window was not full, i.e. all of `input` is in it.
                self.buf.extend_from_slice(input);
                &[]
            }
            Parsed::Error(status) => {
                self.fail(status, out, ctx);
                &[]
            }
        }
    }

    /// Head parsing with a partial head held: append (at most up to the limit) and re-parse
    /// only if a line ended or a limit was crossed.
    fn head_buffered<'i>(&mut self, input: &'i [u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> &'i [u8] {
        let old = self.buf.len();
        let room = (MAX_HEADER_BYTES + 1).saturating_sub(old);
        if room == 0 {
            // Unreachable (a held head is at most MAX_HEADER_BYTES), but never loop on it.
            self.fail(431, out, ctx);
            return &[];
        }
        let (new, after) = input.split_at(room.min(input.len()));
        self.buf.extend_from_slice(new);
        if matches!(self.buf.first(), Some(b'\r' | b'\n')) {
            let skip = parse::skip_empty_lines(&self.buf);
            self.buf.drain(..skip);
        }
        let len = self.buf.len();
        let crossed = old <= REQUEST_LINE_LIMIT && len > REQUEST_LINE_LIMIT;
        if !(new.contains(&b'\n') || crossed || len > MAX_HEADER_BYTES) {
            return after;
        }
        match parse::parse_head(&self.buf) {
            Parsed::Partial => after,
            Parsed::Error(status) => {
                self.fail(status, out, ctx);
                &[]
            }
            Parsed::Complete { len: head_len, head } => {
                // The bytes held past the head are the tail of `new`: the held part alone was
                // not a complete head (or it would have been answered when its last line came).
                let leftover = len - head_len;
                let Some(resume) = new.len().checked_sub(leftover) else {
                    self.fail(400, out, ctx);
                    return &[];
                };
                self.buf.clear();
                self.start(head, head_len, out, ctx);
                input.get(resume..).unwrap_or_default()
            }
        }
    }

    /// Skips body bytes; answers the request when the body ends.
    fn skip_body<'i>(&mut self, input: &'i [u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> &'i [u8] {
        let Some(body) = self.body.as_mut() else {
            return input;
        };
        let (used, step) = body.consume(input);
        match step {
            Step::More => {}
            Step::Done => {
                self.body = None;
                self.respond(out, ctx);
            }
            Step::Error(status) => self.fail(status, out, ctx),
        }
        input.get(used..).unwrap_or_default()
    }

    /// A valid head was parsed: answer now, or after its body.
    fn start(&mut self, head: parse::Head, head_len: usize, out: &mut Vec<u8>, ctx: &Ctx<'_>) {
        self.pending = Pending { method: head.method, conn: head.conn };
        let too_large = matches!(head.framing, Framing::Length(len) if len > self.limits.max_body);
        if head.expect_continue && !too_large {
            // The body is read whatever the method (a 405 comes after it), so the client is
            // told to go ahead; if the body is already here, the interim response is harmless.
            out.extend_from_slice(response::CONTINUE);
        }
        match head.framing {
            Framing::None | Framing::Length(0) => self.respond(out, ctx),
            // Refused before a byte of it is read: the client learns at once (and an
            // `Expect: 100-continue` client never sends it).
            Framing::Length(len) if len > self.limits.max_body => self.fail(413, out, ctx),
            Framing::Length(len) => self.body = Some(Body::Length(len)),
            Framing::Chunked => self.body = Some(Body::Chunked(Chunked::new(head_len, self.limits.max_body))),
        }
    }

    fn respond(&mut self, out: &mut Vec<u8>, ctx: &Ctx<'_>) {
        let Pending { method, mut conn } = self.pending;
        self.served = self.served.saturating_add(1);
        let limit = self.limits.keepalive_requests;
        if ctx.closing || (limit > 0 && self.served >= limit) {
            // The last response of this connection says so (RFC 9112 section 9.6).
            conn = Conn::Close;
        }
        match method {
            Method::Get => response::hello(out, ctx.date, false, conn),
            Method::Head => response::hello(out, ctx.date, true, conn),
            Method::Other => response::not_allowed(out, ctx.date, conn),
        }
        self.answered = self.answered.saturating_add(1);
        if conn == Conn::Close {
            self.close();
        }
    }

    fn fail(&mut self, status: u16, out: &mut Vec<u8>, ctx: &Ctx<'_>) {
        self.last_error = Some(response::error(out, ctx.date, status));
        self.answered = self.answered.saturating_add(1);
        self.close();
    }

    fn close(&mut self) {
        self.closed = true;
        self.body = None;
        // Nothing more will be parsed: give the head buffer back now.
        self.buf = Vec::new();
    }
}

impl Protocol for Http1 {
    const NAME: &'static str = "http";

    fn new(limits: &Limits) -> Self {
        Self::with_limits(*limits)
    }

    /// `requests` counts every response appended, error responses included (those also
    /// close; see [`Http1::status_of_last_error`]).
    fn on_data(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress {
        self.answered = 0;
        let mut rest = input;
        // Every step consumes input, answers, or closes, so this terminates.
        while !self.closed && !rest.is_empty() {
            rest = if self.body.is_some() {
                self.skip_body(rest, out, ctx)
            } else if self.buf.is_empty() {
                self.head_direct(rest, out, ctx)
            } else {
                self.head_buffered(rest, out, ctx)
            };
        }
        Progress { requests: self.answered, close: self.closed }
    }

    /// EOF closes; a request cut short by it is dropped without a response (the peer is no
    /// longer sending, and a half-received request has nobody waiting for a 400).
    fn on_eof(&mut self, _out: &mut Vec<u8>, _ctx: &Ctx<'_>) -> Progress {
        self.close();
        Progress { requests: 0, close: true }
    }

    fn request_state(&self) -> RequestState {
        if self.closed {
            RequestState::Idle
        } else if self.body.is_some() {
            RequestState::Body
        } else if self.buf.is_empty() {
            RequestState::Idle
        } else {
            RequestState::Head
        }
    }

    /// A request head or body that does not arrive in time is answered `408` (a connection
    /// with nothing of a request yet just closes).
    fn on_read_timeout(&mut self, out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress {
        self.answered = 0;
        if self.request_state() == RequestState::Idle {
            self.close();
        } else {
            self.fail(408, out, ctx);
        }
        Progress { requests: self.answered, close: true }
    }
}
