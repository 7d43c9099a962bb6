//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), versions 1 (text) and 2 (binary):
//! a header a proxy sends first on a connection to tell the server who the real client is.
//!
//! Parsing is strict and sans-IO: [`parse`] is a pure function of the bytes received so far
//! that answers "need more", "a header of `len` bytes", or "invalid", and never looks past the
//! header (what follows belongs to the relayed stream). [`HeaderReader`] accumulates input
//! split anywhere and hands back the bytes after the header. The header is bounded (107 bytes
//! for v1, 16 + [`MAX_V2_PAYLOAD`] for v2), so is the buffering.
//!
//! A listener that did not ask for the header never parses one (that would let any client
//! spoof its address), and one that did refuses a connection without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (12 bytes).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The longest v2 address block and TLVs this parser accepts (real headers carry well under
/// 300 bytes; the field allows 64 KiB, which is not worth buffering for a stranger).
pub const MAX_V2_PAYLOAD: usize = 1024;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The original source and destination, or `None` when the sender said the connection is
    /// its own (v2 LOCAL, v1 UNKNOWN, an unspecified or UNIX address family): the connection's
    /// own endpoints stand.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// What [`parse`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Everything so far is a valid beginning: more bytes are needed.
    Incomplete,
    /// A complete header of `len` bytes.
    Done { header: Header, len: usize },
    /// Not a PROXY header, or a malformed one.
    Invalid(&'static str),
}

/// Parse a header at the start of `buf`.
#[must_use]
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.starts_with(&V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.starts_with(V1_PREFIX) {
        return parse_v1(buf);
    }
    let prefix_of = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if prefix_of(&V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        return Parsed::Incomplete;
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    // The line ends at the first CR or LF, whichever comes first: a bare LF is malformed.
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    if window[end] == b'\n' {
        return Parsed::Invalid("v1 header line ends without CR");
    }
    let cr = end;
    match window.get(cr + 1) {
        None => {
            return if cr + 1 >= V1_MAX {
                Parsed::Invalid("v1 header longer than 107 bytes")
            } else {
                Parsed::Incomplete
            }
        }
        Some(b'\n') => {}
        Some(_) => return Parsed::Invalid("v1 header: CR not followed by LF"),
    }
    let len = cr + 2;
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..cr]) else {
        return Parsed::Invalid("v1 header is not ASCII");
    };
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Parsed::Done { header: Header { version: Version::V1, addrs: None }, len };
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = parts[..] else {
        return Parsed::Invalid("v1 header: expected protocol, two addresses and two ports");
    };
    let (src, dst) = match proto {
        "TCP4" => match (src.parse::<Ipv4Addr>(), dst.parse::<Ipv4Addr>()) {
            (Ok(s), Ok(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
            _ => return Parsed::Invalid("v1 header: bad IPv4 address"),
        },
        "TCP6" => match (src.parse::<Ipv6Addr>(), dst.parse::<Ipv6Addr>()) {
            (Ok(s), Ok(d)) => (IpAddr::V6(s), IpAddr::V6(d)),
            _ => return Parsed::Invalid("v1 header: bad IPv6 address"),
        },
        _ => return Parsed::Invalid("v1 header: unknown protocol"),
    };
    let (Some(sp), Some(dp)) = (port(sport), port(dport)) else {
        return Parsed::Invalid("v1 header: bad port");
    };
    let addrs = Some((SocketAddr::new(src, sp), SocketAddr::new(dst, dp)));
    Parsed::Done { header: Header { version: Version::V1, addrs }, len }
}

/// A decimal port without sign or leading zeros.
fn port(s: &str) -> Option<u16> {
    let ok =
        !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let Some(&[ver_cmd, fam, hi, lo]) = buf.get(12..16) else { return Parsed::Incomplete };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("v2 header: unknown version");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("v2 header: unknown command"),
    };
    let payload = usize::from(u16::from_be_bytes([hi, lo]));
    if payload > MAX_V2_PAYLOAD {
        return Parsed::Invalid("v2 header: too long");
    }
    let len = 16 + payload;
    let Some(body) = buf.get(16..len) else { return Parsed::Incomplete };
    let done = |addrs| Parsed::Done { header: Header { version: Version::V2, addrs }, len };
    if local {
        return done(None);
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if transport > 2 || family > 3 {
        return Parsed::Invalid("v2 header: unknown address family or transport");
    }
    if transport == 2 {
        return Parsed::Invalid("v2 header: datagram transport on a stream connection");
    }
    match family {
        1 => match body.get(..12) {
            Some(a) => {
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                done(Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))))
            }
            None => Parsed::Invalid("v2 header: IPv4 address block too short"),
        },
        2 => match body.get(..36) {
            Some(a) => {
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                done(Some((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))))
            }
            None => Parsed::Invalid("v2 header: IPv6 address block too short"),
        },
        // UNSPEC, or UNIX sockets on the other side of the proxy: the connection's own
        // endpoints are the best we know.
        _ => done(None),
    }
}

