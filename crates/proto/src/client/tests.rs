//! Response framer tests: fixed cases, then properties over generated response streams split
//! at arbitrary offsets.

use proptest::prelude::*;

use super::*;

/// Feed `data` in pieces cut at `cuts` (clamped), collecting statuses; stops at an error.
fn frame(data: &[u8], cuts: &[usize]) -> (Vec<u16>, Option<FrameError>, ResponseFramer) {
    let mut f = ResponseFramer::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for &c in cuts {
        let n = c.min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces.push(rest);
    for p in pieces {
        if let Err(e) = f.feed_all(p, |r| out.push(r.status)) {
            return (out, Some(e), f);
        }
    }
    (out, None, f)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 13\r\n\r\nHello, World!";

#[test]
fn one_response_with_length() {
    let (s, e, f) = frame(OK, &[]);
    assert_eq!((s, e), (vec![200], None));
    assert!(f.is_idle());
}

#[test]
fn pipelined_responses_back_to_back() {
    let mut data = Vec::new();
    for _ in 0..16 {
        data.extend_from_slice(OK);
    }
    data.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    data.extend_from_slice(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let (s, e, f) = frame(&data, &[]);
    assert_eq!(e, None);
    assert_eq!(s.len(), 18);
    assert_eq!(&s[16..], &[404, 500]);
    assert!(f.is_idle());
}

#[test]
fn feed_reports_exact_boundaries() {
    let mut data = OK.to_vec();
    data.extend_from_slice(OK);
    let mut f = ResponseFramer::new();
    let (n, r) = f.feed(&data);
    assert_eq!(n, OK.len());
    assert_eq!(r, Ok(Some(Response { status: 200, close: false })));
    let (n, r) = f.feed(&data[OK.len()..]);
    assert_eq!((n, r), (OK.len(), Ok(Some(Response { status: 200, close: false }))));
    assert_eq!(f.feed(&[]), (0, Ok(None)));
}

#[test]
fn interim_responses_are_skipped() {
    let data =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    for cut in 0..data.len() {
        let (s, e, _) = frame(data, &[cut]);
        assert_eq!((s, e), (vec![204], None), "cut at {cut}");
    }
}

#[test]
fn close_and_until_close_bodies() {
    let mut f = ResponseFramer::new();
    let (_, r) = f.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(r, Ok(Some(Response { status: 200, close: true })));

    let mut f = ResponseFramer::new();
    assert_eq!(f.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body").1, Ok(None));
    assert_eq!(f.feed(b" and more").1, Ok(None));
    assert_eq!(f.on_eof(), Ok(Some(Response { status: 200, close: true })));

    let mut f = ResponseFramer::new();
    assert_eq!(
        f.feed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").1,
        Ok(Some(Response { status: 200, close: false }))
    );
    assert_eq!(f.on_eof(), Ok(None));
}

#[test]
fn truncation_and_errors() {
    let mut f = ResponseFramer::new();
    assert_eq!(f.feed(&OK[..OK.len() - 3]).1, Ok(None));
    assert_eq!(f.on_eof(), Err(FrameError::Truncated));

    for (bad, want) in [
        (&b"HTTX/1.1 200 OK\r\n\r\n"[..], FrameError::BadHead),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", FrameError::BadLength),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", FrameError::BadLength),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", FrameError::BadChunk),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", FrameError::Upgrade),
    ] {
        let mut f = ResponseFramer::new();
        assert_eq!(f.feed(bad).1, Err(want), "{}", String::from_utf8_lossy(bad));
        // Sticky.
        assert_eq!(f.feed(OK).1, Err(want));
    }
}

#[test]
fn oversized_heads_are_refused_whatever_the_chunking() {
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    while big.len() <= MAX_HEAD {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let (_, e, _) = frame(&big, &[]);
    assert_eq!(e, Some(FrameError::HeadTooLarge));
    let (_, e, _) = frame(&big, &[10, 1000, 30_000]);
    assert_eq!(e, Some(FrameError::HeadTooLarge));
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(frame(&many, &[]).1, Some(FrameError::HeadTooLarge));
}

/// One generated response: status, body, framing, extra header.
#[derive(Clone, Debug)]
struct Gen {
    status: u16,
    body: Vec<u8>,
    chunks: Option<Vec<usize>>,
    interim: bool,
}

fn gen_response() -> impl Strategy<Value = Gen> {
    (
        prop_oneof![Just(200u16), Just(201), Just(301), Just(404), Just(500), 200u16..600],
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(proptest::collection::vec(1usize..64, 0..6)),
        any::<bool>(),
    )
        .prop_map(|(status, body, chunks, interim)| Gen { status, body, chunks, interim })
}

fn serialize(g: &Gen, out: &mut Vec<u8>) {
    if g.interim {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    out.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\nServer: test\r\n", g.status).as_bytes());
    let has_body = !matches!(g.status, 204 | 304);
    match (&g.chunks, has_body) {
        (_, false) => out.extend_from_slice(b"\r\n"),
        (None, true) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", g.body.len()).as_bytes());
            out.extend_from_slice(&g.body);
        }
        (Some(sizes), true) => {
            out.extend_from_slice(b"Transfer-Encoding: gzip, chunked\r\n\r\n");
            let mut rest = &g.body[..];
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&7)).min(rest.len());
                out.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        }
    }
}

proptest! {
    #[test]
    fn generated_streams_frame_identically_at_any_split(
        resps in proptest::collection::vec(gen_response(), 1..12),
        cuts in proptest::collection::vec(0usize..400, 0..20),
    ) {
        let mut data = Vec::new();
        for r in &resps {
            serialize(r, &mut data);
        }
        let want: Vec<u16> = resps.iter().map(|r| r.status).collect();
        let (got, err, f) = frame(&data, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, want);
        prop_assert!(f.is_idle());
    }

    #[test]
    fn byte_at_a_time_matches(resps in proptest::collection::vec(gen_response(), 1..4)) {
        let mut data = Vec::new();
        for r in &resps {
            serialize(r, &mut data);
        }
        let mut f = ResponseFramer::new();
        let mut got = Vec::new();
        for b in &data {
            f.feed_all(std::slice::from_ref(b), |r| got.push(r.status)).unwrap();
        }
        prop_assert_eq!(got, resps.iter().map(|r| r.status).collect::<Vec<_>>());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000),
                                   cuts in proptest::collection::vec(0usize..300, 0..10)) {
        let mut f = ResponseFramer::new();
        let mut rest = &data[..];
        for c in cuts {
            let n = c.min(rest.len());
            let (used, _) = f.feed(&rest[..n]);
            prop_assert!(used <= n);
            rest = &rest[used.max(n.min(1)).min(rest.len())..];
        }
        let _ = f.on_eof();
    }

    #[test]
    fn mutated_streams_never_panic(resps in proptest::collection::vec(gen_response(), 1..4),
                                   flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut data = Vec::new();
        for r in &resps {
            serialize(r, &mut data);
        }
        for (i, b) in flips {
            let i = i % data.len();
            data[i] = b;
        }
        let (got, _, _) = frame(&data, &[]);
        prop_assert!(got.len() <= resps.len() + 2);
    }
}
