//! select(2) cannot watch descriptors at or above FD_SETSIZE (1024): the server must refuse
//! those connections cleanly and keep serving the others.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn select_beyond_fd_setsize_refuses_cleanly_and_recovers() {
    let srv = ServerProc::start("select", "echo", &[]);
    let mut conns: Vec<_> = (0..1100).map(|_| srv.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("{i:05}").as_bytes()).unwrap();
    }
    let (mut served, mut refused) = (0, 0);
    for (i, c) in conns.iter_mut().enumerate() {
        // A refused connection is closed at once; one neither served nor closed fails with
        // the read timeout (IO_TIMEOUT).
        let mut buf = [0u8; 5];
        match c.read_exact(&mut buf) {
            Ok(()) => {
                assert_eq!(&buf, format!("{i:05}").as_bytes(), "connection {i} echoed wrong bytes");
                served += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset),
                    "connection {i}: {e} (neither served nor closed)"
                );
                refused += 1;
            }
        }
    }
    assert!(served >= 1000, "only {served} connections served");
    assert!(refused >= 50, "only {refused} refused: the test did not reach FD_SETSIZE");
    drop(conns);
    // Once descriptors are free again, new connections are served.
    assert!(
        eventually(Duration::from_secs(5), || fd_count(srv.pid()) < 100),
        "server still holds {} descriptors",
        fd_count(srv.pid())
    );
    for i in 0..20u8 {
        let mut c = srv.connect();
        c.write_all(&[i]).unwrap();
        assert_eq!(read_exact(&mut c, 1), [i]);
    }
    let (code, err) = srv.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("rejected_fd_setsize {refused}")), "refusals are counted: {err}");
}
