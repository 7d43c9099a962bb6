//! Echo mode: every byte verified, corruption reported, idle connections counted.

mod common;

use std::time::Duration;

use common::echo_server;
use ringpoll_load::{run_load, LoadConfig, LoadMode, LoadPoller};

fn cfg(addr: std::net::SocketAddr, secs: f64) -> LoadConfig {
    let mut c = LoadConfig::new(addr.to_string());
    c.duration = Duration::from_secs_f64(secs);
    c.connections = 4;
    c
}

#[test]
fn clean_echo_pipelined_with_idle_connections() {
    let srv = echo_server(|_, _| false);
    let mut c = cfg(srv.addr, 0.5);
    c.size = 1000;
    c.depth = 4;
    c.idle = 5;
    c.threads = 2;
    let r = run_load(c).unwrap();
    assert_eq!(r.mode, "echo");
    assert!(r.requests > 50, "{r:#?}");
    assert_eq!(r.errors.total(), 0, "{r:#?}");
    assert_eq!(r.idle_connected, 5);
    // Every request was 1000 bytes out and 1000 bytes back (plus what was in flight at the end).
    assert!(r.bytes_read >= r.requests * 1000, "{r:#?}");
}

#[test]
fn large_messages_verify() {
    let srv = echo_server(|_, _| false);
    let mut c = cfg(srv.addr, 0.5);
    c.size = 200_000;
    c.depth = 2;
    c.mode = Some(LoadMode::Echo);
    let r = run_load(c).unwrap();
    assert!(r.requests > 4, "{r:#?}");
    assert_eq!(r.errors.total(), 0, "{r:#?}");
}

#[test]
fn one_corrupted_byte_is_reported_as_a_mismatch() {
    // Connection 0 flips byte 1000 of its stream; everything else is echoed faithfully.
    let srv = echo_server(|conn, off| conn == 0 && off == 1000);
    let r = run_load(cfg(srv.addr, 0.5)).unwrap();
    assert!(r.requests > 50, "{r:#?}");
    assert_eq!(r.errors.mismatch, 1, "{r:#?}");
    assert!(r.summary().contains("mismatch"), "{}", r.summary());
}

#[test]
fn edge_triggered_poller_verifies_too() {
    let srv = echo_server(|_, _| false);
    for (size, depth) in [(64, 1), (100_000, 3)] {
        let mut c = cfg(srv.addr, 0.4);
        c.poller = LoadPoller::EpollEt;
        c.size = size;
        c.depth = depth;
        let r = run_load(c).unwrap();
        assert_eq!(r.poller, "epoll-et");
        assert!(r.requests > 4, "{r:#?}");
        assert_eq!(r.errors.total(), 0, "{r:#?}");
    }
}
