//! Upstream balancing end to end, on every backend and relay variant: weighted round-robin,
//! least-connections under a skew, and consistent hashing of the client address (sticky, and
//! only the removed upstream's clients move). Connections are counted at the upstreams.

mod common;

use std::net::IpAddr;

use common::proxy::{hold, metrics_addr, proxy_args, proxy_to, round_trip, wait_metrics};
use common::upstream::TestUpstream;
use common::*;

on_every_proxy_variant!(
    weights_3_to_1_split_4000_connections_3_to_1,
    least_conn_sends_new_connections_away_from_a_skew,
    consistent_hash_is_sticky_and_moves_only_the_removed_share,
);

fn weights_3_to_1_split_4000_connections_3_to_1(v: &str) {
    let (a, b) = (TestUpstream::start(b'A'), TestUpstream::start(b'B'));
    let (wa, wb) = (format!("{}@3", a.addr), format!("{}@1", b.addr));
    let px = proxy_args(v, &["--upstream", &wa, "--upstream", &wb]);
    let addr = px.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || (0..1000).map(|_| round_trip(addr, None, b"w")).collect::<Vec<_>>()))
        .collect();
    let mut tags = [0usize; 2];
    for c in clients {
        for r in c.join().unwrap() {
            let tag = r.unwrap_or_else(|e| panic!("{v}: a connection failed: {e}"));
            tags[usize::from(tag == b'B')] += 1;
        }
    }
    let (na, nb) = (a.served(), b.served());
    assert_eq!((na, nb), (tags[0], tags[1]), "{v}: the upstreams' counts match the answers");
    assert_eq!(na + nb, 4000, "{v}");
    let ratio = na as f64 / nb as f64;
    eprintln!("{v}: weights 3:1 over 4000 connections gave {na}:{nb} ({ratio:.2}:1)");
    assert!((2.7..=3.3).contains(&ratio), "{v}: weights 3:1 gave {na}:{nb}");
}

fn least_conn_sends_new_connections_away_from_a_skew(v: &str) {
    const N: usize = 6;
    let a = TestUpstream::start(b'A');
    // B does not listen yet: each connection tries it (it has fewer), is refused, and goes to
    // A (passive health off, so that B stays a candidate): A ends up with every connection.
    let mut b = TestUpstream::stopped(b'B');
    let px =
        proxy_to(v, &[a.addr, b.addr], &["--balance", "least-conn", "--max-fails", "0", "--metrics", "127.0.0.1:0"]);
    let m = metrics_addr(&px);
    let on_a: Vec<_> = (0..N).map(|_| hold(px.addr)).collect();
    assert!(on_a.iter().all(|(_, t)| *t == b'A'), "{v}");
    assert_eq!(a.open(), N, "{v}");

    // B is back: new connections go to it until it carries as many as A.
    b.restart();
    let on_b: Vec<_> = (0..N).map(|_| hold(px.addr)).collect();
    let tags: Vec<u8> = on_b.iter().map(|(_, t)| *t).collect();
    assert_eq!(tags, [b'B'; N], "{v}: new connections avoid the loaded upstream");
    assert_eq!((a.open(), b.open()), (N, N), "{v}");
    // Even: one each.
    let two: Vec<_> = (0..2).map(|_| hold(px.addr)).collect();
    let tags: Vec<u8> = two.iter().map(|(_, t)| *t).collect();
    assert!(tags.contains(&b'A') && tags.contains(&b'B'), "{v}: {tags:?}");

    // A's first connections end: A (1) is now the lighter one, until it carries N + 1 again.
    drop(on_a);
    let a_addr = a.addr;
    wait_metrics(m, "A's pairs closed", |s| s.upstream("connections_open", a_addr) == 1.0);
    let back: Vec<_> = (0..N).map(|_| hold(px.addr)).collect();
    assert!(back.iter().all(|(_, t)| *t == b'A'), "{v}");
    drop((on_b, two, back));
}

/// 199 clients, from 127.0.0.2 to 127.0.0.200.
fn clients() -> Vec<IpAddr> {
    (2..=200u8).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

/// The upstream (tag) each client lands on.
fn landing(px: &ServerProc, v: &str) -> Vec<u8> {
    clients()
        .into_iter()
        .map(|c| round_trip(px.addr, Some(c), b"k").unwrap_or_else(|e| panic!("{v} {c}: {e}")))
        .collect()
}

fn consistent_hash_is_sticky_and_moves_only_the_removed_share(v: &str) {
    let (a, b) = (TestUpstream::start(b'A'), TestUpstream::start(b'B'));
    let mut c = TestUpstream::start(b'C');
    let checks = ["--health-interval", "200ms", "--health-rise", "2", "--health-fall", "2"];
    let mut extra = vec!["--balance", "hash", "--metrics", "127.0.0.1:0"];
    extra.extend(checks);
    let px = proxy_to(v, &[a.addr, b.addr, c.addr], &extra);
    let m = metrics_addr(&px);
    let before = landing(&px, v);
    assert_eq!(landing(&px, v), before, "{v}: every client lands where it landed before");
    for tag in [b'A', b'B', b'C'] {
        let share = before.iter().filter(|&&t| t == tag).count();
        assert!(share > 20, "{v}: upstream {} has {share} of 199 clients", tag as char);
    }

    // C goes down (the active checks see it): only C's clients move.
    c.kill();
    let c_addr = c.addr;
    wait_metrics(m, "C down", |s| s.upstream("up", c_addr) == 0.0);
    let down = landing(&px, v);
    let moved = before.iter().zip(&down).filter(|(w, n)| w != n).count();
    let on_c = before.iter().filter(|&&t| t == b'C').count();
    eprintln!("{v}: hash: C had {on_c} of {} client addresses; {moved} moved when C went down", before.len());
    for (i, (was, now)) in before.iter().zip(&down).enumerate() {
        assert!(*now != b'C' && (was == now || *was == b'C'), "{v}: client {i} moved from {was} to {now}");
    }
    drop(px);

    // C removed from the configuration: the same clients move, to the same upstreams.
    let without = proxy_to(v, &[a.addr, b.addr], &["--balance", "hash"]);
    assert_eq!(landing(&without, v), down, "{v}: removed or down, C's clients land alike");
}
