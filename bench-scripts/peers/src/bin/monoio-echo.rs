//! monoio echo server (io_uring driver, one thread): the completion-based reference.

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(ringpoll_peers::listen_addr())?;
        ringpoll_peers::announce(listener.local_addr()?);
        loop {
            let (mut sock, _) = match listener.accept().await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let _ = sock.set_nodelay(true);
            monoio::spawn(async move {
                let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
                loop {
                    let (res, b) = sock.read(buf).await;
                    buf = b;
                    match res {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let (res, b) = sock.write_all(buf).await;
                    buf = b;
                    if res.is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
    })
}
