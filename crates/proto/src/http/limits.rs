//! The bounds of what one HTTP connection may hold (a leaf: the parser, the body decoder and
//! the connection all read it).

/// Largest request head (request line + header fields + final CRLF), in bytes; beyond it 431.
pub const MAX_HEADER_BYTES: usize = 8192;
/// Most header fields in one request; beyond it 431.
pub const MAX_HEADERS: usize = 100;
/// Longest request target, in bytes; beyond it 414.
pub const MAX_TARGET: usize = 4096;
/// Longest chunk-size line (size and extensions) of a chunked body; beyond it 400.
pub const MAX_CHUNK_LINE: usize = 1024;
