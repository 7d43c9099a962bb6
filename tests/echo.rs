//! End-to-end echo behaviour, on every backend.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

on_every_backend!(
    one_mib_in_random_chunks_is_echoed_byte_exact,
    two_hundred_concurrent_connections,
    shutdown_write_gets_every_byte_then_eof,
    resetting_clients_do_not_disturb_others,
    a_thousand_concurrent_connections,
    descriptors_return_to_baseline,
);

fn one_mib_in_random_chunks_is_echoed_byte_exact(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    let mut rng = Rng::new(1);
    let payload = rng.bytes(1 << 20);
    let mut s = srv.connect();
    let mut reader = s.try_clone().unwrap();
    let expect = payload.clone();
    let t = std::thread::spawn(move || {
        let got = read_to_eof(&mut reader);
        (got.len(), hash(&got))
    });
    let mut off = 0;
    while off < payload.len() {
        let n = rng.range(1, 70_000).min(payload.len() - off);
        s.write_all(&payload[off..off + n]).unwrap();
        off += n;
        if rng.range(0, 7) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (len, h) = t.join().unwrap();
    assert_eq!(len, expect.len(), "{backend}: echoed length");
    assert_eq!(h, hash(&expect), "{backend}: echoed bytes differ");
}

fn two_hundred_concurrent_connections(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    let addr = srv.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut conns: Vec<_> = (0..25).map(|_| connect(addr)).collect();
                for round in 0..20 {
                    let msgs: Vec<Vec<u8>> = conns.iter().map(|_| rng.bytes_in(1, 3000)).collect();
                    for (c, m) in conns.iter_mut().zip(&msgs) {
                        c.write_all(m).unwrap();
                    }
                    for (i, (c, m)) in conns.iter_mut().zip(&msgs).enumerate() {
                        let got = read_exact(c, m.len());
                        assert!(got == *m, "thread {t} conn {i} round {round}: echo differs");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|_| panic!("{backend}: a client thread failed"));
    }
}

fn shutdown_write_gets_every_byte_then_eof(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    for size in [0usize, 1, 1000, 300_000] {
        let data = Rng::new(size as u64).bytes(size);
        let mut s = srv.connect();
        let mut r = s.try_clone().unwrap();
        let t = std::thread::spawn(move || read_to_eof(&mut r));
        write_and_shutdown(&mut s, &data);
        let got = t.join().unwrap();
        assert_eq!(got.len(), size, "{backend}: size {size}");
        assert!(got == data, "{backend}: bytes differ for size {size}");
    }
}

fn resetting_clients_do_not_disturb_others(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    let mut good: Vec<_> = (0..10).map(|_| srv.connect()).collect();
    let mut rng = Rng::new(7);
    for round in 0..10 {
        // Clients that reset mid-transfer, some with unread echoes pending.
        for _ in 0..10 {
            let mut bad = srv.connect();
            bad.write_all(&rng.bytes_in(1, 200_000)).unwrap();
            set_linger_zero(&bad);
            drop(bad);
        }
        for (i, c) in good.iter_mut().enumerate() {
            let m = rng.bytes_in(1, 5000);
            c.write_all(&m).unwrap();
            assert!(read_exact(c, m.len()) == m, "{backend}: round {round} conn {i}");
        }
    }
}

fn a_thousand_concurrent_connections(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    let mut conns: Vec<_> = (0..1000).map(|_| srv.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("hello {i:04}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let got = read_exact(c, 10);
        assert_eq!(got, format!("hello {i:04}").as_bytes(), "{backend}: conn {i}");
    }
}

fn descriptors_return_to_baseline(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &[]);
    let base = fd_count(srv.pid());
    let mut conns: Vec<_> = (0..100).map(|_| srv.connect()).collect();
    for c in &mut conns {
        c.write_all(b"x").unwrap();
        assert_eq!(read_exact(c, 1), b"x");
    }
    assert!(fd_count(srv.pid()) >= base + 100, "{backend}: connections are open");
    // Half close cleanly, half reset.
    for (i, c) in conns.into_iter().enumerate() {
        if i % 2 == 0 {
            set_linger_zero(&c);
        }
        drop(c);
    }
    let ok = eventually(Duration::from_secs(5), || fd_count(srv.pid()) <= base);
    assert!(ok, "{backend}: {} fds open after closing, baseline {base}", fd_count(srv.pid()));
    // And the server still serves.
    let mut c = srv.connect();
    c.write_all(b"again").unwrap();
    assert_eq!(read_exact(&mut c, 5), b"again");
    let mut buf = [0u8; 1];
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.read(&mut buf).unwrap(), 0);
}
