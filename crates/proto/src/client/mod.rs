//! Client-side framing used by the load generator (`ringpoll load`).
//!
//! Sans-IO like the rest of the crate: the load generator's event loop feeds these objects
//! the bytes it received and reacts to what they report.
//!
//! - [`ResponseFramer`]: streaming HTTP/1.1 response framer (status line and headers via
//!   httparse, `Content-Length`, chunked and read-until-close bodies, interim 1xx skipped,
//!   pipelined responses separated exactly, input split at any offset). It never panics: bad
//!   input is a [`FrameError`], after which the connection has to be replaced.
//! - [`pattern`]: the deterministic echo byte pattern, indexed by stream offset, so that every
//!   echoed byte is checked without keeping a copy of what was sent.

pub mod chunked;
pub mod pattern;
mod response;
#[cfg(test)]
mod tests;

pub use response::{Response, ResponseFramer, MAX_HEAD, MAX_HEADERS};

/// Why a response stream cannot be framed (the connection must be dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The status line or a header field is malformed.
    BadHead,
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// Invalid or conflicting `Content-Length`.
    BadLength,
    /// Malformed chunked body (size line, missing CRLF, over-long line or trailers).
    BadChunk,
    /// `101 Switching Protocols`: the stream is no longer HTTP/1.1.
    Upgrade,
    /// The connection ended in the middle of a response.
    Truncated,
}

impl FrameError {
    /// Short description for summaries and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameError::BadHead => "malformed response head",
            FrameError::HeadTooLarge => "response head too large",
            FrameError::BadLength => "invalid Content-Length",
            FrameError::BadChunk => "malformed chunked body",
            FrameError::Upgrade => "unexpected 101 Switching Protocols",
            FrameError::Truncated => "connection closed mid-response",
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FrameError {}
