//! tokio echo server on a current-thread runtime (one worker, as ringpoll's benchmark runs).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(ringpoll_peers::listen_addr()).await?;
        ringpoll_peers::announce(listener.local_addr()?);
        let serve = async {
            loop {
                let (mut sock, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let _ = sock.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if sock.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
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
