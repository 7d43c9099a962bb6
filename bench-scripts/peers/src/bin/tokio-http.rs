//! tokio HTTP/1.1 plaintext server on a current-thread runtime: keep-alive, pipelining (all
//! responses of one read written at once), httparse, Date cached per second.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::bind(ringpoll_peers::listen_addr()).await?;
        ringpoll_peers::announce(listener.local_addr()?);
        let date = Rc::new(RefCell::new(ringpoll_peers::DateCache::default()));
        let serve = async {
            loop {
                let (mut sock, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let _ = sock.set_nodelay(true);
                let date = date.clone();
                tokio::task::spawn_local(async move {
                    let mut buf = Vec::with_capacity(16 * 1024);
                    let mut out = Vec::with_capacity(16 * 1024);
                    loop {
                        match sock.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let used = {
                            let mut d = date.borrow_mut();
                            match ringpoll_peers::answer_all(&buf, &mut out, d.get()) {
                                Some(u) => u,
                                None => return,
                            }
                        };
                        buf.drain(..used);
                        if !out.is_empty() {
                            if sock.write_all(&out).await.is_err() {
                                return;
                            }
                            out.clear();
                        }
                    }
                });
            }
        };
        tokio::select! {
            () = serve => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