/// Accumulates input until a header is complete; never keeps more than a header's worth.
#[derive(Debug, Default)]
pub struct HeaderReader {
    buf: Vec<u8>,
}

/// What [`HeaderReader::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// All of the input was taken; more is needed.
    More,
    /// The header, and the bytes that followed it in this input.
    Done(Header, Vec<u8>),
    Invalid(&'static str),
}

impl HeaderReader {
    /// Feed the next bytes received.
    pub fn feed(&mut self, input: &[u8]) -> Read {
        let old = self.buf.len();
        let room = (16 + MAX_V2_PAYLOAD).saturating_sub(old);
        self.buf.extend_from_slice(&input[..input.len().min(room)]);
        match parse(&self.buf) {
            Parsed::Incomplete if input.len() > room => Read::Invalid("PROXY header too long"),
            Parsed::Incomplete => Read::More,
            Parsed::Invalid(why) => Read::Invalid(why),
            Parsed::Done { header, len } => {
                // The header ends inside this input (the held part alone was incomplete).
                let rest = input.get(len.saturating_sub(old)..).unwrap_or_default().to_vec();
                self.buf = Vec::new();
                Read::Done(header, rest)
            }
        }
    }
}

/// Append a header saying the connection came from `src` to `dst`. Mixed families are sent
/// as IPv6 (IPv4 addresses mapped).
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (src, dst),
        _ => (to_v6(src), to_v6(dst)),
    };
    match version {
        Version::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!("PROXY {proto} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port());
            out.extend_from_slice(line.as_bytes());
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Feed `stream` split at `cut`; the answer must equal the one for the whole input.
    fn at_every_split(stream: &[u8]) -> Read {
        let whole = HeaderReader::default().feed(stream);
        for cut in 0..=stream.len() {
            let mut r = HeaderReader::default();
            let got = match r.feed(&stream[..cut]) {
                Read::More => r.feed(&stream[cut..]),
                Read::Done(h, mut rest) => {
                    rest.extend_from_slice(&stream[cut..]);
                    Read::Done(h, rest)
                }
                other => other,
            };
            // An invalid verdict may come at an earlier cut (the prefix is already wrong), but
            // it must be invalid either way; a complete one must be identical.
            match (&whole, &got) {
                (Read::Invalid(_), Read::Invalid(_)) => {}
                (Read::Done(h1, rest1), Read::Done(h2, rest2)) => {
                    assert_eq!(h1, h2, "cut {cut}");
                    assert_eq!(rest1, rest2, "cut {cut}");
                }
                _ => panic!("cut {cut}: {whole:?} vs {got:?}"),
            }
        }
        whole
    }

    #[test]
    fn v1_round_trips_at_every_split() {
        for (src, dst) in [("1.2.3.4:5678", "10.0.0.1:80"), ("[2001:db8::1]:65535", "[::1]:0")] {
            let mut wire = Vec::new();
            encode(Version::V1, sa(src), sa(dst), &mut wire);
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let Read::Done(h, rest) = at_every_split(&wire) else { panic!() };
            assert_eq!(h, Header { version: Version::V1, addrs: Some((sa(src), sa(dst))) });
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        }
        let mut w = Vec::new();
        encode(Version::V1, sa("192.168.0.1:56324"), sa("192.168.0.11:443"), &mut w);
        assert_eq!(w, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    }

    #[test]
    fn v2_round_trips_at_every_split() {
        for (src, dst) in [("1.2.3.4:5678", "10.0.0.1:80"), ("[2001:db8::1]:1", "[::1]:2"), ("1.2.3.4:5", "[::1]:6")] {
            let mut wire = Vec::new();
            encode(Version::V2, sa(src), sa(dst), &mut wire);
            wire.extend_from_slice(b"payload");
            let Read::Done(h, rest) = at_every_split(&wire) else { panic!() };
            let want =
                if src.contains('[') == dst.contains('[') { (sa(src), sa(dst)) } else { (to_v6(sa(src)), sa(dst)) };
            assert_eq!(h, Header { version: Version::V2, addrs: Some(want) });
            assert_eq!(rest, b"payload");
        }
        let mut w = Vec::new();
        encode(Version::V2, sa("127.0.0.1:1000"), sa("127.0.0.2:2000"), &mut w);
        assert_eq!(
            w,
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0x03, 0xe8, 0x07, 0xd0]].concat()
        );
    }

    #[test]
    fn local_unknown_and_tlvs() {
        let local = [&V2_SIGNATURE[..], &[0x20, 0x00, 0, 0], b"x"].concat();
        assert_eq!(at_every_split(&local), Read::Done(Header { version: Version::V2, addrs: None }, b"x".to_vec()));
        let unknown = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest";
        assert_eq!(at_every_split(unknown), Read::Done(Header { version: Version::V1, addrs: None }, b"rest".to_vec()));
        // An IPv4 block followed by a TLV (type 0x04 NOOP, length 3).
        let mut tlv = [&V2_SIGNATURE[..], &[0x21, 0x11, 0, 18]].concat();
        tlv.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2, 0, 1, 0, 2, 0x04, 0, 3, 9, 9, 9]);
        let Read::Done(h, rest) = at_every_split(&tlv) else { panic!() };
        assert_eq!(h.addrs, Some((sa("1.1.1.1:1"), sa("2.2.2.2:2"))));
        assert!(rest.is_empty());
    }

    #[test]
    fn malformed_and_missing_headers_are_refused() {
        let bad: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            // Found by cargo fuzz: an LF before the first CR is where the line ends.
            b"PROXY \x7f\x00\n\x0eQU\x04PROXY \x00R\x00I\x00\x00\r",
        ];
        for b in bad {
            assert!(matches!(at_every_split(b), Read::Invalid(_)), "{:?}", String::from_utf8_lossy(b));
        }
        let long = [b"PROXY TCP6 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(HeaderReader::default().feed(&long), Read::Invalid(_)));
        let v2 = |ver_cmd: u8, fam: u8, len: u16, body: &[u8]| {
            [&V2_SIGNATURE[..], &[ver_cmd, fam], &len.to_be_bytes(), body].concat()
        };
        for b in [
            v2(0x11, 0x11, 12, &[0; 12]),   // version 1 in a v2 signature
            v2(0x22, 0x11, 12, &[0; 12]),   // command 2
            v2(0x21, 0x12, 12, &[0; 12]),   // datagram
            v2(0x21, 0x11, 4, &[0; 4]),     // IPv4 block too short
            v2(0x21, 0x21, 12, &[0; 12]),   // IPv6 block too short
            v2(0x21, 0x41, 0, &[]),         // family 4
            v2(0x21, 0x11, 2000, &[0; 12]), // too long to buffer
        ] {
            assert!(matches!(at_every_split(&b), Read::Invalid(_)), "{b:?}");
        }
        assert_eq!(HeaderReader::default().feed(b"PRO"), Read::More);
        assert_eq!(HeaderReader::default().feed(b"\r\n\r\n\0"), Read::More);
    }
}
