//! `ringpoll serve`, from flags to exit status: build and check the configuration, take over
//! the running server's sockets if asked, bind the metrics endpoint, start the workers, print
//! `listening on` (only once everything is bound), answer later take-overs, handle signals,
//! and print each worker's summary at exit.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringpoll_sys::rlimit::raise_nofile_limit;
use ringpoll_sys::signals::{self, Repeat};
use tracing::{info, warn};

use crate::config::flags::ServeArgs;
use crate::config::Config;
use crate::stats::Counters;
use crate::{metrics, takeover, ServeError, Server};

/// Run the server the flags describe. Exit status: 0 after a graceful stop, 2 for a bad
/// setting, 1 for anything that kept it from running.
pub fn run(args: &ServeArgs) -> ExitCode {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringpoll serve: error: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringpoll serve: error: {e}");
            ExitCode::from(if matches!(e, ServeError::Config(_)) { 2 } else { 1 })
        }
    }
}

fn setup(what: &str) -> impl Fn(std::io::Error) -> ServeError + '_ {
    move |e| ServeError::Setup(format!("{what}: {e}"))
}

fn bind_control(first: std::net::SocketAddr) -> Option<std::os::unix::net::UnixListener> {
    match takeover::bind_control(first) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!("no control socket for a later --takeover: {e}");
            None
        }
    }
}

fn serve(cfg: Config) -> Result<(), ServeError> {
    if let Err(e) = raise_nofile_limit() {
        warn!("could not raise the open-file limit: {e}");
    }
    signals::block_termination_signals().map_err(setup("blocking SIGINT/SIGTERM"))?;
    let first = cfg.listeners[0].listen;
    let mut inherited = if cfg.takeover {
        match takeover::request(first).map_err(setup("--takeover"))? {
            Some(i) => {
                let n: usize = i.listeners.values().map(Vec::len).sum();
                info!("--takeover: received {n} listening socket(s) from the running server");
                Some(i)
            }
            None => {
                info!("--takeover: no ringpoll answers for {first}; starting fresh");
                None
            }
        }
    } else {
        None
    };
    let metrics_listener = match cfg.metrics {
        Some(addr) => match inherited.as_mut().and_then(|i| i.metrics.take()) {
            Some(l) => Some(l),
            None => Some(metrics::bind(addr).map_err(|e| ServeError::Setup(e.to_string()))?),
        },
        None => None,
    };
    let mut server = Server::start(cfg, inherited.as_mut())?;
    let cfg = server.config().clone();
    // The control socket for a later --takeover: bound before `listening on` (when this process
    // took over, the old one holds the name until it is told READY, below).
    let mut control = if inherited.is_none() { bind_control(server.local_addr()) } else { None };
    let mut metrics_dup = None;
    {
        let mut out = std::io::stdout().lock();
        for a in server.local_addrs() {
            writeln!(out, "listening on {a}").map_err(setup("stdout"))?;
        }
        if let Some(l) = &metrics_listener {
            let bound = l.local_addr().map_err(setup("--metrics"))?;
            // After the listeners, so scripts that asked for port 0 learn the real one.
            writeln!(out, "metrics on http://{bound}/metrics").map_err(setup("stdout"))?;
        }
        out.flush().map_err(setup("stdout"))?;
    }
    let modes: Vec<&str> = cfg.listeners.iter().map(|l| l.mode.name()).collect();
    // Pinning is stated once: here, or in the warning `Server::start` gave when it could not pin.
    let pinning = match (server.pinned(), cfg.pin) {
        (true, _) => " (pinned, one core each)",
        (false, false) => " (not pinned: --no-pin)",
        (false, true) => "",
    };
    info!("{} worker(s), backend {}, {}{pinning}", cfg.workers, cfg.backend, modes.join(", "));
    if let Some(l) = metrics_listener {
        metrics_dup = l.try_clone().ok();
        metrics::spawn(l, server.metrics_source()).map_err(setup("--metrics"))?;
    }
    let shutdown = server.shutdown_handle();
    // What a later --takeover gets. Its duplicates keep the listening sockets open: a shutdown
    // that is not a hand-over drops them before the workers close theirs, so that the sockets
    // really close (refusing new connections) once the workers have taken in their queues.
    let offer: takeover::SharedOffer =
        Arc::new(Mutex::new(Some(takeover::Offer { listeners: server.take_offer(), metrics: metrics_dup })));
    let on_signal = {
        let (shutdown, offer) = (shutdown.clone(), offer.clone());
        move |sig: &str| {
            info!("{sig}: stopping (finishing in-flight work; send again to exit at once)");
            takeover::withdraw(&offer);
            shutdown.trigger();
        }
    };
    signals::spawn_signal_thread(on_signal, Repeat { ignore_within: Duration::ZERO, exit_code: 1 })
        .map_err(setup("starting the signal thread"))?;
    if let Some(inh) = inherited.as_mut() {
        if let Err(e) = takeover::ready(inh) {
            warn!("--takeover: the old server did not confirm the hand-over: {e}");
        }
        control = bind_control(server.local_addr());
    }
    match control {
        Some(control) => {
            let stop = Arc::new(move || shutdown.trigger());
            if let Err(e) = takeover::serve(control, offer.clone(), stop) {
                warn!("no control socket for a later --takeover: {e}");
                takeover::withdraw(&offer);
            }
        }
        None => takeover::withdraw(&offer),
    }
    let backend = cfg.backend.name();
    let per_worker = server.join()?;
    for (i, c) in per_worker.iter().enumerate() {
        eprintln!("{}", c.summary(&format!("worker {i}"), backend));
    }
    if per_worker.len() > 1 {
        eprintln!("{}", Counters::sum(&per_worker).summary("all workers", backend));
    }
    Ok(())
}
