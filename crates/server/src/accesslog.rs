//! The proxy's access log: one line per finished pair (HAProxy's `option tcplog`, nginx's
//! stream `access_log`), written by its own thread.
//!
//! A worker never touches the disk: it hands a small record to a bounded channel with
//! `try_send` and goes on. When the writer falls behind (a slow disk, a full pipe on stderr)
//! records are dropped and counted, never queued without bound and never waited for.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use ringpoll_proto::CloseReason;

/// Records waiting for the writer, at most.
const QUEUE: usize = 64 * 1024;
/// The writer flushes at least this often while records arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// One finished proxy pair.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub end: SystemTime,
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub upstream: Option<SocketAddr>,
    /// Bytes from the client to the upstream, and back.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    pub reason: CloseReason,
}

impl Record {
    fn write(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        let time = humantime::format_rfc3339_millis(self.end);
        let upstream = self.upstream.map_or_else(|| "-".to_string(), |u| u.to_string());
        match format {
            Format::Text => writeln!(
                out,
                "{time} {} {} {upstream} {} {} {:.3} {}",
                self.client,
                self.listener,
                self.bytes_up,
                self.bytes_down,
                self.duration.as_secs_f64(),
                self.reason.name()
            ),
            Format::Json => {
                let v = serde_json::json!({
                    "time": time.to_string(),
                    "client": self.client.to_string(),
                    "listener": self.listener.to_string(),
                    "upstream": self.upstream.map(|u| u.to_string()),
                    "bytes_up": self.bytes_up,
                    "bytes_down": self.bytes_down,
                    "duration_s": self.duration.as_secs_f64(),
                    "close": self.reason.name(),
                });
                writeln!(out, "{v}")
            }
        }
    }
}

/// A worker's handle on the access log (cheap to clone).
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: SyncSender<Record>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Queue a record; drops it (counted) if the writer is behind. Never blocks.
    pub fn log(&self, rec: Record) {
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the writer was behind.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The dropped-records counter alone, for a reader that must not keep the writer running
    /// (the writer ends when the last [`AccessLog`] is dropped).
    #[must_use]
    pub fn dropped_counter(&self) -> Dropped {
        Dropped(self.dropped.clone())
    }
}

/// Records an [`AccessLog`] dropped.
#[derive(Clone, Debug)]
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Open the destination (`-` is stderr, anything else a file opened for appending) and start
/// the writer thread. It ends, after writing everything queued, once every [`AccessLog`]
/// handle is dropped.
pub fn start(path: &str, format: Format) -> io::Result<(AccessLog, JoinHandle<()>)> {
    let sink: Box<dyn Write + Send> = if path == "-" {
        Box::new(io::stderr())
    } else {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening the access log {path}: {e}")))?;
        Box::new(f)
    };
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let handle = std::thread::Builder::new()
        .name("ringpoll-accesslog".into())
        .spawn(move || writer(&rx, format, BufWriter::new(sink)))?;
    Ok((AccessLog { tx, dropped: Arc::new(AtomicU64::new(0)) }, handle))
}

fn writer(rx: &Receiver<Record>, format: Format, mut out: BufWriter<Box<dyn Write + Send>>) {
    let mut failed = false;
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(rec) => {
                if let Err(e) = rec.write(format, &mut out) {
                    if !failed {
                        tracing::error!("writing the access log: {e} (further errors are not reported)");
                        failed = true;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(e) = out.flush() {
        tracing::error!("flushing the access log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            client: "127.0.0.9:4000".parse().unwrap(),
            listener: "127.0.0.1:9000".parse().unwrap(),
            upstream: Some("127.0.0.1:8080".parse().unwrap()),
            bytes_up: 12,
            bytes_down: 3456,
            duration: Duration::from_millis(1500),
            reason: CloseReason::Normal,
        }
    }

    #[test]
    fn text_and_json_lines() {
        let mut out = Vec::new();
        record().write(Format::Text, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2027-01-15T08:00:00.000Z 127.0.0.9:4000 127.0.0.1:9000 127.0.0.1:8080 12 3456 1.500 normal\n"
        );
        let mut out = Vec::new();
        Record { upstream: None, reason: CloseReason::Upstream, ..record() }.write(Format::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["client"], "127.0.0.9:4000");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["bytes_down"], 3456);
        assert_eq!(v["close"], "upstream");
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, rx) = mpsc::sync_channel(2);
        let log = AccessLog { tx, dropped: Arc::new(AtomicU64::new(0)) };
        for _ in 0..5 {
            log.log(record());
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(log.dropped_counter().get(), 3);
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn the_writer_appends_to_a_file_and_flushes_on_exit() {
        let path = std::env::temp_dir().join(format!("ringpoll-accesslog-{}.log", std::process::id()));
        let p = path.to_str().unwrap().to_string();
        let (log, handle) = start(&p, Format::Text).unwrap();
        let counter = log.dropped_counter();
        log.log(record());
        log.log(record());
        drop(log);
        handle.join().unwrap(); // the counter kept no sender: the writer ended
        assert_eq!(counter.get(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
