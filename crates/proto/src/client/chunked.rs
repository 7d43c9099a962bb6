//! Streaming decoder for `Transfer-Encoding: chunked` response bodies.
//!
//! The body is framed and skipped, never buffered: the decoder keeps a handful of integers.
//! Chunk-size lines (size, optional extensions) are bounded by [`MAX_CHUNK_LINE`] and the
//! trailer section by [`MAX_TRAILER`]. Bare LF line ends are accepted alongside CRLF.

use super::error::FrameError;

/// Longest chunk-size line (size and extensions), in bytes.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section, in bytes.
pub const MAX_TRAILER: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    #[default]
    Size,
    /// After the digits: whitespace and `;extensions` until the line ends.
    Ext,
    /// Saw CR at the end of a size line.
    SizeLf,
    /// Skipping chunk data.
    Data,
    /// After the data: expecting CR LF.
    DataCr,
    DataLf,
    /// Trailer lines until an empty one.
    Trailer,
    Done,
}

/// Decoder state for one chunked body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// Chunk size being parsed, then bytes of chunk data left.
    size: u64,
    digits: u8,
    /// Bytes of the current size line or trailer line.
    line: usize,
    trailer: usize,
}

/// Result of feeding bytes to a [`Chunked`] decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// Every byte given was consumed; the body goes on.
    More,
    /// The body ended after the consumed bytes; what follows belongs to the next response.
    Done,
}

impl Chunked {
    #[must_use]
    pub const fn new() -> Self {
        Self { state: State::Size, size: 0, digits: 0, line: 0, trailer: 0 }
    }

    /// Whether the final chunk and trailers have been read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume a prefix of `input` (all of it unless the body ends inside it). Never consumes
    /// more than `input.len()` bytes; an error leaves the decoder unusable.
    pub fn consume(&mut self, input: &[u8]) -> Result<(usize, ChunkStep), FrameError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return Ok((i, ChunkStep::Done));
            }
            if self.state == State::Data {
                let n = usize::try_from(self.size).map_or(input.len() - i, |s| s.min(input.len() - i));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 16 {
                            return Err(FrameError::BadChunk);
                        }
                        self.digits += 1;
                        self.size = (self.size << 4) | u64::from(hex(b));
                        self.line_byte()?;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => {
                        self.state = State::Ext;
                        self.line_byte()?;
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    _ => return Err(FrameError::BadChunk),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => self.line_byte()?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(FrameError::BadChunk);
                    }
                    self.end_size_line();
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(FrameError::BadChunk),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(FrameError::BadChunk);
                    }
                    self.next_chunk();
                }
                State::Trailer => match b {
                    b'\n' if self.line == 0 => {
                        self.state = State::Done;
                        return Ok((i, ChunkStep::Done));
                    }
                    b'\n' => self.line = 0,
                    b'\r' => {}
                    _ => {
                        self.line += 1;
                        self.trailer += 1;
                        if self.trailer > MAX_TRAILER {
                            return Err(FrameError::BadChunk);
                        }
                    }
                },
                // Both handled before a byte is taken.
                State::Done | State::Data => {}
            }
        }
        Ok((i, if self.state == State::Done { ChunkStep::Done } else { ChunkStep::More }))
    }

    fn line_byte(&mut self) -> Result<(), FrameError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(FrameError::BadChunk);
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.line = 0;
        if self.size == 0 {
            self.state = State::Trailer;
        } else {
            self.state = State::Data;
        }
    }

    fn next_chunk(&mut self) {
        self.state = State::Size;
        self.size = 0;
        self.digits = 0;
        self.line = 0;
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> Result<(usize, ChunkStep), FrameError> {
        Chunked::new().consume(body)
    }

    #[test]
    fn simple_bodies() {
        assert_eq!(run(b"0\r\n\r\n"), Ok((5, ChunkStep::Done)));
        assert_eq!(run(b"5\r\nhello\r\n0\r\n\r\nHTTP"), Ok((15, ChunkStep::Done)));
        assert_eq!(run(b"A;ext=1\r\n0123456789\r\n0\r\nX-T: y\r\n\r\n"), Ok((34, ChunkStep::Done)));
        assert_eq!(run(b"5\nhello\n0\n\n"), Ok((11, ChunkStep::Done)));
        assert_eq!(run(b"5\r\nhel"), Ok((6, ChunkStep::More)));
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(run(b"\r\n"), Err(FrameError::BadChunk));
        assert_eq!(run(b"g\r\n"), Err(FrameError::BadChunk));
        assert_eq!(run(b"5\r\nhelloX"), Err(FrameError::BadChunk));
        assert_eq!(run(b"11111111111111111\r\n"), Err(FrameError::BadChunk));
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE + 10, b'x');
        assert_eq!(run(&long), Err(FrameError::BadChunk));
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut c = Chunked::new();
        for (i, b) in body.iter().enumerate() {
            let (n, step) = c.consume(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            assert_eq!(step == ChunkStep::Done, i == body.len() - 1);
        }
    }
}
