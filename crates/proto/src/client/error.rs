//! Why a response stream cannot be framed (a leaf: the framers report it, the load generator
//! reads it).

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
