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
mod error;
pub mod pattern;
mod response;
#[cfg(test)]
mod tests;

pub use error::FrameError;
pub use response::{Response, ResponseFramer, MAX_HEAD, MAX_HEADERS};
